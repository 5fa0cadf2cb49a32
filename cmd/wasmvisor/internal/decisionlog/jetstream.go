package decisionlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of JetStreamOptions.
const (
	DefaultJetStreamBatch       = 100
	DefaultJetStreamMaxInFlight = 256
	DefaultJetStreamTimeout     = 5 * time.Second
	jetStreamStallWait          = 100 * time.Millisecond
)

// JetStreamOptions configure the JetStream sink: each record is one message on Subject,
// which a JetStream stream must capture (the sink does not create it). The sink publishes a
// batch of at most BatchSize records with async acks, at most MaxInFlight awaiting theirs, and
// waits at most Timeout for the batch's acks; the records not acked (a timeout, the stream
// unreachable, the connection down) are published again after a backoff (RetryBackoff,
// doubled up to MaxBackoff) at most MaxRetries times, then dropped (reason
// retries_exhausted); a record the stream refuses (an API error: too large for it, say) or the
// client refuses (over the server's max_payload) is dropped at once (reason rejected). A
// retried record may be stored after records logged later: order by timestamp or decision ID.
// While a batch waits the queue fills, and past Queue records new ones are dropped (reason
// queue_full): a stalled or unreachable server never slows a call.
type JetStreamOptions struct {
	// Conn is the cluster's NATS connection; the sink neither closes it nor changes its
	// handlers.
	Conn *nats.Conn
	// Subject the records are published on: NATS subject tokens, no wildcard.
	Subject string
	// BatchSize bounds the records published before their acks are awaited. Default
	// DefaultJetStreamBatch.
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill. Default
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// Queue bounds the records waiting for the stream. Default DefaultQueue.
	Queue int
	// MaxInFlight bounds the publishes awaiting their ack. Default DefaultJetStreamMaxInFlight.
	MaxInFlight int
	// MaxRetries bounds the retries of one batch's records (0 is the default,
	// DefaultMaxRetries; -1 none).
	MaxRetries int
	// RetryBackoff and MaxBackoff bound the wait before a retry (defaults DefaultRetryBackoff,
	// DefaultMaxBackoff).
	RetryBackoff, MaxBackoff time.Duration
	// Timeout bounds the wait for one attempt's acks. Default DefaultJetStreamTimeout.
	Timeout time.Duration
}

// ErrJetStreamOptions is wrapped by New for JetStreamOptions it cannot use.
var ErrJetStreamOptions = errors.New("decisionlog: jetstream sink")

type jsSink struct {
	o     JetStreamOptions
	js    jetstream.JetStream
	m     *metrics
	retry retryPolicy
}

func newJetStream(o JetStreamOptions, m *metrics) (*jsSink, error) {
	if o.Conn == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrJetStreamOptions)
	}
	if !ValidSubject(o.Subject) {
		return nil, fmt.Errorf("%w: subject %q: want dot-separated tokens without wildcards or spaces",
			ErrJetStreamOptions, o.Subject)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultJetStreamBatch
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultJetStreamMaxInFlight
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultJetStreamTimeout
	}
	js, err := jetstream.New(o.Conn, jetstream.WithPublishAsyncMaxPending(o.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(o.Timeout))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJetStreamOptions, err)
	}
	return &jsSink{o: o, js: js, m: m, retry: newRetryPolicy(o.MaxRetries, o.RetryBackoff, o.MaxBackoff)}, nil
}

// ValidSubject reports whether s is a NATS subject one can publish on: dot-separated
// tokens, no wildcard token, no space, at most 1024 bytes.
func ValidSubject(s string) bool {
	if s == "" || len(s) > 1024 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return false
		}
	}
	return true
}

// write publishes lines, retrying as JetStreamOptions says; ctx ends it (Close's deadline).
func (s *jsSink) write(ctx context.Context, lines [][]byte) (int, string) {
	pending := lines
	delivered, rejected := 0, 0
	for attempt := 0; ; attempt++ {
		ok, again, refused := s.attempt(ctx, pending)
		delivered += ok
		rejected += refused
		switch {
		case len(again) == 0 && rejected > 0:
			return delivered, "rejected" // n < len(lines): the rest were refused
		case len(again) == 0:
			return delivered, ""
		case !s.retry.wait(ctx, attempt, s.m):
			return delivered, "retries_exhausted"
		}
		pending = again
	}
}

// attempt publishes lines once and waits for their acks until Timeout: how many were acked,
// those to send again, and how many were refused for good.
func (s *jsSink) attempt(ctx context.Context, lines [][]byte) (acked int, again [][]byte, refused int) {
	type sent struct {
		line []byte
		f    jetstream.PubAckFuture
	}
	futures := make([]sent, 0, len(lines))
	for _, l := range lines {
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.o.Subject, Data: l},
			jetstream.WithStallWait(jetStreamStallWait))
		switch {
		case err == nil:
			futures = append(futures, sent{l, f})
		case errors.Is(err, nats.ErrMaxPayload):
			refused++
		default: // too many in flight, the connection closed or over its reconnect buffer
			again = append(again, l)
		}
	}
	timer := time.NewTimer(s.o.Timeout)
	defer timer.Stop()
	for i, x := range futures {
		select {
		case <-x.f.Ok():
			acked++
		case err := <-x.f.Err():
			var api *jetstream.APIError
			if errors.As(err, &api) {
				refused++
			} else {
				again = append(again, x.line)
			}
		case <-timer.C:
			for _, y := range futures[i:] {
				again = append(again, y.line)
			}
			return acked, again, refused
		case <-ctx.Done():
			for _, y := range futures[i:] {
				again = append(again, y.line)
			}
			return acked, again, refused
		}
	}
	return acked, again, refused
}

func (s *jsSink) close() error { return nil }

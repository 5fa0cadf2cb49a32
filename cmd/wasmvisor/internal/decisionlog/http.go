package decisionlog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Defaults of HTTPOptions.
const (
	DefaultBatchSize     = 100
	DefaultFlushInterval = time.Second
	DefaultMaxRetries    = 5
	DefaultRetryBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff    = 10 * time.Second
	DefaultHTTPTimeout   = 5 * time.Second
)

// HTTPOptions configure the HTTP sink: batches of records POSTed to URL as a JSON array
// (Content-Type application/json). A 2xx accepts the batch; a 5xx, a 429, a network error or
// a timeout is retried after a backoff (RetryBackoff, doubled each time up to MaxBackoff) at
// most MaxRetries times, then the batch is dropped (reason retries_exhausted); another 4xx
// drops it at once (reason rejected). While a batch is being sent the queue fills, and past
// Queue records new ones are dropped (reason queue_full): a stalled endpoint never slows a
// call.
type HTTPOptions struct {
	URL string
	// BatchSize bounds the records of one POST. Default DefaultBatchSize.
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill. Default
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// Queue bounds the records waiting for the endpoint. Default DefaultQueue.
	Queue int
	// MaxRetries bounds the retries of one batch (0 is the default; -1 none).
	MaxRetries int
	// RetryBackoff and MaxBackoff bound the wait before a retry.
	RetryBackoff, MaxBackoff time.Duration
	// Timeout bounds one POST, the answer's body included. Default DefaultHTTPTimeout.
	Timeout time.Duration
	// Header is sent with every POST (an Authorization, say).
	Header http.Header
	// Client sends the requests; nil is a client of its own.
	Client *http.Client
}

type httpSink struct {
	o     HTTPOptions
	retry retryPolicy
	c     *http.Client
	m     *metrics
	buf   bytes.Buffer
}

func newHTTP(o HTTPOptions, m *metrics) (*httpSink, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("decisionlog: http sink: want an http or https URL, got %q", o.URL)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultHTTPTimeout
	}
	c := o.Client
	if c == nil {
		c = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	}
	return &httpSink{o: o, c: c, m: m, retry: newRetryPolicy(o.MaxRetries, o.RetryBackoff, o.MaxBackoff)}, nil
}

// write POSTs lines as one JSON array, retrying as HTTPOptions says. ctx ends it (Close's
// deadline).
func (s *httpSink) write(ctx context.Context, lines [][]byte) (int, string) {
	s.buf.Reset()
	s.buf.WriteByte('[')
	for i, l := range lines {
		if i > 0 {
			s.buf.WriteByte(',')
		}
		s.buf.Write(l)
	}
	s.buf.WriteByte(']')
	for attempt := 0; ; attempt++ {
		accepted, retry := s.post(ctx)
		switch {
		case accepted:
			return len(lines), ""
		case !retry:
			return 0, "rejected"
		case !s.retry.wait(ctx, attempt, s.m):
			return 0, "retries_exhausted"
		}
	}
}

// post sends the buffer once: whether the endpoint accepted it, and if not whether to retry.
func (s *httpSink) post(ctx context.Context) (accepted, retry bool) {
	rctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.o.URL, bytes.NewReader(s.buf.Bytes()))
	if err != nil {
		return false, false
	}
	for k, v := range s.o.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := s.c.Do(req)
	if err != nil {
		return false, true
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // bounded: keeps the connection
	_ = res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return true, false
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests:
		return false, true
	}
	return false, false
}

func (s *httpSink) close() error {
	if s.o.Client == nil {
		s.c.CloseIdleConnections()
	}
	return nil
}

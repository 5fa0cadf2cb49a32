package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/decisionlog"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// errRequestTimeout is the cause (context.Cause) of a call's context that http.request_timeout
// ended. Both the server's timeout and a client that went away end that context; the cause
// tells them apart: the first is answered by the failure policy, the second has nobody to
// answer.
var errRequestTimeout = errors.New("server: http.request_timeout reached")

// answerFlushTimeout is the least time the writing of a per_call plugin's answer gets, which
// the instance's reset waits for (Server.call): it gets what is left of http.request_timeout,
// and at least this, so that the answer to a call that ran to the timeout is still written.
// An answer goes into the connection's buffers at once unless the client has stopped reading.
const answerFlushTimeout = time.Second

// defaultRetryAfter is the Retry-After of a 503 whose error carries no retry time.
const defaultRetryAfter = time.Second

// StatusClientClosedRequest is the status recorded (and written, to nobody) for a call whose
// client went away before the answer: no answer, and never a 200.
const StatusClientClosedRequest = 499

// retryAfter is how long the client of a failed call should wait: the error's own retry time
// when it carries one (host.FailedError.RetryAfter), def otherwise.
func retryAfter(err error, def time.Duration) time.Duration {
	var fe *host.FailedError
	if errors.As(err, &fe) && fe.RetryAfter > 0 {
		return fe.RetryAfter
	}
	return def
}

// setRetryAfter sets the Retry-After header, in whole seconds, at least 1.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
}

// notServed answers a request for name, a plugin the server does not serve (it has no entry
// for it): 503 plugin_loading while the server loads its configured plugins and name is one of
// them, and it reports that; 404 plugin_not_found otherwise.
func (s *Server) notServed(w http.ResponseWriter, name string) (loading bool) {
	if s.loading(name) {
		setRetryAfter(w, defaultRetryAfter)
		writeError(w, http.StatusServiceUnavailable, "plugin_loading", fmt.Sprintf("plugin %q is still loading", name))
		return true
	}
	writeError(w, http.StatusNotFound, "plugin_not_found", fmt.Sprintf("no plugin %q", name))
	return false
}

// call is POST /v1/plugins/{name}/call/{handler...} (the handler is the rest of the path). Its whole life, reading the body included,
// is bounded by http.request_timeout; every path writes an answer (never an empty 200).
func (s *Server) call(w http.ResponseWriter, r *http.Request) {
	name, handler := r.PathValue("name"), r.PathValue("handler")
	c := s.cfg.Load()
	deadline := time.Now().Add(c.HTTP.RequestTimeout)
	e := s.entry(name)
	if e == nil {
		if s.notServed(w, name) {
			s.m.refused.WithLabelValues("plugin_loading").Inc()
		}
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(deadline) // a slow body is bounded too
	input, err := readBody(w, r, c.HTTP.MaxBodyBytes)
	if err == nil {
		// The body is read: clear the read deadline. Left set, it ends r.Context() when it
		// passes: net/http watches the connection for the client going away (from the start
		// for a request without a body), that read fails at the deadline and cancels the
		// request, and the server's own timeout was taken for a client that left: the bug
		// that answered 200 with an empty body.
		_ = rc.SetReadDeadline(time.Time{})
	} else {
		// The body is refused: the connection closes after the answer. (Kept alive, net/http
		// would first read the rest of a slow body, and the answer would wait for it.)
		w.Header().Set("Connection", "close")
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("the input exceeds http.max_body_bytes (%d bytes)", c.HTTP.MaxBodyBytes))
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.m.interrupted.WithLabelValues(name, "body_timeout").Inc()
			writeError(w, http.StatusRequestTimeout, "body_timeout",
				fmt.Sprintf("the body did not arrive within http.request_timeout (%v)", c.HTTP.RequestTimeout))
		default:
			writeError(w, http.StatusBadRequest, "bad_body", "reading the body: "+err.Error())
		}
		return
	}
	// From here on the call is a decision: it has an ID, returned whatever the answer.
	id := decisionlog.NewID()
	w.Header().Set(HeaderDecisionID, id)
	// The call waits for one of the plugin's slots (one per instance) while its client may
	// still go away, which ends the wait at no cost. Once admitted it is no longer canceled by
	// the client: it ends within its deadline anyway, and canceling it would end the instance
	// (its state is unknown once interrupted), so clients that disconnect mid-call, again and
	// again, would grind the pool down. Only http.request_timeout (and the plugin's own
	// call_timeout) end it.
	//
	// Under isolation per_call the answer is written in the host's CallThen, before the
	// instance's reset, which then runs on this goroutine once the answer is flushed
	// (host.CallThen), so that the client does not wait for it. That write holds the instance
	// and the admission slot: it gets the rest of the request's deadline, at least
	// answerFlushTimeout, and a client that does not take the answer within it (its
	// connection's buffers full) loses it and its connection, counted.
	// Otherwise the answer is written once the slot is given back, as a client's pace is
	// nobody else's business.
	perCall := e.spec.Isolation == config.IsolationPerCall
	t0 := time.Now()
	var (
		out        []byte
		dur        time.Duration
		kind       string
		clientGone bool
		answered   bool
		outcome    string
		result     []byte // the answer's body when it is a decision (the plugin's, or the policy's)
		httpStatus = http.StatusOK
	)
	policy := e.spec.FailurePolicy
	s.admitted(r.Context(), e, deadline, func(ctx context.Context, then func([]byte, error)) {
		s.h.CallThen(ctx, name, handler, input, nil, then)
	}, func(o []byte, cerr error) {
		out, dur, err = o, time.Since(t0), cerr
		clientGone = r.Context().Err() != nil
		if !perCall || clientGone {
			return
		}
		answered = true
		_ = rc.SetWriteDeadline(later(deadline, time.Now().Add(answerFlushTimeout)))
		ew := &writeErr{ResponseWriter: w}
		outcome, httpStatus, result, kind = s.answer(ew, e, name, handler, out, err, clientGone)
		ferr := ew.err
		if ferr == nil {
			ferr = rc.Flush()
		}
		if ferr != nil {
			s.m.interrupted.WithLabelValues(name, "answer_not_taken").Inc()
			s.log.Debug("answer not taken", zap.String("plugin", name), zap.String("decision_id", id), zap.Error(ferr))
		}
		_ = rc.SetWriteDeadline(time.Time{}) // for the connection's next request
	})
	if !answered {
		outcome, httpStatus, result, kind = s.answer(w, e, name, handler, out, err, clientGone)
	}
	s.m.decisions.WithLabelValues(name, outcome).Inc()
	s.dash.decision(dashDecision{Time: t0, Plugin: name, Handler: truncate(handler, 128), Outcome: outcome,
		ErrorKind: kind, Status: httpStatus, DurationUs: float64(dur.Nanoseconds()) / 1e3})
	rec := &decisionlog.Record{DecisionID: id, Timestamp: t0, Path: name + "/" + handler, Plugin: name,
		Digest: e.digest, Handler: handler, Input: input, Result: result, Outcome: outcome, ErrorKind: kind,
		FailurePolicy: policy, FailurePolicyApplied: strings.HasPrefix(outcome, "failure_"), Status: httpStatus,
		Metrics: decisionlog.Metrics{TimerServerHandlerNs: dur.Nanoseconds()}}
	s.dlog.Log(rec) // masks and bounds rec's input and result for the log line too
	s.logDecision(c, rec, clientGone, err)
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// writeErr is a ResponseWriter that keeps the first error of a Write: a write that ran past
// its deadline fails, and the flush after it may not say so.
type writeErr struct {
	http.ResponseWriter
	err error
}

func (w *writeErr) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// answer writes the answer to a call that ended with out and err, and returns its outcome,
// status, (for a decision) body, and error kind (host.Kind, or request_timeout when the
// server's own timeout ended the call).
func (s *Server) answer(w http.ResponseWriter, e *entry, name, handler string, out []byte, err error,
	clientGone bool) (outcome string, httpStatus int, result []byte, kind string) {
	kind = host.Kind(err)
	// Told apart: the server's own timeout ends the call's context with errRequestTimeout as
	// its cause; a client that went away ends r.Context() (only then: the read deadline is
	// cleared above).
	timedOut := errors.Is(err, errRequestTimeout)
	policy := e.spec.FailurePolicy
	w.Header().Set(HeaderDigest, e.digest)
	httpStatus = http.StatusOK
	switch {
	case clientGone:
		// Nobody to answer (the plugin's answer or failure goes nowhere), and no policy applies.
		// The status is written to a closed connection, so that the request metrics record
		// 499, not 200.
		outcome, httpStatus = "canceled", StatusClientClosedRequest
		s.m.interrupted.WithLabelValues(name, "client_gone").Inc()
		writeError(w, StatusClientClosedRequest, "client_closed_request", "the client went away before the answer")
	case err == nil:
		outcome, result = decision(out), out
		ct := "application/octet-stream"
		if json.Valid(out) {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(out))) // a flush then ends the answer
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	case kind == "not_found":
		outcome, httpStatus = "error", http.StatusNotFound
		writeError(w, http.StatusNotFound, "plugin_not_found", fmt.Sprintf("no plugin %q", name))
	case kind == "unknown_handler":
		outcome, httpStatus = "error", http.StatusNotFound
		writeError(w, http.StatusNotFound, "unknown_handler", fmt.Sprintf("plugin %q has no handler %q", name, handler))
	case kind == "guest":
		outcome, httpStatus = "error", http.StatusUnprocessableEntity
		msg, status := err.Error(), ""
		var ge *sandbox.GuestError
		if errors.As(err, &ge) {
			msg, status = ge.Message, ge.Status.String()
		}
		writeErrorKind(w, http.StatusUnprocessableEntity, "guest_error", msg, status)
	default:
		// The request timeout is the failure only when nothing else is: a trap that happened
		// to end after it is a trap.
		timedOut = timedOut && (kind == "deadline" || kind == "canceled" || kind == "other")
		if timedOut {
			s.m.interrupted.WithLabelValues(name, "request_timeout").Inc()
			if kind != "deadline" {
				kind = "request_timeout"
			}
		}
		s.m.failures.WithLabelValues(name, policy, kind).Inc()
		outcome, httpStatus, result = s.failed(w, e, name, handler, policy, kind, timedOut, err)
	}
	return outcome, httpStatus, result, kind
}

// readBody reads a request's body, at most limit bytes, into one buffer sized by the declared
// length (io.ReadAll's doubling would hold up to twice a large body).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength <= 0 || r.ContentLength > limit {
		return io.ReadAll(body)
	}
	buf := bytes.NewBuffer(make([]byte, 0, r.ContentLength+1)) // +1: the read that sees EOF
	_, err := buf.ReadFrom(body)
	return buf.Bytes(), err
}

// admitted runs call once e has a free slot, with a context that ends at deadline (cause
// errRequestTimeout) and not when rctx (the client's) does, and call hands its result to
// then; a call that gets no slot hands then the error. Waiting for the slot ends with either.
// An error of the server's timeout matches errRequestTimeout (the call's own error is joined
// to it). The slot is given back when call returns.
func (s *Server) admitted(rctx context.Context, e *entry, deadline time.Time,
	call func(ctx context.Context, then func([]byte, error)), then func([]byte, error)) {
	if rctx.Err() != nil { // gone already: do not take a slot
		then(nil, fmt.Errorf("waiting for a free instance: %w: %w", host.ErrNoInstance, context.Cause(rctx)))
		return
	}
	select {
	case e.slots <- struct{}{}:
	default:
		wctx, cancel := context.WithDeadlineCause(rctx, deadline, errRequestTimeout)
		defer cancel()
		select {
		case e.slots <- struct{}{}:
		case <-wctx.Done():
			then(nil, fmt.Errorf("waiting for a free instance: %w: %w", host.ErrNoInstance, context.Cause(wctx)))
			return
		}
	}
	defer func() { <-e.slots }()
	ctx, cancel := context.WithDeadlineCause(context.WithoutCancel(rctx), deadline, errRequestTimeout)
	defer cancel()
	call(ctx, func(out []byte, err error) {
		if err != nil && errors.Is(context.Cause(ctx), errRequestTimeout) && !errors.Is(err, errRequestTimeout) {
			err = errors.Join(err, errRequestTimeout)
		}
		then(out, err)
	})
}

// failed answers a call the plugin could not answer, by its failure policy, and returns the
// outcome, the status and (allow, monitor) the body. deny fails closed with a JSON error;
// allow and monitor answer 200, marked, with the plugin's failure_answer, or authz's
// {"allow":true,"reasons":[…]} when it has none. A quarantined plugin (host.ErrPluginFailed)
// is a failure like any other, with a Retry-After; a poison input (host.ErrPoisonInput) is the request's fault: 422 under deny,
// and under allow/monitor the same synthetic allow the input got while it crashed instances.
func (s *Server) failed(w http.ResponseWriter, e *entry, name, handler, policy, kind string, timedOut bool,
	err error) (outcome string, status int, body []byte) {
	w.Header().Set(HeaderPluginError, kind)
	if kind == "quarantined" || kind == "no_instance" || kind == "closed" {
		setRetryAfter(w, retryAfter(err, defaultRetryAfter))
	}
	switch policy {
	case config.FailAllow, config.FailMonitor:
		w.Header().Set(HeaderFailurePolicy, policy)
		body = e.spec.FailureAnswer
		if body == nil {
			body, _ = json.Marshal(map[string]any{"allow": true, "reasons": []string{
				fmt.Sprintf("plugin %q failed (%s); allowed by failure_policy %s", name, kind, policy)}})
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		if policy == config.FailMonitor {
			s.log.Warn("monitor: plugin failed, request allowed", zap.String("plugin", name),
				zap.String("handler", handler), zap.String("error_kind", kind), zap.Error(err))
		}
		return "failure_" + policy, http.StatusOK, body
	}
	status, code := http.StatusBadGateway, "plugin_failed"
	switch {
	case kind == "poison_input":
		status, code = http.StatusUnprocessableEntity, "poison_input"
	case kind == "quarantined":
		status, code = http.StatusServiceUnavailable, "plugin_quarantined"
	case kind == "no_instance" || kind == "closed":
		status, code = http.StatusServiceUnavailable, "plugin_unavailable"
	case timedOut:
		status, code = http.StatusGatewayTimeout, "request_timeout"
	case kind == "deadline":
		status, code = http.StatusGatewayTimeout, "plugin_timeout"
	}
	writeErrorKind(w, status, code, err.Error(), kind)
	return "failure_deny", status, nil
}

// logDecision writes the decision's process log line: info for answers (when log.decisions),
// warn for plugin failures, debug for a client that went away (it is the client's doing, and
// a flood of disconnects must not flood the log). The line carries the record's ID, and its
// input and result when decision_log keeps them (masked and bounded by Log).
func (s *Server) logDecision(c *config.Config, r *decisionlog.Record, clientGone bool, err error) {
	kind := r.ErrorKind
	failure := kind != "" && kind != "guest" && kind != "unknown_handler" && kind != "not_found"
	var lvl zapcore.Level
	switch {
	case clientGone:
		lvl = zap.DebugLevel
	case failure:
		lvl = zap.WarnLevel
	case c.Log.Decisions || kind != "" && kind != "guest":
		lvl = zap.InfoLevel
	default:
		return
	}
	if ce := s.log.Check(lvl, "decision"); ce != nil {
		fields := []zap.Field{zap.String("decision_id", r.DecisionID), zap.String("plugin", r.Plugin),
			zap.String("digest", r.Digest), zap.String("handler", r.Handler), zap.String("outcome", r.Outcome),
			zap.Duration("duration", time.Duration(r.Metrics.TimerServerHandlerNs)), zap.String("error_kind", kind),
			zap.String("failure_policy", r.FailurePolicy)}
		if r.Input != nil {
			fields = append(fields, zap.Reflect("input", r.Input))
		}
		if r.Result != nil {
			fields = append(fields, zap.Reflect("result", r.Result))
		}
		if len(r.Erased) > 0 {
			fields = append(fields, zap.Strings("erased", r.Erased))
		}
		if failure && err != nil {
			fields = append(fields, zap.Error(err))
		}
		ce.Write(fields...)
	}
}

// HeaderDecisionID is the response header that carries a call's decision ID, the
// decision_id of its decision log record (a UUID version 7).
const HeaderDecisionID = "Wasmvisor-Decision-Id"

// newDecisionLog starts the decision log of the decision_log section, its metrics in h's
// registry.
func newDecisionLog(c config.DecisionLog, h *host.Host, log *zap.Logger, nc *nats.Conn) (*decisionlog.Logger, error) {
	o := decisionlog.Options{Input: c.Input, Result: c.Result, MaxValueBytes: int(c.MaxValueBytes),
		Registerer: h.Metrics(), Logger: log.Named("decisionlog")}
	for _, p := range c.Mask {
		m, err := decisionlog.ParseMask(p) // checked by config.Parse
		if err != nil {
			return nil, fmt.Errorf("decision_log.mask: %w", err)
		}
		o.Masks = append(o.Masks, m)
	}
	if f := c.File; f.Path != "" {
		o.File = &decisionlog.FileOptions{Path: f.Path, MaxBytes: f.MaxBytes, MaxFiles: f.MaxFiles, Queue: f.Queue}
	}
	if hc := c.HTTP; hc.URL != "" {
		o.HTTP = &decisionlog.HTTPOptions{URL: hc.URL, BatchSize: hc.BatchSize, FlushInterval: hc.FlushInterval,
			Queue: hc.Queue, MaxRetries: hc.MaxRetries, RetryBackoff: hc.RetryBackoff, MaxBackoff: hc.MaxBackoff,
			Timeout: hc.Timeout}
		if len(hc.Headers) > 0 {
			o.HTTP.Header = http.Header{}
			for k, v := range hc.Headers {
				o.HTTP.Header.Set(k, v)
			}
		}
	}
	if js := c.JetStream; js.Subject != "" {
		// The sink publishes through the cluster node's NATS connection: without a cluster
		// section there is none, and the key is refused rather than ignored.
		if nc == nil {
			return nil, fmt.Errorf("decision_log.jetstream.subject: %w", errNoCluster)
		}
		o.JetStream = &decisionlog.JetStreamOptions{Conn: nc, Subject: js.Subject, BatchSize: js.BatchSize,
			FlushInterval: js.FlushInterval, Queue: js.Queue, MaxInFlight: js.MaxInFlight, MaxRetries: js.MaxRetries,
			RetryBackoff: js.RetryBackoff, MaxBackoff: js.MaxBackoff, Timeout: js.Timeout}
	}
	return decisionlog.New(o)
}

// errNoCluster refuses a key that needs the cluster's NATS connection.
var errNoCluster = errors.New("needs the cluster section's NATS connection: this server is not a cluster's node")

// closeDecisionLog delivers what the decision log's sinks hold, until end (the shutdown's
// bound), at least one second. Records not delivered by then are dropped and counted.
func (s *Server) closeDecisionLog(ctx context.Context, end time.Time) error {
	if least := time.Now().Add(time.Second); end.Before(least) {
		end = least
	}
	dctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	if err := s.dlog.Close(dctx); err != nil && !errors.Is(err, decisionlog.ErrClosed) {
		return fmt.Errorf("%w: the decision log: %w", ErrShutdownTimeout, err)
	}
	return nil
}

// decision reads a policy decision's "allow" field: "allow", "deny", or "ok" when the output
// is not a decision.
func decision(out []byte) string {
	if len(out) == 0 || out[0] != '{' {
		return "ok"
	}
	switch {
	case bytes.Contains(out, []byte(`"allow":true`)):
		return "allow"
	case bytes.Contains(out, []byte(`"allow":false`)):
		return "deny"
	}
	return "ok"
}

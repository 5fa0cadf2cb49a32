package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults of Options and of the sinks' options, used for their zero values.
const (
	DefaultMaxValueBytes = 64 << 10
	DefaultQueue         = 4096
	DefaultReportEvery   = 10 * time.Second
)

// Options configure a Logger. The zero value logs no input and no result and has no sink:
// Log still fills the record for the server's process log.
type Options struct {
	// Input and Result keep the call's body and its answer in the records (default off: they
	// may hold what the decision is about, personal data included).
	Input, Result bool
	// Masks erase parts of the input and the result before any sink sees them.
	Masks []Mask
	// MaxValueBytes bounds the input and the result of one record, each (after masking); a
	// longer one is cut to a JSON string of its first MaxValueBytes bytes and counted in
	// wasmvisor_decision_log_truncated_total. Default DefaultMaxValueBytes.
	MaxValueBytes int
	// File, HTTP and JetStream are the sinks; nil for none.
	File      *FileOptions
	HTTP      *HTTPOptions
	JetStream *JetStreamOptions
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger reports drops and sink errors; nil is a no-op logger.
	Logger *zap.Logger
	// ReportEvery is the least time between two drop reports of one sink. Default
	// DefaultReportEvery.
	ReportEvery time.Duration
}

// ErrClosed is returned by Close when called again; Log after Close drops (reason closed).
var ErrClosed = errors.New("decisionlog: closed")

// Logger prepares records and hands them to its sinks. Log may be called from any goroutine,
// concurrently, and never blocks on a sink; Close once, after the last Log.
type Logger struct {
	o       Options
	log     *zap.Logger
	sinks   []*queue
	closed  atomic.Bool
	stop    chan struct{}      // closed by Close: sinks drain their queue and end
	abort   context.CancelFunc // ends a sink's request or backoff when Close's context ends
	actx    context.Context
	wg      sync.WaitGroup
	m       metrics
	closeMu sync.Mutex
}

type metrics struct {
	written   *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	truncated *prometheus.CounterVec
	retries   prometheus.Counter
	queued    *prometheus.GaugeVec
}

// New checks the options, registers the metrics and starts the sinks (one goroutine each).
// A file that cannot be opened is an error; nothing is started then.
func New(o Options) (*Logger, error) {
	if o.MaxValueBytes <= 0 {
		o.MaxValueBytes = DefaultMaxValueBytes
	}
	if o.ReportEvery <= 0 {
		o.ReportEvery = DefaultReportEvery
	}
	l := &Logger{o: o, log: o.Logger, stop: make(chan struct{})}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	l.actx, l.abort = context.WithCancel(context.Background())
	l.m = metrics{
		written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_decision_log_written_total",
			Help: "Decision records written (file) or accepted (http, jetstream), by sink."}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_decision_log_dropped_total",
			Help: "Decision records dropped, by sink and reason: queue_full (the sink is behind), write_error, encode_error, " +
				"rejected (a 4xx, a stream's refusal), retries_exhausted, closed (logged after shutdown), shutdown (not delivered in time)."},
			[]string{"sink", "reason"}),
		truncated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_decision_log_truncated_total",
			Help: "Decision inputs or results cut to decision_log.max_value_bytes, by field."}, []string{"field"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmvisor_decision_log_retries_total",
			Help: "Batches sent again to the decision log's HTTP or JetStream sink."}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wasmvisor_decision_log_queue_capacity",
			Help: "The bound of each decision log sink's queue, in records."}, []string{"sink"}),
	}
	if o.File != nil {
		fs, err := openFile(*o.File)
		if err != nil {
			return nil, err
		}
		l.sinks = append(l.sinks, l.newQueue("file", o.File.Queue, fs))
	}
	if o.HTTP != nil {
		hs, err := newHTTP(*o.HTTP, &l.m)
		if err != nil {
			for _, q := range l.sinks {
				_ = q.sink.close()
			}
			return nil, err
		}
		l.sinks = append(l.sinks, l.newQueue("http", o.HTTP.Queue, hs))
	}
	if o.JetStream != nil {
		js, err := newJetStream(*o.JetStream, &l.m)
		if err != nil {
			for _, q := range l.sinks {
				_ = q.sink.close()
			}
			return nil, err
		}
		l.sinks = append(l.sinks, l.newQueue("jetstream", o.JetStream.Queue, js))
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{l.m.written, l.m.dropped, l.m.truncated, l.m.retries, l.m.queued} {
			if err := o.Registerer.Register(c); err != nil {
				for _, q := range l.sinks {
					_ = q.sink.close()
				}
				return nil, fmt.Errorf("decisionlog: metrics: %w", err)
			}
		}
	}
	for _, q := range l.sinks {
		l.m.queued.WithLabelValues(q.name).Set(float64(cap(q.ch)))
		l.wg.Go(func() { q.run(l) })
	}
	return l, nil
}

// Sinks reports whether any sink (file, http, jetstream) is configured: without one, Log only prepares.
func (l *Logger) Sinks() bool { return len(l.sinks) > 0 }

// Log prepares r (see Record) and offers it to every sink without blocking. It is safe for
// concurrent use, and after Close (the record is then dropped and counted).
func (l *Logger) Log(r *Record) {
	r.Input = l.prepare("input", r.Input, l.o.Input, r)
	r.Result = l.prepare("result", r.Result, l.o.Result, r)
	if len(l.sinks) == 0 {
		return
	}
	if l.closed.Load() {
		for _, q := range l.sinks {
			l.drop(q, "closed", 1)
		}
		return
	}
	full := 0
	for _, q := range l.sinks {
		if len(q.ch) == cap(q.ch) {
			full++
		}
	}
	if full == len(l.sinks) { // every sink behind: do not even encode (a racy test, the send's is not)
		for _, q := range l.sinks {
			l.drop(q, "queue_full", 1)
		}
		return
	}
	line, err := json.Marshal(r)
	if err != nil { // a RawMessage that is not JSON: prepare never leaves one
		for _, q := range l.sinks {
			l.drop(q, "encode_error", 1)
		}
		return
	}
	for _, q := range l.sinks {
		select {
		case q.ch <- line:
		default:
			l.drop(q, "queue_full", 1)
		}
	}
}

// prepare is field's value in the record: nil unless kept, masked, bounded.
func (l *Logger) prepare(field string, v json.RawMessage, keep bool, r *Record) json.RawMessage {
	if !keep || len(v) == 0 {
		return nil
	}
	if len(l.o.Masks) > 0 {
		out, erased := masked(field, v, l.o.Masks)
		if erased {
			for _, m := range l.o.Masks {
				if m.root == field {
					r.Erased = append(r.Erased, m.path)
				}
			}
			if out == nil {
				return nil
			}
		}
		v = out
	}
	v = value(v)
	if len(v) > l.o.MaxValueBytes {
		l.m.truncated.WithLabelValues(field).Inc()
		r.Truncated = append(r.Truncated, field)
		v = truncate(v, l.o.MaxValueBytes)
	}
	return v
}

// drop counts n records dropped by q and reports it, at most once per ReportEvery.
func (l *Logger) drop(q *queue, reason string, n int) {
	l.m.dropped.WithLabelValues(q.name, reason).Add(float64(n))
	total := q.dropped.Add(int64(n))
	now := time.Now().UnixNano()
	last := q.reported.Load()
	if now-last >= int64(l.o.ReportEvery) && q.reported.CompareAndSwap(last, now) {
		l.log.Warn("decision log: records dropped", zap.String("sink", q.name), zap.String("reason", reason),
			zap.Int64("dropped_total", total))
	}
}

// Close stops taking records, lets each sink deliver what it holds, and returns when every
// sink ended. When ctx ends first, the sinks' requests and backoffs are cut, what they still
// hold is dropped (reason shutdown), and ctx's error is returned. A second Close returns
// ErrClosed.
func (l *Logger) Close(ctx context.Context) error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed.Swap(true) {
		return ErrClosed
	}
	close(l.stop)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		l.abort()
		<-done // sinks end promptly once aborted: each step waits on actx
	}
	l.abort()
	return err
}

// sink is one destination. Its methods are called from its queue's goroutine only.
type sink interface {
	// write takes records (JSON objects) in order; it returns how many it delivered, the
	// reason the others were dropped, and whether the sink keeps going.
	write(ctx context.Context, lines [][]byte) (delivered int, dropReason string)
	close() error
}

// queue is a sink's bounded queue and the goroutine that drains it.
type queue struct {
	name     string
	ch       chan []byte
	sink     sink
	batch    int
	flush    time.Duration // http: the longest a batch waits to fill
	poll     time.Duration // file: drain the queue on this clock instead of on each record
	dropped  atomic.Int64
	reported atomic.Int64
}

func (l *Logger) newQueue(name string, size int, s sink) *queue {
	if size <= 0 {
		size = DefaultQueue
	}
	q := &queue{name: name, ch: make(chan []byte, size), sink: s, batch: 256, poll: FilePollInterval}
	switch s := s.(type) {
	case *httpSink:
		q.batch, q.flush, q.poll = s.o.BatchSize, s.o.FlushInterval, 0
	case *jsSink:
		q.batch, q.flush, q.poll = s.o.BatchSize, s.o.FlushInterval, 0
	}
	return q
}

// FilePollInterval is how often the file sink drains its queue into the file: a record
// reaches the file within it. Draining on a clock, not on each record, wakes the sink's
// goroutine and writes to the file 20 times a second whatever the rate of decisions, instead
// of once per record (BENCHMARKS.md, "Decision log"); the queue (decision_log.file.queue)
// must hold what arrives in one interval.
const FilePollInterval = 50 * time.Millisecond

// run drains q into its sink: the file's every FilePollInterval, in batches of 256; the HTTP
// endpoint's and the stream's when a batch is full or FlushInterval passed since its first
// record; all at Close.
func (q *queue) run(l *Logger) {
	defer func() {
		if err := q.sink.close(); err != nil {
			l.log.Warn("decision log: closing the sink", zap.String("sink", q.name), zap.Error(err))
		}
	}()
	batch := make([][]byte, 0, q.batch)
	var timer *time.Timer
	var tick <-chan time.Time
	send := func() {
		if timer != nil {
			timer.Stop()
			timer, tick = nil, nil
		}
		if len(batch) == 0 {
			return
		}
		n, reason := q.sink.write(l.actx, batch)
		l.m.written.WithLabelValues(q.name).Add(float64(n))
		if n < len(batch) {
			if l.actx.Err() != nil {
				reason = "shutdown"
			}
			l.drop(q, reason, len(batch)-n)
		}
		clear(batch)
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case line := <-q.ch:
				batch = append(batch, line)
				if len(batch) >= q.batch {
					send()
				}
			default:
				send()
				return
			}
		}
	}
	if q.poll > 0 {
		t := time.NewTicker(q.poll)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				drain()
			case <-l.stop:
				drain()
				return
			}
		}
	}
	for {
		select {
		case line := <-q.ch:
			batch = append(batch, line)
			switch {
			case len(batch) >= q.batch:
				send()
			case q.flush > 0 && timer == nil:
				timer = time.NewTimer(q.flush)
				tick = timer.C
			}
		case <-tick:
			timer, tick = nil, nil
			send()
		case <-l.stop:
			drain()
			return
		}
	}
}

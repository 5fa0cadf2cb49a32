// Package casetest runs cases files: a plugin's expected behaviour written as YAML (the
// format is CASES.md at the repository root), each case in a fresh host.
//
//	f, err := casetest.Parse(r)
//	casetest.Run(t, wasm, f, casetest.Options{})            // in go test: a subtest per case
//	rep, err := casetest.Execute(ctx, wasm, f, casetest.Options{}) // anywhere else
//
// A case loads the module into a new *host.Host made with Options.HostOptions, runs its
// steps one after the other against the plugin (calls, config pushes, bus deliveries, and
// what the plugin published meanwhile), then closes the host. The module's format is the
// host's business (the native ABI, and the formats given with host.WithFormats in
// Options.HostOptions): casetest never compiles anything itself and imports no format.
package casetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// pluginName is the name of the plugin in each case's host.
const pluginName = "case"

// Options configure a run. The zero value works.
type Options struct {
	// HostOptions are passed to host.New for each case's host. Empty: the cases' hosts share
	// one engine (host.WithEngine) that keeps the module's code for the run (KeepCode), so it
	// compiles once. Given: the caller chooses (host.WithEngine with KeepCode is the fast way;
	// host.WithCacheDir compiles from a disk cache for every case). casetest adds its own
	// host.WithEventHook after them, to see failed deliveries: a hook given here is replaced.
	HostOptions []host.Option
	// Filter selects the cases to run by name; nil runs them all.
	Filter func(name string) bool
}

// Report is the outcome of Execute: one Result per case run, in file order.
type Report struct {
	Results []Result
}

// Result is the outcome of one case.
type Result struct {
	Name string
	// Problems says what did not match, one line each, prefixed by "step N: " in a case with
	// several steps. Empty: the case passed.
	Problems []string
	Duration time.Duration
}

// Passed reports whether the case passed.
func (r Result) Passed() bool { return len(r.Problems) == 0 }

// Counts returns how many cases passed and failed.
func (r Report) Counts() (passed, failed int) {
	for _, c := range r.Results {
		if c.Passed() {
			passed++
		} else {
			failed++
		}
	}
	return passed, failed
}

// Execute runs f's cases against wasm, each in a fresh host, and reports them. Its error is
// for a module that cannot be loaded at all (not a module, not a plugin, an invalid
// capability), or a host that cannot be made; the report then holds the cases run before.
// A case's start error (a rejected config, a trap at start) is compared with its steps'
// expectations instead.
func Execute(ctx context.Context, wasm []byte, f *File, opts Options) (Report, error) {
	var rep Report
	hostOpts, done, err := defaultHostOptions(ctx, wasm, opts.HostOptions)
	if err != nil {
		return rep, err
	}
	defer done()
	for _, c := range f.cases {
		if opts.Filter != nil && !opts.Filter(c.name) {
			continue
		}
		start := time.Now()
		problems, err := runCase(ctx, wasm, c, hostOpts)
		if err != nil {
			return rep, fmt.Errorf("case %q: %w", c.name, err)
		}
		rep.Results = append(rep.Results, Result{Name: c.name, Problems: problems, Duration: time.Since(start)})
	}
	return rep, nil
}

// fatal reports whether a load error says the module cannot be a plugin at all.
func fatal(err error) bool {
	switch host.Kind(err) {
	case "invalid_module", "invalid_abi", "invalid_config", host.KindInvalidPlugin, host.KindClosed:
		return true
	}
	return false
}

// recorder collects what a case's plugin published on the watched topics and the failures of
// deliveries to it.
type recorder struct {
	mu        sync.Mutex
	published []host.Message
	failed    []error
}

func (r *recorder) take() ([]host.Message, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, f := r.published, r.failed
	r.published, r.failed = nil, nil
	return p, f
}

// runCase runs c in a fresh host and returns what did not match (nil: the case passed).
func runCase(ctx context.Context, wasm []byte, c *fileCase, hostOpts []host.Option) ([]string, error) {
	rec := &recorder{}
	hook := host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventDeliveryFailed && e.Plugin == pluginName {
			rec.mu.Lock()
			rec.failed = append(rec.failed, e.Err)
			rec.mu.Unlock()
		}
	})
	h, err := host.New(ctx, append(slices.Clip(hostOpts), hook)...)
	if err != nil {
		return nil, err
	}
	defer h.Close(context.WithoutCancel(ctx))
	for _, topic := range c.watch {
		if _, err := h.Subscribe(topic, func(m host.Message) {
			if m.From == pluginName {
				rec.mu.Lock()
				rec.published = append(rec.published, m)
				rec.mu.Unlock()
			}
		}); err != nil {
			return nil, err
		}
	}
	startErr := h.Load(ctx, host.Plugin{Name: pluginName, Wasm: wasm, Config: c.config,
		Limits: c.limits, Capabilities: c.caps, Subscribe: c.topics})
	if startErr != nil && fatal(startErr) {
		return nil, startErr
	}
	var problems []string
	for n, s := range c.steps {
		var (
			out []byte
			err = startErr
		)
		if startErr == nil {
			out, err = runStep(ctx, h, s, rec)
		}
		p := s.expect.check(s.kind, out, err)
		if p == "" && s.checkPub && startErr == nil {
			got, _ := rec.take()
			p = checkPublished(got, s.published)
		}
		if p != "" {
			if len(c.steps) > 1 {
				p = fmt.Sprintf("step %d: %s", n+1, p)
			}
			problems = append(problems, p)
		}
		if startErr != nil {
			break // every later step would report the same start error
		}
	}
	return problems, nil
}

// runStep runs one step and waits until what it published has reached the recorder.
func runStep(ctx context.Context, h *host.Host, s *step, rec *recorder) ([]byte, error) {
	rec.take() // what earlier steps published without a published expectation
	var (
		out []byte
		err error
	)
	switch s.kind {
	case stepCall:
		out, err = h.Call(ctx, pluginName, s.handler, s.input)
	case stepConfigure:
		err = h.Configure(ctx, pluginName, s.config)
	case stepDeliver:
		if _, err = h.Publish(s.topic, s.data); err != nil {
			return nil, err
		}
	}
	if ferr := h.Flush(ctx); ferr != nil && err == nil {
		err = ferr
	}
	if s.kind == stepDeliver && err == nil {
		rec.mu.Lock()
		failed := rec.failed
		rec.failed = nil
		rec.mu.Unlock()
		err = errors.Join(failed...)
	}
	return out, err
}

// Run runs f's cases against wasm as subtests of t, one t.Run per case named after it; a
// case that does not match its expectations fails its subtest with one line per problem. A
// module that cannot be loaded fails t.
func Run(t testing.TB, wasm []byte, f *File, opts Options) {
	t.Helper()
	ctx := context.Background()
	hostOpts, done, err := defaultHostOptions(ctx, wasm, opts.HostOptions)
	if err != nil {
		t.Fatalf("casetest: %v", err)
	}
	defer done()
	for _, c := range f.cases {
		if opts.Filter != nil && !opts.Filter(c.name) {
			continue
		}
		subtest(t, c.name, func(t testing.TB) {
			t.Helper()
			problems, err := runCase(ctx, wasm, c, hostOpts)
			if err != nil {
				t.Fatalf("case %q: %v", c.name, err)
			}
			if len(problems) > 0 {
				t.Errorf("case %q:\n\t%s", c.name, strings.Join(problems, "\n\t"))
			}
		})
	}
}

// subtest runs fn as a subtest when t can have them (*testing.T, *testing.B), else on t.
func subtest(t testing.TB, name string, fn func(testing.TB)) {
	switch tt := t.(type) {
	case *testing.T:
		tt.Run(name, func(t *testing.T) { fn(t) })
	case *testing.B:
		tt.Run(name, func(b *testing.B) { fn(b) })
	default:
		fn(t)
	}
}

// defaultHostOptions returns opts, or, when there are none, one engine for every case's host
// (host.WithEngine) that holds wasm's code for the whole run: each case then instantiates the
// code instead of decoding and compiling the module again (about a second per case for a Go
// plugin under the race detector). done closes what it made.
func defaultHostOptions(ctx context.Context, wasm []byte, opts []host.Option) ([]host.Option, func(), error) {
	if len(opts) > 0 {
		return opts, func() {}, nil
	}
	e, err := sandbox.NewEngine(ctx)
	if err != nil {
		return nil, nil, err
	}
	pin := KeepCode(ctx, e, wasm)
	return []host.Option{host.WithEngine(e)}, func() {
		pin()
		_ = e.Close(context.WithoutCancel(ctx))
	}, nil
}

// KeepCode compiles wasm (with the default limits) on e and keeps the code until the returned
// function is called, so that hosts made one after another on e (host.WithEngine), one per
// case, share it instead of compiling it again when the previous host closed. Bytes that do
// not compile are left for the hosts' Load to report.
func KeepCode(ctx context.Context, e *sandbox.Engine, wasm []byte) (release func()) {
	code, err := e.Load(ctx, wasm, sandbox.Config{})
	if err != nil {
		return func() {}
	}
	return func() { _ = code.Close(context.WithoutCancel(ctx)) }
}

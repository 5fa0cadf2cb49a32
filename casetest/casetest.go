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
// Options.HostOptions): casetest imports no format.
//
// A case marked instance: true runs against one sandbox.Instance of the native ABI instead,
// compiled on Options.Engine: no host restarts it after a fatal error, so a later step sees
// the same error from the same instance, and its stores stay readable. Steps may check the
// instance's stores (events, metrics, applied config) as well as outputs and errors.
package casetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
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

// storesWait bounds how long a step's store read waits for a busy instance to be free.
const storesWait = 5 * time.Second

// Options configure a run. The zero value works.
type Options struct {
	// HostOptions are passed to host.New for each case's host. Empty: the cases' hosts share
	// one engine (host.WithEngine) that keeps the module's code for the run (Engine.Keep), so
	// it compiles once. Given: the caller chooses (host.WithEngine with sandbox.Engine.Keep is
	// the fast way;
	// host.WithCacheDir compiles from a disk cache for every case). casetest adds its own
	// host.WithEventHook after them, to see failed deliveries: a hook given here is replaced.
	HostOptions []host.Option
	// Engine is the engine of the cases that run against one sandbox instance (instance:
	// true in the file) and, when HostOptions is empty, of every case's host. Run and Execute
	// keep the module's code on it for the run, once per memory limit the cases use. Nil: one
	// engine of the run's own, closed at its end.
	Engine *sandbox.Engine
	// HostFuncs are the host functions offered to the plugin: to each case's host
	// (host.WithHostFunctions, after HostOptions) and to each instance case's module. A case
	// grants them by name (capabilities.host_functions); the others are denied.
	HostFuncs []sandbox.HostFunc
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
	env, err := newEnv(ctx, wasm, f, opts)
	if err != nil {
		return rep, err
	}
	defer env.close()
	for _, c := range f.cases {
		if opts.Filter != nil && !opts.Filter(c.name) {
			continue
		}
		start := time.Now()
		problems, err := env.runCase(ctx, wasm, c)
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

// runCase runs c in a fresh host, or in a fresh instance, and returns what did not match
// (nil: the case passed).
func (env *env) runCase(ctx context.Context, wasm []byte, c *fileCase) ([]string, error) {
	if c.instance {
		return env.runInstanceCase(ctx, wasm, c)
	}
	hostOpts := env.hostOpts
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
	return runSteps(c, startErr, func(s *step) ([]byte, error) { return runStep(ctx, h, s, rec) },
		func() []host.Message { got, _ := rec.take(); return got },
		func() (stores, error) {
			// A step's operation may leave the instance busy a moment after it returned
			// (after a rejected configure the host puts the last good config back): a
			// read that finds it busy is tried again, within storesWait.
			var ii host.InstanceInfo
			for deadline := time.Now().Add(storesWait); ; {
				pi, err := h.Plugin(pluginName)
				if err != nil {
					return stores{}, err
				}
				if len(pi.Instances) == 0 || !pi.Instances[0].Up {
					return stores{}, errors.New("no instance up")
				}
				ii = pi.Instances[0]
				if ii.Read || !errors.Is(ii.ReadErr, sandbox.ErrBusy) || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond) // wallclock: nothing signals that the instance is free
			}
			if !ii.Read {
				return stores{}, ii.ReadErr
			}
			if ii.Skipped > 0 || ii.Events.Remaining > 0 {
				return stores{}, fmt.Errorf("records over the host's read budget: %w", sandbox.ErrReadBudget)
			}
			return stores{events: ii.Events.Events, metrics: ii.Telemetry, applied: ii.AppliedConfig}, nil
		}), nil
}

// stores is what a step's store expectations are checked against: one reading of the
// instance's event log, metrics and applied config.
type stores struct {
	events  []sandbox.Event
	metrics []sandbox.Metric
	applied map[string]string
}

// runSteps runs c's steps with do, after a start that returned startErr, and checks each
// step's expectations: its own, then what it published (taken with published), then the
// instance's stores (read with stores).
func runSteps(c *fileCase, startErr error, do func(*step) ([]byte, error), published func() []host.Message,
	read func() (stores, error)) []string {
	var problems []string
	for n, s := range c.steps {
		var (
			out []byte
			err = startErr
		)
		if startErr == nil {
			out, err = do(s)
		}
		p := s.expect.check(s.kind, out, err)
		if p == "" && s.checkPub && startErr == nil {
			p = checkPublished(published(), s.published)
		}
		if p == "" && (s.checkEvts || s.checkMets || s.checkApplied) {
			p = checkStores(s, startErr, read)
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
	return problems
}

// checkStores compares the instance's event log and metrics with the step's.
func checkStores(s *step, startErr error, read func() (stores, error)) string {
	if startErr != nil {
		return "stores: the plugin did not start"
	}
	st, err := read()
	if err != nil {
		return "stores: cannot read the instance's stores: " + oneLine(err.Error())
	}
	if s.checkEvts {
		if p := checkEvents(st.events, s.events); p != "" {
			return p
		}
	}
	if s.checkMets {
		if p := checkMetrics(st.metrics, s.metrics); p != "" {
			return p
		}
	}
	if s.checkApplied && !maps.Equal(st.applied, s.applied) {
		return fmt.Sprintf("applied_config: got %v, want %v", st.applied, s.applied)
	}
	return ""
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
	env, err := newEnv(ctx, wasm, f, opts)
	if err != nil {
		t.Fatalf("casetest: %v", err)
	}
	defer env.close()
	for _, c := range f.cases {
		if opts.Filter != nil && !opts.Filter(c.name) {
			continue
		}
		subtest(t, c.name, func(t testing.TB) {
			t.Helper()
			problems, err := env.runCase(ctx, wasm, c)
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

// env is what a run's cases share: the hosts' options and the engine.
type env struct {
	hostOpts  []host.Option
	engine    *sandbox.Engine // of the instance cases; nil when there are none
	hostFuncs []sandbox.HostFunc
	release   []func()
}

func (env *env) close() {
	for _, r := range slices.Backward(env.release) {
		r()
	}
}

// newEnv makes the run's engine if it needs one of its own (Options.Engine is nil and either
// the hosts get no options or some case runs in an instance), and keeps wasm's code on the
// engine it uses, once per memory limit of the cases, for the whole run: each case then
// instantiates the code instead of decoding and compiling the module again (about a second
// per case for a Go plugin under the race detector).
func newEnv(ctx context.Context, wasm []byte, f *File, opts Options) (*env, error) {
	env := &env{hostOpts: slices.Clip(opts.HostOptions), engine: opts.Engine, hostFuncs: opts.HostFuncs}
	instances := slices.ContainsFunc(f.cases, func(c *fileCase) bool { return c.instance })
	hostsShare := len(opts.HostOptions) == 0
	if env.engine == nil && (hostsShare || instances) {
		e, err := sandbox.NewEngine(ctx)
		if err != nil {
			return nil, err
		}
		env.engine = e
		env.release = append(env.release, func() { _ = e.Close(context.WithoutCancel(ctx)) })
	}
	if hostsShare {
		env.hostOpts = []host.Option{host.WithEngine(env.engine)}
	}
	if len(opts.HostFuncs) > 0 {
		env.hostOpts = append(env.hostOpts, host.WithHostFunctions(opts.HostFuncs...))
	}
	if env.engine != nil {
		var pages []uint32
		for _, c := range f.cases {
			if !hostsShare && !c.instance {
				continue
			}
			p := c.limits.WithDefaults().MemoryPages
			if !slices.Contains(pages, p) {
				pages = append(pages, p)
				env.release = append(env.release, keepCode(ctx, env.engine, wasm, sandbox.Limits{MemoryPages: p}))
			}
		}
	}
	return env, nil
}

// keepCode keeps wasm's code for memory limit l on e for the run (sandbox.Engine.Keep); bytes
// that do not load are left for the cases' hosts and instances to report.
func keepCode(ctx context.Context, e *sandbox.Engine, wasm []byte, l sandbox.Limits) (release func()) {
	release, err := e.Keep(ctx, wasm, sandbox.Config{Limits: l})
	if err != nil {
		return func() {}
	}
	return release
}

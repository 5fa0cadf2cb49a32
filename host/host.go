package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Host is one service context: an engine with its compiled-module cache, a root supervisor,
// a registry of plugins, an event bus, a metrics registry, a logger and a clock. Nothing is
// shared with another Host, except an engine given to both with WithEngine (compiled code,
// which holds no state).
//
// Concurrency: every method is safe for concurrent use. Load, Unload, Reset and Close are
// serialised with each other; Call, Configure, Publish and the introspection methods are not
// serialised with anything. After Close every method returns ErrClosed.
type Host struct {
	opts      options
	log       *zap.Logger
	engine    *sandbox.Engine
	ownEngine bool             // engine was made by New, and is closed by Close
	formats   []sandbox.Format // asked after the engine's (WithFormats with WithEngine)
	root      *supervisor.Supervisor
	plugins   atomic.Pointer[registry] // copy-on-write under life: lock-free lookups
	bus       bus
	poison    poisonTable
	metrics   *prometheus.Registry
	clk       supervisor.Clock // opts.clock, or real time

	life   sync.Mutex // Load, Unload, Reset, Close
	order  []*plugin  // load order, under life
	closed atomic.Bool

	closeOnce sync.Once
	closeErr  error

	incarnation atomic.Uint64
	live        atomic.Int64 // instances started and not yet closed
	cfgKick     chan struct{}
}

// New starts a host: its engine, its root supervisor and the supervised tasks that retry
// config pushes and bus deliveries.
func New(ctx context.Context, opts ...Option) (*Host, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	h := &Host{opts: o, log: o.log, cfgKick: make(chan struct{}, 1), metrics: prometheus.NewRegistry(), clk: o.clock}
	if h.clk == nil {
		h.clk = realClock{}
	}
	h.bus.init(h, o.busBuffer)
	h.poison.init(h, o.poison)
	h.plugins.Store(newRegistry(nil))

	engine, err := o.engine, error(nil)
	if engine != nil {
		// The caller's engine: its compilation cache and deadline resolution apply, and an
		// option that would set them for this host alone is a mistake, not a preference.
		if o.cache != nil || o.resolution > 0 {
			return nil, fmt.Errorf("host: WithCompilationCache or WithDeadlineResolution with WithEngine: the engine's own apply: %w", sandbox.ErrInvalidConfig)
		}
		h.formats = o.formats
	} else {
		eopts := []sandbox.Option{sandbox.WithLogger(o.log), sandbox.WithFormats(o.formats...)}
		if o.cacheDir != "" {
			eopts = append(eopts, sandbox.WithCacheDir(o.cacheDir))
		}
		if o.cache != nil {
			eopts = append(eopts, sandbox.WithCompilationCache(o.cache))
		}
		if o.resolution > 0 {
			eopts = append(eopts, sandbox.WithDeadlineResolution(o.resolution))
		}
		if engine, err = sandbox.NewEngine(ctx, eopts...); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
		h.ownEngine = true
	}
	h.engine = engine

	rc := o.root
	rc.Name, rc.Strategy, rc.Clock, rc.EventHook = "host", supervisor.OneForOne, h.clk, h.supervisorHook
	rc.EventFilter = h.supervisorWants
	root, err := supervisor.New(rc,
		supervisor.Spec{ID: "task:config", Start: supervisor.Func(h.configLoop)},
		supervisor.Spec{ID: "task:bus", Start: supervisor.Func(h.bus.loop)},
	)
	if err == nil {
		err = root.Start(ctx)
	}
	if err != nil {
		if h.ownEngine {
			_ = engine.Close(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("host: %w", err)
	}
	h.root = root
	h.metrics.MustRegister(collector{h})
	return h, nil
}

// Close unloads every plugin through the supervisor (dependents first), stops the host's
// tasks and closes the engine (unless it came from WithEngine: its owner closes it). A closed
// host keeps almost nothing reachable: holding one (a test's cleanup does) does not hold its
// plugins' code or memories. It is idempotent: later calls return the first result. It
// returns the supervisor's exit reason if it had given up, ctx's error if the stop did not
// finish in time, and ErrLeak if an instance outlived its supervisor.
func (h *Host) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		h.life.Lock()
		defer h.life.Unlock()
		h.closed.Store(true)
		var errs []error
		if err := h.root.Stop(ctx); err != nil {
			errs = append(errs, err)
		} else if rerr := h.root.Err(); rerr != nil && !errors.Is(rerr, supervisor.ErrShutdown) {
			errs = append(errs, fmt.Errorf("host: supervisor: %w", rerr))
		}
		for _, p := range h.order {
			h.unregister(p.name)
			close(p.gone)
			h.bus.removePlugin(p)
			p.dropPrepared(ctx)
			_ = p.mod().Close(ctx)
		}
		h.order = nil
		if h.ownEngine {
			if err := h.engine.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if n := h.live.Load(); n != 0 {
			errs = append(errs, fmt.Errorf("%w: %d", ErrLeak, n))
		}
		h.closeErr = errors.Join(errs...)
	})
	return h.closeErr
}

// Done is closed once the host has stopped: after Close, or when its root supervisor gave up
// (a plugin with OnFailure Escalate kept failing past the root's restart intensity; a
// quarantined plugin never stops the host). Err says why.
func (h *Host) Done() <-chan struct{} { return h.root.Done() }

// Err is nil while the host runs, supervisor.ErrShutdown after Close, and the root
// supervisor's *supervisor.IntensityError if it gave up.
func (h *Host) Err() error { return h.root.Err() }

// Metrics returns the host's own Prometheus registry: host metrics and every instance's
// telemetry, read from guest memory at each scrape. Serve it with promhttp.HandlerFor.
func (h *Host) Metrics() *prometheus.Registry { return h.metrics }

// Call runs handler on input in a free instance of the named plugin and returns a copy of the
// output. With no instance free (all busy or restarting) it waits within ctx, then returns an
// error wrapping ErrNoInstance and the context's error; so does a call whose context had
// ended before it entered an instance: it did not run. An error that ended the instance
// (sandbox.Fatal) is returned as is, wrapped; the supervisor replaces the instance, and
// later calls go to its successor. Two refusals never enter an instance: a quarantined
// plugin's calls fail at once with a *FailedError (ErrPluginFailed), and an input that has
// ended instances too often (WithPoisonInput) gets a *PoisonInputError (ErrPoisonInput).
func (h *Host) Call(ctx context.Context, name, handler string, input []byte) ([]byte, error) {
	return h.CallAppend(ctx, name, handler, input, nil)
}

// CallAppend is Call appending the output to dst: a caller that reuses dst makes no
// allocation.
func (h *Host) CallAppend(ctx context.Context, name, handler string, input, dst []byte) ([]byte, error) {
	out, _, err := h.callAppend(ctx, name, handler, input, dst, false)
	return out, err
}

// CallThen is CallAppend for a caller that delivers the result somewhere before it does
// anything else: it calls then once, with what CallAppend would have returned, and returns
// when then has. Under InstancePerCall the instance's reset then runs on the caller's
// goroutine, after then returns and before CallThen does, instead of on a goroutine started
// for it after the call: a server that writes its answer in then answers as soon as the call
// is done, and no idle CPU is woken for the reset, which costs an idle machine's caller more
// than the reset saves it (BenchmarkInstancePerCall, per-call-then; BenchmarkSpawnIdle). The
// caller's goroutine pays the reset instead. Under SharedInstance, CallThen is CallAppend
// followed by then.
//
// While then runs, the instance is taken: it serves no other operation until its reset is
// done. then must therefore not wait for another call to the same plugin, which may need that
// instance. If then panics, the reset still runs, and the panic goes on.
func (h *Host) CallThen(ctx context.Context, name, handler string, input, dst []byte, then func(out []byte, err error)) {
	out, m, err := h.callAppend(ctx, name, handler, input, dst, true)
	if m != nil {
		defer m.p.recycle(m, true)
	}
	then(out, err)
}

// callAppend is CallAppend. With later, an instance that needs a reset after the call
// (InstancePerCall) is returned for the caller to reset (plugin.recycle), instead of being
// reset on a goroutine of its own.
func (h *Host) callAppend(ctx context.Context, name, handler string, input, dst []byte, later bool) ([]byte, *member, error) {
	p := h.plugins.Load().find(name)
	if p == nil {
		return dst, nil, h.notFound(name)
	}
	if p.poisoned.Load() != 0 { // the healthy path pays this load only
		if err := h.poison.refuse(p, handler, input); err != nil {
			p.stats.count(errPoison)
			return dst, nil, fmt.Errorf("plugin %q: call %q: %w", name, handler, err)
		}
	}
	// The common case inline: the first member tried takes the call; p.call tries the others
	// and waits. A member asked to stop is not skipped here: its instance refuses new
	// operations once retired, and a call that slips in before is served (see after).
	// Latency is sampled by the instance (sandbox.Config.OnCall).
	first := 0
	var near *int
	if len(p.slots) > 1 {
		near = p.nearSlot()
		first = *near
	}
	if m := p.slots[first].m.Load(); m != nil {
		if r := m.take(); r != nil {
			out, err := r.CallAppend(ctx, handler, input, dst)
			if err == nil && near == nil && m.state.Load() == stLive && p.quiet(m) && r.Err() == nil {
				return out, nil, nil // the common case: nothing for after to do
			}
			if err == nil || !beforeEntry(err) && !p.notEntered(m, err) {
				return p.called(m, near, name, handler, input, out, err, later)
			}
			m.untake(r)
		}
	}
	m, out, err := p.call(ctx, first, handler, input, dst)
	if m == nil {
		if errors.Is(err, ErrPluginFailed) {
			p.stats.count(errFailed)
		} else {
			p.stats.count(errNoInstance)
		}
		return dst, nil, err
	}
	return p.called(m, near, name, handler, input, out, err, later)
}

// called finishes a call that m served: it records the slot used for this P, hands on what
// waited for the instance, and counts and wraps an error, recording an input that ended the
// instance in the poison table. With later, it returns m if m's instance is to be reset
// (InstancePerCall), for the caller to start the reset (see callAppend).
func (p *plugin) called(m *member, near *int, name, handler string, input, out []byte, err error, later bool) ([]byte, *member, error) {
	if near != nil {
		*near = m.idx
		p.near.Put(near)
	}
	if err == nil && m.state.Load() == stLive && p.quiet(m) && m.in().Err() == nil {
		return out, nil, nil // nothing for after to do
	}
	var reset *member
	if later && p.isolation == InstancePerCall {
		p.after(m, err)
		reset = m
	} else {
		p.afterUse(m, err)
	}
	if err != nil {
		p.stats.count(errKind(err))
		if poisonous(err) {
			p.h.poison.record(p, handler, input)
		}
		return out, reset, fmt.Errorf("plugin %q: call %q: %w", name, handler, err)
	}
	return out, reset, nil
}

// realClock is the host's clock when WithClock is not given.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) supervisor.Timer { return time.AfterFunc(d, f) }

// nearSlot returns the slot that calls on the current P used last: a per-P hint, kept in a
// sync.Pool, so that goroutines running on different Ps use different instances and each
// instance's state word and memory stay in one CPU's cache. Starting every call at slot 0
// made two goroutines fight over one state word, and starting at a random slot moved each
// instance between CPUs on half the calls: either way a 2-instance pool served two
// goroutines at half the rate of one (BenchmarkPool2). A P with no hint yet (or after a GC
// emptied the pool) gets the next slot in turn.
func (p *plugin) nearSlot() *int {
	if h, ok := p.near.Get().(*int); ok {
		return h
	}
	h := new(int)
	*h = int(p.spread.Add(1)-1) % len(p.slots)
	return h
}

func (h *Host) lookup(name string) (*plugin, error) {
	if p := h.plugins.Load().find(name); p != nil {
		return p, nil
	}
	return nil, h.notFound(name)
}

func (h *Host) notFound(name string) error {
	if h.closed.Load() {
		return fmt.Errorf("plugin %q: %w", name, ErrClosed)
	}
	return fmt.Errorf("plugin %q: %w", name, ErrNotFound)
}

func (h *Host) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// snapshot lists the loaded plugins.
func (h *Host) snapshot() []*plugin {
	m := h.plugins.Load().byName
	ps := make([]*plugin, 0, len(m))
	for _, p := range m {
		ps = append(ps, p)
	}
	return ps
}

// register adds p under its name unless the name is taken. The caller holds life.
func (h *Host) register(p *plugin) bool {
	old := h.plugins.Load().byName
	if old[p.name] != nil {
		return false
	}
	m := make(map[string]*plugin, len(old)+1)
	maps.Copy(m, old)
	m[p.name] = p
	h.plugins.Store(newRegistry(m))
	return true
}

// unregister removes name. The caller holds life.
func (h *Host) unregister(name string) {
	m := maps.Clone(h.plugins.Load().byName)
	delete(m, name)
	h.plugins.Store(newRegistry(m))
}

// registry is one version of the name → plugin map, never modified once published. With
// few plugins, find compares names in a slice rather than hashing: the hash and probe of a
// map lookup were a third of Host.Call's own cost (BenchmarkCall64).
type registry struct {
	byName map[string]*plugin
	few    []*plugin // every plugin, when there are at most fewPlugins
}

const fewPlugins = 4

func newRegistry(m map[string]*plugin) *registry {
	r := &registry{byName: m}
	if r.byName == nil {
		r.byName = map[string]*plugin{}
	}
	if len(m) <= fewPlugins {
		r.few = slices.Collect(maps.Values(m))
	}
	return r
}

func (r *registry) find(name string) *plugin {
	if len(r.byName) <= fewPlugins {
		for _, p := range r.few {
			if p.name == name {
				return p
			}
		}
		return nil
	}
	return r.byName[name]
}

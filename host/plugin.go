package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Plugin describes a plugin to load. Name and one of Wasm or Path are required; every other
// field's zero value works.
type Plugin struct {
	// Name is the plugin's name in this host's registry: any non-empty string, for example
	// "tenant-42/authz". Another host may use the same name for something else.
	Name string
	// Wasm is the module's bytes. Exactly one of Wasm and Path is set.
	Wasm []byte
	// Path is a file holding the module.
	Path string
	// Config is the initial desired config, pushed into every instance at start.
	Config map[string]string
	// Limits bound each instance. Zero fields take sandbox's defaults.
	Limits sandbox.Limits
	// Capabilities grants access beyond the sandbox; the zero value grants nothing.
	Capabilities sandbox.Capabilities
	// NoSnapshot makes every instance run the plugin's start sequence itself instead of
	// starting from a snapshot of the first one's (sandbox.Config.NoSnapshot): for a plugin
	// whose init must see its own clock, random numbers or environment at each start.
	NoSnapshot bool
	// Instances is the pool size. Zero means 1. A call goes to a free instance; with none
	// free it waits within the caller's context.
	Instances int
	// Restart says when a failed instance is replaced: supervisor.Permanent (default, always),
	// Transient (after an abnormal end; every fatal error is abnormal) or Temporary (never:
	// the pool shrinks).
	Restart supervisor.RestartType
	// DependsOn names plugins of this host that must be loaded and ready first. Restarting
	// one of them as a whole (Reset, its recovery from quarantine, or under Escalate its
	// supervisor giving up) restarts this plugin after it. While one of them is quarantined,
	// this plugin keeps running.
	DependsOn []string
	// Subscribe lists bus topics delivered to the plugin's wasmvisor_deliver, each message
	// to one free instance of the pool.
	Subscribe []string
	// OnFailure says what happens when the plugin's instances fail more often than its
	// restart intensity allows (WithRestartIntensity): Quarantine (the zero value: the
	// plugin fails fast and is retried in the background; the host never stops because of
	// it) or Escalate (OTP: the host's root supervisor restarts it, and stops the host past
	// its own intensity). A call ended by its caller (cancelled, or past the caller's own
	// deadline) ends its instance but is not a failure and never counts.
	OnFailure FailureMode
	// RestartPolicy is this plugin's own restart intensity and backoff; its zero value
	// takes the host's (WithRestartIntensity, no backoff). Replace keeps it.
	RestartPolicy RestartPolicy
	// Isolation says whether an instance serves many calls (SharedInstance, the zero value)
	// or one (InstancePerCall: every call and bus delivery runs in a fresh instance, replaced
	// in the background after it; see Isolation). Replace keeps it.
	Isolation Isolation
}

// RestartPolicy bounds the restarts of one plugin's instances, in place of the host's
// WithRestartIntensity. Each zero field takes the host's value; a negative one is refused by
// Load with ErrInvalidPlugin (except Intensity supervisor.NoRestarts). It applies to the
// plugin's own supervisor: past it, the plugin is quarantined or, under Escalate, restarted
// by the host's root supervisor, whose intensity stays the host's.
type RestartPolicy struct {
	// Intensity is how many restarts of the plugin's instances are allowed within Period;
	// one more and the plugin fails (see Plugin.OnFailure). Zero: the host's (default 3);
	// supervisor.NoRestarts: none, the first failure fails the plugin.
	Intensity int
	// Period is the sliding window of Intensity. Zero: the host's (default 5 s).
	Period time.Duration
	// MinUptime is supervisor.Config.MinUptime: more than Intensity consecutive restarts of
	// instances that lived less than it fail the plugin whatever the Period. Zero: the host's.
	MinUptime time.Duration
	// Backoff delays the restart of a failed instance (supervisor.Spec.Backoff). The zero
	// value restarts at once, the host's default. Restarts count towards Intensity when they
	// are decided, before the delay.
	Backoff supervisor.Backoff
}

// poolConfig is the pool supervisor's configuration: the host's, overridden by the
// plugin's restart policy.
func (r RestartPolicy) poolConfig(host supervisor.Config) supervisor.Config {
	if r.Intensity != 0 {
		host.Intensity = r.Intensity
	}
	if r.Period != 0 {
		host.Period = r.Period
	}
	if r.MinUptime != 0 {
		host.MinUptime = r.MinUptime
	}
	return host
}

// invalid says what is wrong with r, or "".
func (r RestartPolicy) invalid() string {
	b := r.Backoff
	switch {
	case r.Intensity < 0 && r.Intensity != supervisor.NoRestarts:
		return fmt.Sprintf("negative RestartPolicy.Intensity %d (supervisor.NoRestarts for none)", r.Intensity)
	case r.Period < 0:
		return fmt.Sprintf("negative RestartPolicy.Period %v", r.Period)
	case r.MinUptime < 0:
		return fmt.Sprintf("negative RestartPolicy.MinUptime %v", r.MinUptime)
	case b.Initial < 0 || b.Max < 0:
		return "negative RestartPolicy.Backoff delay"
	case b.Max > 0 && b.Max < b.Initial:
		return "RestartPolicy.Backoff.Max below Initial"
	case !(b.Jitter >= 0 && b.Jitter <= 1):
		return "RestartPolicy.Backoff.Jitter outside [0, 1]"
	}
	return ""
}

// plugin is a loaded Plugin: its module, its pool of slots and its desired config.
type plugin struct {
	h    *Host
	name string
	spec Plugin
	modp atomic.Pointer[moduleRef] // swapped by Replace
	id   string                    // the root supervisor's child ID

	prepared []atomic.Pointer[preparedInstance] // set by Replace, taken by the slot's next start

	slots    []slot
	near     sync.Pool // of *int: the slot callers on this P used last (see Host.CallAppend)
	spread   atomic.Uint32
	waiters  atomic.Int32
	poisoned atomic.Int32  // entries of the host's poison table refusing inputs of this plugin
	wake     chan struct{} // capacity 1
	gone     chan struct{} // closed when unloaded
	live     atomic.Int64
	pending  atomic.Int64 // bus messages waiting for this plugin

	cfgMu   sync.Mutex
	desired atomic.Pointer[desiredConfig]
	version atomic.Uint64  // desired.version, for a cheap check after each operation
	good    *desiredConfig // the last config an instance accepted, under cfgMu

	chMu sync.Mutex
	ch   chan struct{} // closed on every member or config change; made when a waiter asks (nil until then)

	tree     atomic.Pointer[supervisor.Supervisor] // the pool's supervisor; nil while down
	restarts atomic.Uint64
	resets   atomic.Uint64 // instances replaced after serving their call (InstancePerCall)
	rewinds  atomic.Uint64 // of them, rewound in place

	isolation Isolation // spec.Isolation, read on every call
	stats     stats
	series    guestSeries     // guest series caps and store counters: see stores.go
	guest     guestState      // guest telemetry and events across instances: see guest.go
	drops     outputDrops     // of ended instances; see collectOutput
	subs      []*Subscription // under h.bus.mu

	// Containment (see quarantine.go).
	contain     atomic.Pointer[containment] // nil while running
	up          atomic.Bool                 // the pool started once: a later failed start quarantines
	retry       chan struct{}               // capacity 1: probe now
	qmu         sync.Mutex
	failures    int       // under qmu
	recoveredAt time.Time // under qmu
}

// changed returns a channel that the next member or config change closes. A waiter takes it
// before it checks what it waits for.
func (p *plugin) changed() chan struct{} {
	p.chMu.Lock()
	defer p.chMu.Unlock()
	if p.ch == nil {
		p.ch = make(chan struct{})
	}
	return p.ch
}

// notify closes the channel changed returned, if any: a change nobody waits for (every
// restart) makes none.
func (p *plugin) notify() {
	p.chMu.Lock()
	if p.ch != nil {
		close(p.ch)
		p.ch = nil
	}
	p.chMu.Unlock()
}

// Load compiles a plugin, registers its name and starts its instances under the host's
// supervisor. It returns once every instance is ready, after the plugins it depends on.
// A name already loaded gets ErrAlreadyLoaded.
func (h *Host) Load(ctx context.Context, spec Plugin) error {
	if err := validate(&spec); err != nil {
		return err
	}
	wasm := spec.Wasm
	if spec.Path != "" {
		b, err := os.ReadFile(spec.Path)
		if err != nil {
			return pluginErr(spec.Name, "load", err)
		}
		wasm = b
	}
	h.life.Lock()
	defer h.life.Unlock()
	if h.closed.Load() {
		return pluginErr(spec.Name, "load", ErrClosed)
	}
	for _, dep := range spec.DependsOn {
		if _, err := h.lookup(dep); err != nil {
			return pluginErr(spec.Name, "load", fmt.Errorf("%w: %q is not loaded", ErrDependency, dep))
		}
	}
	p := &plugin{h: h, name: spec.Name, spec: spec, id: "plugin:" + spec.Name, isolation: spec.Isolation,
		slots: make([]slot, spec.Instances), wake: make(chan struct{}, 1), gone: make(chan struct{}),
		prepared: make([]atomic.Pointer[preparedInstance], spec.Instances),
		retry:    make(chan struct{}, 1)}
	d := &desiredConfig{cfg: maps.Clone(spec.Config), version: 1}
	p.desired.Store(d)
	p.version.Store(1)
	p.good = d
	if !h.register(p) {
		return pluginErr(spec.Name, "load", ErrAlreadyLoaded)
	}
	fail := func(err error) error {
		h.bus.removePlugin(p)
		h.unregister(spec.Name)
		close(p.gone)
		if m := p.mod(); m != nil {
			_ = m.Close(context.WithoutCancel(ctx))
		}
		return pluginErr(spec.Name, "load", err)
	}
	mod, err := h.compile(ctx, wasm, p.sandboxConfig(spec))
	if err != nil {
		return fail(err)
	}
	p.modp.Store(&moduleRef{mod})
	h.bus.addPlugin(p) // subscribed before the first instance can publish or be delivered to
	deps := make([]string, len(spec.DependsOn))
	for i, dep := range spec.DependsOn {
		deps[i] = "plugin:" + dep
	}
	if _, err := h.root.StartChild(ctx, supervisor.Spec{ID: p.id, Start: supervisor.Func(p.run),
		Type: supervisor.TypeSupervisor, DependsOn: deps}); err != nil {
		if errors.Is(err, supervisor.ErrStopped) {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return fail(err)
	}
	h.order = append(h.order, p)
	h.emit(Event{Kind: EventLoaded, Plugin: p.name})
	return nil
}

func validate(spec *Plugin) error {
	bad := func(why string) error {
		return pluginErr(spec.Name, "load", fmt.Errorf("%w: %s", ErrInvalidPlugin, why))
	}
	switch {
	case spec.Name == "":
		return bad("no name")
	case (spec.Wasm == nil) == (spec.Path == ""):
		return bad("exactly one of Wasm and Path must be set")
	case spec.Instances < 0:
		return bad("negative Instances")
	case slices.Contains(spec.DependsOn, spec.Name):
		return bad("depends on itself")
	case spec.OnFailure > Escalate:
		return bad("unknown OnFailure " + spec.OnFailure.String())
	case spec.Isolation > InstancePerCall:
		return bad("unknown Isolation " + spec.Isolation.String())
	}
	if why := spec.RestartPolicy.invalid(); why != "" {
		return bad(why)
	}
	if spec.Instances == 0 {
		spec.Instances = 1
	}
	spec.DependsOn = slices.Clone(spec.DependsOn)
	spec.Subscribe = slices.Clone(spec.Subscribe)
	return nil
}

// Unload stops the plugin's instances through the supervisor, removes it and frees its name:
// when Unload returns, Load may use the name again. A plugin others depend on gets
// ErrDependency.
func (h *Host) Unload(ctx context.Context, name string) error {
	h.life.Lock()
	defer h.life.Unlock()
	p, err := h.lookup(name)
	if err != nil {
		return err
	}
	for _, q := range h.order {
		if slices.Contains(q.spec.DependsOn, name) {
			return pluginErr(name, "unload", fmt.Errorf("%w: %q depends on it", ErrDependency, q.name))
		}
	}
	h.bus.removePlugin(p) // its subscriptions end before its instances do
	if err := h.root.TerminateChild(ctx, p.id); err != nil {
		return pluginErr(name, "unload", err)
	}
	if err := h.root.DeleteChild(ctx, p.id); err != nil {
		return pluginErr(name, "unload", err)
	}
	h.unregister(name)
	close(p.gone)
	h.order = slices.DeleteFunc(h.order, func(q *plugin) bool { return q == p })
	h.poison.drop(p)
	p.dropPrepared(ctx)
	err = p.mod().Close(ctx)
	h.emit(Event{Kind: EventUnloaded, Plugin: name})
	if err != nil {
		return pluginErr(name, "unload", err)
	}
	return nil
}

// Reset replaces every instance of the plugin with a fresh one holding the desired config,
// and restarts the plugins that depend on it, after it. It goes through the supervisor
// (terminate, then restart), so it does not count as a crash.
func (h *Host) Reset(ctx context.Context, name string) error {
	h.life.Lock()
	defer h.life.Unlock()
	p, err := h.lookup(name)
	if err != nil {
		return err
	}
	if err := h.root.TerminateChild(ctx, p.id); err != nil {
		return pluginErr(name, "reset", err)
	}
	// The root stopped the dependents first; start the plugin, then them, in load order.
	for _, q := range h.order {
		if q != p && !h.dependsOn(q, name) {
			continue
		}
		if _, err := h.root.RestartChild(ctx, q.id); err != nil && !errors.Is(err, supervisor.ErrRunning) {
			return pluginErr(name, "reset", err)
		}
	}
	return nil
}

// RestartInstance replaces the instance in pool slot i of the plugin with a fresh one holding
// the desired config, and leaves the other slots alone. Like Reset it goes through the
// plugin's pool supervisor (terminate the slot's child, then restart it), so it does not
// count as a crash; the new instance has a new incarnation and counts in PluginInfo.Restarts.
// A slot index out of range gives ErrNotFound; a plugin that is quarantined, or restarting as
// a whole, gives ErrNoInstance. A call in progress on the instance runs to its end (or its
// deadline) before the slot restarts.
func (h *Host) RestartInstance(ctx context.Context, name string, i int) error {
	h.life.Lock()
	defer h.life.Unlock()
	p, err := h.lookup(name)
	if err != nil {
		return err
	}
	if i < 0 || i >= len(p.slots) {
		return pluginErr(name, "restart instance", fmt.Errorf("%w: no instance %d", ErrNotFound, i))
	}
	tree := p.tree.Load()
	if tree == nil {
		return pluginErr(name, "restart instance", fmt.Errorf("%w: the plugin is quarantined or restarting", ErrNoInstance))
	}
	id := strconv.Itoa(i)
	if err := tree.TerminateChild(ctx, id); err != nil {
		return pluginErr(name, "restart instance", err)
	}
	if _, err := tree.RestartChild(ctx, id); err != nil {
		return pluginErr(name, "restart instance", err)
	}
	return nil
}

// dependsOn reports whether q depends on name, directly or not.
func (h *Host) dependsOn(q *plugin, name string) bool {
	for _, dep := range q.spec.DependsOn {
		if dep == name {
			return true
		}
		if d, err := h.lookup(dep); err == nil && h.dependsOn(d, name) {
			return true
		}
	}
	return false
}

// sandboxConfig is what the plugin's instances get from spec and the host.
func (p *plugin) sandboxConfig(spec Plugin) sandbox.Config {
	return sandbox.Config{Limits: spec.Limits, Capabilities: spec.Capabilities,
		Logger: p.h.log.With(zapPlugin(spec.Name)), OnPublish: p.onPublish,
		OnCall: p.stats.observe, CallSampling: p.h.opts.sampleShift, OnDrop: p.onDrop,
		HostFuncs: p.h.opts.hostFuncs, NoSnapshot: spec.NoSnapshot}
}

package host

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// ErrStale is returned by Handle methods once the incarnation the handle names has ended. A
// handle never reaches the successor.
var ErrStale = errors.New("host: stale handle")

// PluginInfo describes a loaded plugin.
type PluginInfo struct {
	Name          string
	Digest        string
	Config        map[string]string // desired
	ConfigVersion uint64            // desired
	Restarts      uint64            // instances started after the first, over all slots
	// Resets counts the instances replaced after serving their one operation, under
	// InstancePerCall: not restarts, not failures. Rewinds counts those of them made in place
	// (sandbox.Rewinder: the instance set back to the state it had fresh) rather than by a
	// new instance.
	Resets    uint64
	Rewinds   uint64
	Isolation Isolation
	DependsOn []string
	Subscribe []string
	Instances []InstanceInfo // one per pool slot
	// State is PluginRunning, or PluginFailed / PluginProbing while the plugin is
	// quarantined; then Failed is the *FailedError a call gets (retry time, cause).
	State  PluginState
	Failed *FailedError
	// OnFailure is the plugin's failure mode.
	OnFailure FailureMode
	// Format is the ABI the plugin's module speaks: the Name of the format that compiled it
	// (FormatWasmvisor, FormatExtism, or another registered with WithFormats).
	Format Format
	// Handlers lists the handlers a caller may name, for the current module (after Replace,
	// the new one's). A wasmvisor-ABI plugin declares them when an instance starts: they are
	// those of the module's last started instance, in the guest's order. An Extism plugin's
	// are its callable exports (functions () -> i32 or () -> ()), sorted as package sandbox/extism
	// lists them.
	Handlers []string
	// Snapshot reports whether the plugin's instances start from a snapshot of its module's
	// initialized state (package sandbox, "Snapshots"). SnapshotOff says why not when they do
	// not: switched off (Plugin.NoSnapshot), a module that cannot be snapshotted (its code
	// changes a table, …), or a format without snapshots (Extism's).
	Snapshot    bool
	SnapshotOff string
}

// InstanceInfo describes one pool slot. The memory fields are read from the instance only if
// it was free when asked (Read is true); a busy instance is not waited for. What they copy
// out of guest memory is bounded by the listing's read budget (see WithReadBudget).
type InstanceInfo struct {
	Index         int
	Up            bool
	Incarnation   uint64 // 0 while down
	ConfigVersion uint64 // the config version the instance holds
	Read          bool
	// ReadErr says why Read is false: the errors of the reads that failed, joined. A
	// malformed store gives a *sandbox.ViolationError (errors.Is sandbox.ErrABIViolation),
	// an instance serving a call sandbox.ErrBusy, an applied config larger than the budget
	// sandbox.ErrReadBudget.
	ReadErr     error
	MemoryPages uint32
	Telemetry   []sandbox.Metric
	// Events holds the oldest events still in the ring, as many as the budget allows
	// (Events.Remaining counts the others).
	Events        sandbox.EventLog
	AppliedConfig map[string]string
	// Skipped counts the records the listing's read budget left out.
	Skipped int
}

// Plugins describes every loaded plugin. The reads of all instances share one budget.
func (h *Host) Plugins() []PluginInfo {
	ps := h.snapshot()
	rb := h.newReadBudget(ps)
	out := make([]PluginInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.info(rb))
	}
	return out
}

// Plugin describes one plugin.
func (h *Host) Plugin(name string) (PluginInfo, error) {
	p, err := h.lookup(name)
	if err != nil {
		return PluginInfo{}, err
	}
	return p.info(h.newReadBudget([]*plugin{p})), nil
}

func (p *plugin) info(rb *readBudget) PluginInfo {
	d := p.desired.Load()
	mod := p.mod()
	pi := PluginInfo{Name: p.name, Digest: mod.Digest(), Format: Format(mod.Format()), Handlers: mod.Handlers(), Config: maps.Clone(d.cfg), ConfigVersion: d.version,
		Restarts: p.restarts.Load(), Resets: p.resets.Load(), Rewinds: p.rewinds.Load(), Isolation: p.isolation, DependsOn: p.spec.DependsOn, Subscribe: p.spec.Subscribe, OnFailure: p.spec.OnFailure}
	// Snapshots are the native format's; a Code that has them says so (an optional method,
	// as io.WriterTo is to io.Writer).
	if sc, ok := mod.(interface{ Snapshots() (bool, string) }); ok {
		pi.Snapshot, pi.SnapshotOff = sc.Snapshots()
	} else {
		pi.SnapshotOff = "the " + mod.Format() + " format has no snapshots"
	}
	if c := p.contain.Load(); c != nil {
		pi.State, pi.Failed = c.state, p.failedErr(c)
	}
	skipped := 0
	for i := range p.slots {
		ii := InstanceInfo{Index: i}
		if m := p.slots[i].m.Load(); m != nil {
			ii.Up, ii.Incarnation, ii.ConfigVersion = true, m.inc, m.applied.Load()
			ii.MemoryPages = m.in().MemoryPages()
			// Each read is an operation of its own: one that finds the instance busy fails
			// with ErrBusy, and Read tells whether all three succeeded. The events come last:
			// they take what the telemetry and the config left of the instance's share.
			b := rb.share()
			start := *b
			ii.ReadErr = errors.Join(
				p.readStore(m, storeTelemetry, func() (err error) {
					ii.Telemetry, err = m.in().TelemetryWithin(b)
					return err
				}),
				p.readStore(m, storeConfig, func() (err error) {
					ii.AppliedConfig, err = m.in().AppliedConfigWithin(b)
					return err
				}),
				p.readStore(m, storeEvents, func() (err error) {
					ii.Events, err = m.in().EventsWithin(0, b)
					return err
				}))
			rb.settle(start, b)
			ii.Read, ii.Skipped = ii.ReadErr == nil, b.Skipped
			skipped += b.Skipped
		}
		pi.Instances = append(pi.Instances, ii)
	}
	p.series.skipped.Add(uint64(skipped))
	p.lost(&p.series.listShort, skipped, func() error {
		return fmt.Errorf("listing: %d store records skipped: %w", skipped, sandbox.ErrReadBudget)
	})
	return pi
}

// Handle names one incarnation of one pool slot. Once that incarnation has ended every
// method returns ErrStale: a handle never reaches the successor. Handles are values, safe for
// concurrent use.
type Handle struct{ m *member }

// Lookup returns a handle to the current incarnation of slot i of the named plugin, waiting
// within ctx while the slot is restarting.
func (h *Host) Lookup(ctx context.Context, name string, i int) (Handle, error) {
	p, err := h.lookup(name)
	if err != nil {
		return Handle{}, err
	}
	if i < 0 || i >= len(p.slots) {
		return Handle{}, pluginErr(name, "lookup", fmt.Errorf("%w: no instance %d", ErrNotFound, i))
	}
	for {
		ch := p.changed()
		if m := p.slots[i].m.Load(); m != nil {
			return Handle{m}, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Handle{}, pluginErr(name, "lookup", &waitError{cause: context.Cause(ctx)})
		case <-p.gone:
			return Handle{}, pluginErr(name, "lookup", ErrNotFound)
		}
	}
}

// Incarnation is unique within the host and increasing; 0 for the zero Handle.
func (hd Handle) Incarnation() uint64 {
	if hd.m == nil {
		return 0
	}
	return hd.m.inc
}

// Done is closed when the incarnation has ended (nil for the zero Handle).
func (hd Handle) Done() <-chan struct{} {
	if hd.m == nil {
		return nil
	}
	return hd.m.done
}

// Call calls this incarnation only. It does not queue: an instance serving another call
// gives an error matching sandbox.ErrBusy, and an ended incarnation ErrStale.
func (hd Handle) Call(ctx context.Context, handler string, input []byte) ([]byte, error) {
	m := hd.m
	if m == nil {
		return nil, ErrStale
	}
	p := m.p
	if m.state.Load() != stLive {
		return nil, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, ErrStale)
	}
	r := m.take()
	if r == nil {
		return nil, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, sandbox.ErrBusy)
	}
	out, err := r.CallAppend(ctx, handler, input, nil)
	if err != nil && p.notEntered(m, err) {
		m.untake(r)
		if errors.Is(err, sandbox.ErrBusy) {
			return nil, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, sandbox.ErrBusy)
		}
		return nil, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, ErrStale)
	}
	p.afterUse(m, err)
	if err != nil {
		p.stats.count(errKind(err))
		return out, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, err)
	}
	return out, nil
}

// Kill ends this incarnation as a crash would: a call in progress is interrupted, and the
// supervisor replaces the instance (unless the plugin is Temporary). Killing an ended
// incarnation does nothing. An idle instance is ended by Kill itself and, when the plugin's
// supervisor is idle too and the restart is within its intensity, replaced before Kill
// returns, on the calling goroutine (supervisor.Notifier).
func (hd Handle) Kill() {
	m := hd.m
	if m == nil {
		return
	}
	m.in().Kill()
	if m.in().Retire() { // not busy: end it here
		m.state.Store(stEnded)
		m.end(&killedError{plugin: m.p.name, idx: m.idx})
	}
	// A busy member ends when the caller whose operation was interrupted sees the kill.
}

// killedError is the end of an idle instance killed through its Handle: formatted only when
// it is read, since a kill on the way to a restart rarely is.
type killedError struct {
	plugin string
	idx    int
}

func (e *killedError) Error() string {
	return fmt.Sprintf("plugin %q: instance %d killed: %v", e.plugin, e.idx, sandbox.ErrCanceled)
}

func (e *killedError) Unwrap() error { return sandbox.ErrCanceled }

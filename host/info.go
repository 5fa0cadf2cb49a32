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
	DependsOn     []string
	Subscribe     []string
	Instances     []InstanceInfo // one per pool slot
	// State is PluginRunning, or PluginFailed / PluginProbing while the plugin is
	// quarantined; then Failed is the *FailedError a call gets (retry time, cause).
	State  PluginState
	Failed *FailedError
	// OnFailure is the plugin's failure mode.
	OnFailure FailureMode
}

// InstanceInfo describes one pool slot. The memory fields are read from the instance only if
// it was free when asked (Read is true); a busy instance is not waited for.
type InstanceInfo struct {
	Index         int
	Up            bool
	Incarnation   uint64 // 0 while down
	ConfigVersion uint64 // the config version the instance holds
	Read          bool
	MemoryPages   uint32
	Telemetry     []sandbox.Metric
	Events        sandbox.EventLog
	AppliedConfig map[string]string
}

// Plugins describes every loaded plugin.
func (h *Host) Plugins() []PluginInfo {
	ps := h.snapshot()
	out := make([]PluginInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.info())
	}
	return out
}

// Plugin describes one plugin.
func (h *Host) Plugin(name string) (PluginInfo, error) {
	p, err := h.lookup(name)
	if err != nil {
		return PluginInfo{}, err
	}
	return p.info(), nil
}

func (p *plugin) info() PluginInfo {
	d := p.desired.Load()
	pi := PluginInfo{Name: p.name, Digest: p.mod().Digest(), Config: maps.Clone(d.cfg), ConfigVersion: d.version,
		Restarts: p.restarts.Load(), DependsOn: p.spec.DependsOn, Subscribe: p.spec.Subscribe, OnFailure: p.spec.OnFailure}
	if c := p.contain.Load(); c != nil {
		pi.State, pi.Failed = c.state, p.failedErr(c)
	}
	for i := range p.slots {
		ii := InstanceInfo{Index: i}
		if m := p.slots[i].m.Load(); m != nil {
			ii.Up, ii.Incarnation, ii.ConfigVersion = true, m.inc, m.applied.Load()
			// Each read is an operation of its own: one that finds the instance busy fails
			// with ErrBusy, and Read tells whether all three succeeded.
			ii.MemoryPages = m.inst.MemoryPages()
			var errs [3]error
			ii.Telemetry, errs[0] = m.inst.Telemetry()
			ii.Events, errs[1] = m.inst.Events(0)
			ii.AppliedConfig, errs[2] = m.inst.AppliedConfig()
			ii.Read = errs == [3]error{}
		}
		pi.Instances = append(pi.Instances, ii)
	}
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
	out, err := m.inst.CallAppend(ctx, handler, input, nil)
	if err != nil && p.notEntered(m, err) {
		if errors.Is(err, sandbox.ErrBusy) {
			return nil, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, sandbox.ErrBusy)
		}
		return nil, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, ErrStale)
	}
	p.after(m, err)
	if err != nil {
		p.stats.count(errKind(err))
		return out, fmt.Errorf("plugin %q: call %q: %w", p.name, handler, err)
	}
	return out, nil
}

// Kill ends this incarnation as a crash would: a call in progress is interrupted, and the
// supervisor replaces the instance (unless the plugin is Temporary). Killing an ended
// incarnation does nothing.
func (hd Handle) Kill() {
	m := hd.m
	if m == nil {
		return
	}
	m.inst.Kill()
	if m.inst.Retire() { // not busy: end it here
		m.state.Store(stEnded)
		m.end(fmt.Errorf("plugin %q: instance %d killed: %w", m.p.name, m.idx, sandbox.ErrCanceled))
	}
	// A busy member ends when the caller whose operation was interrupted sees the kill.
}

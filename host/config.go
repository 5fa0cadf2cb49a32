package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// desiredConfig is one version of a plugin's desired config. Versions only grow; a rejected
// version is replaced by a new version holding the last accepted config.
type desiredConfig struct {
	cfg      map[string]string
	version  uint64
	rejected atomic.Pointer[error]
}

func isRejected(err error) bool {
	var ge *sandbox.GuestError
	return errors.As(err, &ge) && ge.Status == abi.StatusConfigRejected
}

// setDesired makes cfg the desired config, latest wins.
func (p *plugin) setDesired(cfg map[string]string) *desiredConfig {
	p.cfgMu.Lock()
	defer p.cfgMu.Unlock()
	d := &desiredConfig{cfg: maps.Clone(cfg), version: p.version.Load() + 1}
	p.desired.Store(d)
	p.version.Store(d.version)
	return d
}

// accepted records that an instance took d.
func (p *plugin) accepted(d *desiredConfig) {
	p.cfgMu.Lock()
	if d.version > p.good.version {
		p.good = d
	}
	p.cfgMu.Unlock()
}

// reject records that the guest refused d: if d is still desired, the last accepted config
// becomes desired again, under a new version.
func (p *plugin) reject(d *desiredConfig, err error) {
	p.cfgMu.Lock()
	d.rejected.Store(&err)
	if p.desired.Load() == d {
		nd := &desiredConfig{cfg: p.good.cfg, version: d.version + 1}
		p.desired.Store(nd)
		p.version.Store(nd.version)
	}
	p.cfgMu.Unlock()
	p.h.emit(Event{Kind: EventConfigRejected, Plugin: p.name, Version: d.version, Err: err})
	p.notify()
}

// push applies d to m. The caller passes the error to notEntered, then after.
func (p *plugin) push(ctx context.Context, m *member, d *desiredConfig) error {
	if m.applied.Load() >= d.version {
		return nil
	}
	r := m.cur.Load()
	if m.p.isolation == InstancePerCall {
		// Serving its one call, or served it: not entered, as if busy; its reset starts with
		// the desired config, and kicks the config task if stale. Else the instance is taken
		// while it is configured and its checkpoint taken again, so that no call enters it
		// in between, to be recorded as its pristine state.
		if !r.used.CompareAndSwap(false, true) {
			return sandbox.ErrBusy
		}
		defer r.used.Store(false)
	}
	err := r.Configure(ctx, d.cfg)
	switch {
	case err == nil:
		p.checkpoint(r.instance) // a pristine instance's state now holds the new config
		m.applied.Store(d.version)
		p.accepted(d)
		p.h.emit(Event{Kind: EventConfigApplied, Plugin: p.name, Instance: m.idx, Incarnation: m.inc, Version: d.version})
		p.notify()
	case isRejected(err):
		p.reject(d, err)
	}
	return err
}

// pushFree brings every free, stale member up to the desired config. Busy members are
// brought up when their operation ends (see after), down ones when they start (with the
// desired config).
func (p *plugin) pushFree(ctx context.Context) {
	for i := range p.slots {
		d := p.desired.Load()
		m := p.slots[i].m.Load()
		if m == nil || m.state.Load() != stLive || m.applied.Load() >= d.version {
			continue
		}
		if err := p.push(ctx, m, d); err == nil || !p.notEntered(m, err) {
			p.after(m, err)
		}
	}
}

// allApplied reports whether every live member holds at least version v.
func (p *plugin) allApplied(v uint64) bool {
	for i := range p.slots {
		if m := p.slots[i].m.Load(); m != nil && m.applied.Load() < v {
			return false
		}
	}
	return true
}

// Configure makes cfg the plugin's desired config and pushes it into every instance; the
// guest's change callbacks fire. It returns when every live instance holds it, when a newer
// Configure superseded it (latest wins), or with the guest's *sandbox.GuestError
// (STATUS_CONFIG_REJECTED) when the guest refused it, in which case the previous config stays
// desired. An instance that is down gets the config when its successor starts; one that is
// busy gets it when its call ends, from a supervised task. If ctx ends first, Configure
// returns an error wrapping ErrNoInstance, but the update is kept and is still applied.
func (h *Host) Configure(ctx context.Context, name string, cfg map[string]string) error {
	p, err := h.lookup(name)
	if err != nil {
		return err
	}
	d := p.setDesired(cfg)
	p.pushFree(ctx)
	h.kick(h.cfgKick)
	for {
		ch := p.changed()
		if e := d.rejected.Load(); e != nil {
			return pluginErr(name, "configure", *e)
		}
		if p.version.Load() > d.version || p.allApplied(d.version) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return pluginErr(name, "configure", fmt.Errorf("not yet applied (kept, and retried): %w",
				&waitError{cause: context.Cause(ctx)}))
		case <-p.gone:
			return pluginErr(name, "configure", ErrNotFound)
		}
	}
}

// configLoop is the supervised task that retries config pushes: it runs whenever an operation
// ends on a stale member or a member starts stale, and pushes into every free stale member.
func (h *Host) configLoop(ctx context.Context, ready func()) error {
	ready()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.cfgKick:
		}
		for _, p := range h.snapshot() {
			p.pushFree(ctx)
		}
	}
}

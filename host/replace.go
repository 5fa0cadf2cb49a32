package host

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// moduleRef boxes a module so that Replace can swap it atomically.
type moduleRef struct{ sandbox.Code }

func (p *plugin) mod() sandbox.Code {
	if r := p.modp.Load(); r != nil {
		return r.Code
	}
	return nil
}

// preparedInstance is an instance started ahead of the slot it will serve: by Replace, or
// a quarantined plugin's probe.
type preparedInstance struct {
	inst instance
	d    *desiredConfig // the desired config when it was made; its config is the new one
	mod  sandbox.Code   // what it was made from: a slot takes it only if that is still current
}

// dropPrepared closes the prepared instances no slot took (the plugin stopped first).
func (p *plugin) dropPrepared(ctx context.Context) {
	for i := range p.prepared {
		if pre := p.prepared[i].Swap(nil); pre != nil {
			_ = pre.inst.Close(context.WithoutCancel(ctx))
		}
	}
}

// Replace swaps a loaded plugin's module, config, limits and capabilities for spec's,
// make-before-break: the new module is compiled and checked, and one new instance per pool
// slot is started and configured, before any old instance stops. Then each slot in turn hands
// over: its old instance finishes the call in flight (if any) and stops, and the new one,
// already running, takes the slot, so a caller waits at most for that hand-over and no call
// fails. If compiling or starting the new version fails, nothing changes: the old version
// keeps serving and the error is returned.
//
// Replace keeps the plugin's name, pool size, restart type, dependencies, subscriptions,
// failure mode and restart policy; changing those takes Unload and Load. Dependents are not restarted.
//
// A quarantined plugin has no instance to hand over: Replace checks that the new version
// compiles and starts one instance, swaps it in, and makes the plugin probe at once from
// the base backoff (the probe uses the new version; the pool follows if it starts, and the
// dependents after it, as on any recovery). Wait for EventRecovered or PluginState.
func (h *Host) Replace(ctx context.Context, spec Plugin) error {
	if err := validate(&spec); err != nil {
		return err
	}
	wasm := spec.Wasm
	if spec.Path != "" {
		b, err := os.ReadFile(spec.Path)
		if err != nil {
			return pluginErr(spec.Name, "replace", err)
		}
		wasm = b
	}
	h.life.Lock()
	defer h.life.Unlock()
	p, err := h.lookup(spec.Name)
	if err != nil {
		return err
	}
	bad := func(why string) error {
		return pluginErr(spec.Name, "replace", fmt.Errorf("%w: %s; Unload and Load instead", ErrInvalidPlugin, why))
	}
	switch {
	case spec.Instances != len(p.slots):
		return bad("Replace keeps the pool size")
	case spec.Restart != p.spec.Restart:
		return bad("Replace keeps the restart type")
	case !slices.Equal(spec.DependsOn, p.spec.DependsOn):
		return bad("Replace keeps the dependencies")
	case !slices.Equal(spec.Subscribe, p.spec.Subscribe):
		return bad("Replace keeps the subscriptions")
	case spec.OnFailure != p.spec.OnFailure:
		return bad("Replace keeps the failure mode")
	case spec.RestartPolicy != p.spec.RestartPolicy:
		return bad("Replace keeps the restart policy")
	case spec.Isolation != p.spec.Isolation:
		return bad("Replace keeps the isolation")
	}
	if p.contain.Load() != nil {
		return h.replaceFailed(ctx, p, spec, wasm)
	}
	tree := p.tree.Load()
	if tree == nil {
		return pluginErr(spec.Name, "replace", fmt.Errorf("%w: the plugin is restarting", ErrNoInstance))
	}

	mod, err := h.compile(ctx, wasm, p.sandboxConfig(spec))
	if err != nil {
		return pluginErr(spec.Name, "replace", err)
	}
	d := p.desired.Load()
	made := make([]instance, 0, len(p.slots))
	abandon := func(err error) error {
		for _, inst := range made {
			_ = inst.Close(context.WithoutCancel(ctx))
		}
		_ = mod.Close(context.WithoutCancel(ctx))
		return pluginErr(spec.Name, "replace", err)
	}
	for range p.slots {
		inst, err := mod.Instantiate(ctx, spec.Config)
		if err != nil {
			return abandon(err)
		}
		made = append(made, inst)
	}

	// The new version is up: from here on, restarts use it, and each slot hands over.
	old := p.mod()
	p.modp.Store(&moduleRef{mod})
	var handErr error
	for i, inst := range made {
		if pre := p.prepared[i].Swap(&preparedInstance{inst: inst, d: d, mod: mod}); pre != nil {
			_ = pre.inst.Close(context.WithoutCancel(ctx)) // a probe's, of the old version
		}
		id := strconv.Itoa(i)
		if err := tree.TerminateChild(ctx, id); err != nil && handErr == nil {
			handErr = err
		}
		if _, err := tree.RestartChild(ctx, id); err != nil && handErr == nil {
			handErr = err
		}
		if pre := p.prepared[i].Swap(nil); pre != nil { // the slot did not take it
			_ = pre.inst.Close(context.WithoutCancel(ctx))
		}
	}
	_ = old.Close(context.WithoutCancel(ctx))
	// The new config becomes the desired one; the new instances hold it already, so the push
	// that follows changes nothing in them (their change callbacks do not fire again).
	p.setDesired(spec.Config)
	p.pushFree(ctx)
	h.kick(h.cfgKick)
	h.emit(Event{Kind: EventLoaded, Plugin: p.name})
	if handErr != nil {
		return pluginErr(spec.Name, "replace", handErr)
	}
	return nil
}

// replaceFailed is Replace for a quarantined plugin: check the new version with one instance,
// swap it in, and probe now.
func (h *Host) replaceFailed(ctx context.Context, p *plugin, spec Plugin, wasm []byte) error {
	mod, err := h.compile(ctx, wasm, p.sandboxConfig(spec))
	if err != nil {
		return pluginErr(spec.Name, "replace", err)
	}
	inst, err := mod.Instantiate(ctx, spec.Config)
	if err != nil {
		_ = mod.Close(context.WithoutCancel(ctx))
		return pluginErr(spec.Name, "replace", err)
	}
	_ = inst.Close(ctx)
	old := p.mod()
	p.modp.Store(&moduleRef{mod})
	_ = old.Close(context.WithoutCancel(ctx))
	p.setDesired(spec.Config)
	h.emit(Event{Kind: EventLoaded, Plugin: p.name})
	p.retryNow()
	return nil
}

package host

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// FailureMode says what happens to a plugin whose instances fail faster than its restart
// intensity allows (Plugin.OnFailure).
type FailureMode uint8

const (
	// Quarantine, the default, contains the failure: the plugin enters the failed state, its
	// calls fail at once with a *FailedError (ErrPluginFailed), and the host retries it in
	// the background with exponential backoff (WithQuarantineBackoff): one probe instance
	// first, then, if it starts, the whole pool. The host's root supervisor never sees the
	// failure, so no plugin can stop the host. The plugins that depend on it keep running
	// meanwhile, and are restarted after it when it recovers (a recovery is a restart of the
	// plugin as a whole).
	Quarantine FailureMode = iota
	// Escalate is OTP's escalation: the host's root supervisor restarts the plugin as a
	// whole (and its dependents after it), counting the restart against its own intensity,
	// and gives up past it: the host stops (Host.Done, Host.Err) with every other plugin. For
	// embedders who want a plugin's death to stop the program.
	Escalate
)

func (m FailureMode) String() string {
	switch m {
	case Quarantine:
		return "quarantine"
	case Escalate:
		return "escalate"
	}
	return "FailureMode(" + strconv.Itoa(int(m)) + ")"
}

// PluginState is where a plugin is in its containment cycle (PluginInfo.State).
type PluginState uint8

const (
	// PluginRunning: the plugin serves calls (some instances may be restarting).
	PluginRunning PluginState = iota
	// PluginFailed: the plugin exceeded its restart intensity and is quarantined: its calls
	// fail at once, and a probe is due at FailedError.RetryAt.
	PluginFailed
	// PluginProbing: a probe instance is starting; calls still fail at once. If it starts,
	// the whole pool follows and the plugin is running again; if not, it is failed again,
	// with a doubled backoff.
	PluginProbing
)

func (s PluginState) String() string {
	switch s {
	case PluginRunning:
		return "running"
	case PluginFailed:
		return "failed"
	case PluginProbing:
		return "probing"
	}
	return "PluginState(" + strconv.Itoa(int(s)) + ")"
}

// FailedError is returned, at once and without entering an instance, by calls to a plugin
// that is quarantined (PluginFailed or PluginProbing). It matches ErrPluginFailed. Times are
// on the host's clock (WithClock).
//
// Cause is not unwrapped: errors.Is(err, sandbox.ErrTrap) is false for a call that was
// refused, which did not trap; read Cause for what failed.
type FailedError struct {
	Plugin string
	State  PluginState // PluginFailed or PluginProbing
	Since  time.Time   // when the plugin was quarantined
	// RetryAt is when the next probe is due; while probing, when the probe started.
	RetryAt time.Time
	// RetryAfter is RetryAt minus the time the error was made, never negative: what an HTTP
	// server sends as Retry-After (rounded up to whole seconds).
	RetryAfter time.Duration
	// Failures counts the quarantines and failed probes since the plugin last ran steadily
	// (see WithQuarantineBackoff); the backoff doubles with each.
	Failures int
	// Cause is what failed: the plugin supervisor's *supervisor.IntensityError (which wraps
	// the last instance's end), or the error that stopped a probe or a pool start.
	Cause error
}

// Error does not name the plugin: Call wraps it in "plugin %q: call %q: ".
func (e *FailedError) Error() string {
	s := fmt.Sprintf("%s (%s since %s, %d failures), retry in %v",
		ErrPluginFailed.Error(), e.State, e.Since.Format(time.RFC3339), e.Failures, e.RetryAfter)
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Is reports whether target is ErrPluginFailed.
func (e *FailedError) Is(target error) bool { return target == ErrPluginFailed }

// containment is a plugin's quarantine, published for the call path; nil while running.
type containment struct {
	state    PluginState
	since    time.Time
	retryAt  time.Time
	failures int
	cause    error
}

// failedErr is the error a call gets now.
func (p *plugin) failedErr(c *containment) *FailedError {
	return &FailedError{Plugin: p.name, State: c.state, Since: c.since, RetryAt: c.retryAt,
		RetryAfter: max(c.retryAt.Sub(p.h.clk.Now()), 0), Failures: c.failures, Cause: c.cause}
}

// refused returns the *FailedError for a call while the plugin is quarantined, or nil.
func (p *plugin) refused() error {
	if c := p.contain.Load(); c != nil {
		return p.failedErr(c)
	}
	return nil
}

// Transitions, the label of wasmvisor_plugin_transitions_total.
const (
	trQuarantined = iota
	trProbing
	trRecovered
	trProbeFailed
	numTransitions
)

var transitionNames = [numTransitions]string{"quarantined", "probing", "recovered", "probe_failed"}

var transitionEvents = [numTransitions]EventKind{EventQuarantined, EventProbing, EventRecovered, EventProbeFailed}

func (p *plugin) transition(tr int, c *containment) {
	p.stats.transitions[tr].Add(1)
	e := Event{Kind: transitionEvents[tr], Plugin: p.name}
	if c != nil {
		e.Err, e.RetryAt = c.cause, c.retryAt
	}
	p.h.emit(e)
}

// errProbeStarted is the exit reason (wrapped in supervisor.Replaced) of a quarantined
// plugin whose probe instance started: the root restarts it, uncounted, with the probe in
// slot 0, and its dependents after it.
var errProbeStarted = errors.New("host: probe instance started; the plugin restarts")

// run is the root supervisor's child for a plugin (a supervised goroutine, started by Load):
// it starts the pool's supervisor and watches it. When the pool's supervisor gives up, an
// Escalate plugin ends with its *supervisor.IntensityError (the root restarts it, counted);
// a Quarantine plugin is quarantined and probed here until a probe starts, and then ends
// with supervisor.Replaced, which the root restarts without counting.
func (p *plugin) run(ctx context.Context, ready func()) error {
	pool, err := p.startPool(ctx)
	if err != nil {
		if !p.up.Load() || p.spec.OnFailure == Escalate || ctx.Err() != nil {
			return err // a failed Load, or OTP's path
		}
		// A restart through the root (recovery, a dependency's restart, Reset) that cannot
		// start the pool quarantines the plugin rather than spending the root's intensity.
		ready()
		return p.quarantine(ctx, err)
	}
	p.up.Store(true)
	if p.contain.Load() != nil {
		p.contain.Store(nil)
		p.qmu.Lock()
		p.recoveredAt = p.h.clk.Now()
		p.qmu.Unlock()
		p.transition(trRecovered, nil)
	}
	ready()
	select {
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), supervisor.ErrKilled) {
			pool.Kill()
		}
		_ = pool.Stop(context.WithoutCancel(ctx))
		p.tree.CompareAndSwap(pool, nil)
		return nil
	case <-pool.Done(): // it gave up: nothing else stops it
	}
	p.tree.CompareAndSwap(pool, nil)
	if p.spec.OnFailure == Escalate {
		return pool.Err()
	}
	return p.quarantine(ctx, pool.Err())
}

// startPool starts the plugin's pool supervisor: one child per slot, so that instance
// restarts count against the plugin's intensity, not the host's.
func (p *plugin) startPool(ctx context.Context) (*supervisor.Supervisor, error) {
	cfg := p.spec.RestartPolicy.poolConfig(p.h.opts.strategy)
	cfg.Name, cfg.Strategy, cfg.Clock, cfg.EventHook = p.id, supervisor.OneForOne, p.h.clk, p.h.supervisorHook
	cfg.EventFilter = p.h.supervisorWants
	specs := make([]supervisor.Spec, len(p.slots))
	for i := range specs {
		specs[i] = supervisor.Spec{ID: strconv.Itoa(i), Start: p.startMember(i), Restart: p.spec.Restart,
			Backoff: p.spec.RestartPolicy.Backoff}
	}
	s, err := supervisor.New(cfg, specs...)
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	p.tree.Store(s)
	return s, nil
}

// quarantine holds the plugin in the failed state, probing it with exponential backoff on
// the host's clock, until a probe instance starts (it then returns the Replaced exit that
// makes the root restart the plugin) or the root stops it (nil).
func (p *plugin) quarantine(ctx context.Context, cause error) error {
	h := p.h
	select { // a retry asked for before this quarantine does not cut it short
	case <-p.retry:
	default:
	}
	tr := trQuarantined
	var since time.Time
	for {
		now := h.clk.Now()
		if tr == trQuarantined {
			since = now
		}
		delay, n := p.backoff(now, tr == trQuarantined)
		// The timer is set before the state is published: whoever sees the state (a caller, an
		// event hook) and then advances the clock finds the timer there.
		t := h.clk.AfterFunc(delay, func() { h.kick(p.retry) })
		c := &containment{state: PluginFailed, since: since, retryAt: now.Add(delay), failures: n, cause: cause}
		p.contain.Store(c)
		p.signal() // waiting callers fail fast now: each passes the signal on
		p.notify()
		p.transition(tr, c)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-p.retry:
			t.Stop()
		}
		c = &containment{state: PluginProbing, since: since, retryAt: h.clk.Now(), failures: n, cause: cause}
		p.contain.Store(c)
		p.transition(trProbing, c)
		mod := p.mod()
		inst, d, err := p.instantiate(ctx, mod)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			cause, tr = pluginErr(p.name, "probe", err), trProbeFailed
			continue
		}
		if old := p.prepared[0].Swap(&preparedInstance{inst: inst, d: d, mod: mod}); old != nil {
			_ = old.inst.Close(context.WithoutCancel(ctx))
		}
		return supervisor.Replaced{Reason: errProbeStarted}
	}
}

// backoff counts one more failure and returns the delay before the next probe: the base
// doubled per failure since the plugin last ran steadily, capped, stretched by the jitter.
// A plugin that stayed up for the maximum delay since its last recovery starts again from
// the base.
func (p *plugin) backoff(now time.Time, entering bool) (time.Duration, int) {
	o := &p.h.opts.quarantine
	p.qmu.Lock()
	defer p.qmu.Unlock()
	if entering && !p.recoveredAt.IsZero() && now.Sub(p.recoveredAt) >= o.max {
		p.failures = 0
	}
	p.failures++
	d := o.base
	for i := 1; i < p.failures && d < o.max; i++ {
		d *= 2
	}
	d = min(d, o.max)
	if o.jitter > 0 {
		d += time.Duration(float64(d) * o.jitter * rand.Float64())
	}
	return d, p.failures
}

// retryNow makes a quarantined plugin probe at once, from the base delay (Replace).
func (p *plugin) retryNow() {
	p.qmu.Lock()
	p.failures = 0
	p.qmu.Unlock()
	p.h.kick(p.retry)
}

// PluginState returns the named plugin's state. While it is quarantined (PluginFailed or
// PluginProbing) err is the *FailedError a call would get now (it matches ErrPluginFailed
// and carries the retry time); while it runs err is nil. An unknown name gives ErrNotFound
// (ErrClosed after Close). It reads no instance: a readiness probe can call it freely.
func (h *Host) PluginState(name string) (PluginState, error) {
	p, err := h.lookup(name)
	if err != nil {
		return PluginRunning, err
	}
	if c := p.contain.Load(); c != nil {
		return c.state, p.failedErr(c)
	}
	return PluginRunning, nil
}

package host_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/internal/fakeclock"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// hostile is the fault suite's plugin that fails on demand: echo, trap, loop, trapon (traps
// on an input starting with "!"), logloop; its configure traps on a non-empty config.
var hostile = func() []byte {
	b, err := os.ReadFile("../internal/faults/testdata/quarantine_hostile.wasm")
	if err != nil {
		panic(err)
	}
	return b
}()

// containmentEvents records the containment events (quarantine transitions and poison
// inputs) of a host, in order.
type containmentEvents struct {
	ch chan host.Event
}

func newContainmentEvents() *containmentEvents {
	return &containmentEvents{ch: make(chan host.Event, 1024)}
}

func (c *containmentEvents) hook(e host.Event) {
	switch e.Kind {
	case host.EventQuarantined, host.EventProbing, host.EventRecovered, host.EventProbeFailed, host.EventPoisonInput:
		select {
		case c.ch <- e:
		default:
			panic("containment events: buffer full")
		}
	}
}

// next returns the next containment event, failing the test if none comes in time.
func (c *containmentEvents) next(t testing.TB) host.Event {
	t.Helper()
	select {
	case e := <-c.ch:
		return e
	case <-ctxT(t).Done():
		t.Fatal("no containment event")
		return host.Event{}
	}
}

// want reads the next events and fails unless they are of the given kinds, for plugin.
func (c *containmentEvents) want(t testing.TB, plugin string, kinds ...host.EventKind) []host.Event {
	t.Helper()
	var got []host.Event
	for _, k := range kinds {
		e := c.next(t)
		if e.Kind != k || e.Plugin != plugin {
			t.Fatalf("event %v for %q (%v), want %v for %q", e.Kind, e.Plugin, e.Err, k, plugin)
		}
		got = append(got, e)
	}
	return got
}

// none fails if a containment event is pending.
func (c *containmentEvents) none(t testing.TB) {
	t.Helper()
	select {
	case e := <-c.ch:
		t.Fatalf("unexpected event %v for %q: %v", e.Kind, e.Plugin, e.Err)
	default:
	}
}

// labelled is the value of the metric name with the labels plugin and (if key is set)
// key=value; -1 if there is none.
func labelled(t testing.TB, h *host.Host, name, plugin, key, value string) float64 {
	t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if (plugin != "" && label(m, "plugin") != plugin) || (key != "" && label(m, key) != value) {
				continue
			}
			return metricValue(m)
		}
	}
	return -1
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

// crashUntilQuarantined traps the plugin (one instance, default intensity 3) until it is
// quarantined: exactly four traps, then calls fail at once.
func crashUntilQuarantined(t *testing.T, h *host.Host, name string, first int) *host.FailedError {
	t.Helper()
	ctx := ctxT(t)
	traps := 0
	var fe *host.FailedError
	for i := range 16 {
		_, err := h.Call(ctx, name, "trap", []byte(strconv.Itoa(first+i))) // distinct: never poison
		switch {
		case errors.Is(err, sandbox.ErrTrap):
			traps++
			if fe != nil {
				t.Fatalf("call %d trapped after the quarantine", i)
			}
		case errors.As(err, &fe):
			if !errors.Is(err, host.ErrPluginFailed) || errors.Is(err, sandbox.ErrTrap) {
				t.Fatalf("call %d: %v: want ErrPluginFailed only", i, err)
			}
		default:
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if traps != 4 || fe == nil {
		t.Fatalf("%d traps before the quarantine, want 4 (intensity 3); failed: %v", traps, fe)
	}
	return fe
}

// A trapping plugin called 16 times is quarantined after its fourth trap (intensity 3); the
// host stays up, the healthy plugin keeps answering, the calls fail at once with the retry
// time; the plugin is probed after the backoff, which doubles with each failed probe and
// with each quarantine that follows a recovery closely; every transition is an event and a
// metric.
func TestQuarantine(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New()
	evs := newContainmentEvents()
	h := hosttest.New(t, host.WithClock(clk), host.WithQuarantineBackoff(time.Second, 8*time.Second, 0),
		host.WithEventHook(evs.hook))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "bad", Wasm: hostile})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "good", Wasm: reference, Instances: 2})
	ctx := ctxT(t)

	fe := crashUntilQuarantined(t, h, "bad", 0)
	var ie *supervisor.IntensityError
	if fe.Plugin != "bad" || fe.State != host.PluginFailed || fe.RetryAfter != time.Second ||
		!fe.RetryAt.Equal(clk.Now().Add(time.Second)) || fe.Failures != 1 || !errors.As(fe.Cause, &ie) {
		t.Fatalf("failed error %+v", fe)
	}
	q := evs.want(t, "bad", host.EventQuarantined)[0]
	if !q.RetryAt.Equal(fe.RetryAt) || !errors.As(q.Err, &ie) {
		t.Fatalf("quarantined event %+v", q)
	}
	select {
	case <-h.Done():
		t.Fatalf("the host stopped: %v", h.Err())
	default:
	}
	if got := call(t, h, "good", "echo", "still here"); got != "still here" {
		t.Fatalf("healthy plugin: %q", got)
	}
	st, err := h.PluginState("bad")
	if st != host.PluginFailed || !errors.Is(err, host.ErrPluginFailed) {
		t.Fatalf("state %v, %v", st, err)
	}
	if pi, _ := h.Plugin("bad"); pi.State != host.PluginFailed || pi.Failed == nil || pi.Failed.RetryAfter != time.Second {
		t.Fatalf("plugin info %+v", pi)
	}
	if st, err := h.PluginState("good"); st != host.PluginRunning || err != nil {
		t.Fatalf("healthy plugin state %v, %v", st, err)
	}
	if v := labelled(t, h, "wasmvisor_plugin_state", "bad", "state", "failed"); v != 1 {
		t.Fatalf("state gauge failed = %v", v)
	}
	if v := labelled(t, h, "wasmvisor_call_errors_total", "bad", "kind", "quarantined"); v != 12 {
		t.Fatalf("quarantined errors = %v, want 12", v)
	}

	// Not a moment before the backoff; then one probe, the pool, and it runs again.
	clk.Advance(time.Second - 1)
	evs.none(t)
	if st, _ := h.PluginState("bad"); st != host.PluginFailed {
		t.Fatalf("state %v before the backoff", st)
	}
	clk.Advance(1)
	evs.want(t, "bad", host.EventProbing, host.EventRecovered)
	if got := call(t, h, "bad", "echo", "back"); got != "back" {
		t.Fatalf("recovered plugin: %q", got)
	}
	if st, err := h.PluginState("bad"); st != host.PluginRunning || err != nil {
		t.Fatalf("state %v, %v after recovery", st, err)
	}

	// Quarantined again soon after recovering: the backoff doubles.
	fe = crashUntilQuarantined(t, h, "bad", 100)
	if fe.RetryAfter != 2*time.Second || fe.Failures != 2 {
		t.Fatalf("second quarantine %+v", fe)
	}
	evs.want(t, "bad", host.EventQuarantined)

	// A probe that cannot start (the guest traps on a non-empty config) doubles it again, up
	// to the cap.
	if err := h.Configure(ctx, "bad", map[string]string{"x": "1"}); err != nil {
		t.Fatal(err)
	}
	for _, next := range []time.Duration{4 * time.Second, 8 * time.Second, 8 * time.Second} {
		clk.Advance(fe.RetryAfter)
		e := evs.want(t, "bad", host.EventProbing, host.EventProbeFailed)[1]
		if !errors.Is(e.Err, sandbox.ErrTrap) || !e.RetryAt.Equal(clk.Now().Add(next)) {
			t.Fatalf("probe failed event %+v, want next probe in %v", e, next)
		}
		_, err := h.Call(ctx, "bad", "echo", nil)
		if !errors.As(err, &fe) || fe.RetryAfter != next || fe.State != host.PluginFailed {
			t.Fatalf("call while failed: %v", err)
		}
	}
	if err := h.Configure(ctx, "bad", nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(fe.RetryAfter)
	evs.want(t, "bad", host.EventProbing, host.EventRecovered)
	if got := call(t, h, "bad", "echo", "again"); got != "again" {
		t.Fatalf("recovered plugin: %q", got)
	}
	for tr, want := range map[string]float64{"quarantined": 2, "probing": 5, "recovered": 2, "probe_failed": 3} {
		if v := labelled(t, h, "wasmvisor_plugin_transitions_total", "bad", "transition", tr); v != want {
			t.Errorf("transitions %s = %v, want %v", tr, v, want)
		}
	}
	if v := labelled(t, h, "wasmvisor_plugin_state", "bad", "state", "running"); v != 1 {
		t.Errorf("state gauge running = %v", v)
	}

	// A plugin that stays up for the maximum delay starts again from the base.
	clk.Advance(8 * time.Second)
	if fe = crashUntilQuarantined(t, h, "bad", 200); fe.RetryAfter != time.Second || fe.Failures != 1 {
		t.Fatalf("quarantine after a steady run %+v", fe)
	}
	select {
	case <-h.Done():
		t.Fatalf("the host stopped: %v", h.Err())
	default:
	}
}

// Replace with a good module recovers a quarantined plugin at once, without waiting for the
// backoff.
func TestReplaceRecoversAQuarantinedPlugin(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New()
	evs := newContainmentEvents()
	h := hosttest.New(t, host.WithClock(clk), host.WithEventHook(evs.hook))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: hostile})
	crashUntilQuarantined(t, h, "p", 0)
	evs.want(t, "p", host.EventQuarantined)
	if err := h.Replace(ctxT(t), host.Plugin{Name: "p", Wasm: reference}); err != nil {
		t.Fatal(err)
	}
	evs.want(t, "p", host.EventProbing, host.EventRecovered)
	call(t, h, "p", "set", "new") // a handler of the reference plugin only
	if got := call(t, h, "p", "get", ""); got != "new" {
		t.Fatalf("replaced plugin: %q", got)
	}
}

// A quarantined plugin's dependents keep running (the same instances) while it is failed,
// and are restarted after it when it recovers, as after any restart of a dependency.
func TestQuarantineAndDependents(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New()
	evs := newContainmentEvents()
	h := hosttest.New(t, host.WithClock(clk), host.WithEventHook(evs.hook))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "db", Wasm: hostile})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "api", Wasm: reference, DependsOn: []string{"db"}})
	call(t, h, "api", "set", "marker")
	inc := func() uint64 {
		pi, err := h.Plugin("api")
		if err != nil {
			t.Fatal(err)
		}
		return pi.Instances[0].Incarnation
	}
	before := inc()
	fe := crashUntilQuarantined(t, h, "db", 0)
	evs.want(t, "db", host.EventQuarantined)
	if got := call(t, h, "api", "get", ""); got != "marker" || inc() != before {
		t.Fatalf("dependent while its dependency is quarantined: marker %q, incarnation %d → %d", got, before, inc())
	}
	clk.Advance(fe.RetryAfter)
	evs.want(t, "db", host.EventProbing, host.EventRecovered)
	// The dependent's restart follows the dependency's: wait for its new incarnation.
	hd, err := h.Lookup(ctxT(t), "api", 0)
	for err == nil && hd.Incarnation() == before {
		<-hd.Done()
		hd, err = h.Lookup(ctxT(t), "api", 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t, h, "api", "get", ""); got != "" {
		t.Fatalf("restarted dependent kept its marker %q", got)
	}
}

// Escalate keeps OTP's path: the plugin's failure is restarted by the root, and past the
// root's intensity the host stops.
func TestEscalateStopsTheHost(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()), host.WithClock(fakeclock.New()),
		host.WithRestartIntensity(1, time.Minute, -1))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "p", Wasm: hostile, OnFailure: host.Escalate}); err != nil {
		t.Fatal(err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "bystander", Wasm: reference}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		select {
		case <-h.Done():
		default:
			if i == 100 {
				t.Fatal("100 traps did not stop the host")
			}
			_, err := h.Call(ctx, "p", "trap", []byte(strconv.Itoa(i)))
			if errors.Is(err, host.ErrPluginFailed) {
				t.Fatalf("an Escalate plugin was quarantined: %v", err)
			}
			continue
		}
		break
	}
	if !errors.Is(h.Err(), supervisor.ErrMaxIntensity) {
		t.Fatalf("host exit %v", h.Err())
	}
	if err := h.Close(ctx); !errors.Is(err, supervisor.ErrMaxIntensity) {
		t.Fatalf("close %v", err)
	}
}

// guestLogs signals every guest log line: it tells a test that a call is inside the guest.
type guestLogs struct {
	zapcore.LevelEnabler
	ch chan struct{}
}

func (g guestLogs) With([]zapcore.Field) zapcore.Core { return g }
func (g guestLogs) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == "guest log" {
		return ce.AddCore(e, g)
	}
	return ce
}
func (g guestLogs) Write(zapcore.Entry, []zapcore.Field) error { g.ch <- struct{}{}; return nil }
func (g guestLogs) Sync() error                                { return nil }

// A hundred callers that cancel mid-call end their instances, which are replaced without
// counting towards the restart intensity: no quarantine (on a clock that never moves, four
// counted restarts would be one), the replacements are counted apart, and an input cancelled
// a hundred times is no poison. A call past the caller's own deadline is the same.
func TestCallerEndedCallsAreNotCrashes(t *testing.T) {
	t.Parallel()
	const pool, waves = 4, 25
	logs := guestLogs{LevelEnabler: zapcore.InfoLevel, ch: make(chan struct{}, pool)}
	evs := newContainmentEvents()
	h := hosttest.New(t, host.WithClock(fakeclock.New()), host.WithLogger(zap.New(logs)), host.WithEventHook(evs.hook))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: hostile, Instances: pool,
		Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})
	for range waves {
		cctx, cancel := context.WithCancel(ctxT(t))
		var wg sync.WaitGroup
		errs := make(chan error, pool)
		for range pool {
			wg.Go(func() {
				_, err := h.Call(cctx, "p", "logloop", []byte("same input"))
				errs <- err
			})
		}
		for range pool {
			select {
			case <-logs.ch: // one call is inside the guest
			case err := <-errs:
				t.Fatalf("a call ended before it was cancelled: %v", err)
			case <-ctxT(t).Done():
				t.Fatal("calls did not enter")
			}
		}
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if !errors.Is(err, sandbox.ErrCanceled) || !errors.Is(err, context.Canceled) || !sandbox.CallerEnded(err) {
				t.Fatalf("cancelled call: %v", err)
			}
		}
	}
	if st, err := h.PluginState("p"); st != host.PluginRunning || err != nil {
		t.Fatalf("state %v, %v after %d cancelled calls", st, err, pool*waves)
	}
	evs.none(t)
	if v := labelled(t, h, "wasmvisor_caller_ended_total", "p", "", ""); v != pool*waves {
		t.Fatalf("caller-ended restarts = %v, want %d", v, pool*waves)
	}

	// The caller's own deadline ends the call the same way. It is not a wait that ran out:
	// the instance is free (an echo went through first).
	call(t, h, "p", "echo", "free")
	var err error
	for { // a deadline passed before entry (a descheduled test) is a wait that ran out, and ends nothing: try again
		dctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
		_, err = h.Call(dctx, "p", "loop", []byte("same input"))
		cancel()
		if !errors.Is(err, host.ErrNoInstance) {
			break
		}
		t.Logf("not entered before the deadline: %v", err)
	}
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) || !de.Caller {
		t.Fatalf("call past the caller's deadline: %v", err)
	}
	if st, _ := h.PluginState("p"); st != host.PluginRunning {
		t.Fatalf("state %v", st)
	}
	evs.none(t)
	if v := labelled(t, h, "wasmvisor_caller_ended_total", "p", "", ""); v != pool*waves+1 {
		t.Fatalf("caller-ended restarts = %v, want %d", v, pool*waves+1)
	}
}

// An input that ended instances three times within the window is refused without entering
// an instance; other inputs are served; it is reported once per window however often it is
// refused; the window passes; and the table stays within its capacity under a stream of
// distinct crashing inputs.
func TestPoisonInput(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New()
	evs := newContainmentEvents()
	h := hosttest.New(t, host.WithClock(clk), host.WithRestartIntensity(1_000_000, time.Second, -1),
		host.WithPoisonInput(3, time.Minute, 8), host.WithEventHook(evs.hook))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: hostile})
	ctx := ctxT(t)
	poison := []byte("!boom")
	start := clk.Now()
	for i := range 3 {
		if _, err := h.Call(ctx, "p", "trapon", poison); !errors.Is(err, sandbox.ErrTrap) {
			t.Fatalf("crash %d: %v", i, err)
		}
		clk.Advance(time.Second)
	}
	e := evs.want(t, "p", host.EventPoisonInput)[0]
	if e.Handler != "trapon" || !errors.Is(e.Err, host.ErrPoisonInput) {
		t.Fatalf("event %+v", e)
	}
	restarts := func() uint64 {
		pi, err := h.Plugin("p")
		if err != nil {
			t.Fatal(err)
		}
		return pi.Restarts
	}
	call(t, h, "p", "echo", "the successor is up")
	before := restarts()
	for range 10 {
		_, err := h.Call(ctx, "p", "trapon", poison)
		var pe *host.PoisonInputError
		if !errors.As(err, &pe) || !errors.Is(err, host.ErrPoisonInput) || errors.Is(err, sandbox.ErrTrap) {
			t.Fatalf("poison input: %v", err)
		}
		if pe.Plugin != "p" || pe.Handler != "trapon" || pe.Ends != 3 || pe.Window != time.Minute ||
			!pe.RetryAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("poison error %+v", pe)
		}
	}
	if got := call(t, h, "p", "trapon", "fine"); got != "fine" {
		t.Fatalf("another input: %q", got)
	}
	if _, err := h.Call(ctx, "p", "echo", poison); err != nil { // same bytes, another handler
		t.Fatalf("another handler: %v", err)
	}
	if r := restarts(); r != before {
		t.Fatalf("a refused input restarted instances: %d → %d", before, r)
	}
	evs.none(t) // once per input and window, not per refusal
	if v := labelled(t, h, "wasmvisor_poison_refused_total", "p", "", ""); v != 10 {
		t.Fatalf("refused = %v", v)
	}
	if v := labelled(t, h, "wasmvisor_call_errors_total", "p", "kind", "poison_input"); v != 10 {
		t.Fatalf("poison_input errors = %v", v)
	}

	// A window after the first end, the input is tried again.
	clk.Advance(time.Minute - 3*time.Second)
	if _, err := h.Call(ctx, "p", "trapon", poison); !errors.Is(err, host.ErrPoisonInput) {
		t.Fatalf("at the end of the window: %v", err)
	}
	clk.Advance(1)
	if _, err := h.Call(ctx, "p", "trapon", poison); !errors.Is(err, sandbox.ErrTrap) {
		t.Fatalf("after the window: %v", err)
	}

	// A hostile client with endless distinct crashing inputs: the table stays at its
	// capacity, evicting the oldest, counted.
	for i := range 40 {
		if _, err := h.Call(ctx, "p", "trapon", []byte("!"+strconv.Itoa(i))); !errors.Is(err, sandbox.ErrTrap) {
			t.Fatalf("distinct input %d: %v", i, err)
		}
	}
	if v := labelled(t, h, "wasmvisor_poison_entries", "", "", ""); v != 8 {
		t.Fatalf("entries = %v, want the capacity 8", v)
	}
	if v := labelled(t, h, "wasmvisor_poison_evictions_total", "", "", ""); v < 32 {
		t.Fatalf("evictions = %v, want at least 32", v)
	}
	if got := call(t, h, "p", "echo", "ok"); got != "ok" {
		t.Fatalf("echo %q", got)
	}
}

// WithPoisonInput(-1, …) disables the defence.
func TestPoisonInputDisabled(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, many()...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: hostile})
	for i := range 6 {
		if _, err := h.Call(ctxT(t), "p", "trapon", []byte("!boom")); !errors.Is(err, sandbox.ErrTrap) {
			t.Fatalf("crash %d: %v", i, err)
		}
	}
}

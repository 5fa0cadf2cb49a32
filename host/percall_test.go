package host_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

func perCall(name string, instances int) host.Plugin {
	return host.Plugin{Name: name, Wasm: reference, Instances: instances, Isolation: host.InstancePerCall}
}

// The marker a call sets is gone for the next call under InstancePerCall, and still there
// in the default mode (the control: the test can fail).
func TestInstancePerCallMarker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		iso  host.Isolation
		want string
	}{{host.SharedInstance, "marker"}, {host.InstancePerCall, ""}} {
		t.Run(tc.iso.String(), func(t *testing.T) {
			t.Parallel()
			h := hosttest.New(t)
			hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Isolation: tc.iso})
			for i := range 5 {
				call(t, h, "p", "set", "marker")
				if got := call(t, h, "p", "get", ""); got != tc.want {
					t.Fatalf("round %d: get = %q, want %q", i, got, tc.want)
				}
			}
			pi, err := h.Plugin("p")
			if err != nil {
				t.Fatal(err)
			}
			wantResets := uint64(0)
			if tc.iso == host.InstancePerCall {
				wantResets = 9 // ten calls, the last one's reset may still be under way
			}
			if pi.Restarts != 0 || pi.Resets < wantResets || pi.Isolation != tc.iso {
				t.Fatalf("restarts %d, resets %d (want ≥ %d), isolation %v", pi.Restarts, pi.Resets, wantResets, pi.Isolation)
			}
			if got := metric(t, h, "wasmvisor_instance_resets_total", "p"); got < float64(wantResets) {
				t.Fatalf("wasmvisor_instance_resets_total = %v", got)
			}
		})
	}
}

// Many goroutines on a small pool: every get finds no marker, although every other call
// sets one; no call fails, nothing restarts.
func TestInstancePerCallConcurrent(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, perCall("p", 3))
	const goroutines, rounds = 12, 20
	ctx := ctxT(t)
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range rounds {
				if _, err := h.Call(ctx, "p", "set", fmt.Appendf(nil, "g%d-%d", g, i)); err != nil {
					errs <- err
					return
				}
				out, err := h.Call(ctx, "p", "get", nil)
				if err != nil {
					errs <- err
					return
				}
				if len(out) != 0 {
					errs <- fmt.Errorf("goroutine %d round %d: get = %q: the instance was not pristine", g, i, out)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pi, _ := h.Plugin("p")
	if pi.Restarts != 0 || pi.Resets < 2*goroutines*rounds-3 {
		t.Fatalf("restarts %d, resets %d", pi.Restarts, pi.Resets)
	}
}

// A call that traps takes the failure path: a restart, counted, not a reset; the successor
// serves pristine.
func TestInstancePerCallTrap(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	call(t, h, "p", "set", "marker")
	if _, err := h.Call(ctxT(t), "p", "trap", nil); !errors.Is(err, sandbox.ErrTrap) {
		t.Fatalf("trap: %v", err)
	}
	if got := call(t, h, "p", "get", ""); got != "" {
		t.Fatalf("after the trap, get = %q", got)
	}
	pi, _ := h.Plugin("p")
	if pi.Restarts != 1 {
		t.Fatalf("restarts %d, want 1", pi.Restarts)
	}
	if got := metric(t, h, "wasmvisor_restarts_total", "p"); got != 1 {
		t.Fatalf("wasmvisor_restarts_total = %v", got)
	}
}

// Every fresh instance holds the desired config: the initial one, then an update.
func TestInstancePerCallConfig(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	spec := perCall("p", 2)
	spec.Config = map[string]string{"k": "v0"}
	hosttest.LoadPlugin(t, h, spec)
	for range 4 {
		if got := call(t, h, "p", "config_get", "k"); got != "v0" {
			t.Fatalf("config = %q, want v0", got)
		}
	}
	if err := h.Configure(ctxT(t), "p", map[string]string{"k": "v1"}); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if got := call(t, h, "p", "config_get", "k"); got != "v1" {
			t.Fatalf("config = %q, want v1", got)
		}
	}
}

// Bus deliveries run in fresh instances too: a delivery is an operation of a caller.
func TestInstancePerCallDelivery(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	spec := perCall("sub", 1)
	spec.Subscribe = []string{"orders"}
	hosttest.LoadPlugin(t, h, spec)
	for range 3 {
		if _, err := h.Publish("orders", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	call(t, h, "sub", "echo", "") // runs once the last delivery's instance is reset
	pi, _ := h.Plugin("sub")
	if pi.Resets < 3 || pi.Restarts != 0 {
		t.Fatalf("resets %d, restarts %d after 3 deliveries", pi.Resets, pi.Restarts)
	}
	if ii := pi.Instances[0]; ii.Read && len(ii.Events.Events) != 0 {
		t.Fatalf("a delivery's event survived its reset: %+v", ii.Events.Events)
	}
}

// Unload and Close with resets in flight: each is cancelled and waited for; nothing leaks
// (Close's ErrLeak, goleak in TestMain).
func TestInstancePerCallCloseDuringReset(t *testing.T) {
	t.Parallel()
	inFlight := make(chan struct{}, 4)
	h := hosttest.New(t, host.WithResetHook(func(ctx context.Context) {
		inFlight <- struct{}{}
		<-ctx.Done() // held until the member ends
	}))
	hosttest.LoadPlugin(t, h, perCall("p", 2))
	hosttest.LoadPlugin(t, h, perCall("q", 1))
	call(t, h, "p", "echo", "a")
	call(t, h, "p", "echo", "b")
	call(t, h, "q", "echo", "c")
	for range 3 {
		select {
		case <-inFlight:
		case <-ctxT(t).Done():
			t.Fatal("no reset in flight")
		}
	}
	// Every slot is resetting: a call waits, within its context.
	short, cancel := context.WithCancel(ctxT(t))
	cancel()
	if _, err := h.Call(short, "p", "echo", nil); !errors.Is(err, host.ErrNoInstance) {
		t.Fatalf("call while resetting: %v", err)
	}
	// Unload, then Close, each with resets held open: both cancel them and wait.
	if err := h.Unload(ctxT(t), "q"); err != nil {
		t.Fatalf("unload: %v", err)
	}
	if err := h.Close(ctxT(t)); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestInstancePerCallInvalid(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	if err := h.Load(ctxT(t), host.Plugin{Name: "x", Wasm: reference, Isolation: 7}); !errors.Is(err, host.ErrInvalidPlugin) ||
		!strings.Contains(err.Error(), "Isolation(7)") {
		t.Fatalf("unknown isolation: %v", err)
	}
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	if err := h.Replace(ctxT(t), host.Plugin{Name: "p", Wasm: reference}); !errors.Is(err, host.ErrInvalidPlugin) {
		t.Fatalf("replace with another isolation: %v", err)
	}
	if err := h.Replace(ctxT(t), perCall("p", 1)); err != nil {
		t.Fatalf("replace: %v", err)
	}
	call(t, h, "p", "set", "m")
	if got := call(t, h, "p", "get", ""); got != "" {
		t.Fatalf("after replace, get = %q", got)
	}
}

// A config that becomes desired while every instance is resetting reaches the fresh
// instances: the reset starts them with it.
func TestInstancePerCallConfigureDuringReset(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	h := hosttest.New(t, host.WithResetHook(func(ctx context.Context) {
		select {
		case held <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}))
	spec := perCall("p", 1)
	spec.Config = map[string]string{"k": "v0"}
	hosttest.LoadPlugin(t, h, spec)
	call(t, h, "p", "echo", "")
	select {
	case <-held:
	case <-ctxT(t).Done():
		t.Fatal("no reset in flight")
	}
	// The new config becomes desired at once; with the only instance resetting, Configure
	// cannot see it applied within a context that has ended already.
	ended, cancel := context.WithCancel(ctxT(t))
	cancel()
	if err := h.Configure(ended, "p", map[string]string{"k": "v1"}); !errors.Is(err, host.ErrNoInstance) {
		t.Fatalf("Configure during the reset: %v", err)
	}
	close(release)
	if got := call(t, h, "p", "config_get", "k"); got != "v1" {
		t.Fatalf("config = %q, want v1", got)
	}
	if err := h.Configure(ctxT(t), "p", map[string]string{"k": "v2"}); err != nil {
		t.Fatal(err)
	}
	if got := call(t, h, "p", "config_get", "k"); got != "v2" {
		t.Fatalf("config = %q, want v2", got)
	}
}

// Under InstancePerCall a reference instance is rewound in place, not replaced: every reset
// is a rewind, and what each call leaves (a counter, an event) is carried over exactly once,
// as for instances that end.
func TestInstancePerCallRewinds(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	const n = 20
	for i := range n {
		call(t, h, "p", "count", "")
		call(t, h, "p", "emit", fmt.Sprintf("t\n%d", i))
	}
	call(t, h, "p", "echo", "") // the last reset before it is done
	pi, err := h.Plugin("p")
	if err != nil {
		t.Fatal(err)
	}
	if pi.Rewinds < 2*n || pi.Rewinds != pi.Resets || pi.Restarts != 0 {
		t.Fatalf("resets %d, rewinds %d, restarts %d", pi.Resets, pi.Rewinds, pi.Restarts)
	}
	if got := metric(t, h, "wasmvisor_instance_rewinds_total", "p"); got < float64(pi.Rewinds) { // the echo's reset may be done by now
		t.Fatalf("wasmvisor_instance_rewinds_total = %v, rewinds %d", got, pi.Rewinds)
	}
	totals, err := h.GuestTotals("p")
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, m := range totals {
		if m.Name == "requests_total" {
			counted = float64(m.Value)
		}
	}
	if counted != n {
		t.Fatalf("requests_total summed %v, want %d (%+v)", counted, n, totals)
	}
	log, err := h.GuestEvents("p", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Events) != n {
		t.Fatalf("%d events, want %d: %+v", len(log.Events), n, log.Events)
	}
	for i, ev := range log.Events {
		if string(ev.Data) != fmt.Sprint(i) && string(ev.Data) != fmt.Sprintf("%q", fmt.Sprint(i)) {
			t.Fatalf("event %d: %q", i, ev.Data)
		}
	}
}

// A stop that lands while a reset reads the old instance finds it busy: the instance is
// retired when the read leaves it, the rewind then fails, and the reset makes a new
// instance. The member must still end, on the reset's goroutine, as it would on a call's:
// it did not (TestChaos found it), and the supervisor waited its shutdown timeout, 5 s, for
// a member nobody would end. Here the stop lands before the reset touches the instance
// (StopLandsOnReset): the same state, without the timing.
func TestInstancePerCallStopDuringResetRead(t *testing.T) {
	t.Parallel()
	ended := make(chan host.Event, 16)
	var once sync.Once
	var h *host.Host
	h = hosttest.New(t, host.WithResetHook(func(context.Context) {
		once.Do(func() { host.StopLandsOnReset(h, "p", 0) })
	}), host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventInstanceEnded {
			ended <- e
		}
	}))
	hosttest.LoadPlugin(t, h, perCall("p", 1))
	call(t, h, "p", "echo", "a")
	select {
	case e := <-ended:
		if !errors.Is(e.Err, supervisor.ErrShutdown) {
			t.Fatalf("the member ended with %v, want ErrShutdown", e.Err)
		}
	case <-ctxT(t).Done():
		t.Fatal("the member asked to end during its reset never ended")
	}
	if pi, _ := h.Plugin("p"); pi.Resets != 1 || pi.Rewinds != 0 {
		t.Fatalf("resets %d, rewinds %d; want the one reset, by a new instance", pi.Resets, pi.Rewinds)
	}
}

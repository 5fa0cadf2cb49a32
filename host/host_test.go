package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

func TestMain(m *testing.M) { hosttest.VerifyTestMain(m) }

const referencePath = "../plugins/reference/reference.wasm"

var reference = func() []byte {
	b, err := os.ReadFile(referencePath)
	if err != nil {
		panic(err)
	}
	return b
}()

// ctxT is a bounded context for one step of a test: a bug fails the test instead of hanging.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func call(t testing.TB, h *host.Host, name, handler, input string) string {
	t.Helper()
	out, err := h.Call(ctxT(t), name, handler, []byte(input))
	if err != nil {
		t.Fatalf("call %s: %v", handler, err)
	}
	return string(out)
}

// many allows a test to crash its plugin as often as it likes, with the same input: no
// quarantine, no poison-input refusal.
func many(more ...host.Option) []host.Option {
	return append([]host.Option{host.WithRestartIntensity(1_000_000, time.Second, -1), host.WithPoisonInput(-1, 0, 0)}, more...)
}

func TestCallEchoAndErrors(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.Load(t, h, "ref", reference)
	if got := call(t, h, "ref", "echo", "hello"); got != "hello" {
		t.Fatalf("echo = %q", got)
	}
	ctx := ctxT(t)
	if _, err := h.Call(ctx, "nope", "echo", nil); !errors.Is(err, host.ErrNotFound) {
		t.Fatalf("unknown plugin: %v", err)
	}
	if _, err := h.Call(ctx, "ref", "fail", []byte("boom")); !errors.Is(err, sandbox.ErrGuest) {
		t.Fatalf("fail: %v", err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); !errors.Is(err, host.ErrAlreadyLoaded) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "x"}); !errors.Is(err, host.ErrInvalidPlugin) {
		t.Fatalf("no code: %v", err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "y", Path: referencePath}); err != nil {
		t.Fatalf("load from path: %v", err)
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	h, err := host.New(ctx, host.WithCacheDir(hosttest.CacheDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference, Instances: 3}); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := h.Call(ctx, "ref", "echo", nil); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
	if err := h.Load(ctx, host.Plugin{Name: "ref", Wasm: reference}); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
}

// Two hosts in one process, running plugins under identical names, never see each other.
func TestTwoHostsNeverSeeEachOther(t *testing.T) {
	t.Parallel()
	h1, h2 := hosttest.New(t), hosttest.New(t)
	var got1, got2 atomic.Int64
	for i, h := range []*host.Host{h1, h2} {
		hosttest.LoadPlugin(t, h, host.Plugin{Name: "authz", Wasm: reference,
			Config: map[string]string{"who": "host" + strconv.Itoa(i+1)}, Subscribe: []string{"audit"}})
	}
	if _, err := h1.Subscribe("audit", func(host.Message) { got1.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Subscribe("audit", func(host.Message) { got2.Add(1) }); err != nil {
		t.Fatal(err)
	}
	call(t, h1, "authz", "set", "one")
	call(t, h1, "authz", "count", "5")
	call(t, h1, "authz", "publish", "audit\nfrom-1")
	if err := h1.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := h2.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := call(t, h2, "authz", "get", ""); got != "" {
		t.Fatalf("host 2 sees host 1's marker %q", got)
	}
	if got := call(t, h2, "authz", "config_get", "who"); got != "host2" {
		t.Fatalf("host 2 config = %q", got)
	}
	if got1.Load() != 1 || got2.Load() != 0 {
		t.Fatalf("deliveries: host1 %d host2 %d", got1.Load(), got2.Load())
	}
	if c := counter(t, h2, "authz", "requests_total"); c != 0 {
		t.Fatalf("host 2 telemetry = %v", c)
	}
	if err := h1.Unload(ctxT(t), "authz"); err != nil {
		t.Fatal(err)
	}
	if got := call(t, h2, "authz", "config_get", "who"); got != "host2" {
		t.Fatalf("host 2 after host 1 unloaded: %q", got)
	}
}

func counter(t testing.TB, h *host.Host, name, metric string) float64 {
	t.Helper()
	pi, err := h.Plugin(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range pi.Instances[0].Telemetry {
		if m.Name == metric {
			return m.Value
		}
	}
	t.Fatalf("no metric %q in %+v", metric, pi.Instances[0])
	return 0
}

// Restart replaces memory: write a marker, crash the instance, read zero; the desired
// config is back in the new incarnation.
func TestRestartReplacesMemory(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Config: map[string]string{"k": "v0"},
		Limits: sandbox.Limits{MemoryPages: 32}})
	if err := h.Configure(ctxT(t), "p", map[string]string{"k": "v1"}); err != nil {
		t.Fatal(err)
	}
	call(t, h, "p", "set", "marker")
	call(t, h, "p", "count", "7")
	before, _ := h.Plugin("p")
	for _, crash := range []string{"trap", "exit", "grow"} {
		call(t, h, "p", "set", "marker")
		if _, err := h.Call(ctxT(t), "p", crash, []byte("3")); !sandbox.Fatal(errors.Unwrap(err)) && !sandbox.Fatal(err) {
			t.Fatalf("%s: %v", crash, err)
		}
		if got := call(t, h, "p", "get", ""); got != "" {
			t.Fatalf("after %s, marker = %q", crash, got)
		}
		if got := call(t, h, "p", "config_get", "k"); got != "v1" {
			t.Fatalf("after %s, config = %q", crash, got)
		}
	}
	after, _ := h.Plugin("p")
	if after.Instances[0].Incarnation <= before.Instances[0].Incarnation || after.Restarts != 3 {
		t.Fatalf("incarnation %d → %d, restarts %d", before.Instances[0].Incarnation,
			after.Instances[0].Incarnation, after.Restarts)
	}
	if c := counter(t, h, "p", "requests_total"); c != 0 {
		t.Fatalf("telemetry survived: %v", c)
	}
	// Reset is the same replacement, on demand.
	call(t, h, "p", "set", "again")
	if err := h.Reset(ctxT(t), "p"); err != nil {
		t.Fatal(err)
	}
	if got := call(t, h, "p", "get", ""); got != "" {
		t.Fatalf("after reset, marker = %q", got)
	}
	if got := call(t, h, "p", "config_get", "k"); got != "v1" {
		t.Fatalf("after reset, config = %q", got)
	}
}

// Kill then immediate re-registration of the same name succeeds, every time: the slot is
// released before the supervisor learns of the end, so the successor's registration never
// finds it taken. And Unload then Load of the same name, likewise.
func TestKillThenReregister10000(t *testing.T) {
	t.Parallel()
	n := 10_000
	if testing.Short() {
		n = 1000
	}
	var startFailures atomic.Int64
	h := hosttest.New(t, many(host.WithLogger(zap.NewNop()), host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventSupervisor && e.Supervisor.Kind == supervisor.EventStartFailed {
			startFailures.Add(1)
		}
	}))...)
	hosttest.Load(t, h, "p", reference)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var last uint64
	for i := range n {
		hd, err := h.Lookup(ctx, "p", 0)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		if hd.Incarnation() <= last {
			t.Fatalf("iteration %d: incarnation %d after %d", i, hd.Incarnation(), last)
		}
		last = hd.Incarnation()
		hd.Kill()
		if _, err := hd.Call(ctx, "echo", nil); !errors.Is(err, host.ErrStale) && !errors.Is(err, sandbox.ErrCanceled) {
			t.Fatalf("iteration %d: stale handle call: %v", i, err)
		}
		if got, err := h.Call(ctx, "p", "echo", []byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("iteration %d: %q %v", i, got, err)
		}
	}
	if f := startFailures.Load(); f != 0 {
		t.Fatalf("%d restarts failed", f)
	}
	m := n / 10
	for i := range m {
		if err := h.Unload(ctx, "p"); err != nil {
			t.Fatalf("unload %d: %v", i, err)
		}
		if err := h.Load(ctx, host.Plugin{Name: "p", Wasm: reference}); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
}

// Config updates sent while the instance crashes repeatedly all arrive, latest wins.
func TestConfigUnderRepeatedCrashes(t *testing.T) {
	t.Parallel()
	changed := make(chan struct{}, 1) // a token when an instance starts or takes a config
	h := hosttest.New(t, many(host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventInstanceStarted || e.Kind == host.EventConfigApplied {
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}))...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 2})
	ctx := ctxT(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var crashes atomic.Int64
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := h.Call(ctx, "p", "trap", nil); err != nil && errors.Is(err, sandbox.ErrTrap) {
					crashes.Add(1)
				}
			}
		})
	}
	const updates = 300
	configure := func(v int) {
		cfg := map[string]string{"v": strconv.Itoa(v)}
		// A short wait by design, robust to any scheduling: a wait that runs out is
		// ErrNoInstance (tolerated) and the update is kept; a push it cuts ends one instance.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		err := h.Configure(cctx, "p", cfg)
		cancel()
		if err != nil && !errors.Is(err, host.ErrNoInstance) {
			t.Fatalf("configure %d: %v", v, err)
		}
	}
	for v := 1; v <= updates; v++ {
		configure(v)
	}
	// The crashers run concurrently; make sure some crashes overlapped the updates (bounded),
	// re-sending the latest config meanwhile, which keeps "latest wins" the thing tested.
	for deadline := time.Now().Add(30 * time.Second); crashes.Load() < 5; { // bounds a hang only
		if time.Now().After(deadline) {
			t.Fatalf("only %d crashes happened", crashes.Load())
		}
		configure(updates)
	}
	close(stop)
	wg.Wait()
	// Every live instance converges on the latest config, without another Configure.
	want := strconv.Itoa(updates)
	for {
		pi, err := h.Plugin("p")
		if err != nil {
			t.Fatal(err)
		}
		ok := true
		for _, in := range pi.Instances {
			if !in.Up || !in.Read || in.AppliedConfig["v"] != want {
				ok = false
			}
		}
		if ok {
			break
		}
		select { // until an instance starts or takes a config
		case <-changed:
		case <-time.After(30 * time.Second): // bounds a hang only
			t.Fatalf("not converged: %+v", pi.Instances)
		}
	}
	for range 4 {
		if got := call(t, h, "p", "config_get", "v"); got != want {
			t.Fatalf("config_get = %q, want %q (crashes: %d)", got, want, crashes.Load())
		}
	}
	t.Logf("%d crashes during %d updates", crashes.Load(), updates)
}

func TestConfigureRejectedKeepsPrevious(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Config: map[string]string{"a": "1"}, Instances: 2})
	err := h.Configure(ctxT(t), "p", map[string]string{"reject": "yes"})
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) {
		t.Fatalf("configure: %v", err)
	}
	pi, _ := h.Plugin("p")
	if pi.Config["a"] != "1" {
		t.Fatalf("desired after rejection: %v", pi.Config)
	}
	if _, err := h.Call(ctxT(t), "p", "trap", nil); !errors.Is(err, sandbox.ErrTrap) {
		t.Fatal(err)
	}
	for range 2 {
		if got := call(t, h, "p", "config_get", "a"); got != "1" {
			t.Fatalf("config = %q", got)
		}
	}
	if got := call(t, h, "p", "config_changes", ""); got != "1" {
		t.Fatalf("changes = %q", got)
	}
}

// Dependencies: a plugin starts only after those it depends on are ready; restarting a
// dependency restarts its dependents.
func TestDependencies(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	h := hosttest.New(t, host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventInstanceStarted {
			mu.Lock()
			order = append(order, e.Plugin)
			mu.Unlock()
		}
	}))
	ctx := ctxT(t)
	if err := h.Load(ctx, host.Plugin{Name: "api", Wasm: reference, DependsOn: []string{"db"}}); !errors.Is(err, host.ErrDependency) {
		t.Fatalf("missing dependency: %v", err)
	}
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "db", Wasm: reference, Instances: 2})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "cache", Wasm: reference, DependsOn: []string{"db"}})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "api", Wasm: reference, DependsOn: []string{"cache"}})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "other", Wasm: reference})
	mu.Lock()
	if fmt.Sprint(order) != "[db db cache api other]" {
		t.Fatalf("start order %v", order)
	}
	order = nil
	mu.Unlock()
	for _, n := range []string{"db", "cache", "api", "other"} {
		call(t, h, n, "set", n)
	}
	if err := h.Unload(ctx, "db"); !errors.Is(err, host.ErrDependency) {
		t.Fatalf("unload a dependency: %v", err)
	}
	if err := h.Reset(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if fmt.Sprint(order) != "[db db cache api]" {
		t.Fatalf("restart order %v", order)
	}
	mu.Unlock()
	for n, want := range map[string]string{"db": "", "cache": "", "api": "", "other": "other"} {
		if got := call(t, h, n, "get", ""); got != want {
			t.Fatalf("%s marker = %q, want %q", n, got, want)
		}
	}
	if err := h.Unload(ctx, "api"); err != nil {
		t.Fatal(err)
	}
}

func TestPoolWaitsThenNoInstance(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t, many()...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 2,
		Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})
	ctx := ctxT(t)
	hd0, _ := h.Lookup(ctx, "p", 0)
	hd1, _ := h.Lookup(ctx, "p", 1)
	var wg sync.WaitGroup
	for _, hd := range []host.Handle{hd0, hd1} {
		wg.Go(func() {
			// Handle.Call does not queue: retry while the introspection below holds it.
			for {
				if _, err := hd.Call(ctx, "loop", nil); !errors.Is(err, sandbox.ErrBusy) {
					return
				}
			}
		})
	}
	// Wait until both are busy (the introspection does not wait for a busy instance). Nothing
	// signals that a guest is running, so this polls, paced by a ticker rather than spinning
	// against the guests for the two cores; the 30 s bound only catches a hang.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	hang := time.After(30 * time.Second)
	for {
		pi, _ := h.Plugin("p")
		if !pi.Instances[0].Read && !pi.Instances[1].Read {
			break
		}
		select {
		case <-tick.C:
		case <-hang:
			t.Fatal("instances never busy")
		}
	}
	// The deadline must fire in real time (the pool stays busy); robust to scheduling: a
	// context that ends before the call reaches the pool gives the same ErrNoInstance.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := h.Call(short, "p", "echo", nil)
	cancel()
	if !errors.Is(err, host.ErrNoInstance) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("busy pool: %v", err)
	}
	// A waiting call is served as soon as an instance is replaced.
	done := make(chan error, 1)
	go func() { _, err := h.Call(ctx, "p", "echo", nil); done <- err }()
	hd0.Kill()
	if err := <-done; err != nil {
		t.Fatalf("waiting call: %v", err)
	}
	hd1.Kill()
	wg.Wait()
}

// TestEndedContextNeverRuns: a call whose context has already ended does not run, whether
// the pool is idle or busy, and reports a wait that ran out (ErrNoInstance) with the cause.
func TestEndedContextNeverRuns(t *testing.T) {
	t.Parallel()
	h := hosttest.New(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 2})
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	for range 3 {
		_, err := h.Call(ctx, "p", "count", nil)
		if !errors.Is(err, host.ErrNoInstance) || !errors.Is(err, context.Canceled) {
			t.Fatalf("call with an ended context: %v", err)
		}
	}
	pi, err := h.Plugin("p")
	if err != nil {
		t.Fatal(err)
	}
	for _, ii := range pi.Instances {
		for _, m := range ii.Telemetry {
			if m.Name == "requests_total" && m.Value != 0 {
				t.Fatalf("instance %d counted %v requests: a call ran", ii.Index, m.Value)
			}
		}
	}
}

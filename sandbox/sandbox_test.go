package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/testcache"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

var cacheDir string

func TestMain(m *testing.M) {
	// Compiled code is shared with every package's tests (internal/testcache); a directory of
	// this binary's own when no shared one can be keyed safely.
	cacheDir = testcache.Dir()
	remove := ""
	if cacheDir == "" {
		dir, err := os.MkdirTemp("", "wasmvisor-sandbox-")
		if err != nil {
			panic(err)
		}
		cacheDir, remove = dir, dir
	}
	code := func() int {
		if remove != "" {
			defer os.RemoveAll(remove)
		}
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	referencePath = "../plugins/reference/reference.wasm"
	goPluginPath  = "../plugins/conformance/go/conformance.wasm"
	miniPath      = "testdata/mini.wasm"
	capsPath      = "testdata/caps/caps.wasm"
)

func newEngine(t testing.TB, opts ...sandbox.Option) *sandbox.Engine {
	t.Helper()
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx, append([]sandbox.Option{sandbox.WithCacheDir(cacheDir)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(ctx); err != nil {
			t.Errorf("Engine.Close: %v", err)
		}
	})
	return e
}

func compile(t testing.TB, e *sandbox.Engine, path string, cfg sandbox.Config) *sandbox.Module {
	t.Helper()
	m, err := e.Compile(context.Background(), read(t, path), cfg)
	if err != nil {
		t.Fatalf("Compile %s: %v", path, err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func instantiate(t testing.TB, m *sandbox.Module, cfg map[string]string) *sandbox.Instance {
	t.Helper()
	i, err := m.Instantiate(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Instantiate: %v", err)
	}
	t.Cleanup(func() { _ = i.Close(context.Background()) })
	return i
}

func mustCall(t testing.TB, i *sandbox.Instance, h, in string) string {
	t.Helper()
	out, err := i.Call(context.Background(), h, []byte(in))
	if err != nil {
		t.Fatalf("Call %s(%q): %v", h, in, err)
	}
	return string(out)
}

// unaffected checks that the module still gives healthy instances after one failed.
func unaffected(t *testing.T, m *sandbox.Module, others ...*sandbox.Instance) {
	t.Helper()
	fresh := instantiate(t, m, nil)
	if got := mustCall(t, fresh, "echo", "fresh"); got != "fresh" {
		t.Errorf("fresh instance echo = %q", got)
	}
	for _, o := range others {
		if got := mustCall(t, o, "echo", "other"); got != "other" {
			t.Errorf("other instance echo = %q", got)
		}
	}
}

// plugins are the two builds every failure test runs against.
var plugins = []struct{ name, path string }{
	{"wat", referencePath},
	{"go", goPluginPath},
}

func TestFailureKinds(t *testing.T) {
	type tc struct {
		name    string
		handler string
		input   string
		limits  sandbox.Limits
		check   func(t *testing.T, err error)
	}
	cases := []tc{
		{name: "trap", handler: "trap", check: func(t *testing.T, err error) {
			var te *sandbox.TrapError
			if !errors.Is(err, sandbox.ErrTrap) || !errors.As(err, &te) {
				t.Fatalf("err = %v, want a TrapError", err)
			}
			if te.Kind != sandbox.TrapUnreachable && te.Kind != sandbox.TrapAbort {
				t.Errorf("kind = %q", te.Kind)
			}
			if len(te.Stack) == 0 {
				t.Errorf("no wasm stack in %#v", te)
			}
		}},
		{name: "deadline", handler: "loop", limits: sandbox.Limits{CallTimeout: 20 * time.Millisecond}, check: func(t *testing.T, err error) {
			var de *sandbox.DeadlineError
			if !errors.Is(err, sandbox.ErrDeadline) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &de) {
				t.Fatalf("err = %v, want a DeadlineError", err)
			}
			if de.Op != "call" || de.Timeout != "20ms" || de.Caller || sandbox.CallerEnded(err) {
				t.Errorf("DeadlineError = %+v", de)
			}
		}},
		{name: "memory limit", handler: "grow", limits: sandbox.Limits{MemoryPages: 128}, check: func(t *testing.T, err error) {
			var me *sandbox.MemoryLimitError
			if !errors.Is(err, sandbox.ErrMemoryLimit) || !errors.As(err, &me) || me.LimitPages != 128 {
				t.Fatalf("err = %v, want a MemoryLimitError at 128 pages", err)
			}
		}},
		{name: "exit code", handler: "exit", input: "7", check: func(t *testing.T, err error) {
			var ee *sandbox.ExitError
			if !errors.Is(err, sandbox.ErrExit) || !errors.As(err, &ee) || ee.Code != 7 {
				t.Fatalf("err = %v, want exit code 7", err)
			}
		}},
	}
	for _, p := range plugins {
		for _, c := range cases {
			t.Run(p.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				e := newEngine(t)
				limits := c.limits
				if limits.MemoryPages == 0 {
					limits.MemoryPages = 256
				}
				m := compile(t, e, p.path, sandbox.Config{Limits: limits})
				bystander := instantiate(t, m, nil)
				victim := instantiate(t, m, nil)
				mustCall(t, victim, "count", "5")

				_, err := victim.Call(context.Background(), c.handler, []byte(c.input))
				c.check(t, err)
				if !sandbox.Fatal(err) {
					t.Errorf("Fatal(%v) = false", err)
				}
				// Never entered again: the same error, and the guest's counter does not move.
				_, again := victim.Call(context.Background(), "count", []byte("1"))
				if again == nil || again.Error() != err.Error() {
					t.Errorf("second call: %v, want %v", again, err)
				}
				if !errors.Is(victim.Err(), errors.Unwrap(again)) && victim.Err().Error() != err.Error() {
					t.Errorf("Err() = %v", victim.Err())
				}
				ms, terr := victim.Telemetry()
				if terr != nil || ms[0].Name != "requests_total" || ms[0].Value != 5 {
					t.Errorf("post-mortem telemetry = %+v, %v; want requests_total 5", ms, terr)
				}
				unaffected(t, m, bystander)
			})
		}
	}
}

func TestContextCancellationAndKill(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, referencePath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})

	t.Run("context deadline", func(t *testing.T) {
		i := instantiate(t, m, nil)
		var err error
		for { // wallclock-free: a deadline passed before entry (a descheduled test) means not entered; try again
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			_, err = i.Call(ctx, "loop", nil)
			cancel()
			if !errors.As(err, new(*sandbox.NotEnteredError)) {
				break
			}
			t.Logf("not entered before the deadline: %v", err)
		}
		var de *sandbox.DeadlineError
		if !errors.As(err, &de) || !strings.HasPrefix(de.Timeout, "context deadline") || !de.Caller || !sandbox.CallerEnded(err) {
			t.Fatalf("err = %v, want a context DeadlineError", err)
		}
	})
	t.Run("context canceled", func(t *testing.T) {
		i := instantiate(t, m, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := startCall(t, ctx, i, "loop") // cancel once the guest runs: an event, not a timer
		cancel()
		err := <-done
		if !errors.Is(err, sandbox.ErrCanceled) || !errors.Is(err, context.Canceled) || !sandbox.Fatal(err) || !sandbox.CallerEnded(err) {
			t.Fatalf("err = %v, want ErrCanceled", err)
		}
	})
	t.Run("already canceled is not entered", func(t *testing.T) {
		i := instantiate(t, m, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := i.Call(ctx, "echo", []byte("x")); !errors.Is(err, context.Canceled) || sandbox.Fatal(err) {
			t.Fatalf("err = %v, want context.Canceled, not fatal", err)
		}
		if got := mustCall(t, i, "echo", "still"); got != "still" {
			t.Errorf("echo = %q", got)
		}
	})
	t.Run("kill a running call", func(t *testing.T) {
		i := instantiate(t, m, nil)
		done := startCall(t, context.Background(), i, "loop") // kill once the guest runs
		i.Kill()
		err := <-done
		if !errors.Is(err, sandbox.ErrCanceled) || sandbox.CallerEnded(err) {
			t.Fatalf("err = %v, want ErrCanceled, not a caller end", err)
		}
		if _, err := i.Call(context.Background(), "echo", nil); !errors.Is(err, sandbox.ErrCanceled) {
			t.Fatalf("after kill: %v", err)
		}
	})
	t.Run("kill an idle instance", func(t *testing.T) {
		i := instantiate(t, m, nil)
		i.Kill()
		if _, err := i.Call(context.Background(), "echo", nil); !errors.Is(err, sandbox.ErrCanceled) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestBusyAndClosed(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, referencePath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: 5 * time.Second}})
	i := instantiate(t, m, nil)
	done := startCall(t, context.Background(), i, "loop")
	if _, err := i.Call(context.Background(), "echo", nil); !errors.Is(err, sandbox.ErrBusy) {
		t.Errorf("call while busy: %v, want ErrBusy", err)
	}
	if err := i.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if loopErr := <-done; !errors.Is(loopErr, sandbox.ErrCanceled) {
		t.Errorf("loop after Close: %v", loopErr)
	}
	if _, err := i.Call(context.Background(), "echo", nil); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if err := i.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := i.Events(0); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("Events after Close: %v", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Instantiate(context.Background(), nil); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("Instantiate on a closed module: %v", err)
	}
	live := instantiate(t, compile(t, e, referencePath, sandbox.Config{}), nil)
	if _, err := live.Call(context.Background(), "nope", nil); !errors.Is(err, sandbox.ErrUnknownHandler) || sandbox.Fatal(err) {
		t.Errorf("unknown handler: %v", err)
	}
	if got := mustCall(t, live, "echo", "after"); got != "after" {
		t.Errorf("echo after an unknown handler = %q", got)
	}
}

func TestIsolation(t *testing.T) {
	for _, p := range plugins {
		t.Run(p.name, func(t *testing.T) {
			e := newEngine(t)
			m := compile(t, e, p.path, sandbox.Config{})
			a, b := instantiate(t, m, nil), instantiate(t, m, nil)
			mustCall(t, a, "set", "marker-a")
			mustCall(t, a, "emit", "t\nonly in a")
			if got := mustCall(t, b, "get", ""); got != "" {
				t.Errorf("b sees marker %q", got)
			}
			if log, err := b.Events(0); err != nil || len(log.Events) != 0 {
				t.Errorf("b sees events %+v, %v", log, err)
			}
			// A new instance after a trap starts clean.
			if _, err := a.Call(context.Background(), "trap", nil); !errors.Is(err, sandbox.ErrTrap) {
				t.Fatalf("trap: %v", err)
			}
			c := instantiate(t, m, nil)
			if got := mustCall(t, c, "get", ""); got != "" {
				t.Errorf("successor sees marker %q", got)
			}
			if got := mustCall(t, a2(t, m), "config_changes", ""); got != "0" {
				t.Errorf("config_changes = %q", got)
			}
		})
	}
}

func a2(t *testing.T, m *sandbox.Module) *sandbox.Instance { return instantiate(t, m, nil) }

func TestABIValidation(t *testing.T) {
	e := newEngine(t)
	_, err := e.Compile(context.Background(), read(t, "testdata/noabi.wasm"), sandbox.Config{})
	var ae *sandbox.ABIError
	if !errors.Is(err, sandbox.ErrABI) || !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an ABIError", err)
	}
	for _, want := range []string{
		`unexpected import "env.f"`,
		`malformed import "wasmvisor.log": type (i32) -> (), want (i32, i32, i32) -> ()`,
		`unexpected import "wasmvisor.sleep"`,
		`unexpected import "wasi_snapshot_preview1.not_a_wasi_function"`,
		`missing export "wasmvisor_init"`,
		`missing export "wasmvisor_reserve"`,
		`missing export "wasmvisor_configure"`,
		`malformed export "wasmvisor_call": type (i32) -> i32, want (i32, i32) -> i32`,
		`unexpected export "wasmvisor_bogus"`,
		`unexpected export "_start"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
	if len(ae.Problems) != 10 {
		t.Errorf("%d problems, want 10: %v", len(ae.Problems), ae.Problems)
	}

	for _, c := range []struct {
		name string
		wasm []byte
		want error
	}{
		{"empty", nil, sandbox.ErrInvalidModule},
		{"garbage", []byte("definitely not wasm"), sandbox.ErrInvalidModule},
		{"truncated", read(t, referencePath)[:100], sandbox.ErrInvalidModule},
		{"invalid code", corruptCode(t), sandbox.ErrInvalidModule},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Compile(context.Background(), c.wasm, sandbox.Config{})
			var me *sandbox.ModuleError
			if !errors.Is(err, c.want) || !errors.As(err, &me) || me.Reason == "" {
				t.Fatalf("err = %v, want %v with a reason", err, c.want)
			}
		})
	}
}

// corruptCode returns mini.wasm with an i32.add where its init returns, which wazero's
// validator refuses (type mismatch) but which still parses.
func corruptCode(t *testing.T) []byte {
	b := bytes.Clone(read(t, miniPath))
	// wasmvisor_init's body is "i32.const 64 end": 0x41 0x40 0x0b.
	i := bytes.Index(b, []byte{0x00, 0x41, 0xc0, 0x00, 0x0b})
	if i < 0 {
		t.Fatal("init body not found in mini.wasm")
	}
	b[i+1] = 0x6a // i32.add on an empty stack
	return b
}

func TestControlBlockChecks(t *testing.T) {
	e := newEngine(t)
	base := read(t, miniPath)
	patch := func(old, new string) []byte {
		b := bytes.Clone(base)
		i := bytes.Index(b, []byte(old))
		if i < 0 {
			t.Fatalf("%q not in mini.wasm", old)
		}
		copy(b[i:], new)
		return b
	}
	for _, c := range []struct {
		name, detail string
		wasm         []byte
	}{
		{"bad magic", "magic", patch("wvab", "xxxx")},
		{"unknown version", "the plugin speaks ABI version 2, this host speaks 1", patch("wvab\x01", "wvab\x02")},
		{"bad handler name", "invalid name", patch("badstatus", "bad statu")},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := e.Compile(context.Background(), c.wasm, sandbox.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close(context.Background())
			_, err = m.Instantiate(context.Background(), nil)
			if !errors.Is(err, sandbox.ErrABI) || !strings.Contains(err.Error(), c.detail) {
				t.Fatalf("err = %v, want ErrABI naming %q", err, c.detail)
			}
		})
	}
}

func TestABIViolations(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, miniPath, sandbox.Config{})
	for _, c := range []struct{ handler, input, detail string }{
		{"badout", "", "output 0xffffff00+1000 out of memory"},
		{"badstatus", "", "status 99"},
		{"badlog", "", "log message 0xfffffff0+100 out of memory"},
		{"ok", strings.Repeat("x", 2000), "wasmvisor_reserve(2000) left in_cap at 1024"},
	} {
		t.Run(c.handler, func(t *testing.T) {
			i := instantiate(t, m, nil)
			_, err := i.Call(context.Background(), c.handler, []byte(c.input))
			var ve *sandbox.ViolationError
			if !errors.Is(err, sandbox.ErrABIViolation) || !errors.As(err, &ve) || !strings.Contains(ve.Reason, c.detail) {
				t.Fatalf("err = %v, want a violation naming %q", err, c.detail)
			}
			if _, err := i.Call(context.Background(), "ok", nil); !errors.Is(err, sandbox.ErrABIViolation) {
				t.Errorf("entered again after a violation: %v", err)
			}
			unaffectedMini(t, m)
		})
	}
}

func unaffectedMini(t *testing.T, m *sandbox.Module) {
	t.Helper()
	if got := mustCall(t, instantiate(t, m, nil), "ok", "fine"); got != "fine" {
		t.Errorf("fresh instance = %q", got)
	}
}

func TestDeadlineIsPerCallNotCumulative(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, miniPath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: 2 * time.Second}})
	i := instantiate(t, m, nil)
	// Many short calls whose sum exceeds the timeout never trip it, and a watched call
	// after them still completes.
	for n := 0; n < 2000; n++ {
		if _, err := i.Call(context.Background(), "spinning", []byte{}); err != nil {
			t.Fatalf("call %d: %v", n, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := i.Call(ctx, "spinning", []byte("x")); err != nil { // 1e6 iterations
		t.Fatalf("cancellable call: %v", err)
	}
}

func TestStartDeadlineAndMemoryMinimum(t *testing.T) {
	e := newEngine(t)
	// The Go plugin needs more than one page at start.
	_, err := e.Compile(context.Background(), read(t, goPluginPath), sandbox.Config{Limits: sandbox.Limits{MemoryPages: 1}})
	if !errors.Is(err, sandbox.ErrMemoryLimit) {
		t.Fatalf("err = %v, want ErrMemoryLimit", err)
	}
	m := compile(t, e, "testdata/hang.wasm", sandbox.Config{Limits: sandbox.Limits{StartTimeout: 20 * time.Millisecond}})
	_, err = m.Instantiate(context.Background(), nil)
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) || de.Op != "start" || !strings.Contains(err.Error(), "_initialize") {
		t.Fatalf("err = %v, want a start DeadlineError in _initialize", err)
	}
}

func TestConfigStore(t *testing.T) {
	for _, p := range plugins {
		t.Run(p.name, func(t *testing.T) {
			e := newEngine(t)
			m := compile(t, e, p.path, sandbox.Config{})
			i := instantiate(t, m, map[string]string{"k": "v1"})
			if got, err := i.AppliedConfig(); err != nil || got["k"] != "v1" || len(got) != 1 {
				t.Fatalf("AppliedConfig = %v, %v", got, err)
			}
			if err := i.Configure(context.Background(), map[string]string{"k": "v2", "n": "1"}); err != nil {
				t.Fatal(err)
			}
			if got := mustCall(t, i, "config_changes", ""); got != "2" {
				t.Errorf("config_changes = %q", got)
			}
			err := i.Configure(context.Background(), map[string]string{"reject": "1"})
			var ge *sandbox.GuestError
			if !errors.As(err, &ge) || ge.Status != abi.StatusConfigRejected || sandbox.Fatal(err) {
				t.Fatalf("err = %v, want a non-fatal rejection", err)
			}
			if got, _ := i.AppliedConfig(); got["k"] != "v2" || got["n"] != "1" {
				t.Errorf("AppliedConfig after rejection = %v", got)
			}
		})
	}
}

func TestGuestOutputGoesToTheLogger(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := newEngine(t, sandbox.WithLogger(zap.New(core)))
	for _, p := range plugins {
		m := compile(t, e, p.path, sandbox.Config{})
		i := instantiate(t, m, nil)
		mustCall(t, i, "stdout", "to stdout "+p.name+"\n")
		mustCall(t, i, "log", "log line "+p.name)
		_ = i.Close(context.Background())
		if n := logs.FilterField(zap.String("line", "to stdout "+p.name)).Len(); n != 1 {
			t.Errorf("%s: %d stdout lines logged, want 1: %v", p.name, n, logs.All())
		}
		if n := logs.FilterField(zap.String("message", "log line "+p.name)).Len(); n != 1 {
			t.Errorf("%s: %d log lines, want 1", p.name, n)
		}
	}
}

func TestCapabilities(t *testing.T) {
	e := newEngine(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(`{"ok":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WASMVISOR_TEST_SECRET", "s3cret")
	t.Setenv("WASMVISOR_TEST_SHARED", "shared")

	denied := instantiate(t, compile(t, e, capsPath, sandbox.Config{}), nil)
	if got := mustCall(t, denied, "env", ""); got != "" {
		t.Errorf("default env = %q, want empty", got)
	}
	if got := mustCall(t, denied, "args", ""); got != "0" {
		t.Errorf("default args = %q, want 0", got)
	}
	if _, err := denied.Call(context.Background(), "read", []byte("/data/policy.json")); !errors.Is(err, sandbox.ErrGuest) {
		t.Errorf("read without a grant: %v", err)
	}
	// Deterministic defaults: two instances see the same clock and the same random bytes.
	other := instantiate(t, compile(t, e, capsPath, sandbox.Config{}), nil)
	if a, b := mustCall(t, denied, "random", ""), mustCall(t, other, "random", ""); a != b {
		t.Errorf("deterministic random differs: %s %s", a, b)
	}
	if a, b := mustCall(t, denied, "now", ""), mustCall(t, other, "now", ""); a != b {
		t.Errorf("deterministic clock differs: %s %s", a, b)
	}

	granted := instantiate(t, compile(t, e, capsPath, sandbox.Config{Capabilities: sandbox.Capabilities{
		Env:        map[string]string{"MODE": "test"},
		InheritEnv: []string{"WASMVISOR_TEST_SHARED", "WASMVISOR_TEST_UNSET"},
		Dirs:       []sandbox.Dir{{Host: dir, Guest: "/data"}},
		Clock:      sandbox.ClockReal,
		Random:     sandbox.RandomCrypto,
	}}), nil)
	env := mustCall(t, granted, "env", "")
	if !strings.Contains(env, "MODE=test") || !strings.Contains(env, "WASMVISOR_TEST_SHARED=shared") || strings.Contains(env, "SECRET") {
		t.Errorf("granted env = %q", env)
	}
	if got := mustCall(t, granted, "read", "/data/policy.json"); got != `{"ok":true}` {
		t.Errorf("read = %q", got)
	}
	if _, err := granted.Call(context.Background(), "write", []byte("/data/new.txt")); !errors.Is(err, sandbox.ErrGuest) {
		t.Errorf("write to a read-only mount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.txt")); err == nil {
		t.Error("the guest wrote to a read-only mount")
	}
	now, _ := strconv.ParseInt(mustCall(t, granted, "now", ""), 10, 64)
	if d := time.Since(time.Unix(0, now)); d < -time.Minute || d > time.Minute {
		t.Errorf("real clock is off by %v", d)
	}
	if mustCall(t, granted, "random", "") == mustCall(t, other, "random", "") {
		t.Error("crypto random equals the deterministic sequence")
	}
}

func TestRealSleepIsCutShortByTheDeadline(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, capsPath, sandbox.Config{
		Limits:       sandbox.Limits{CallTimeout: 50 * time.Millisecond},
		Capabilities: sandbox.Capabilities{Clock: sandbox.ClockReal},
	})
	i := instantiate(t, m, nil)
	start := time.Now()
	_, err := i.Call(context.Background(), "sleep", []byte("1h"))
	if !errors.Is(err, sandbox.ErrDeadline) {
		t.Fatalf("err = %v, want ErrDeadline", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the sleep was not cut short: %v", d)
	}
}

func TestCompileIsSharedPerDigestAndLimit(t *testing.T) {
	e := newEngine(t)
	wasm := read(t, referencePath)
	m1 := compile(t, e, referencePath, sandbox.Config{})
	m2 := compile(t, e, referencePath, sandbox.Config{Limits: sandbox.Limits{CallTimeout: time.Second}})
	if m1.Digest() != sandbox.Digest(wasm) || m1.Digest() != m2.Digest() {
		t.Fatalf("digests %s %s", m1.Digest(), m2.Digest())
	}
	// Closing one module keeps the other's instances working.
	if err := m1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := mustCall(t, instantiate(t, m2, nil), "echo", "ok"); got != "ok" {
		t.Errorf("echo = %q", got)
	}
}

func TestInspect(t *testing.T) {
	info, err := sandbox.Inspect(read(t, referencePath))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Problems) != 0 || info.MemoryMinPages != 2 {
		t.Errorf("info = %+v", info)
	}
	var names []string
	for _, ex := range info.Exports {
		names = append(names, ex.Name+" "+ex.Type)
	}
	if !strings.Contains(strings.Join(names, ","), "wasmvisor_call (i32, i32) -> i32") {
		t.Errorf("exports = %v", names)
	}
	if _, err := sandbox.Inspect([]byte("nope")); !errors.Is(err, sandbox.ErrInvalidModule) {
		t.Errorf("Inspect(garbage) = %v", err)
	}
}

func TestPublishDroppedIsCounted(t *testing.T) {
	e := newEngine(t)
	i := instantiate(t, compile(t, e, referencePath, sandbox.Config{}), nil)
	if got := mustCall(t, i, "publish", "t\nx"); got != "1" {
		t.Errorf("publish with no receiver = %q, want 1 (dropped)", got)
	}
	if s := i.Stats(); s.PublishDropped != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestCloseEngineClosesEverything(t *testing.T) {
	ctx := context.Background()
	e, err := sandbox.NewEngine(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Compile(ctx, read(t, referencePath), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	i, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := e.Compile(ctx, read(t, referencePath), sandbox.Config{}); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("Compile after Close: %v", err)
	}
	_ = i.Close(ctx)
}

// A guest spinning in a loop must not stall the Go runtime: a garbage collection stops every
// goroutine at a safe point, and compiled guest code has none of its own. Before the fuel
// safe points this test deadlocked.
func TestSpinningGuestDoesNotStallGC(t *testing.T) {
	for _, p := range plugins {
		t.Run(p.name, func(t *testing.T) {
			e := newEngine(t)
			i := instantiate(t, compile(t, e, p.path, sandbox.Config{Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}}), nil)
			done := startCall(t, context.Background(), i, "loop")
			runtime.GC()
			runtime.GC()
			select {
			case err := <-done:
				t.Fatalf("the loop ended on its own: %v", err)
			default:
			}
			i.Kill()
			if err := <-done; !errors.Is(err, sandbox.ErrCanceled) {
				t.Fatalf("err = %v, want ErrCanceled", err)
			}
		})
	}
}

// startCall calls handler on i from a new goroutine and returns once the call is about to
// run the guest (an event from the instance, not a probe), with the channel that delivers
// the call's error.
func startCall(t *testing.T, ctx context.Context, i *sandbox.Instance, handler string) <-chan error {
	t.Helper()
	running := make(chan struct{})
	var once sync.Once
	sandbox.OnInvoke(i, func() { once.Do(func() { close(running) }) })
	res := make(chan error, 1)
	go func() {
		_, err := i.Call(ctx, handler, nil)
		res <- err
	}()
	select {
	case <-running:
	case err := <-res:
		t.Fatalf("%s ended before it ran the guest: %v", handler, err)
	case <-time.After(30 * time.Second): // bounds a hang only
		t.Fatalf("%s never ran the guest", handler)
	}
	return res
}

// TestRetire drains an instance: an idle one ends at once; a busy one finishes its operation
// normally and then ends; either way it is never entered again, and Calls counts only calls.
func TestRetire(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t)
	idle := instantiate(t, compile(t, e, referencePath, sandbox.Config{}), nil)
	mustCall(t, idle, "echo", "a")
	mustCall(t, idle, "echo", "b")
	if _, err := idle.Telemetry(); err != nil { // an operation that is not a call
		t.Fatal(err)
	}
	if n := idle.Calls(); n != 2 {
		t.Errorf("Calls = %d, want 2", n)
	}
	if !idle.Retire() {
		t.Fatal("Retire of an idle instance: not ended")
	}
	if _, err := idle.Call(ctx, "echo", nil); !errors.Is(err, sandbox.ErrRetired) {
		t.Errorf("call after Retire: %v", err)
	}
	if err := idle.Err(); !errors.Is(err, sandbox.ErrRetired) || sandbox.Fatal(err) {
		t.Errorf("Err after Retire: %v", err)
	}
	if n := idle.Calls(); n != 2 {
		t.Errorf("Calls after Retire = %d, want 2", n)
	}

	// A call blocked in a host function (the OnPublish hook) while Retire runs.
	entered, release := make(chan struct{}), make(chan struct{})
	busy := instantiate(t, compile(t, e, referencePath, sandbox.Config{OnPublish: func(string, []byte) bool {
		close(entered)
		<-release
		return true
	}}), nil)
	type result struct {
		out []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, err := busy.Call(ctx, "publish", []byte("topic\ndata"))
		res <- result{out, err}
	}()
	<-entered
	if busy.Retire() {
		t.Fatal("Retire of a busy instance: ended at once")
	}
	if _, err := busy.Call(ctx, "echo", nil); !errors.Is(err, sandbox.ErrBusy) {
		t.Errorf("a second call while draining: %v", err)
	}
	close(release)
	if r := <-res; r.err != nil || string(r.out) != "0" {
		t.Fatalf("the call in progress: %q, %v; want it to finish normally", r.out, r.err)
	}
	if err := busy.Err(); !errors.Is(err, sandbox.ErrRetired) {
		t.Errorf("Err after the drained call: %v", err)
	}
	if !busy.Retire() {
		t.Error("Retire after the drain: not ended")
	}
	if err := busy.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

package extism_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/testcache"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// No IgnoreTopFunction: wazero starts a goroutine per call only to watch the call's context
// (WithCloseOnContextDone) and it ends with the call; Close leaves nothing running.
// sdkCache holds the SDK side's compiled code in the cache that every package's tests share
// (internal/testcache), as cacheOpts does for this package's side: each module is compiled
// once per wazero version and machine, not once per test.
var sdkCache wazero.CompilationCache

func TestMain(m *testing.M) {
	if d := testcache.Dir(); d != "" {
		c, err := wazero.NewCompilationCacheWithDir(d)
		if err != nil {
			panic(err)
		}
		sdkCache = c
	}
	code := m.Run()
	if sdkCache != nil {
		_ = sdkCache.Close(context.Background())
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

// cacheOpts returns the options that give a Compile the shared compilation cache.
func cacheOpts() []extism.Option {
	if d := testcache.Dir(); d != "" {
		return []extism.Option{extism.WithCacheDir(d)}
	}
	return nil
}

// sdkConfig is the SDK's plugin config, as its own tests give it, with the shared cache.
func sdkConfig() sdk.PluginConfig {
	c := sdk.PluginConfig{EnableWasi: true}
	if sdkCache != nil {
		c.RuntimeConfig = wazero.NewRuntimeConfig().WithCompilationCache(sdkCache)
	}
	return c
}

// sdkResult is one call through the Extism Go SDK directly.
type sdkResult struct {
	rc  uint32
	out string
	err error
}

// viaSDK runs calls on one fresh instance of wasm through the Extism Go SDK, configured as
// the SDK's own tests do (WASI on, default wazero module config).
func viaSDK(t *testing.T, wasm []byte, config map[string]string, handler string, inputs ...string) []sdkResult {
	t.Helper()
	ctx := context.Background()
	cp, err := sdk.NewCompiledPlugin(ctx, sdk.Manifest{Wasm: []sdk.Wasm{sdk.WasmData{Data: wasm}}}, sdkConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close(ctx)
	p, err := cp.Instance(ctx, sdk.PluginInstanceConfig{ModuleConfig: wazero.NewModuleConfig()})
	if err != nil {
		t.Fatal(err)
	}
	p.SetLogger(func(sdk.LogLevel, string) {})
	p.Config = map[string]string{}
	for k, v := range config {
		p.Config[k] = v
	}
	var rs []sdkResult
	for _, in := range inputs {
		rc, out, err := p.Call(handler, []byte(in))
		rs = append(rs, sdkResult{rc: rc, out: string(out), err: err})
	}
	return rs
}

func instance(t *testing.T, wasm []byte, cfg sandbox.Config, config map[string]string) *extism.Instance {
	t.Helper()
	ctx := context.Background()
	m, err := extism.Compile(ctx, wasm, cfg, cacheOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(ctx) })
	i, err := m.Instantiate(ctx, config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { i.Close(ctx) })
	return i
}

// TestSameAsSDK runs real Extism plugins, built by the Extism project with its Rust, C,
// TinyGo, Haskell and Go PDKs, through the SDK directly and through this package, and
// compares every output and error.
func TestSameAsSDK(t *testing.T) {
	type want int
	const (
		ok    want = iota // the SDK returns no error
		guest             // the SDK returns the guest's error string: *GuestError, instance lives
		exit              // the SDK returns a non-zero exit code: *ExitError, instance over
	)
	for _, c := range []struct {
		name, file, handler string
		config              map[string]string
		inputs              []string
		want                want
		out                 []string // expected outputs, checked against the SDK as well
	}{
		{name: "rust count_vowels, vars persist", file: "count_vowels.wasm", handler: "count_vowels",
			inputs: []string{"hello world", "aaa"},
			out:    []string{`{"count":3,"total":3,"vowels":"aeiouAEIOU"}`, `{"count":3,"total":6,"vowels":"aeiouAEIOU"}`}},
		{name: "haskell hello with config", file: "hello_haskell.wasm", handler: "testing",
			config: map[string]string{"greeting": "Howdy"}, inputs: []string{"John", "Jane"}, out: []string{"Howdy, John", "Howdy, Jane"}},
		{name: "c hello", file: "hello.wasm", handler: "run_test", inputs: []string{""}, out: []string{"Hello, world!"}},
		{name: "tinygo config set", file: "config.wasm", handler: "run_test",
			config: map[string]string{"thing": "hello"}, inputs: []string{""}, out: []string{`{"config": "hello"}`}},
		{name: "tinygo config unset", file: "config.wasm", handler: "run_test", inputs: []string{""}, out: []string{`{"config": "<unset by host>"}`}},
		{name: "tinygo var", file: "var.wasm", handler: "run_test", inputs: []string{"", ""}, out: []string{"a: 0", "a: 0"}},
		{name: "tinygo replace", file: "replace.wasm", handler: "run_test", inputs: []string{"a test b"}, out: []string{"a wasm b"}},
		{name: "c guest error, instance keeps serving", file: "fail.wasm", handler: "run_test", inputs: []string{"", ""}, want: guest},
		{name: "tinygo exit 500", file: "exit.wasm", handler: "_start", config: map[string]string{"code": "500"}, inputs: []string{""}, want: exit},
		{name: "tinygo exit 2", file: "exit.wasm", handler: "_start", inputs: []string{""}, want: exit},
		{name: "tinygo exit -1", file: "exit.wasm", handler: "_start", config: map[string]string{"code": "-1"}, inputs: []string{""}, want: exit},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			wasm := extismtest.Read(t, c.file)
			ref := viaSDK(t, wasm, c.config, c.handler, c.inputs...)
			inst := instance(t, wasm, sandbox.Config{}, c.config)
			for n, in := range c.inputs {
				out, err := inst.Call(ctx, c.handler, []byte(in))
				r := ref[n]
				switch c.want {
				case ok:
					if r.err != nil || r.rc != 0 {
						t.Fatalf("SDK: rc %d, %v", r.rc, r.err)
					}
					if err != nil {
						t.Fatalf("call %d: %v", n, err)
					}
				case guest:
					var ge *sandbox.GuestError
					if !errors.As(err, &ge) || ge.Status != abi.StatusError || r.err == nil || ge.Message != r.err.Error() {
						t.Fatalf("call %d: got %v, want a guest error %q (SDK rc %d)", n, err, r.err, r.rc)
					}
					if sandbox.Fatal(err) || inst.Err() != nil {
						t.Fatalf("a guest error ended the instance: %v", inst.Err())
					}
				case exit:
					var ee *sandbox.ExitError
					if !errors.As(err, &ee) || ee.Code != r.rc || r.rc == 0 {
						t.Fatalf("call %d: got %v, want exit code %d (SDK: %v)", n, err, r.rc, r.err)
					}
					if !sandbox.Fatal(err) || !errors.Is(inst.Err(), sandbox.ErrExit) {
						t.Fatalf("an exit left the instance usable: Fatal %v, Err %v", sandbox.Fatal(err), inst.Err())
					}
					if _, again := inst.Call(ctx, c.handler, nil); !errors.As(again, &ee) {
						t.Fatalf("the next call got %v, want the exit again", again)
					}
				}
				if string(out) != r.out {
					t.Fatalf("call %d: output %q, SDK %q", n, out, r.out)
				}
				if c.out != nil && string(out) != c.out[n] {
					t.Fatalf("call %d: output %q, want %q", n, out, c.out[n])
				}
			}
		})
	}
}

// A Go wasip1 command exits 0 from _start: the SDK returns the output and no error; the
// instance is over afterwards.
func TestExitZero(t *testing.T) {
	ctx := context.Background()
	wasm := extismtest.Read(t, "std_command.wasm")
	ref := viaSDK(t, wasm, nil, "_start", "ben", "ben")
	inst := instance(t, wasm, sandbox.Config{}, nil)
	out, err := inst.Call(ctx, "_start", []byte("ben"))
	if err != nil || string(out) != ref[0].out || ref[0].err != nil || string(out) != "hello ben" {
		t.Fatalf("got %q, %v; SDK %q, %v", out, err, ref[0].out, ref[0].err)
	}
	if ref[1].err == nil {
		t.Fatalf("the SDK served a second call after exit(0)")
	}
	var ee *sandbox.ExitError
	if !errors.As(inst.Err(), &ee) || ee.Code != 0 {
		t.Fatalf("Err = %v, want exit code 0", inst.Err())
	}
	if _, err := inst.Call(ctx, "_start", nil); !errors.As(err, &ee) || !sandbox.Fatal(err) {
		t.Fatalf("second call: %v", err)
	}
}

func TestVarsAreFreshPerInstance(t *testing.T) {
	ctx := context.Background()
	wasm := extismtest.Read(t, "count_vowels.wasm")
	m, err := extism.Compile(ctx, wasm, sandbox.Config{}, cacheOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	a, _ := m.Instantiate(ctx, nil)
	defer a.Close(ctx)
	b, _ := m.Instantiate(ctx, nil)
	defer b.Close(ctx)
	for _, step := range []struct {
		inst *extism.Instance
		want string
	}{{a, `"total":3`}, {a, `"total":6`}, {b, `"total":3`}, {a, `"total":9`}, {b, `"total":6`}} {
		out, err := step.inst.Call(ctx, "count_vowels", []byte("aei"))
		if err != nil || !strings.Contains(string(out), step.want) {
			t.Fatalf("got %s, %v; want %s", out, err, step.want)
		}
	}
}

func TestConfigure(t *testing.T) {
	ctx := context.Background()
	inst := instance(t, extismtest.Read(t, "config.wasm"), sandbox.Config{}, map[string]string{"thing": "a"})
	cfg := map[string]string{"thing": "b"}
	if err := inst.Configure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cfg["thing"] = "c" // the instance keeps its own copy
	out, err := inst.Call(ctx, "run_test", nil)
	if err != nil || string(out) != `{"config": "b"}` {
		t.Fatalf("got %s, %v", out, err)
	}
}

func TestHandlersAndUnknownHandler(t *testing.T) {
	ctx := context.Background()
	for file, want := range map[string]string{
		"count_vowels.wasm":  "count_vowels",
		"hello_haskell.wasm": "testing",
		"config.wasm":        "run_test", // TinyGo: no _start, malloc, asyncify_*
		"std_command.wasm":   "",
	} {
		inst := instance(t, extismtest.Read(t, file), sandbox.Config{}, nil)
		if got := strings.Join(inst.Handlers(), ","); got != want {
			t.Errorf("%s: handlers %q, want %q", file, got, want)
		}
	}
	inst := instance(t, extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{}, nil)
	for _, h := range []string{"nope", "memory", "__heap_base", ""} {
		_, err := inst.Call(ctx, h, nil)
		if !errors.Is(err, sandbox.ErrUnknownHandler) || sandbox.Fatal(err) {
			t.Fatalf("%q: %v", h, err)
		}
	}
	if _, err := inst.Call(ctx, "count_vowels", nil); err != nil {
		t.Fatalf("after unknown handlers: %v", err)
	}
}

// sleeping starts sleep.wasm in a goroutine and returns once the call is about to run the
// guest, which then sleeps (an event from the instance, not a probe), with the call's result
// channel. (The guest's sleep spins on clock_time_get: it has no host call to hook.)
func sleeping(t *testing.T, inst *extism.Instance, ctx context.Context) <-chan error {
	t.Helper()
	asleep := make(chan struct{})
	var once sync.Once
	extism.OnCall(inst, func() { once.Do(func() { close(asleep) }) })
	res := make(chan error, 1)
	go func() {
		_, err := inst.Call(ctx, "run_test", nil)
		res <- err
	}()
	select {
	case <-asleep:
	case err := <-res:
		t.Fatalf("the call ended before it ran the guest: %v", err)
	case <-time.After(30 * time.Second): // bounds a hang only
		t.Fatal("the call never ran the guest")
	}
	return res
}

// longSleep is an hour: a sleep the test expects to be cut short that is not fails its 30 s
// bound (see within) instead of passing late, so no test bounds how fast a cut is.
const longSleep = "3600"

// within waits for res, failing the test if it takes more than 30 s: a bound on a hang only.
func within(t *testing.T, res <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: the sleep was not cut short", what)
		return nil
	}
}

// call runs inst.Call in a goroutine, for within.
func call(inst *extism.Instance, ctx context.Context) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := inst.Call(ctx, "run_test", nil)
		res <- err
	}()
	return res
}

var realClock = sandbox.Capabilities{Clock: sandbox.ClockReal}

func TestDeadline(t *testing.T) {
	ctx := context.Background()
	wasm := extismtest.Read(t, "sleep.wasm")
	inst := instance(t, wasm, sandbox.Config{Limits: sandbox.Limits{CallTimeout: 50 * time.Millisecond}, Capabilities: realClock},
		map[string]string{"duration": longSleep})
	err := within(t, call(inst, ctx), "call timeout")
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) || !errors.Is(err, context.DeadlineExceeded) || !sandbox.Fatal(err) || de.Timeout != "50ms" {
		t.Fatalf("got %v", err)
	}
	if _, again := inst.Call(ctx, "run_test", nil); !errors.As(again, &de) {
		t.Fatalf("next call: %v", again)
	}

	// The caller's deadline, with the instance's own timeout off.
	inst = instance(t, wasm, sandbox.Config{Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}, Capabilities: realClock},
		map[string]string{"duration": longSleep})
	for { // a deadline passed before entry (a descheduled test) means not entered, and not fatal: try again
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err = within(t, call(inst, cctx), "caller deadline")
		cancel()
		if !errors.As(err, new(*sandbox.NotEnteredError)) {
			break
		}
		t.Logf("not entered before the deadline: %v", err)
	}
	if !errors.As(err, &de) || !strings.HasPrefix(de.Timeout, "context deadline") || !de.Caller || !sandbox.CallerEnded(err) {
		t.Fatalf("caller deadline: %v", err)
	}

	// Deterministic clocks (the default): sleeping returns at once.
	inst = instance(t, wasm, sandbox.Config{Limits: sandbox.Limits{CallTimeout: 50 * time.Millisecond}}, map[string]string{"duration": "3"})
	if out, err := inst.Call(ctx, "run_test", nil); err != nil || string(out) != "slept for 3 seconds" {
		t.Fatalf("deterministic clock: %s, %v", out, err)
	}
}

func TestKillAndBusy(t *testing.T) {
	ctx := context.Background()
	inst := instance(t, extismtest.Read(t, "sleep.wasm"), sandbox.Config{Capabilities: realClock}, map[string]string{"duration": longSleep})
	res := sleeping(t, inst, ctx)
	if _, err := inst.Call(ctx, "run_test", nil); !errors.Is(err, sandbox.ErrBusy) || sandbox.Fatal(err) {
		t.Fatalf("concurrent call: %v", err)
	}
	inst.Kill()
	if err := within(t, res, "Kill"); !errors.Is(err, sandbox.ErrCanceled) || !sandbox.Fatal(err) {
		t.Fatalf("killed call: %v", err)
	}
	if _, err := inst.Call(ctx, "run_test", nil); !errors.Is(err, sandbox.ErrCanceled) {
		t.Fatalf("call after Kill: %v", err)
	}
	if !errors.Is(inst.Err(), sandbox.ErrCanceled) {
		t.Fatalf("Err after Kill: %v", inst.Err())
	}
}

func TestCallerCancel(t *testing.T) {
	inst := instance(t, extismtest.Read(t, "sleep.wasm"), sandbox.Config{Capabilities: realClock}, map[string]string{"duration": longSleep})
	ctx, cancel := context.WithCancel(context.Background())
	res := sleeping(t, inst, ctx)
	cancel()
	if err := within(t, res, "cancel"); !errors.Is(err, sandbox.ErrCanceled) || !errors.Is(err, context.Canceled) || !sandbox.Fatal(err) {
		t.Fatalf("got %v", err)
	}
	// A context already done: not entered, not fatal.
	inst = instance(t, extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{}, nil)
	var ne *sandbox.NotEnteredError
	if _, err := inst.Call(ctx, "count_vowels", nil); !errors.Is(err, context.Canceled) || !errors.As(err, &ne) ||
		!errors.Is(err, sandbox.ErrNotEntered) || sandbox.Fatal(err) || inst.Err() != nil {
		t.Fatalf("done context: %v, Err %v", err, inst.Err())
	}
	if err := inst.Configure(ctx, map[string]string{"k": "v"}); !errors.Is(err, context.Canceled) || !errors.As(err, &ne) || ne.Op != "configure" {
		t.Fatalf("configure with a done context: %v", err)
	}
	// A start whose context is done: not entered, as a call's.
	m, err := extism.Compile(context.Background(), extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if _, err := m.Instantiate(ctx, nil); !errors.As(err, &ne) || ne.Op != "start" || !errors.Is(err, context.Canceled) {
		t.Fatalf("start with a done context: %v", err)
	}
	// A capability that cannot be granted wraps sandbox.ErrInvalidConfig.
	_, err = extism.Compile(context.Background(), extismtest.Read(t, "count_vowels.wasm"),
		sandbox.Config{Capabilities: sandbox.Capabilities{Dirs: []sandbox.Dir{{Host: t.TempDir(), Guest: "relative"}}}})
	if !errors.Is(err, sandbox.ErrInvalidConfig) {
		t.Fatalf("bad capability: %v", err)
	}
}

func TestCloseDuringCall(t *testing.T) {
	inst := instance(t, extismtest.Read(t, "sleep.wasm"), sandbox.Config{Capabilities: realClock}, map[string]string{"duration": longSleep})
	res := sleeping(t, inst, context.Background())
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // bounds a hang only
	defer cancel()
	if err := inst.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, res, "Close"); !errors.Is(err, sandbox.ErrCanceled) {
		t.Fatalf("call: %v", err)
	}
	if err := inst.Close(cctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := inst.Call(cctx, "run_test", nil); !errors.Is(err, sandbox.ErrClosed) || !errors.Is(inst.Err(), sandbox.ErrClosed) {
		t.Fatalf("after Close: %v, Err %v", err, inst.Err())
	}
}

func TestMemoryLimit(t *testing.T) {
	ctx := context.Background()
	// The Haskell runtime needs about 190 pages at start.
	inst := instance(t, extismtest.Read(t, "hello_haskell.wasm"), sandbox.Config{Limits: sandbox.Limits{MemoryPages: 100}},
		map[string]string{"greeting": "Hi"})
	_, err := inst.Call(ctx, "testing", []byte("x"))
	var me *sandbox.MemoryLimitError
	if !errors.As(err, &me) || me.LimitPages != 100 || !sandbox.Fatal(err) {
		t.Fatalf("haskell: %v", err)
	}
	// An input that does not fit in the kernel's memory: the SDK would silently hand the guest
	// an empty input.
	inst = instance(t, extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{Limits: sandbox.Limits{MemoryPages: 40}}, nil)
	if _, err := inst.Call(ctx, "count_vowels", make([]byte, 4<<20)); !errors.As(err, &me) {
		t.Fatalf("large input: %v", err)
	}
	if got := inst.MemoryPages(); got == 0 || got > 40 {
		t.Fatalf("MemoryPages %d", got)
	}
	// A module whose initial memory is above the limit is refused at Compile.
	if _, err := extism.Compile(ctx, extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{Limits: sandbox.Limits{MemoryPages: 10}}); !errors.As(err, &me) {
		t.Fatalf("compile: %v", err)
	}
}

func TestRefusedModules(t *testing.T) {
	ctx := context.Background()
	for _, wasm := range [][]byte{nil, []byte("not wasm"), []byte("\x00asm\x01\x00\x00\x00\x05\xff")} {
		if _, err := extism.Compile(ctx, wasm, sandbox.Config{}); !errors.Is(err, sandbox.ErrInvalidModule) {
			t.Fatalf("%q: %v", wasm, err)
		}
	}
	_, err := extism.Compile(ctx, extismtest.Read(t, "host.wasm"), sandbox.Config{})
	if !errors.Is(err, sandbox.ErrInvalidModule) || !strings.Contains(err.Error(), `"extism:host/user"."mult"`) {
		t.Fatalf("host functions: %v", err)
	}
}

func TestModuleCloseKeepsInstances(t *testing.T) {
	ctx := context.Background()
	m, err := extism.Compile(ctx, extismtest.Read(t, "hello.wasm"), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Instantiate(ctx, nil); !errors.Is(err, sandbox.ErrClosed) {
		t.Fatalf("Instantiate after Close: %v", err)
	}
	if out, err := inst.Call(ctx, "run_test", nil); err != nil || string(out) != "Hello, world!" {
		t.Fatalf("instance after Module.Close: %s, %v", out, err)
	}
	if err := inst.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(m.Digest()) != 64 || m.Digest() != sandbox.Digest(extismtest.Read(t, "hello.wasm")) {
		t.Fatalf("digest %q", m.Digest())
	}
}

func TestGuestOutputAndLogs(t *testing.T) {
	ctx := context.Background()
	core, logs := observer.New(zap.DebugLevel)
	inst := instance(t, extismtest.Read(t, "println.wasm"), sandbox.Config{Logger: zap.New(core)}, nil)
	if _, err := inst.Call(ctx, "run_test", nil); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessage("guest output").Len() == 0 {
		t.Fatalf("no guest output logged: %v", logs.All())
	}
}

func TestCompilationCacheDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for range 2 {
		m, err := extism.Compile(ctx, extismtest.Read(t, "hello.wasm"), sandbox.Config{}, extism.WithCacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		inst, err := m.Instantiate(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := inst.Call(ctx, "run_test", nil); err != nil || string(out) != "Hello, world!" {
			t.Fatalf("%s, %v", out, err)
		}
		inst.Close(ctx)
		m.Close(ctx)
	}
}

func TestIsPlugin(t *testing.T) {
	for file, want := range map[string]bool{
		"count_vowels.wasm": true, "hello_haskell.wasm": true, "hello.wasm": true, "config.wasm": true,
		"std_command.wasm": true, "host.wasm": true,
		"noop.wasm": false, "nested.c.instr.wasm": false, // WASI only, no Extism kernel
	} {
		if got := extism.IsPlugin(extismtest.Read(t, file)); got != want {
			t.Errorf("%s: %v", file, got)
		}
	}
	wasm := extismtest.Read(t, "hello.wasm")
	for n := range len(wasm) { // every truncation: no panic
		extism.IsPlugin(wasm[:n])
	}
	for _, b := range [][]byte{nil, []byte("\x00asm"), []byte("\x00asm\x01\x00\x00\x00\x02\xff\xff\xff\xff\x0f")} {
		if extism.IsPlugin(b) {
			t.Errorf("%q", b)
		}
	}
}

func FuzzIsPlugin(f *testing.F) {
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x02\x14\x01\x0fextism:host/env\x01a\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) { extism.IsPlugin(b) })
}

// TestRetireAndCalls: Retire ends an idle instance at once and lets a busy one finish its
// call (a real 3 s sleep) before it ends; a later call is refused as unavailable, and
// Calls counts the calls that entered.
func TestRetireAndCalls(t *testing.T) {
	ctx := context.Background()
	idle := instance(t, extismtest.Read(t, "count_vowels.wasm"), sandbox.Config{}, nil)
	if _, err := idle.Call(ctx, "count_vowels", []byte("aeiou")); err != nil {
		t.Fatal(err)
	}
	if !idle.Retire() {
		t.Fatal("Retire of an idle instance: not ended")
	}
	var ue *sandbox.UnavailableError
	if _, err := idle.Call(ctx, "count_vowels", nil); !errors.As(err, &ue) || !errors.Is(err, sandbox.ErrRetired) {
		t.Fatalf("call after Retire: %v", err)
	}
	if n := idle.Calls(); n != 1 {
		t.Fatalf("Calls = %d, want 1", n)
	}

	// The call is held before it runs the guest until Retire has run: busy, whatever the
	// scheduling.
	busy := instance(t, extismtest.Read(t, "sleep.wasm"), sandbox.Config{Capabilities: realClock}, map[string]string{"duration": "1"})
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	extism.OnCall(busy, func() {
		once.Do(func() { close(held) })
		<-release
	})
	res := call(busy, ctx)
	select {
	case <-held:
	case err := <-res:
		t.Fatalf("the call ended before it ran the guest: %v", err)
	}
	retired := busy.Retire()
	close(release)
	if retired {
		t.Fatal("Retire of a busy instance: ended at once")
	}
	if err := within(t, res, "drained call"); err != nil {
		t.Fatalf("the call in progress: %v (want it to finish normally)", err)
	}
	if err := busy.Err(); !errors.Is(err, sandbox.ErrRetired) {
		t.Fatalf("Err after the drained call: %v", err)
	}
	if !busy.Retire() {
		t.Fatal("Retire after the drain: not ended")
	}
}

// TestGuestOutputLimits: Limits.Output bounds an Extism plugin's stdout as the sandbox's (here
// 4 bytes per call: the line is cut); the excess is counted in Stats and reported once
// through OnDrop.
func TestGuestOutputLimits(t *testing.T) {
	ctx := context.Background()
	core, logs := observer.New(zap.DebugLevel)
	var mu sync.Mutex
	var reps []sandbox.DropReport
	inst := instance(t, extismtest.Read(t, "println.wasm"), sandbox.Config{Logger: zap.New(core),
		Limits: sandbox.Limits{Output: sandbox.OutputLimits{CallBytes: 4}},
		OnDrop: func(d sandbox.DropReport) { mu.Lock(); reps = append(reps, d); mu.Unlock() }}, nil)
	if _, err := inst.Call(ctx, "run_test", nil); err != nil {
		t.Fatal(err)
	}
	for _, e := range logs.FilterMessage("guest output").All() {
		if l := e.ContextMap()["line"].(string); len(l) > 4 {
			t.Fatalf("line %q logged, longer than the call's 4 bytes", l)
		}
	}
	st := inst.Stats()
	if st.Stdout.DroppedRecords+st.Stderr.DroppedRecords == 0 {
		t.Fatalf("nothing dropped: %+v", st)
	}
	if err := inst.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var b, r uint64
	for _, d := range reps {
		b, r = b+d.Bytes, r+d.Records
	}
	if len(reps) == 0 || len(reps) > 2 || b != st.Stdout.DroppedBytes+st.Stderr.DroppedBytes || r != st.Stdout.DroppedRecords+st.Stderr.DroppedRecords {
		t.Fatalf("reports %+v, stats %+v", reps, st)
	}
}

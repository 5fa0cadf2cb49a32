package extism_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// prefixer is a host function that prepends prefix to its input, as the SDK's own test of
// host_multiple.wasm does.
func prefixer(name, prefix string) sandbox.HostFunc {
	return sandbox.HostFunc{Name: name, Func: func(_ context.Context, in []byte) ([]byte, error) {
		return append([]byte(prefix), in...), nil
	}}
}

// multiple is a sandbox.Config serving host_multiple.wasm's two imports, green being f.
func multiple(green sandbox.HostFunc) sandbox.Config {
	green.Name = "hostGreenMessage"
	return sandbox.Config{
		HostFuncs:    []sandbox.HostFunc{green, prefixer("hostPurpleMessage", "🟣:")},
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"hostGreenMessage", "hostPurpleMessage"}},
	}
}

// TestHostFunctions runs the SDK's host_multiple.wasm (built with the Rust PDK), whose
// handlers pass a greeting through a host function, with the outputs the SDK's own test
// expects.
func TestHostFunctions(t *testing.T) {
	ctx := context.Background()
	inst := instance(t, extismtest.Read(t, "host_multiple.wasm"), multiple(prefixer("", "🟢:")), nil)
	for _, c := range []struct{ handler, in, want string }{
		{"say_green", "John Doe", "🟢:🫱 Hey from say_green John Doe"},
		{"say_purple", "Jane Doe", "🟣:👋 Hello from say_purple Jane Doe"},
		{"say_green", "", "🟢:🫱 Hey from say_green "},
	} {
		out, err := inst.Call(ctx, c.handler, []byte(c.in))
		if err != nil || string(out) != c.want {
			t.Fatalf("%s(%q) = %q, %v; want %q", c.handler, c.in, out, err, c.want)
		}
	}
}

// TestHostFunctionImportsRefused: every import this package cannot serve is refused at
// Compile, named, with a typed error.
func TestHostFunctionImportsRefused(t *testing.T) {
	ctx := context.Background()
	multi := extismtest.Read(t, "host_multiple.wasm")
	green := prefixer("hostGreenMessage", "")
	for _, c := range []struct {
		name, file string
		cfg        sandbox.Config
		is         error
		says       string
	}{
		{"numeric signature", "host.wasm",
			sandbox.Config{HostFuncs: []sandbox.HostFunc{prefixer("mult", "")}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"mult"}}},
			sandbox.ErrInvalidModule, `"extism:host/user"."mult" (function (i64, i64) -> i64)`},
		{"numeric signature, not granted", "host.wasm", sandbox.Config{}, sandbox.ErrInvalidModule, `"mult"`},
		{"another namespace", "host_memory.wasm",
			sandbox.Config{HostFuncs: []sandbox.HostFunc{prefixer("host.to_upper", "")}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"host.to_upper"}}},
			sandbox.ErrInvalidModule, `"host"."to_upper"`},
		{"not granted", "host_multiple.wasm", sandbox.Config{}, sandbox.ErrInvalidConfig, `"extism:host/user"."hostGreenMessage", "extism:host/user"."hostPurpleMessage"`},
		{"one not granted", "host_multiple.wasm",
			sandbox.Config{HostFuncs: []sandbox.HostFunc{green, prefixer("hostPurpleMessage", "")}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"hostGreenMessage"}}},
			sandbox.ErrInvalidConfig, `"extism:host/user"."hostPurpleMessage": host functions not granted`},
		{"granted, not offered", "host_multiple.wasm",
			sandbox.Config{Capabilities: sandbox.Capabilities{HostFunctions: []string{"hostGreenMessage"}}},
			sandbox.ErrInvalidConfig, `"hostGreenMessage" granted but not provided`},
	} {
		t.Run(c.name, func(t *testing.T) {
			wasm := multi
			if c.file != "host_multiple.wasm" {
				wasm = extismtest.Read(t, c.file)
			}
			m, err := extism.Compile(ctx, wasm, c.cfg, cacheOpts()...)
			if err == nil {
				m.Close(ctx)
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("got %v, want %v saying %s", err, c.is, c.says)
			}
		})
	}
}

// failing runs say_green with green as its host function and checks that the call ends with a
// HostFuncError naming it, that the instance has ended, and returns the error.
func failing(t *testing.T, green sandbox.HostFunc, cfg func(*sandbox.Config)) (*extism.Instance, *extism.HostFuncError) {
	t.Helper()
	ctx := context.Background()
	c := multiple(green)
	if cfg != nil {
		cfg(&c)
	}
	inst := instance(t, extismtest.Read(t, "host_multiple.wasm"), c, nil)
	_, err := inst.Call(ctx, "say_green", []byte("x"))
	var he *extism.HostFuncError
	if !errors.As(err, &he) || he.Name != "hostGreenMessage" || !sandbox.Fatal(err) || !errors.Is(err, sandbox.ErrTrap) {
		t.Fatalf("call: %v (%T), want a fatal *extism.HostFuncError naming hostGreenMessage", err, err)
	}
	if _, err := inst.Call(ctx, "say_purple", nil); !errors.As(err, new(*sandbox.UnavailableError)) || !errors.As(err, &he) {
		t.Fatalf("the next call: %v, want the instance ended by the host function", err)
	}
	return inst, he
}

func TestHostFunctionError(t *testing.T) {
	errNoKey := errors.New("no such key")
	_, he := failing(t, sandbox.HostFunc{Func: func(context.Context, []byte) ([]byte, error) { return nil, errNoKey }}, nil)
	if !errors.Is(he, errNoKey) {
		t.Fatalf("cause: %v", he.Err)
	}
}

func TestHostFunctionOutputLimit(t *testing.T) {
	big := sandbox.HostFunc{MaxOutput: 10, Func: func(context.Context, []byte) ([]byte, error) { return make([]byte, 11), nil }}
	_, he := failing(t, big, nil)
	if !strings.Contains(he.Error(), "output of 11 bytes, above its 10") {
		t.Fatalf("error: %v", he)
	}
	// At the limit, it is served.
	inst := instance(t, extismtest.Read(t, "host_multiple.wasm"),
		multiple(sandbox.HostFunc{MaxOutput: 10, Func: func(context.Context, []byte) ([]byte, error) { return []byte("0123456789"), nil }}), nil)
	if out, err := inst.Call(context.Background(), "say_green", []byte("x")); err != nil || string(out) != "0123456789" {
		t.Fatalf("at the limit: %q, %v", out, err)
	}
}

func TestHostFunctionInputLimit(t *testing.T) {
	ran := false
	small := sandbox.HostFunc{MaxInput: 4, Func: func(_ context.Context, in []byte) ([]byte, error) { ran = true; return in, nil }}
	_, he := failing(t, small, nil) // say_green passes the function more than 4 bytes
	if !strings.Contains(he.Error(), "above its 4") || ran {
		t.Fatalf("error: %v, the function ran: %v", he, ran)
	}
}

func TestHostFunctionPanic(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	inst, he := failing(t, sandbox.HostFunc{Func: func(context.Context, []byte) ([]byte, error) { panic("boom") }},
		func(c *sandbox.Config) { c.Logger = zap.New(core) })
	if !errors.Is(he, extism.ErrHostFuncPanic) {
		t.Fatalf("cause: %v", he.Err)
	}
	if n := inst.Stats().HostFuncPanics; n != 1 {
		t.Fatalf("HostFuncPanics = %d, want 1", n)
	}
	entries := logs.FilterMessage("host function panicked").All()
	if len(entries) != 1 {
		t.Fatalf("logged %d panics, want 1", len(entries))
	}
	f := entries[0].ContextMap()
	if f["function"] != "hostGreenMessage" || f["panic"] != "boom" || !strings.Contains(f["stack"].(string), "TestHostFunctionPanic") {
		t.Fatalf("log fields: %v", f)
	}
}

// blocking is a host function that says it has started and waits for its context to end.
func blocking() (sandbox.HostFunc, <-chan struct{}) {
	started := make(chan struct{}, 1)
	return sandbox.HostFunc{Func: func(ctx context.Context, _ []byte) ([]byte, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}}, started
}

// waitStarted waits for the host function to start, failing after 30 s: a bound on a hang
// only.
func waitStarted(t *testing.T, started <-chan struct{}, res <-chan error) {
	t.Helper()
	select {
	case <-started:
	case err := <-res:
		t.Fatalf("the call ended before the host function ran: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the host function never ran")
	}
}

func greenCall(inst *extism.Instance, ctx context.Context) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := inst.Call(ctx, "say_green", []byte("x"))
		res <- err
	}()
	return res
}

// TestHostFunctionStopped: the call's deadline, Kill and the caller's context end a host
// function's context, and the call ends with its usual error, not a HostFuncError.
func TestHostFunctionStopped(t *testing.T) {
	wasm := extismtest.Read(t, "host_multiple.wasm")
	t.Run("deadline", func(t *testing.T) {
		f, started := blocking()
		c := multiple(f)
		c.Limits.CallTimeout = 50 * time.Millisecond
		inst := instance(t, wasm, c, nil)
		err := within(t, greenCall(inst, context.Background()), "deadline")
		if !errors.As(err, new(*sandbox.DeadlineError)) || errors.As(err, new(*extism.HostFuncError)) {
			t.Fatalf("got %v (%T), want a *sandbox.DeadlineError", err, err)
		}
		if len(started) != 1 {
			t.Fatal("the host function never ran")
		}
	})
	t.Run("kill", func(t *testing.T) {
		f, started := blocking()
		inst := instance(t, wasm, multiple(f), nil)
		res := greenCall(inst, context.Background())
		waitStarted(t, started, res)
		inst.Kill()
		if err := within(t, res, "kill"); !errors.Is(err, sandbox.ErrCanceled) || errors.As(err, new(*extism.HostFuncError)) {
			t.Fatalf("got %v, want sandbox.ErrCanceled", err)
		}
	})
	t.Run("caller", func(t *testing.T) {
		f, started := blocking()
		inst := instance(t, wasm, multiple(f), nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := greenCall(inst, ctx)
		waitStarted(t, started, res)
		cancel()
		if err := within(t, res, "caller"); !errors.Is(err, sandbox.ErrCanceled) || !sandbox.CallerEnded(err) {
			t.Fatalf("got %v, want the caller's cancellation", err)
		}
	})
}

// TestHostFunctionOutputOverMemoryLimit: an output within MaxOutput that the kernel's memory,
// capped by Limits.MemoryPages, cannot hold ends the call with a *sandbox.MemoryLimitError
// wrapping the HostFuncError.
func TestHostFunctionOutputOverMemoryLimit(t *testing.T) {
	huge := sandbox.HostFunc{MaxOutput: 8 << 20, Func: func(context.Context, []byte) ([]byte, error) { return make([]byte, 4<<20), nil }}
	c := multiple(huge)
	c.Limits.MemoryPages = 32 // 2 MiB
	inst := instance(t, extismtest.Read(t, "host_multiple.wasm"), c, nil)
	_, err := inst.Call(context.Background(), "say_green", []byte("x"))
	var he *extism.HostFuncError
	if !errors.Is(err, sandbox.ErrMemoryLimit) || !errors.As(err, &he) || he.Name != "hostGreenMessage" || !sandbox.Fatal(err) {
		t.Fatalf("got %v, want a memory limit error from hostGreenMessage's output", err)
	}
}

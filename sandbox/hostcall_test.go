package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

const hostcallPath = "testdata/hostcall.wasm"

// hostInput is the hostcall.wasm handler input: the function's name, then its input.
func hostInput(name, in string) []byte {
	return append(append([]byte{byte(len(name))}, name...), in...)
}

func TestHostFunctions(t *testing.T) {
	t.Parallel()
	var panics, bigIn atomic.Int32
	fns := []sandbox.HostFunc{
		{Name: "kv.get", Func: func(_ context.Context, in []byte) ([]byte, error) {
			return append([]byte("value of "), in...), nil
		}},
		{Name: "fails", Func: func(context.Context, []byte) ([]byte, error) { return nil, errors.New("no such user") }},
		{Name: "big", MaxOutput: 8, Func: func(context.Context, []byte) ([]byte, error) { return make([]byte, 9), nil }},
		{Name: "small-in", MaxInput: 4, Func: func(_ context.Context, in []byte) ([]byte, error) {
			bigIn.Add(1)
			return in, nil
		}},
		{Name: "panics", Func: func(context.Context, []byte) ([]byte, error) { panics.Add(1); panic("boom") }},
		{Name: "secret", Func: func(context.Context, []byte) ([]byte, error) { return []byte("leaked"), nil }},
	}
	e := newEngine(t)
	m := compile(t, e, hostcallPath, sandbox.Config{HostFuncs: fns,
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"kv.get", "fails", "big", "panics", "small-in"}}})
	i := instantiate(t, m, nil)
	call := func(handler, name, in string) (string, error) {
		out, err := i.Call(context.Background(), handler, hostInput(name, in))
		return string(out), err
	}
	guest := func(t *testing.T, err error, status abi.Status, msg string) {
		t.Helper()
		var ge *sandbox.GuestError
		if !errors.As(err, &ge) || ge.Status != status || !strings.Contains(ge.Message, msg) {
			t.Fatalf("err = %v, want a guest error %v containing %q", err, status, msg)
		}
	}

	if out, err := call("call", "kv.get", "alice"); err != nil || out != "value of alice" {
		t.Fatalf("kv.get = %q, %v", out, err)
	}
	_, err := call("call", "secret", "")
	guest(t, err, abi.StatusError, "denied") // provided by the host, not granted
	_, err = call("call", "nope", "")
	guest(t, err, abi.StatusError, "denied") // neither
	_, err = call("call", "fails", "")
	guest(t, err, abi.StatusError, "no such user")
	_, err = call("call", "big", "")
	guest(t, err, abi.StatusError, "output of 9 bytes, above its 8")
	if out, err := call("call", "small-in", "1234"); err != nil || out != "1234" {
		t.Fatalf("small-in at its limit = %q, %v", out, err)
	}
	_, err = call("call", "small-in", "12345")
	guest(t, err, abi.StatusError, "input of 5 bytes, above its 4")
	if n := bigIn.Load(); n != 1 {
		t.Fatalf("small-in ran %d times, want 1: an input over the limit must not reach it", n)
	}
	_, err = call("call", "panics", "")
	guest(t, err, abi.StatusError, `host function "panics" panicked`)
	if n := i.Stats().HostFuncPanics; n != 1 || panics.Load() != 1 {
		t.Fatalf("HostFuncPanics = %d, want 1", n)
	}
	// A too small buffer keeps the output for a second try.
	if out, err := call("small", "kv.get", "bob"); err != nil || out != "toosmall:value of bob" {
		t.Fatalf("small = %q, %v", out, err)
	}
	// None of this ended the instance.
	if out, err := call("call", "kv.get", "x"); err != nil || out != "value of x" || i.Err() != nil {
		t.Fatalf("after the errors: %q, %v, Err %v", out, err, i.Err())
	}
}

// A host function runs under the call's deadline: its context ends when the watchdog stops
// the operation, and the call then ends with its DeadlineError; Kill does the same.
func TestHostFunctionStopped(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	var cause atomic.Value
	block := sandbox.HostFunc{Name: "block", Func: func(ctx context.Context, _ []byte) ([]byte, error) {
		entered <- struct{}{}
		select {
		case <-ctx.Done():
			cause.Store(context.Cause(ctx))
			return nil, ctx.Err()
		case <-time.After(time.Minute): // bounds a hang only
			return nil, errors.New("the context never ended")
		}
	}}
	e := newEngine(t)
	grant := sandbox.Capabilities{HostFunctions: []string{"block"}}
	m := compile(t, e, hostcallPath, sandbox.Config{HostFuncs: []sandbox.HostFunc{block}, Capabilities: grant,
		Limits: sandbox.Limits{CallTimeout: 50 * time.Millisecond}})
	_, err := instantiate(t, m, nil).Call(context.Background(), "call", hostInput("block", ""))
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) || de.Caller {
		t.Fatalf("deadline: %v, want the plugin's own *DeadlineError", err)
	}
	if cause.Load() == nil {
		t.Fatal("the host function's context did not end")
	}

	m2 := compile(t, e, hostcallPath, sandbox.Config{HostFuncs: []sandbox.HostFunc{block}, Capabilities: grant,
		Limits: sandbox.Limits{CallTimeout: sandbox.NoTimeout}})
	i := instantiate(t, m2, nil)
	res := make(chan error, 1)
	go func() { _, err := i.Call(context.Background(), "call", hostInput("block", "")); res <- err }()
	<-entered // the first call's token, still buffered
	<-entered // this call's: it is in the host function
	i.Kill()
	select {
	case err := <-res:
		if !errors.Is(err, sandbox.ErrCanceled) {
			t.Fatalf("killed in a host function: %v", err)
		}
	case <-time.After(30 * time.Second): // bounds a hang only
		t.Fatal("Kill did not end the host function's call")
	}
}

func TestHostFunctionGrants(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	ok := func(context.Context, []byte) ([]byte, error) { return nil, nil }
	for name, cfg := range map[string]sandbox.Config{
		"granted, not provided": {Capabilities: sandbox.Capabilities{HostFunctions: []string{"kv.get"}}},
		"bad name":              {HostFuncs: []sandbox.HostFunc{{Name: "KV Get", Func: ok}}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"KV Get"}}},
		"no Func":               {HostFuncs: []sandbox.HostFunc{{Name: "a"}}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"a"}}},
		"provided twice":        {HostFuncs: []sandbox.HostFunc{{Name: "a", Func: ok}, {Name: "a", Func: ok}}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"a"}}},
		"granted twice":         {HostFuncs: []sandbox.HostFunc{{Name: "a", Func: ok}}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"a", "a"}}},
		"negative MaxOutput":    {HostFuncs: []sandbox.HostFunc{{Name: "a", Func: ok, MaxOutput: -1}}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"a"}}},
		"negative MaxInput":     {HostFuncs: []sandbox.HostFunc{{Name: "a", Func: ok, MaxInput: -1}}, Capabilities: sandbox.Capabilities{HostFunctions: []string{"a"}}},
	} {
		if _, err := e.Compile(context.Background(), read(t, hostcallPath), cfg); !errors.Is(err, sandbox.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
	// Provided but granted to nobody: fine, and denied to the guest.
	m := compile(t, e, hostcallPath, sandbox.Config{HostFuncs: []sandbox.HostFunc{{Name: "a", Func: ok}}})
	_, err := instantiate(t, m, nil).Call(context.Background(), "call", hostInput("a", ""))
	if ge := (*sandbox.GuestError)(nil); !errors.As(err, &ge) || ge.Message != "denied" {
		t.Fatalf("ungranted: %v", err)
	}
}

// The Go SDK's HostCall against the real host functions: output, denial, failure.
func TestHostFunctionsGoSDK(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	m := compile(t, e, capsPath, sandbox.Config{
		HostFuncs: []sandbox.HostFunc{
			{Name: "kv.get", Func: func(_ context.Context, in []byte) ([]byte, error) { return append([]byte("v:"), in...), nil }},
			{Name: "fails", Func: func(context.Context, []byte) ([]byte, error) { return nil, errors.New("no such key") }},
		},
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"kv.get", "fails"}}})
	i := instantiate(t, m, nil)
	if got := mustCall(t, i, "host", "kv.get\nalice"); got != "v:alice" {
		t.Fatalf("kv.get = %q", got)
	}
	for in, want := range map[string]string{"secret\nx": "denied: secret", "fails\nx": "failed: no such key"} {
		_, err := i.Call(context.Background(), "host", []byte(in))
		if ge := (*sandbox.GuestError)(nil); !errors.As(err, &ge) || ge.Message != want {
			t.Errorf("%q: %v, want the guest error %q", in, err, want)
		}
	}
}

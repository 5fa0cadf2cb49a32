package host_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Host functions are offered per host and granted per plugin: the granted plugin calls one,
// another plugin of the same host is denied it, and a grant the host cannot honour fails the
// load with ErrInvalidConfig.
func TestHostFunctionsGrantedPerPlugin(t *testing.T) {
	t.Parallel()
	wasm, err := os.ReadFile("../sandbox/testdata/hostcall.wasm")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{"alice": "admin"}
	lookup := sandbox.HostFunc{Name: "users.role", Func: func(_ context.Context, in []byte) ([]byte, error) {
		r, ok := users[string(in)]
		if !ok {
			return nil, errors.New("no such user")
		}
		return []byte(r), nil
	}}
	h := hosttest.New(t, host.WithHostFunctions(lookup))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "granted", Wasm: wasm,
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"users.role"}}})
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "other", Wasm: wasm})
	in := append([]byte{byte(len("users.role"))}, "users.rolealice"...)
	if out, err := h.Call(ctxT(t), "granted", "call", in); err != nil || string(out) != "admin" {
		t.Fatalf("granted: %q, %v", out, err)
	}
	var ge *sandbox.GuestError
	if _, err := h.Call(ctxT(t), "other", "call", in); !errors.As(err, &ge) || ge.Message != "denied" {
		t.Fatalf("not granted: %v, want the guest's \"denied\"", err)
	}
	err = h.Load(ctxT(t), host.Plugin{Name: "bad", Wasm: wasm,
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"users.delete"}}})
	if !errors.Is(err, sandbox.ErrInvalidConfig) {
		t.Fatalf("a grant the host does not offer: %v, want ErrInvalidConfig", err)
	}
}

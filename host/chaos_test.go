package host_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// TestChaos drives one host from several goroutines with a seeded random mix of healthy calls,
// traps, guest exits, memory bombs, kills from outside, Resets and config updates. Every
// error must be one of the typed ones; afterwards the host must heal: every slot up again,
// serving, and holding the last config. hosttest checks at cleanup that nothing leaked.
// It runs in both isolation modes: under InstancePerCall the kills and crashes also land on
// instances being reset.
func TestChaos(t *testing.T) {
	t.Parallel()
	for _, iso := range []host.Isolation{host.SharedInstance, host.InstancePerCall} {
		t.Run(iso.String(), func(t *testing.T) {
			t.Parallel()
			chaos(t, iso)
		})
	}
}

func chaos(t *testing.T, iso host.Isolation) {
	h := hosttest.New(t, many()...)
	ctx := ctxT(t)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 3, Isolation: iso,
		Limits: sandbox.Limits{MemoryPages: 64, CallTimeout: 20 * time.Millisecond}})
	const workers, opsEach = 4, 150
	var mu sync.Mutex
	lastConfig := 0
	var wg sync.WaitGroup
	for w := range workers {
		rng := rand.New(rand.NewPCG(uint64(w), 42))
		wg.Go(func() {
			for range opsEach {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				var err error
				switch op := rng.IntN(100); {
				case op < 50:
					var out []byte
					out, err = h.Call(cctx, "p", "echo", []byte("ok"))
					if err == nil && string(out) != "ok" {
						t.Errorf("echo = %q", out)
					}
				case op < 60:
					_, err = h.Call(cctx, "p", "trap", nil)
				case op < 65:
					_, err = h.Call(cctx, "p", "exit", []byte("3"))
				case op < 68:
					_, err = h.Call(cctx, "p", "grow", nil)
				case op < 70:
					_, err = h.Call(cctx, "p", "loop", nil)
				case op < 80:
					var hd host.Handle
					if hd, err = h.Lookup(cctx, "p", rng.IntN(3)); err == nil {
						hd.Kill()
					}
				case op < 83:
					err = h.Reset(cctx, "p")
				default:
					mu.Lock()
					lastConfig++
					v := lastConfig
					err = h.Configure(cctx, "p", map[string]string{"v": strconv.Itoa(v)})
					mu.Unlock()
				}
				cancel()
				if err != nil && !expected(err) {
					t.Errorf("untyped or unexpected error: %v", err)
				}
			}
		})
	}
	wg.Wait()

	// The host heals: every slot comes back up (Lookup waits for a restarting slot), and the
	// last config is the desired one and held by every instance (Configure with it returns
	// once every live instance holds it; it changes nothing in those that already do).
	want := strconv.Itoa(lastConfig)
	for i := range 3 {
		if _, err := h.Lookup(ctx, "p", i); err != nil {
			t.Fatalf("slot %d never came back: %v", i, err)
		}
	}
	pi, err := h.Plugin("p")
	if err != nil {
		t.Fatal(err)
	}
	if pi.Config["v"] != want {
		t.Fatalf("desired config = %v, want v=%s", pi.Config, want)
	}
	if err := h.Configure(ctx, "p", map[string]string{"v": want}); err != nil {
		t.Fatalf("the last config does not apply: %v", err)
	}
	for range 6 {
		if got := call(t, h, "p", "config_get", "v"); got != want {
			t.Fatalf("config_get = %q, want %q", got, want)
		}
	}
}

// expected reports whether err is one of the errors chaos may produce.
func expected(err error) bool {
	for _, e := range []error{sandbox.ErrTrap, sandbox.ErrExit, sandbox.ErrMemoryLimit, sandbox.ErrDeadline,
		sandbox.ErrCanceled, host.ErrNoInstance, host.ErrStale, sandbox.ErrBusy, host.ErrPoisonInput} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

package host_test

import (
	"errors"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
)

// RestartInstance replaces one slot's instance: a new incarnation there, the other slots
// untouched, the event says which slot ended and why (a shutdown, not a crash).
func TestRestartInstance(t *testing.T) {
	t.Parallel()
	ended := make(chan host.Event, 16)
	h := hosttest.New(t, host.WithEventHook(func(e host.Event) {
		if e.Kind == host.EventInstanceEnded {
			select {
			case ended <- e:
			default:
			}
		}
	}))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "p", Wasm: reference, Instances: 2})
	before, _ := h.Plugin("p")
	if err := h.RestartInstance(ctxT(t), "p", 1); err != nil {
		t.Fatal(err)
	}
	after, _ := h.Plugin("p")
	if after.Instances[0].Incarnation != before.Instances[0].Incarnation {
		t.Fatalf("slot 0 changed: %d → %d", before.Instances[0].Incarnation, after.Instances[0].Incarnation)
	}
	if !after.Instances[1].Up || after.Instances[1].Incarnation <= before.Instances[1].Incarnation {
		t.Fatalf("slot 1 not restarted: %+v → %+v", before.Instances[1], after.Instances[1])
	}
	if after.Restarts != before.Restarts+1 || after.State != host.PluginRunning {
		t.Fatalf("restarts %d → %d, state %v", before.Restarts, after.Restarts, after.State)
	}
	select {
	case e := <-ended:
		if e.Plugin != "p" || e.Instance != 1 || e.Incarnation != before.Instances[1].Incarnation {
			t.Fatalf("ended event %+v", e)
		}
		if host.Kind(e.Err) == "trap" {
			t.Fatalf("a restart reported as a trap: %v", e.Err)
		}
	default:
		t.Fatal("no instance ended event")
	}
	// Not a crash: more restarts than the intensity allows leave the plugin running.
	h2 := hosttest.New(t, host.WithRestartIntensity(1, time.Hour, -1))
	hosttest.Load(t, h2, "q", reference)
	for range 3 {
		if err := h2.RestartInstance(ctxT(t), "q", 0); err != nil {
			t.Fatal(err)
		}
	}
	if pi, _ := h2.Plugin("q"); pi.State != host.PluginRunning || pi.Restarts != 3 || !pi.Instances[0].Up {
		t.Fatalf("after 3 restarts with an intensity of 1: %v, restarts %d, %+v", pi.State, pi.Restarts, pi.Instances[0])
	}
	for _, tc := range []struct {
		name string
		slot int
		want error
	}{{"p", 2, host.ErrNotFound}, {"p", -1, host.ErrNotFound}, {"nope", 0, host.ErrNotFound}} {
		if err := h.RestartInstance(ctxT(t), tc.name, tc.slot); !errors.Is(err, tc.want) {
			t.Errorf("RestartInstance(%q, %d) = %v, want %v", tc.name, tc.slot, err, tc.want)
		}
	}
}

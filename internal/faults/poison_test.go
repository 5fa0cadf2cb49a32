package faults_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/internal/fakeclock"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// One client sends the same crashing request a thousand times: three reach an instance, the
// rest are refused with ErrPoisonInput without entering one, so the pool is not ground down
// (no quarantine, even at the default restart intensity), other inputs are served, and the
// healthy plugin answers throughout.
func TestPoisonInput(t *testing.T) {
	h := newHost(t, host.WithClock(fakeclock.New()))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "hostile", Wasm: hostile(t, "quarantine_hostile"), Instances: 2})
	poison := []byte("!crash me")
	withinMemory(t, 64<<20, func() {
		whileHealthy(t, h, func() {
			crashes, refused := 0, 0
			for i := range 1000 {
				_, err := h.Call(ctxT(t), "hostile", "trapon", poison)
				var pe *host.PoisonInputError
				switch {
				case errors.Is(err, sandbox.ErrTrap):
					crashes++
				case errors.As(err, &pe) && errors.Is(err, host.ErrPoisonInput):
					refused++
				default:
					t.Fatalf("call %d: %v", i, err)
				}
			}
			if crashes != 3 || refused != 997 {
				t.Fatalf("%d crashes, %d refusals", crashes, refused)
			}
		})
	})
	if st, err := h.PluginState("hostile"); st != host.PluginRunning || err != nil {
		t.Fatalf("state %v, %v", st, err)
	}
	// The successor serves other inputs, clean.
	if out, err := h.Call(ctxT(t), "hostile", "trapon", []byte("fine")); err != nil || string(out) != "fine" {
		t.Fatalf("another input: %q, %v", out, err)
	}
	checkHealthy(t, h)
}

// A hostile client sends endless distinct crashing inputs: the poison table stays at its
// capacity (evicting the oldest, counted) and host memory stays within budget.
func TestPoisonTableBounded(t *testing.T) {
	const capacity = 64
	h := newHost(t, host.WithClock(fakeclock.New()), host.WithRestartIntensity(10_000, time.Second, -1),
		host.WithPoisonInput(0, 0, capacity))
	hosttest.LoadPlugin(t, h, host.Plugin{Name: "hostile", Wasm: hostile(t, "quarantine_hostile"), Instances: 2})
	withinMemory(t, 64<<20, func() {
		whileHealthy(t, h, func() {
			for i := range 500 {
				_, err := h.Call(ctxT(t), "hostile", "trapon", []byte("!"+strconv.Itoa(i)))
				if !errors.Is(err, sandbox.ErrTrap) {
					t.Fatalf("input %d: %v", i, err)
				}
			}
		})
	})
	mfs, err := h.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "wasmvisor_poison_entries":
			got[mf.GetName()] = mf.Metric[0].GetGauge().GetValue()
		case "wasmvisor_poison_evictions_total":
			got[mf.GetName()] = mf.Metric[0].GetCounter().GetValue()
		}
	}
	if got["wasmvisor_poison_entries"] != capacity || got["wasmvisor_poison_evictions_total"] != 500-capacity {
		t.Fatalf("poison table: %v", got)
	}
	if out, err := h.Call(ctxT(t), "hostile", "echo", []byte("clean")); err != nil || string(out) != "clean" {
		t.Fatalf("successor: %q, %v", out, err)
	}
}

package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// fakeRunner is a Runner whose Err says whether it was closed; nothing else is called.
type fakeRunner struct {
	sandbox.Runner
	closed bool
}

func (f *fakeRunner) Err() error {
	if f.closed {
		return sandbox.ErrClosed
	}
	return nil
}

func counterOf(g *guestState, name string) (float64, bool) {
	for _, m := range g.totals() {
		if m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// The sums take each instance's highest reading, carry a closed instance's last one, ignore a
// reading that comes after its fold, and count what they leave out.
func TestGuestStateSums(t *testing.T) {
	var g guestState
	a, b := &fakeRunner{}, &fakeRunner{}
	c := func(v float64) sandbox.Metric { return sandbox.Metric{Name: "n", Kind: abi.Counter, Value: v} }
	h := func(bounds []float64, buckets []uint64) sandbox.Metric {
		var n uint64
		for _, x := range buckets {
			n += x
		}
		return sandbox.Metric{Name: "h", Kind: abi.Histogram, Bounds: bounds, Buckets: buckets, Count: n}
	}
	g.mu.Lock()
	g.observe(a, []sandbox.Metric{c(5), h([]float64{1}, []uint64{1, 1}), {Name: "g", Kind: abi.Gauge, Value: 3}})
	g.observe(b, []sandbox.Metric{c(2)})
	g.observe(a, []sandbox.Metric{c(4)}) // lower: a forged or torn reading, ignored
	g.mu.Unlock()
	if v, _ := counterOf(&g, "n"); v != 7 {
		t.Fatalf("n = %v, want 7", v)
	}
	if _, ok := counterOf(&g, "g"); ok {
		t.Fatal("a gauge was summed")
	}
	a.closed = true
	g.fold(a)
	g.mu.Lock()
	g.observe(a, []sandbox.Metric{c(100)}) // after its fold: dropped
	g.observe(b, []sandbox.Metric{c(3), h([]float64{2}, []uint64{1, 0})})
	g.mu.Unlock()
	if v, _ := counterOf(&g, "n"); v != 8 {
		t.Fatalf("n = %v after the fold, want 8", v)
	}
	for _, m := range g.totals() {
		if m.Name == "h" && (m.Count != 2 || m.Buckets[0] != 1) {
			t.Fatalf("h = %+v: b's histogram of other bounds was added", m)
		}
	}
	if d := g.dropped(); d == 0 {
		t.Fatal("the histogram of other bounds was not counted as dropped")
	}
	// At most abi.MaxMetrics names per instance.
	var many []sandbox.Metric
	for i := range abi.MaxMetrics + 5 {
		many = append(many, sandbox.Metric{Name: fmt.Sprintf("m%d", i), Kind: abi.Counter, Value: 1})
	}
	before := g.dropped()
	g.mu.Lock()
	g.observe(&fakeRunner{}, many)
	g.mu.Unlock()
	if len(g.totals()) > abi.MaxMetrics || g.dropped() < before+5 {
		t.Fatalf("%d sums, %d dropped", len(g.totals()), g.dropped()-before)
	}
}

// A folded instance's map of last values serves a later instance empty: what the successor
// reports is its own, not added to its predecessor's again, and a map of many names is not
// kept.
func TestGuestStateSpareLast(t *testing.T) {
	var g guestState
	c := func(name string, v float64) sandbox.Metric {
		return sandbox.Metric{Name: name, Kind: abi.Counter, Value: v}
	}
	prev := &fakeRunner{}
	for k := range maxSpareLast + 3 {
		in := &fakeRunner{}
		g.mu.Lock()
		g.observe(in, []sandbox.Metric{c("x", 5), c(fmt.Sprintf("only%d", k), 1)})
		g.mu.Unlock()
		if k > 0 && len(g.last[in]) != 2 {
			t.Fatalf("instance %d starts with %d last values, want its own 2", k, len(g.last[in]))
		}
		prev.closed = true
		g.fold(prev)
		in.closed = true
		g.fold(in)
		prev = in
		if len(g.spareLast) > maxSpareLast {
			t.Fatalf("%d spare maps kept, at most %d", len(g.spareLast), maxSpareLast)
		}
	}
	if v, _ := counterOf(&g, "x"); v != 5*(maxSpareLast+3) {
		t.Fatalf("x = %v, want %v", v, 5*(maxSpareLast+3))
	}
	for k := range maxSpareLast + 3 {
		if v, _ := counterOf(&g, fmt.Sprintf("only%d", k)); v != 1 {
			t.Fatalf("only%d = %v, want 1: a successor's map held its predecessor's values", k, v)
		}
	}
	// A map past maxSpareMetrics is not kept.
	g.spareLast = nil
	var many []sandbox.Metric
	for k := range maxSpareMetrics + 1 {
		many = append(many, c(fmt.Sprintf("m%d", k), 1))
	}
	big := &fakeRunner{}
	g.mu.Lock()
	g.observe(big, many)
	g.mu.Unlock()
	big.closed = true
	g.fold(big)
	if len(g.spareLast) != 0 {
		t.Fatalf("a map of %d names was kept", len(many))
	}
}

// An operation that succeeded while a Handle.Kill found the instance busy (the kill landed
// after the guest had returned, or during a read, which runs no guest code) ends the member in
// its after, as one that the kill interrupted does: else the member stays up with a dead
// instance until another operation reaches it, and the killer's wait on Done never ends. Here
// the instance is killed directly, idle, as Kill leaves it, and after sees a nil error.
func TestAfterEndsAMemberWhoseInstanceEnded(t *testing.T) {
	ctx := context.Background()
	h, err := New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	wasm, err := os.ReadFile("../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Load(ctx, Plugin{Name: "p", Wasm: wasm}); err != nil {
		t.Fatal(err)
	}
	p := h.plugins.Load().find("p")
	m := p.slots[0].m.Load()
	m.in().Kill() // what the operation's leave leaves of an instance killed while busy
	p.after(m, nil)
	select {
	case <-m.Done():
	default:
		t.Fatal("the member lives on with a dead instance")
	}
	if !errors.Is(m.Err(), sandbox.ErrCanceled) {
		t.Fatalf("ended with %v, want the kill", m.Err())
	}
	if out, err := h.Call(ctx, "p", "echo", []byte("x")); err != nil || string(out) != "x" {
		t.Fatalf("the successor: %q, %v", out, err)
	}
}

package sandbox

import (
	"fmt"
	"sync"
	"testing"
	"unsafe"
)

// Interned names are one string for the same bytes, at most maxInterned of them; past that
// a name is still right, only made anew; readers in parallel agree (run under -race).
func TestMetricNamesIntern(t *testing.T) {
	var c metricNames
	a := c.intern([]byte("calls_total"))
	b := c.intern([]byte("calls_total"))
	if a != "calls_total" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("%q and %q are not one interned string", a, b)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 2 * maxInterned {
				name := fmt.Sprintf("m%d_%d", k, g%2)
				if s := c.intern([]byte(name)); s != name {
					t.Errorf("intern(%q) = %q", name, s)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(*c.m.Load()); n != maxInterned {
		t.Fatalf("%d names interned, want the bound, %d", n, maxInterned)
	}
	past := "not_interned"
	if x, y := c.intern([]byte(past)), c.intern([]byte(past)); x != past || unsafe.StringData(x) == unsafe.StringData(y) {
		t.Fatalf("a name past the bound: %q, %q, interned %v", x, y, unsafe.StringData(x) == unsafe.StringData(y))
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = c.intern([]byte("calls_total")) }); allocs != 0 {
		t.Fatalf("an interned name costs %v allocations, want 0", allocs)
	}
}

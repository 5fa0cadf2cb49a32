package host

import (
	"strconv"
	"testing"
)

// TestRegistryFind checks both lookups, the slice of a few plugins and the map of many,
// for hits, misses, and names that share a length or a prefix.
func TestRegistryFind(t *testing.T) {
	for _, n := range []int{0, 1, fewPlugins, fewPlugins + 1, 50} {
		m := map[string]*plugin{}
		for i := range n {
			name := "p" + strconv.Itoa(i)
			m[name] = &plugin{name: name}
		}
		r := newRegistry(m)
		for name, p := range m {
			if got := r.find(name); got != p {
				t.Fatalf("%d plugins: find(%q) = %v", n, name, got)
			}
			if got := r.find(name + "x"); got != nil {
				t.Fatalf("%d plugins: find(%q) = %v, want nil", n, name+"x", got)
			}
		}
		for _, miss := range []string{"", "q0", "p", strconv.Itoa(n)} {
			if got := r.find(miss); got != nil {
				t.Fatalf("%d plugins: find(%q) = %v, want nil", n, miss, got)
			}
		}
	}
}

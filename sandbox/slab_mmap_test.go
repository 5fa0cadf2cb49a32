//go:build linux && (amd64 || arm64)

package sandbox

import (
	"sync"
	"syscall"
	"testing"
	"unsafe"
)

// Each test uses a slot size no module of the package's tests has (a memory maximum of 3, 5,
// 7 Wasm pages), so that it sees only its own slabs.

// mapped reports whether b is mapped at all: mincore fails with ENOMEM on an unmapped range.
func mapped(t *testing.T, b []byte) bool {
	t.Helper()
	vec := make([]byte, (len(b)+osPage-1)/osPage)
	_, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	switch e {
	case 0:
		return true
	case syscall.ENOMEM:
		return false
	}
	t.Fatalf("mincore: %v", e)
	return false
}

func reserveT(t *testing.T, n uint64) reservation {
	t.Helper()
	r, err := reserve(n)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(r.mem)) != n || uintptr(unsafe.Pointer(unsafe.SliceData(r.mem)))%osPage != 0 {
		t.Fatalf("reserve(%d): %d bytes at %p", n, len(r.mem), unsafe.SliceData(r.mem))
	}
	return r
}

// TestSlabSlots: reservations of one size are distinct slots of one slab, inaccessible, and a
// slot given back is taken again as clean as new: the pages its region wrote, and an image
// file mapped over it, are gone.
func TestSlabSlots(t *testing.T) {
	const size = 3 << 16
	a, b := reserveT(t, size), reserveT(t, size)
	if a.s != b.s {
		t.Fatal("two reservations of one size took two slabs")
	}
	pa, pb := uintptr(unsafe.Pointer(&a.mem[0])), uintptr(unsafe.Pointer(&b.mem[0]))
	if pa+size != pb && pb+size != pa {
		t.Fatalf("slots at %#x and %#x are not neighbours", pa, pb)
	}
	if resident(t, a.mem) != 0 {
		t.Fatal("a new slot has resident pages")
	}

	// The region writes its first page and maps an image over its second.
	if err := commit(a.mem[:osPage]); err != nil {
		t.Fatal(err)
	}
	a.mem[0], a.mem[osPage-1] = 1, 2
	fd, view, err := imageFile(append(make([]byte, osPage-1), 3))
	if err != nil {
		t.Fatal(err)
	}
	defer closeImage(fd, view)
	if err := mapImage(a.mem[osPage:2*osPage], fd); err != nil {
		t.Fatal(err)
	}
	if a.mem[2*osPage-1] != 3 {
		t.Fatal("the image is not mapped")
	}
	if err := unreserve(a); err != nil {
		t.Fatal(err)
	}

	c := reserveT(t, size)
	if &c.mem[0] != &a.mem[0] {
		t.Fatal("the slot given back was not taken again")
	}
	if resident(t, c.mem) != 0 {
		t.Fatal("a slot given back kept resident pages")
	}
	if err := commit(c.mem[:2*osPage]); err != nil {
		t.Fatal(err)
	}
	for k, v := range c.mem[:2*osPage] {
		if v != 0 {
			t.Fatalf("byte %d of a slot taken again is %d, want 0", k, v)
		}
	}
	for _, r := range []reservation{b, c} {
		if err := unreserve(r); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlabFull: a full slab's next reservation makes another slab; a slab whose slots are
// all given back is unmapped while another of its size has a free slot, and the last one is
// kept for the next reservation.
func TestSlabFull(t *testing.T) {
	const size = 5 << 16
	var rs []reservation
	for range slabSlots + 1 {
		rs = append(rs, reserveT(t, size))
	}
	first, second := rs[0].s, rs[slabSlots].s
	if first == second || rs[slabSlots-1].s != first || first.n != slabSlots {
		t.Fatalf("%d reservations: slabs of %d and %d slots, want %d and a second", len(rs), first.n, second.n, slabSlots)
	}
	whole := unsafe.Slice((*byte)(first.base), first.size*uintptr(first.n))
	for _, r := range rs[:slabSlots] {
		if err := unreserve(r); err != nil {
			t.Fatal(err)
		}
	}
	if mapped(t, whole) {
		t.Fatal("an empty slab stayed mapped while another had free slots")
	}
	if err := unreserve(rs[slabSlots]); err != nil {
		t.Fatal(err)
	}
	last := unsafe.Slice((*byte)(second.base), second.size*uintptr(second.n))
	if !mapped(t, last) {
		t.Fatal("the only slab of its size was unmapped")
	}
	if r := reserveT(t, size); r.s != second {
		t.Fatal("the next reservation did not take the kept slab")
	} else if err := unreserve(r); err != nil {
		t.Fatal(err)
	}
}

// TestSlabLargeSlots: a slab reserves at most slabSpace, so one of 4 GiB memories has four
// slots.
func TestSlabLargeSlots(t *testing.T) {
	const size = 4<<30 + 7<<16 // a size of its own
	r := reserveT(t, size)
	defer func() {
		if err := unreserve(r); err != nil {
			t.Fatal(err)
		}
	}()
	if want := int(slabSpace / size); r.s.n != want {
		t.Fatalf("a slab of %d-byte slots has %d, want %d", size, r.s.n, want)
	}
}

// TestSlabConcurrent: goroutines reserving and giving back slots of one size at once never
// hold one slot twice (each writes its own mark and finds it again), under -race too.
func TestSlabConcurrent(t *testing.T) {
	const size = 7 << 16
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range 200 {
				var held []reservation
				for range k%(slabSlots+3) + 1 {
					r, err := reserve(size)
					if err != nil {
						t.Error(err)
						return
					}
					if err := commit(r.mem[:osPage]); err != nil {
						t.Error(err)
						return
					}
					if r.mem[0] != 0 {
						t.Errorf("a slot taken holds %d", r.mem[0])
					}
					r.mem[0] = byte(g + 1)
					held = append(held, r)
				}
				for _, r := range held {
					if r.mem[0] != byte(g+1) {
						t.Errorf("goroutine %d's slot holds %d", g+1, r.mem[0])
					}
					if err := unreserve(r); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
}

//go:build linux && (amd64 || arm64)

package sandbox

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Slabs: linear memories' address space is reserved many regions at a time.
//
// A region reserves its memory's maximum (256 MiB by default), inaccessible until committed.
// One mmap for each new instance was a seventh of starting one of ten thousand live instances
// (BenchmarkLiveInstances: the system call, and the kernel's work on its map of the address
// space); a slab is one reservation cut into slots of one size, so that a new instance takes
// a slot under a mutex instead. A slot given back is mapped over with fresh reserved space
// (one system call, as the munmap it replaces): its pages, and any image mapped over it, are
// gone, so the next region to take it is as clean as a new reservation. RATIONALE.md,
// "Slabs of address space".
//
// The rejected alternative, a free list of whole per-instance reservations, saves the mmap
// only when an instance ends as one starts; ten thousand live instances would each still
// make one.

const (
	// slabSlots is the most slots a slab has.
	slabSlots = 64
	// slabSpace is the most address space a slab reserves: a slab of 4 GiB memories has four
	// slots. A slab that cannot be reserved (an address-space limit) falls back to one slot.
	slabSpace = 16 << 30
)

// slab is one reservation of n slots of size bytes each.
type slab struct {
	base unsafe.Pointer
	size uintptr // a slot's size
	n    int
	free []int32 // the slots not in use
	used int     // slots in use, and slots that could not be reset (never used again)
}

// reservation is one slot of a slab: the address space of one region.
type reservation struct {
	mem []byte
	s   *slab
}

// slabs holds, for each slot size, the slabs that have a free slot.
var slabs struct {
	mu      sync.Mutex
	partial map[uintptr][]*slab
}

// reserve maps n bytes of address space, inaccessible, backed by nothing until committed: a
// slot of a slab of its size.
func reserve(n uint64) (reservation, error) {
	size := uintptr(n+pageMask) &^ pageMask
	slabs.mu.Lock()
	if ss := slabs.partial[size]; len(ss) > 0 {
		s := ss[len(ss)-1]
		r := s.take()
		if len(s.free) == 0 {
			slabs.partial[size] = ss[:len(ss)-1]
		}
		slabs.mu.Unlock()
		return r, nil
	}
	slabs.mu.Unlock()
	// A new slab, reserved without the lock held: another may be made meanwhile, and both
	// are used.
	s, err := newSlab(size, int(max(1, min(slabSlots, slabSpace/uint64(size)))))
	if err != nil && size < slabSpace {
		s, err = newSlab(size, 1)
	}
	if err != nil {
		return reservation{}, err
	}
	r := s.take()
	if len(s.free) > 0 {
		slabs.mu.Lock()
		if slabs.partial == nil {
			slabs.partial = make(map[uintptr][]*slab)
		}
		slabs.partial[size] = append(slabs.partial[size], s)
		slabs.mu.Unlock()
	}
	return r, nil
}

const pageMask = 1<<16 - 1 // a slot is a whole number of 64 KiB pages (and of host pages)

func newSlab(size uintptr, n int) (*slab, error) {
	p, err := unix.MmapPtr(-1, 0, nil, size*uintptr(n), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	s := &slab{base: p, size: size, n: n, free: make([]int32, n)}
	for k := range s.free {
		s.free[k] = int32(n - 1 - k) // the lowest address first
	}
	return s, nil
}

// take returns a free slot of s; the caller holds slabs.mu, or s is its own.
func (s *slab) take() reservation {
	k := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	s.used++
	return reservation{mem: unsafe.Slice((*byte)(unsafe.Add(s.base, uintptr(k)*s.size)), s.size), s: s}
}

// unreserve gives a reservation back: its slot is mapped over with fresh reserved space, and
// a slab none of whose slots is in use is unmapped unless it is the only one of its size
// with a free slot.
func unreserve(r reservation) error {
	s := r.s
	addr := unsafe.Pointer(unsafe.SliceData(r.mem))
	_, err := unix.MmapPtr(-1, 0, addr, s.size, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED|unix.MAP_NORESERVE)
	slabs.mu.Lock()
	if err != nil {
		// The slot may still hold the pages or the image of its region: it is not used
		// again, and its slab is never unmapped.
		slabs.mu.Unlock()
		return err
	}
	s.used--
	s.free = append(s.free, int32((uintptr(addr)-uintptr(s.base))/s.size))
	ss := slabs.partial[s.size]
	if len(s.free) == 1 {
		ss = append(ss, s)
	}
	unmap := s.used == 0 && len(ss) > 1
	if unmap {
		for k, o := range ss {
			if o == s {
				ss = append(ss[:k], ss[k+1:]...)
				break
			}
		}
	}
	if slabs.partial == nil {
		slabs.partial = make(map[uintptr][]*slab)
	}
	slabs.partial[s.size] = ss
	slabs.mu.Unlock()
	if unmap {
		return unix.MunmapPtr(s.base, s.size*uintptr(s.n))
	}
	return nil
}

package sandbox

import (
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// Memory accounting bounds; RATIONALE.md, "Memory accounting", explains them.
const (
	// keepResident is the most of a recycled memory that is kept resident, zeroed in place,
	// for the module's next instance (its initial memory, up to this). The rest of what the
	// guest used is given back to the operating system when the instance is closed.
	keepResident = 4 << 20
	// maxPooledMemories is how many closed instances' memories a module keeps for its next
	// instances.
	maxPooledMemories = 4
)

// linearMemory backs an instance's linear memory through wazero's MemoryAllocator hook, so
// that the instance always holds the memory's current buffer. The call path then reads the
// control block and copies input and output without an interface call, and a growth reaches
// it at no per-call cost: the guest's memory.grow calls Reallocate on the instance's own
// goroutine.
//
// The rejected alternative, asking wazero for the memory's size after every entry into the
// guest to learn whether the buffer changed, cost about 3 ns per call (BenchmarkCall64), a
// tenth of a bare call.
//
// The bytes live in a region (see region): where the platform allows (Linux on amd64 and
// arm64), address space reserved for the memory's maximum, outside the Go heap, committed as
// the guest grows and never moved, so that the host holds no more than the guest touched, and
// no old copy survives a growth. Elsewhere, a Go slice grown by copying.
//
// Regions are recycled between the instances of one module (memPool): a fresh instance's
// memory was the largest part of instantiating one, mostly the page faults of fresh memory.
// release zeroes the first keep bytes in place (the module's initial memory, up to
// keepResident) and gives every page above them that the guest used back to the operating
// system, which reads zero from then on; pages the guest never reached are not touched. A
// pooled region is therefore zero from its first byte to its end, as clean as a new one.
// Instance.Close releases the memory only once no post-mortem read can still be reading it
// (see Instance.read).
type linearMemory struct {
	buf   []byte  // the memory as wazero sees it; cap(buf) == len(buf)
	max   uint64  // the memory's maximum, in bytes
	keep  uint64  // bytes kept resident when the region is recycled
	r     *region // nil until Allocate, and after release
	pool  *memPool
	want  *snapshot // the snapshot the instance is restored from, if any: see restore
	fresh bool      // the region is new, not recycled: see restore
	pm    []byte    // setBack's buffer for the page map (see writtenPages)
}

// Allocate implements experimental.MemoryAllocator; each instance has its own.
func (m *linearMemory) Allocate(capacity, limit uint64) experimental.LinearMemory {
	capacity = min(capacity, limit)
	m.max = limit
	m.keep = min(capacity, keepResident)
	if m.pool != nil {
		m.r = m.pool.get(limit)
	}
	if m.r != nil && m.r.img != nil && m.r.img != m.want {
		// A region that maps another image (or one the instance will not use) is zero only
		// once the image is gone.
		if unmapImage(m.r.mem[:m.r.img.size]) != nil {
			m.r.free()
			m.r = nil
		} else {
			m.r.img, m.r.committed = nil, 0
		}
	}
	if m.r == nil {
		m.r = newRegion(capacity, limit)
		m.fresh = true
	}
	return m
}

// Reallocate implements experimental.LinearMemory: it grows the memory to size bytes, in
// place when the region is reserved (the bytes never move), else by copying into a larger
// buffer. The bytes it adds are zero. It returns nil, a refused growth, above the maximum or
// when the host cannot commit the memory.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(len(m.buf)) {
		var b []byte
		if m.imageWillCover(size) {
			b = m.r.mem[:size:size] // left reserved: restore maps the image over it
		} else if b = m.r.grow(size); b == nil {
			return nil
		}
		m.buf = b
	}
	return m.buf
}

// imageWillCover reports whether the first size bytes of a new region need not be committed
// because restore is to map the wanted snapshot's image over them before anything reads or
// writes them (wazero writes nothing into a snapshot module's memory: its data segments are
// passive). It saves a new instance a system call; restore commits them if it has to copy
// the image instead, and a region released before restore has none of them committed
// (r.committed), so nothing touches them.
func (m *linearMemory) imageWillCover(size uint64) bool {
	return m.fresh && m.want != nil && m.r.mapped && m.r.img == nil && size <= m.want.size
}

// Free implements experimental.LinearMemory. It does nothing: wazero also frees the memory
// of a module that the guest exits (proc_exit), whose memory must stay readable post mortem
// until Instance.Close, which calls release.
func (m *linearMemory) Free() {}

// restore puts s's image into the memory, whose length is s.size already: on a reserved
// region, by mapping the image's file over its start copy-on-write (nothing to do when the
// region, recycled, maps it still); else by copying it.
func (m *linearMemory) restore(s *snapshot) error {
	// The image is this module's working set at start: keep it resident when the region is
	// recycled, as the initial memory is (a guest whose start sequence grew its memory was
	// otherwise decommitted above its initial size at every release, and faulted back in by
	// the next copy).
	m.keep = max(m.keep, min(s.size, keepResident))
	r := m.r
	if r.img == s {
		return nil
	}
	// A new region is mapped: the instance then holds only the pages it writes, and ten
	// thousand live instances share the rest. A recycled one, resident already, takes a copy
	// of a small image (copyImagesUpTo): mapping it again would cost the revert and a fault
	// per page touched, more than the copy. A large image is mapped either way.
	if r.mapped && r.img == nil && (m.fresh || s.size > copyImagesUpTo || s.mapAlways) && s.mapInto(r.mem[:s.size]) {
		r.img = s
		r.committed = max(r.committed, s.size)
		return nil
	}
	if r.mapped && r.committed < s.size && r.grow(s.size) == nil { // see imageWillCover
		return fmt.Errorf("sandbox: snapshot: %d bytes of memory cannot be committed", s.size)
	}
	return s.copyInto(m.buf[:s.size])
}

// release zeroes the region and recycles it, or frees it. The instance is closed and no read
// is in progress.
func (m *linearMemory) release() {
	r, used := m.r, uint64(len(m.buf))
	m.buf, m.r = nil, nil
	if r == nil {
		return
	}
	// A region the pool has no room for is freed as it is: zeroing it first (and faulting in
	// the pages the guest never touched, to zero them) was most of closing one of many
	// instances at once (BenchmarkLiveInstances).
	if m.pool == nil || !m.pool.hasRoom() {
		r.free()
		return
	}
	if r.img != nil && r.img.size <= copyImagesUpTo && !r.img.mapAlways {
		// A small image is copied into recycled regions (see restore): the region gives
		// it up once, for fresh reserved space, rather than revert it at every release.
		if unmapImage(r.mem[:r.img.size]) != nil {
			r.free()
			return
		}
		r.img, r.committed = nil, 0
	}
	if !r.reset(used, m.keep) || !m.pool.put(r) {
		r.free()
	}
}

// region is the storage behind one linear memory, reused by the instances of a module.
type region struct {
	// mapped: mem is the whole reservation (len and cap the maximum), outside the Go heap;
	// [0, committed) is readable and writable, the rest inaccessible. Otherwise mem is a Go
	// slice whose capacity is the buffer's.
	mem       []byte
	res       reservation // mapped: the address space mem is
	max       uint64
	committed uint64
	mapped    bool
	img       *snapshot // mapped: the snapshot whose image file is mapped over the start

	cleanup runtime.Cleanup // unmaps a region that was never freed; see free
}

// newRegion reserves address space for max bytes, or, where that is not possible, allocates
// capacity bytes on the Go heap.
func newRegion(capacity, limit uint64) *region {
	if limit > 0 {
		if res, err := reserve(limit); err == nil {
			r := &region{mem: res.mem, res: res, max: limit, mapped: true}
			// A safety net for a region whose instance was never closed: once nothing can reach
			// the region (wazero's memory holds the instance's linearMemory, which holds it),
			// nothing can use the memory either.
			r.cleanup = runtime.AddCleanup(r, func(res reservation) { _ = unreserve(res) }, res)
			return r
		}
	}
	return &region{mem: make([]byte, 0, capacity), max: limit}
}

// grow returns the first size bytes, committing what is not yet, or nil if it cannot.
func (r *region) grow(size uint64) []byte {
	if !r.mapped {
		n := uint64(len(r.mem))
		if size > uint64(cap(r.mem)) {
			r.mem = slices.Grow(r.mem, int(size-n)) // geometric, as append; zero: see reset
		}
		r.mem = r.mem[:size]
		return r.mem[:size:size]
	}
	if size > r.committed {
		if commit(r.mem[r.committed:size]) != nil {
			return nil
		}
		r.committed = size
	}
	return r.mem[:size:size]
}

// reset makes the region zero again after an instance used its first used bytes, keeping
// the first keep bytes resident. It reports whether the region can be recycled.
func (r *region) reset(used, keep uint64) bool {
	if !r.mapped {
		if uint64(cap(r.mem)) > 2*keep {
			return false // dropped: a small instance never holds a large one's pages
		}
		// Bytes beyond the length were never written (wazero bounds every access by it).
		clear(r.mem[:used])
		r.mem = r.mem[:0]
		return true
	}
	if r.img != nil {
		// The image's pages the instance wrote revert to the file; above it, the pages go
		// back to the operating system. Nothing is zeroed or copied.
		n := r.img.size
		if revertImage(r.mem[:n]) != nil {
			return false
		}
		if r.committed > n {
			if decommit(r.mem[n:r.committed]) != nil {
				return false
			}
			r.committed = n
		}
		return true
	}
	used = min(used, r.committed)
	clear(r.mem[:min(used, keep)])
	if r.committed > keep {
		// Pages in [keep, committed) that the guest never touched cost the kernel a walk of
		// empty page tables, nothing more.
		if decommit(r.mem[keep:r.committed]) != nil {
			return false
		}
		r.committed = keep
	}
	return true
}

// free returns the region to the operating system (or to the garbage collector).
func (r *region) free() {
	if r.mapped {
		r.cleanup.Stop()
		_ = unreserve(r.res)
		r.mapped, r.res = false, reservation{}
	}
	r.mem = nil
}

// memPool keeps a module's zeroed regions for its next instances, at most
// maxPooledMemories of them. It is safe for concurrent use.
type memPool struct {
	mu     sync.Mutex
	free   []*region
	closed bool
}

// get returns a pooled region of maximum max, or nil.
func (p *memPool) get(max uint64) *region {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := len(p.free) - 1; n >= 0; n-- {
		if r := p.free[n]; r.max == max {
			p.free = slices.Delete(p.free, n, n+1)
			return r
		}
	}
	return nil
}

// hasRoom reports whether put would keep a region now.
func (p *memPool) hasRoom() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && len(p.free) < maxPooledMemories
}

// put keeps r for a later instance; false if the pool is full or closed (the caller frees r).
func (p *memPool) put(r *region) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.free) >= maxPooledMemories {
		return false
	}
	p.free = append(p.free, r)
	return true
}

// close frees the pooled regions; later puts fail.
func (p *memPool) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, r := range free {
		r.free()
	}
}

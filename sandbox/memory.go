package sandbox

import (
	"slices"
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// linearMemory backs an instance's linear memory through wazero's MemoryAllocator hook, so
// that the instance always holds the memory's current buffer. The call path then reads the
// control block and copies input and output without an interface call, and a growth (which
// may move the buffer) reaches it at no per-call cost: the guest's memory.grow calls
// Reallocate on the instance's own goroutine.
//
// The rejected alternative, asking wazero for the memory's size after every entry into the
// guest to learn whether the buffer moved, cost about 3 ns per call (BenchmarkCall64), a
// tenth of a bare call.
//
// Buffers are recycled between the instances of one module (pool): a fresh instance's memory
// was the largest part of instantiating one, and mostly not the zeroing itself but the page
// faults of memory the Go runtime had just handed back to the OS, and the garbage collections
// that 128 KiB and more per instance set off. Free zeroes the buffer before it goes back,
// and every buffer in the pool is zero from 0 to its capacity (bytes beyond the length are
// never written: wazero bounds every access by the length), so a recycled buffer is as clean
// as a new one. Instance.Close frees the memory only once no post-mortem read can still be
// reading it (see Instance.read). Buffers that grew past twice the module's initial memory
// are not kept, so that a small instance never holds a large one's pages; and sync.Pool lets
// the garbage collector take back what stays unused.
type linearMemory struct {
	buf  []byte
	max  uint64
	pool *sync.Pool // of *[]byte, zeroed; nil: no recycling
	keep int        // the largest capacity worth recycling
}

// Allocate implements experimental.MemoryAllocator; each instance has its own.
func (m *linearMemory) Allocate(capacity, limit uint64) experimental.LinearMemory {
	m.max = limit
	capacity = min(capacity, limit)
	m.keep = 2 * int(capacity)
	if m.pool != nil {
		if b, ok := m.pool.Get().(*[]byte); ok && uint64(cap(*b)) >= capacity && uint64(cap(*b)) <= limit {
			m.buf = (*b)[:0]
			return m
		}
	}
	m.buf = make([]byte, 0, capacity)
	return m
}

// Reallocate implements experimental.LinearMemory: it grows the buffer to size bytes, in
// place when the capacity allows, else into a larger copy (geometric growth, as append
// does). The bytes it adds are zero. It returns nil, a refused growth, above the maximum.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if n := uint64(len(m.buf)); size > n {
		if size <= uint64(cap(m.buf)) {
			m.buf = m.buf[:size] // zero: see the pool's invariant
		} else {
			m.buf = slices.Grow(m.buf, int(size-n))[:size]
		}
	}
	return m.buf
}

// Free implements experimental.LinearMemory. It does nothing: wazero also frees the memory
// of a module that the guest exits (proc_exit), whose memory must stay readable post mortem
// until Instance.Close, which calls release.
func (m *linearMemory) Free() {}

// release zeroes the buffer and recycles it, or drops it. The instance is closed and no
// read is in progress.
func (m *linearMemory) release() {
	if m.pool != nil && m.buf != nil && cap(m.buf) <= m.keep {
		b := m.buf
		clear(b)
		b = b[:0]
		m.pool.Put(&b)
	}
	m.buf = nil
}

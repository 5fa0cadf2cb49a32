package extism

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

const pageSize = 65536

// linearMemory backs one linear memory of an instance (the plugin's or the Extism kernel's)
// and enforces Limits.MemoryPages on it. wazero asks it for every growth, so, unlike the
// runtime-wide WithMemoryLimitPages, a refusal is seen and recorded on the instance.
type linearMemory struct {
	inst    *Instance
	buf     []byte
	limit   uint64 // bytes
	started bool
	kernel  bool // the Extism kernel's memory, allocated first: input, output, vars
	pages   atomic.Uint32
}

// allocate is the instance's wazero memory allocator; wazero calls it for each memory while
// Instantiate runs, the plugin's last.
func (i *Instance) allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	lm := &linearMemory{inst: i, limit: uint64(i.mod.cfg.Limits.MemoryPages) * pageSize}
	if maxBytes < lm.limit {
		lm.limit = maxBytes // wazero enforces a declared maximum itself
	}
	lm.buf = make([]byte, 0, min(capacity, lm.limit))
	lm.kernel = i.mem.Load() == nil
	i.mem.Store(lm)
	return lm
}

// Reallocate grows the memory to size bytes, or refuses (nil) past the limit. The first call
// sets the initial size, which Compile has checked.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit && m.started {
		m.inst.refused.Store(true)
		if m.kernel {
			m.inst.kernelRefused.Store(true)
		}
		return nil
	}
	m.started = true
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size] // never shrinks, so the bytes past the old length are zero
	} else {
		nb := make([]byte, size, max(size, min(2*uint64(cap(m.buf)), m.limit)))
		copy(nb, m.buf)
		m.buf = nb
	}
	m.pages.Store(uint32(size / pageSize))
	return m.buf
}

// Free drops the memory when its module closes.
func (m *linearMemory) Free() {
	m.buf = nil
	m.pages.Store(0)
}

package sandbox

import (
	"fmt"
	"sync"

	"github.com/tetratelabs/wazero/api"

	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// snapshot is a module's state after its first instance's start sequence (data segments,
// start function, _initialize, wasmvisor_init) and before any config: its memory, its mutable
// globals and what the sandbox read of its control block. RATIONALE.md, "Snapshots".
type snapshot struct {
	size       uint64   // memory bytes
	globals    []uint64 // in the order of wasmbin.Snapshot.Globals
	ctrl       uint32
	handlers   []string
	handlerIdx map[string]uint32 // shared by the restored instances: read only
	mapAlways  bool              // tests only: mapped into recycled regions too, whatever its size

	mu     sync.RWMutex // held to read fd and data; Lock to close
	fd     int          // the image's memory file, or -1
	data   []byte       // the image: a read-only view of fd, or a heap copy
	closed bool
}

// copyImagesUpTo is the largest image that is copied into a recycled region rather than
// mapped there copy-on-write (a new region always maps it). A mapping costs a fixed price per
// instance whatever the image's size: the madvise that reverts it on recycling (a TLB
// shootdown, about 50 µs on this project's 2-vCPU machine) and a page fault for every page the
// instance then touches, where a copy into recycled, resident memory costs only its bytes.
// Measured with a fresh instance and one call (BenchmarkInstantiate's "+call" rows), on
// recycled regions: the 128 KiB reference plugin took 125 µs mapped and 22 µs copied; the
// 3.1 MiB standard-Go plugin 0.4 ms mapped and 1.9 ms copied. A new region maps even a small
// image: ten thousand live instances then share its pages (BenchmarkLiveInstances: 10.6 KiB
// each mapped, 144 KiB copied).
const copyImagesUpTo = 256 << 10

// takeSnapshot captures i, which has just run its start sequence.
func takeSnapshot(i *Instance) (*snapshot, error) {
	mem := i.lm.buf
	s := &snapshot{size: uint64(len(mem)), ctrl: i.ctrl, handlers: i.handlers, handlerIdx: i.handlerIdx, fd: -1}
	for _, name := range i.mod.globalNames {
		g := i.wm.ExportedGlobal(name)
		if g == nil {
			return nil, fmt.Errorf("sandbox: snapshot: no global %q", name)
		}
		s.globals = append(s.globals, g.Get())
	}
	s.mapAlways = i.mod.eng.mapImages
	if i.mod.eng.copyImages {
		s.data = append([]byte(nil), mem...)
	} else if fd, view, err := imageFile(mem); err == nil {
		s.fd, s.data = fd, view
	} else {
		s.data = append([]byte(nil), mem...)
	}
	return s, nil
}

// mapInto maps the image over dst, copy-on-write, and reports whether it did.
func (s *snapshot) mapInto(dst []byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.closed && s.fd >= 0 && mapImage(dst, s.fd) == nil
}

// copyInto copies the image into dst.
func (s *snapshot) copyInto(dst []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return fmt.Errorf("sandbox: module: %w", ErrClosed)
	}
	copy(dst, s.data)
	return nil
}

// close releases the image; instances that map it keep their mappings.
func (s *snapshot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.fd >= 0 {
		closeImage(s.fd, s.data)
	}
	s.data = nil
}

// restore puts s into i, freshly instantiated: memory, globals and control block.
func (i *Instance) restore(s *snapshot) error {
	if cur := uint64(i.mem.Size()); s.size > cur {
		if _, ok := i.mem.Grow(uint32((s.size - cur) / 65536)); !ok {
			return &MemoryLimitError{LimitPages: i.mod.cfg.Limits.MemoryPages,
				Cause: fmt.Errorf("the snapshot's memory, %d pages, cannot be restored", s.size/65536)}
		}
	}
	if err := i.lm.restore(s); err != nil {
		return err
	}
	for k, name := range i.mod.globalNames {
		g, ok := i.wm.ExportedGlobal(name).(api.MutableGlobal)
		if !ok {
			return fmt.Errorf("sandbox: snapshot: no mutable global %q", name)
		}
		g.Set(s.globals[k])
	}
	i.ctrl, i.handlers, i.handlerIdx = s.ctrl, s.handlers, s.handlerIdx
	return nil
}

// snapshotPlan is what a Module knows of its snapshots.
type snapshotPlan struct {
	off   string // why the module's instances are not snapshotted; "" when they are
	names []string
}

func planSnapshots(e *Engine, cfg Config, ws wasmbin.Snapshot) snapshotPlan {
	var p snapshotPlan
	switch {
	case !e.snapshots:
		p.off = "snapshots are off for the engine (WithSnapshots)"
	case cfg.NoSnapshot:
		p.off = "snapshots are off for the module (Config.NoSnapshot)"
	case ws.Why != "":
		p.off = "the module cannot be snapshotted: " + ws.Why
	}
	for _, g := range ws.Globals {
		p.names = append(p.names, wasmbin.GlobalExport(g))
	}
	return p
}

// Snapshots reports whether the module's instances start from a snapshot of its first
// instance's initialized state, and if not, why not (RATIONALE.md, "Snapshots").
func (m *Module) Snapshots() (on bool, why string) { return m.snapOff == "", m.snapOff }

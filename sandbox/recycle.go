package sandbox

import (
	"context"
	"os"

	"github.com/tetratelabs/wazero/api"
)

// Recycling: a closed instance of a module with snapshots gives its wazero module instance
// back to its Module, memory set back to the snapshot's image, and the Module's next
// Instantiate adopts it instead of asking wazero for a new one (wazero's instantiation, its
// element segments and globals, was most of a restored instance's start). RATIONALE.md,
// "Recycled instances".

// maxSpares is how many recycled module instances a Module keeps.
const maxSpares = maxPooledMemories

// spare is a recycled module instance: everything an Instance holds that lives as long as
// the module instance does.
type spare struct {
	wm    api.Module
	mem   api.Memory
	lm    *linearMemory
	io    *instanceIO
	intrG api.MutableGlobal
	growG api.MutableGlobal
	fns   [numFns]api.Function
}

// instanceIO is what wazero calls back for a module instance's WASI (stdout, stderr, the
// random source, sleep, the fake clocks), made once per module instance: it forwards to the
// Instance that holds the module instance now. i changes only while no operation runs (at
// adoption, before the Instance is returned).
type instanceIO struct{ i *Instance }

func (o *instanceIO) sleep(ns int64)                    { o.i.sleep(ns) }
func (o *instanceIO) walltime() (sec int64, nsec int32) { return o.i.clock.walltime() }
func (o *instanceIO) nanotime() int64                   { return o.i.clock.nanotime() }

type ioStdout struct{ o *instanceIO }

func (w ioStdout) Write(b []byte) (int, error) { return stoppingWriter{w.o.i.logger.stdoutW}.Write(b) }

type ioStderr struct{ o *instanceIO }

func (w ioStderr) Write(b []byte) (int, error) { return stoppingWriter{w.o.i.logger.stderrW}.Write(b) }

type ioRand struct{ o *instanceIO }

func (r ioRand) Read(p []byte) (int, error) { return stoppableReader{r.o.i, r.o.i.rand}.Read(p) }

// takeSpare returns a recycled module instance for an instance restored from snap, or nil.
func (m *Module) takeSpare(snap *snapshot) *spare {
	if snap == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.spares)
	if n == 0 || m.closed || m.snap.Load() != snap {
		return nil
	}
	sp := m.spares[n-1]
	m.spares[n-1] = nil
	m.spares = m.spares[:n-1]
	return sp
}

// adopt makes i, new, the holder of sp, whose memory is snap's image: the globals and the
// control block are set as restore sets them, then i starts as a restored instance does.
func (i *Instance) adopt(ctx context.Context, sp *spare, config map[string]string, snap *snapshot) (*Instance, error) {
	i.wm, i.mem, i.lm, i.io, i.intrG, i.growG, i.fns = sp.wm, sp.mem, sp.lm, sp.io, sp.intrG, sp.growG, sp.fns
	i.io.i = i
	i.intrG.Set(0)
	i.growG.Set(0)
	for k, name := range i.mod.globalNames {
		i.wm.ExportedGlobal(name).(api.MutableGlobal).Set(snap.globals[k])
	}
	i.ctrl, i.handlers, i.handlerIdx = snap.ctrl, snap.handlers, snap.handlerIdx
	i.mod.eng.register(i)
	if err := i.start(ctx, config, true, false); err != nil {
		i.fail(err)
		_ = i.Close(context.Background())
		return nil, err
	}
	return i, nil
}

// recycle gives i's module instance to its Module for a later instance, once its memory is
// the snapshot's image again, and reports whether it did; if not, the caller closes it. Only
// an instance restored from the Module's snapshot is recycled, and only when memory and
// mutable globals are all of its state (Checkpoint's conditions), its memory has not grown
// (wazero cannot shrink one) and wazero has not closed it (the guest exited). Whatever ended
// the instance (a trap, a deadline, a kill) is then undone with its state.
func (i *Instance) recycle() bool {
	m, s := i.mod, i.lm.want
	if s == nil || m.eng.noRecycle || i.rewindable() != "" || i.wm.IsClosed() || uint64(len(i.lm.buf)) != s.size || !m.wantsSpare(s) {
		return false
	}
	if !s.reset(i.lm, m.eng.pagemap) {
		return false
	}
	sp := &spare{wm: i.wm, mem: i.mem, lm: i.lm, io: i.io, intrG: i.intrG, growG: i.growG, fns: i.fns}
	closeRoots(i.roots)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.snap.Load() != s || len(m.spares) >= maxSpares {
		return false
	}
	m.spares = append(m.spares, sp)
	return true
}

// wantsSpare reports whether m would keep a spare of snapshot s now.
func (m *Module) wantsSpare(s *snapshot) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.closed && m.snap.Load() == s && len(m.spares) < maxSpares
}

// closeSpares closes the module instances m kept. The caller holds m.mu.
func (m *Module) closeSpares() {
	for _, sp := range m.spares {
		_ = sp.wm.Close(context.Background())
		sp.lm.release()
	}
	m.spares = nil
}

// reset makes lm, the memory of an instance restored from s, hold s's image again, as Rewind
// does against a checkpoint (linearMemory.setBack). It reports false when the image is gone
// (the Module closed).
func (s *snapshot) reset(lm *linearMemory, pagemap *os.File) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	lm.setBack(s.data, pagemap)
	return true
}

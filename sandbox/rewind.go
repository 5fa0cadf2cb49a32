package sandbox

import (
	"bytes"
	"context"
	"encoding"
	"fmt"
	"os"

	"github.com/tetratelabs/wazero/api"
)

// A Rewinder is a Runner that can go back, in place, to a state it recorded: what a host's
// instance-per-call mode needs to give every call a pristine instance without making a new
// one. *Instance is one.
type Rewinder interface {
	// Checkpoint records the instance's state now as the state Rewind returns it to,
	// replacing any earlier checkpoint. On an error the instance has none.
	Checkpoint() error
	// Rewind returns the instance to its checkpoint. On an error the instance is as it was.
	Rewind() error
}

var _ Rewinder = (*Instance)(nil)

// RewindError is why an instance cannot take a checkpoint or go back to it. The instance is
// unchanged and keeps serving; a host makes a fresh instance instead.
type RewindError struct {
	Reason string
}

func (e *RewindError) Error() string { return "sandbox: cannot rewind the instance: " + e.Reason }

// checkpoint is an instance's state as Checkpoint found it: everything a call can change that
// a fresh instance of the same module and config would not have. RATIONALE.md, "Instance
// per call: rewinding in place".
type checkpoint struct {
	mem     []byte              // the whole linear memory
	globals []api.MutableGlobal // the mutable globals, looked up once
	values  []uint64
	rand    []byte // the deterministic random source's state; empty for crypto/rand
	wall    int64  // the fake clocks' last readings
	nano    int64
	valid   bool // false while a Checkpoint is taken, and after one failed
}

// rewindMapAbove is the smallest memory whose Rewind reads the page map first: reading it
// costs a system call (3 µs on this project's 2-vCPU virtual machine), more than comparing a
// small memory whole (about 1.5 µs for 128 KiB; BenchmarkRewind).
const rewindMapAbove = 256 << 10

// rewindPage is the unit Rewind compares and copies: a page a call did not write is read
// twice and written not at all.
const rewindPage = 4096

// Checkpoint implements Rewinder. The state it records is the instance's linear memory, its
// mutable globals, its random source and its fake clocks (ClockDeterministic), which are all
// of a module's state that Rewind can restore: a module for which that is not all (one that
// cannot be snapshotted, one whose code drops data segments, one granted directories, whose
// open files are state of the host) gets a *RewindError, as does an instance that is busy or
// has ended.
func (i *Instance) Checkpoint() error {
	if i.cp != nil {
		i.cp.valid = false // until this one is taken: a failed Checkpoint leaves none
	}
	if why := i.rewindable(); why != "" {
		return &RewindError{Reason: why}
	}
	id, err := i.enter(context.Background(), opRead)
	if err != nil {
		return &RewindError{Reason: err.Error()}
	}
	defer i.leave(id)
	cp := i.cp
	if cp == nil {
		cp = &checkpoint{}
		for _, name := range i.mod.globalNames {
			g, ok := i.wm.ExportedGlobal(name).(api.MutableGlobal)
			if !ok {
				return &RewindError{Reason: fmt.Sprintf("no mutable global %q", name)}
			}
			cp.globals = append(cp.globals, g)
		}
		cp.values = make([]uint64, len(cp.globals))
	}
	cp.mem = append(cp.mem[:0], i.lm.buf...)
	for k, g := range cp.globals {
		cp.values[k] = g.Get()
	}
	cp.rand = cp.rand[:0]
	if m, ok := i.rand.(encoding.BinaryAppender); ok {
		if cp.rand, err = m.AppendBinary(cp.rand); err != nil {
			return &RewindError{Reason: "random source: " + err.Error()}
		}
	}
	cp.wall, cp.nano = i.clock.wall.Load(), i.clock.nano.Load()
	cp.valid = true
	i.cp = cp
	return nil
}

// Rewind implements Rewinder: the memory pages that differ from the checkpoint's are copied
// back, the globals, random source and clocks set back, output a call left unterminated
// written out, and the stores' poisoning (a store found malformed) forgotten. It returns a
// *RewindError without a checkpoint, when the instance is busy or has ended, and when its
// memory grew since the checkpoint (wazero cannot shrink a memory).
func (i *Instance) Rewind() error {
	cp := i.cp
	if cp == nil || !cp.valid {
		return &RewindError{Reason: "no checkpoint"}
	}
	id, err := i.enter(context.Background(), opRead)
	if err != nil {
		return &RewindError{Reason: err.Error()}
	}
	defer i.leave(id)
	mem := i.lm.buf
	if len(mem) != len(cp.mem) {
		return &RewindError{Reason: fmt.Sprintf("the memory grew from %d to %d pages since the checkpoint", len(cp.mem)/65536, len(mem)/65536)}
	}
	i.lm.setBack(cp.mem, i.mod.eng.pagemap)
	for k, g := range cp.globals {
		g.Set(cp.values[k])
	}
	if u, ok := i.rand.(encoding.BinaryUnmarshaler); ok && len(cp.rand) > 0 {
		if err := u.UnmarshalBinary(cp.rand); err != nil {
			i.fail(fmt.Errorf("sandbox: rewind: random source: %w", err)) // half rewound: never entered again
			return err
		}
	}
	i.clock.wall.Store(cp.wall)
	i.clock.nano.Store(cp.nano)
	i.logger.flush()
	i.hostOut = nil
	for k := range i.storeErr {
		i.storeErr[k].Store(nil)
	}
	return nil
}

// setBack copies back the pages of the memory that differ from src, what it held earlier (a
// checkpoint's copy, or the snapshot's image it was restored from), of the same length. The
// kernel's page map tells which pages can differ: of an image the memory maps, only those the
// instance wrote, its own copies (a page it never wrote is the image's, and was then); above
// the image, only those present (a page never touched is zero, and was). Without the page
// map (f, the engine's; nil where there is none), or on a small memory (rewindMapAbove),
// every page is compared.
func (m *linearMemory) setBack(src []byte, f *os.File) {
	mem := m.buf
	img := 0
	if r := m.r; r != nil && r.img != nil {
		img = int(min(r.img.size, uint64(len(mem))))
	}
	ok := false
	if len(mem) > rewindMapAbove {
		m.pm, ok = writtenPages(f, mem, m.pm)
	}
	if !ok {
		for off := 0; off < len(mem); off += rewindPage {
			rewindSpan(mem, src, off, min(off+rewindPage, len(mem)))
		}
		return
	}
	ps := os.Getpagesize()
	for k := 0; k*ps < len(mem); k++ {
		if off := k * ps; off < img && pageWritten(m.pm, k) || off >= img && pagePresent(m.pm, k) {
			rewindSpan(mem, src, off, min(off+ps, len(mem)))
		}
	}
}

// rewindSpan copies cp[off:end] over mem[off:end] if they differ.
func rewindSpan(mem, cp []byte, off, end int) {
	if d, s := mem[off:end], cp[off:end]; !bytes.Equal(d, s) {
		copy(d, s)
	}
}

// rewindable says why the instance's state is more than Checkpoint records, or "".
func (i *Instance) rewindable() string {
	ws := &i.mod.code.snap
	switch {
	case ws.Why != "":
		return "the module cannot be snapshotted: " + ws.Why
	case ws.UsesData:
		return "its code names data segments (memory.init, data.drop), whose dropped state the host cannot restore"
	case len(i.roots) > 0:
		return "it is granted directories: the files it opens are state of the host"
	}
	return ""
}

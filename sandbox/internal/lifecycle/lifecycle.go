// Package lifecycle is the state word of an instance, shared by the sandbox's native
// instances and the Extism and OPA formats': one atomic uint64 that the instance's owner
// moves with compare-and-swap and the watchdog reads with one load; and, for the formats,
// the record of which operation was stopped (Stop).
//
// The low bits hold the state (Idle, Busy, Failed, Closed); above them, the kind of the
// operation in progress (the format's own numbering, 3 bits) and its id, which counts the
// operations that have entered the instance. Failing and closing keep the kind and id bits.
package lifecycle

import (
	"sync"
	"sync/atomic"
)

// States, in the low bits of the word.
const (
	Idle   uint64 = iota
	Busy          // serving an operation
	Failed        // ended by a fatal error; never entered again
	Closed

	Mask      = 3
	KindShift = 2 // the operation's kind, 3 bits
	KindMask  = 7
	IDShift   = 5
)

// BusyWord is the state word of operation id of kind, while it runs.
func BusyWord(id uint64, kind uint8) uint64 {
	return id<<IDShift | uint64(kind)<<KindShift | Busy
}

// State is the state a word holds.
func State(s uint64) uint64 { return s & Mask }

// ID is the id of the operation a word holds, or held last.
func ID(s uint64) uint64 { return s >> IDShift }

// Kind is the kind of the operation a word holds, or held last.
func Kind(s uint64) uint8 { return uint8(s >> KindShift & KindMask) }

// IdleWord is the state word of an idle instance whose last operation was id.
func IdleWord(id uint64) uint64 { return id << IDShift }

// Stop records which operation of a format's instance was stopped (by the watchdog or a
// kill), and why: what its safe points and the end of its call read. The zero Stop is ready.
type Stop struct {
	mu  sync.Mutex // serialises Mark: the first reason for an operation wins
	id  atomic.Uint64
	why atomic.Uint32
}

// Mark records that operation id is stopped for why, unless it is already; it reports
// whether it did.
func (s *Stop) Mark(id uint64, why uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id.Load() == id {
		return false
	}
	s.why.Store(why)
	s.id.Store(id)
	return true
}

// Is reports whether operation id was stopped.
func (s *Stop) Is(id uint64) bool { return s.id.Load() == id }

// Why is the reason the last operation stopped was stopped for.
func (s *Stop) Why() uint32 { return s.why.Load() }

// Running reports whether the state word w holds an operation in progress that was stopped.
func (s *Stop) Running(w uint64) bool { return State(w) == Busy && s.id.Load() == ID(w) }

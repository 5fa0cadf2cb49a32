package sdk

import (
	"fmt"

	"github.com/wasmvisor/wasmvisor/abi"
)

// DefaultEventCapacity is the number of slots of the event ring unless SetEventCapacity says
// otherwise.
const DefaultEventCapacity = 64

// MaxEventSize is the default bound on an event recorded by Emit, topic and data together; see
// SetMaxEventSize. A larger event is refused and counted in the ring's dropped field.
const MaxEventSize = 64 << 10

// The ring's first eventSlotsCarved slots have eventSlotBytes of storage each from the start
// (16 KiB in all), so that an event that fits is recorded without allocating before the ring
// has gone round too. That is every event of an instance started from a snapshot, whose ring
// is empty: with the storage made at the first event instead, an instance-per-call reset
// returned the guest to a heap whose first event needed a new span from the Go runtime's
// heap, and that made a fresh instance's authz decision take 15 µs instead of 9 µs
// (RATIONALE.md, "Instance per call"). An event that does not fit allocates its own storage,
// which its slot then keeps, as before.
const (
	eventSlotBytes   = 256
	eventSlotsCarved = 64
)

// ring is the event ring in guest memory: a 32-byte header and capacity 24-byte slots, laid
// out as the ABI says, plus the Go storage each slot points into.
type ring struct {
	capacity int      // slots; 0 means no ring (events_ptr 0)
	maxSize  int      // bound on len(topic)+len(data)
	hdr      []byte   // header then slots, one 8-aligned allocation
	slots    []byte   // hdr's slots part
	held     [][]byte // held[i] is the storage slot i points into
	written  uint64
	dropped  uint64
}

func (r *ring) setCapacity(n int) {
	if r.hdr != nil {
		panic("sdk: SetEventCapacity after the event ring was set up; call it in init() before any Emit")
	}
	if n < 0 || n > abi.MaxSlots {
		panic(fmt.Sprintf("sdk: SetEventCapacity(%d): want 0 (no ring) to %d", n, abi.MaxSlots))
	}
	r.capacity = n
}

func (r *ring) setMaxSize(n int) {
	if n < 0 || n > MaxEventSize {
		panic(fmt.Sprintf("sdk: SetMaxEventSize(%d): want 0 to %d", n, MaxEventSize))
	}
	r.maxSize = n
}

// setup allocates the ring and writes its header on first use (Emit or wasmvisor_init).
func (r *ring) setup(p platform) {
	if r.hdr != nil || r.capacity == 0 {
		return
	}
	b := alignedBytes(abi.RingSize + r.capacity*abi.SlotSize)
	r.hdr = b[:abi.RingSize]
	r.slots = b[abi.RingSize:]
	r.held = make([][]byte, r.capacity)
	// The first slots get their storage now, carved out of one allocation, each with its
	// capacity fixed (a full slice expression) so that a slot never writes into the next.
	k := min(r.capacity, eventSlotsCarved)
	arena := make([]byte, k*eventSlotBytes)
	for i := range k {
		r.held[i] = arena[i*eventSlotBytes : i*eventSlotBytes : (i+1)*eventSlotBytes]
	}
	putU32(r.hdr, abi.RingSlotsPtr, p.addr(r.slots))
	putU32(r.hdr, abi.RingSlotCount, uint32(r.capacity))
}

func (g *guest) emit(topic string, data []byte) {
	r := &g.events
	if r.hdr == nil {
		r.setup(g.p)
		if r.hdr == nil {
			return // no ring
		}
		g.sync()
	}
	if len(topic)+len(data) > r.maxSize {
		r.dropped++
		putU64(r.hdr, abi.RingDropped, r.dropped)
		return
	}
	// Invalidate the slot first (seq = all ones: the evicted event is gone, the new one not yet
	// there), fill it, then publish it with its seq and finally written, so that a host reading
	// after an interrupted call never sees a torn event.
	seq := r.written
	i := int(seq % uint64(r.capacity))
	slot := r.slots[i*abi.SlotSize : (i+1)*abi.SlotSize]
	putU64(slot, abi.SlotSeq, ^uint64(0))
	// The evicted event's buffer takes the new one when it is large enough: a ring that has
	// gone round once emits without allocating.
	var buf []byte
	if n := len(topic) + len(data); n > 0 {
		if buf = r.held[i]; cap(buf) >= n {
			buf = buf[:n]
		} else {
			buf = make([]byte, n)
		}
		copy(buf, topic)
		copy(buf[len(topic):], data)
	}
	r.held[i] = buf
	base := g.p.addr(buf)
	putU32(slot, abi.SlotTopicPtr, base)
	putU32(slot, abi.SlotTopicLen, uint32(len(topic)))
	putU32(slot, abi.SlotDataPtr, base+uint32(len(topic)))
	putU32(slot, abi.SlotDataLen, uint32(len(data)))
	putU64(slot, abi.SlotSeq, seq)
	r.written++
	putU64(r.hdr, abi.RingWritten, r.written)
}

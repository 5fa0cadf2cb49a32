package sandbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wasmvisor/wasmvisor/abi"
)

// The stores are read straight from guest memory, without entering the guest, so they can
// be read from an instance that has failed (post mortem) until it is closed. Every pointer
// the guest left is checked; a bad one is an ABI violation, reported but (on a failed
// instance) not otherwise acted on.

// Event is one entry of the guest's event log.
type Event struct {
	Seq   uint64
	Topic string
	Data  []byte
}

// EventLog is what Events read.
type EventLog struct {
	Events []Event
	// Next is the sequence number the next event will get: pass it as since next time.
	Next uint64
	// Lost counts events between since and the oldest one still in the ring: evicted before
	// they were read.
	Lost uint64
	// Dropped is the guest's own count of events it refused.
	Dropped uint64
}

// Metric is one telemetry value read from guest memory.
type Metric struct {
	Name  string
	Kind  abi.MetricKind
	Value float64 // counter or gauge
	// Histogram only: Bounds are the upper bounds, Buckets the per-bucket counts (one more
	// than Bounds, the last for +Inf), Count and Sum of the observations.
	Bounds  []float64
	Buckets []uint64
	Count   uint64
	Sum     float64
}

// read runs fn on the instance's memory when no call is running: on an idle instance it
// takes the busy state; on a failed one it reads what the instance died with.
//
// A read on a failed instance counts itself in readers and then checks the state again; Close
// moves the state to closed and then waits for readers to drain before it frees (and
// recycles) the memory: one of the two sees the other.
func (i *Instance) read(fn func() error) error {
	if s := i.state.Load(); s&stMask == stFailed {
		i.readers.Add(1)
		defer i.readers.Add(-1)
		if s := i.state.Load(); s&stMask != stFailed {
			return i.unavailable(s)
		}
		return fn()
	}
	id, err := i.enter(context.Background(), opRead)
	if err != nil {
		return err
	}
	defer i.leave(id)
	return fn()
}

func (i *Instance) ctrlWord(off uint32) (uint32, error) {
	v, ok := i.mem.ReadUint32Le(i.ctrl + off)
	if !ok {
		return 0, &ViolationError{Reason: "control block out of memory"}
	}
	return v, nil
}

// storeViolation reports a bad store; on a live instance it also ends it.
func (i *Instance) storeViolation(format string, args ...any) error {
	err := &ViolationError{Reason: fmt.Sprintf(format, args...)}
	if i.state.Load()&stMask == stBusy {
		i.fail(err)
	}
	return err
}

// Events returns the events with sequence numbers from since on that are still in the ring.
func (i *Instance) Events(since uint64) (EventLog, error) {
	var log EventLog
	err := i.read(func() error {
		hdr, err := i.ctrlWord(abi.CtrlEventsPtr)
		if err != nil || hdr == 0 {
			return err
		}
		h, ok := i.mem.Read(hdr, abi.RingSize)
		if !ok {
			return i.storeViolation("event ring header %#x out of memory", hdr)
		}
		slots := binary.LittleEndian.Uint32(h[abi.RingSlotsPtr:])
		count := binary.LittleEndian.Uint32(h[abi.RingSlotCount:])
		written := binary.LittleEndian.Uint64(h[abi.RingWritten:])
		log.Dropped = binary.LittleEndian.Uint64(h[abi.RingDropped:])
		log.Next = written
		if count == 0 || count > abi.MaxSlots {
			return i.storeViolation("event ring has %d slots", count)
		}
		oldest := uint64(0)
		if written > uint64(count) {
			oldest = written - uint64(count)
		}
		if since < oldest {
			log.Lost = oldest - since
			since = oldest
		}
		for s := since; s < written; s++ {
			slot, ok := i.mem.Read(slots+uint32(s%uint64(count))*abi.SlotSize, abi.SlotSize)
			if !ok {
				return i.storeViolation("event slot %d out of memory", s)
			}
			if binary.LittleEndian.Uint64(slot[abi.SlotSeq:]) != s {
				log.Lost++ // being rewritten when the guest stopped
				continue
			}
			topic, err := i.view(binary.LittleEndian.Uint32(slot[abi.SlotTopicPtr:]), binary.LittleEndian.Uint32(slot[abi.SlotTopicLen:]), "event topic")
			if err != nil {
				return i.storeViolation("%v", err)
			}
			data, err := i.view(binary.LittleEndian.Uint32(slot[abi.SlotDataPtr:]), binary.LittleEndian.Uint32(slot[abi.SlotDataLen:]), "event data")
			if err != nil {
				return i.storeViolation("%v", err)
			}
			log.Events = append(log.Events, Event{Seq: s, Topic: string(topic), Data: append([]byte(nil), data...)})
		}
		return nil
	})
	return log, err
}

// Telemetry returns a snapshot of the guest's metrics.
func (i *Instance) Telemetry() ([]Metric, error) {
	var out []Metric
	err := i.read(func() error {
		ptr, err := i.ctrlWord(abi.CtrlMetricsPtr)
		if err != nil {
			return err
		}
		n, err := i.ctrlWord(abi.CtrlMetricsCount)
		if err != nil {
			return err
		}
		if n > abi.MaxMetrics {
			return i.storeViolation("%d metrics, at most %d", n, abi.MaxMetrics)
		}
		if n == 0 {
			return nil
		}
		recs, ok := i.mem.Read(ptr, n*abi.MetricSize)
		if !ok {
			return i.storeViolation("metric records %#x+%d out of memory", ptr, n*abi.MetricSize)
		}
		out = make([]Metric, 0, n)
		for k := uint32(0); k < n; k++ {
			r := recs[k*abi.MetricSize:]
			name, err := i.view(binary.LittleEndian.Uint32(r[abi.MetricNamePtr:]), binary.LittleEndian.Uint32(r[abi.MetricNameLen:]), "metric name")
			if err != nil {
				return i.storeViolation("metric %d: %v", k, err)
			}
			if !abi.ValidMetricName(string(name)) {
				return i.storeViolation("metric %d: invalid name %q", k, name)
			}
			m := Metric{Name: string(name), Kind: abi.MetricKind(binary.LittleEndian.Uint32(r[abi.MetricKindOff:]))}
			v := binary.LittleEndian.Uint64(r[abi.MetricValue:])
			switch m.Kind {
			case abi.Counter:
				m.Value = float64(v)
			case abi.Gauge:
				m.Value = math.Float64frombits(v)
			case abi.Histogram:
				nb := binary.LittleEndian.Uint32(r[abi.MetricBucketCount:])
				if nb > abi.MaxBuckets {
					return i.storeViolation("metric %q: %d buckets, at most %d", name, nb, abi.MaxBuckets)
				}
				bounds, err := i.view(binary.LittleEndian.Uint32(r[abi.MetricBoundsPtr:]), nb*8, "histogram bounds")
				if err != nil {
					return i.storeViolation("metric %q: %v", name, err)
				}
				buckets, err := i.view(binary.LittleEndian.Uint32(r[abi.MetricBucketsPtr:]), (nb+1)*8, "histogram buckets")
				if err != nil {
					return i.storeViolation("metric %q: %v", name, err)
				}
				m.Count = v
				m.Sum = math.Float64frombits(binary.LittleEndian.Uint64(r[abi.MetricSum:]))
				m.Bounds = make([]float64, nb)
				m.Buckets = make([]uint64, nb+1)
				for b := range m.Bounds {
					m.Bounds[b] = math.Float64frombits(binary.LittleEndian.Uint64(bounds[b*8:]))
				}
				for b := range m.Buckets {
					m.Buckets[b] = binary.LittleEndian.Uint64(buckets[b*8:])
				}
			default:
				return i.storeViolation("metric %q: unknown kind %d", name, m.Kind)
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// AppliedConfig returns the config the guest holds, as it reports it in its control block.
func (i *Instance) AppliedConfig() (map[string]string, error) {
	var cfg map[string]string
	err := i.read(func() error {
		ptr, err := i.ctrlWord(abi.CtrlConfigPtr)
		if err != nil {
			return err
		}
		n, err := i.ctrlWord(abi.CtrlConfigLen)
		if err != nil {
			return err
		}
		if n == 0 {
			cfg = map[string]string{}
			return nil
		}
		b, err := i.view(ptr, n, "config")
		if err != nil {
			return i.storeViolation("%v", err)
		}
		if cfg, err = abi.DecodeConfig(b); err != nil {
			return i.storeViolation("applied config: %v", err)
		}
		return nil
	})
	return cfg, err
}

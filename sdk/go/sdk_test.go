package sdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
)

// recorder is a native host: it records the imports and reads guest memory through the model.
type recorder struct {
	modelPlatform
	logs      []string
	published []string
	aborts    []string
	publishR  uint32
}

func (r *recorder) log(l Level, msg string) { r.logs = append(r.logs, fmt.Sprintf("%d:%s", l, msg)) }
func (r *recorder) publish(t string, d []byte) uint32 {
	r.published = append(r.published, t+"="+string(d))
	return r.publishR
}
func (r *recorder) abort(msg string) { r.aborts = append(r.aborts, msg) }

// host drives a guest through its exports and reads its memory, as a wasmvisor host would.
type host struct {
	t    testing.TB
	g    *guest
	r    *recorder
	ctrl uint32
}

func newHost(t testing.TB, setup func(g *guest)) *host {
	t.Helper()
	r := &recorder{}
	g := newGuest(r)
	if setup != nil {
		setup(g)
	}
	h := &host{t: t, g: g, r: r}
	h.ctrl = g.init()
	if h.ctrl == 0 || h.ctrl%8 != 0 {
		t.Fatalf("control block at %#x: want non-zero and 8-aligned", h.ctrl)
	}
	return h
}

func (h *host) mem(a, n uint32) []byte {
	h.t.Helper()
	b := h.r.mem.read(a, n)
	if b == nil && n > 0 {
		h.t.Fatalf("guest address range [%#x, +%d) is out of bounds", a, n)
	}
	return b
}
func (h *host) u32(a uint32) uint32     { return binary.LittleEndian.Uint32(h.mem(a, 4)) }
func (h *host) u64(a uint32) uint64     { return binary.LittleEndian.Uint64(h.mem(a, 8)) }
func (h *host) field(off uint32) uint32 { return h.u32(h.ctrl + off) }

// put writes input as the host does: reserve if needed, then copy to in_ptr.
func (h *host) put(input []byte) uint32 {
	h.t.Helper()
	if uint32(len(input)) > h.field(abi.CtrlInCap) {
		if st := h.g.reserve(uint32(len(input))); st != abi.StatusOK {
			h.t.Fatalf("reserve(%d) = %v", len(input), st)
		}
	}
	copy(h.mem(h.field(abi.CtrlInPtr), uint32(len(input))), input)
	return uint32(len(input))
}

func (h *host) out() string {
	return string(h.mem(h.field(abi.CtrlOutPtr), h.field(abi.CtrlOutLen)))
}

func (h *host) call(handler uint32, input string) (abi.Status, string) {
	st := h.g.call(handler, h.put([]byte(input)))
	return st, h.out()
}

func (h *host) configure(c abi.Config) (abi.Status, string) {
	st := h.g.configure(h.put(abi.AppendConfig(nil, c)))
	return st, h.out()
}

func (h *host) config() []byte {
	return h.mem(h.field(abi.CtrlConfigPtr), h.field(abi.CtrlConfigLen))
}

func mustPanic(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil || !strings.Contains(fmt.Sprint(r), want) {
			t.Errorf("panic = %v, want one containing %q", r, want)
		}
	}()
	fn()
}

func echo(in []byte) ([]byte, error) { return in, nil }

func TestInitControlBlock(t *testing.T) {
	h := newHost(t, func(g *guest) {
		g.handle("echo", echo)
		g.handle("a.b-c_9", echo)
	})
	for _, tc := range []struct {
		name string
		off  uint32
		want uint32
	}{
		{"magic", abi.CtrlMagic, abi.Magic},
		{"version", abi.CtrlVersion, abi.Version},
		{"in_cap", abi.CtrlInCap, initialInCap},
		{"out_len", abi.CtrlOutLen, 0},
		{"config_ptr", abi.CtrlConfigPtr, 0},
		{"config_len", abi.CtrlConfigLen, 0},
		{"metrics_count", abi.CtrlMetricsCount, 0},
		{"flags", abi.CtrlFlags, 0},
	} {
		if got := h.field(tc.off); got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, got, tc.want)
		}
	}
	if got := string(h.mem(h.field(abi.CtrlHandlersPtr), h.field(abi.CtrlHandlersLen))); got != "echo\na.b-c_9" {
		t.Errorf("handler list = %q", got)
	}
	ev := h.field(abi.CtrlEventsPtr)
	if ev == 0 || ev%8 != 0 {
		t.Fatalf("events_ptr = %#x", ev)
	}
	if n := h.u32(ev + abi.RingSlotCount); n != DefaultEventCapacity {
		t.Errorf("slot_count = %d", n)
	}
	if again := h.g.init(); again != h.ctrl {
		t.Errorf("second init = %#x, want %#x", again, h.ctrl)
	}
}

func TestHandleRejects(t *testing.T) {
	g := newGuest(&recorder{})
	g.handle("ok", echo)
	mustPanic(t, "must match", func() { g.handle("", echo) })
	mustPanic(t, "must match", func() { g.handle("a b", echo) })
	mustPanic(t, "must match", func() { g.handle(strings.Repeat("x", 65), echo) })
	mustPanic(t, "duplicate", func() { g.handle("ok", echo) })
	mustPanic(t, "nil handler", func() { g.handle("nil", nil) })
	g.init()
	mustPanic(t, "after wasmvisor_init", func() { g.handle("late", echo) })
}

func TestCallStatuses(t *testing.T) {
	h := newHost(t, func(g *guest) {
		g.handle("echo", echo)
		g.handle("fail", func([]byte) ([]byte, error) { return nil, errors.New("it failed") })
		g.handle("bad", func([]byte) ([]byte, error) {
			return nil, fmt.Errorf("decoding: %w", InvalidInput(errors.New("bad number")))
		})
		g.handle("panic", func([]byte) ([]byte, error) { panic("boom") })
		g.handle("nilpanic", func([]byte) ([]byte, error) {
			var m map[string]int
			m["x"] = 1 //nolint:staticcheck // SA5000: the panic is the point
			return nil, nil
		})
	})
	for _, tc := range []struct {
		handler uint32
		in      string
		st      abi.Status
		out     string
	}{
		{0, "hello", abi.StatusOK, "hello"},
		{0, "", abi.StatusOK, ""},
		{1, "x", abi.StatusError, "it failed"},
		{2, "x", abi.StatusInvalidInput, "decoding: bad number"},
		{3, "x", abi.StatusError, "panic: boom"},
		{4, "x", abi.StatusError, "panic: assignment to entry in nil map"},
		{5, "x", abi.StatusUnknownHandler, ""},
		{math.MaxUint32, "x", abi.StatusUnknownHandler, ""},
	} {
		st, out := h.call(tc.handler, tc.in)
		if st != tc.st || out != tc.out {
			t.Errorf("call(%d, %q) = %v %q, want %v %q", tc.handler, tc.in, st, out, tc.st, tc.out)
		}
	}
	if want := []string{"panic: boom", "panic: assignment to entry in nil map"}; fmt.Sprint(h.r.aborts) != fmt.Sprint(want) {
		t.Errorf("aborts = %q, want %q", h.r.aborts, want)
	}
	// in_len > in_cap: the host skipped reserve; the guest aborts.
	h.r.aborts = nil
	for name, st := range map[string]abi.Status{
		"call":      h.g.call(0, initialInCap+1),
		"configure": h.g.configure(initialInCap + 1),
		"deliver":   h.g.deliver(initialInCap + 1),
	} {
		if st != abi.StatusError || h.out() != "input larger than input buffer" {
			t.Errorf("%s with in_len > in_cap: %v %q", name, st, h.out())
		}
	}
	if len(h.r.aborts) != 3 || h.r.aborts[0] != "input larger than input buffer" {
		t.Errorf("aborts = %q", h.r.aborts)
	}
}

func TestReserve(t *testing.T) {
	h := newHost(t, func(g *guest) { g.handle("echo", echo) })
	big := strings.Repeat("0123456789", 10000)
	st, out := h.call(0, big)
	if st != abi.StatusOK || out != big {
		t.Fatalf("big echo: %v, %d bytes", st, len(out))
	}
	if c := h.field(abi.CtrlInCap); c < uint32(len(big)) {
		t.Errorf("in_cap = %d after reserve(%d)", c, len(big))
	}
	if st := h.g.reserve(10); st != abi.StatusOK || h.field(abi.CtrlOutLen) != 0 {
		t.Errorf("reserve below in_cap: %v", st)
	}
	if st := h.g.reserve(math.MaxUint32); st != abi.StatusNoMemory {
		t.Errorf("reserve(4 GiB) = %v", st)
	}
}

func TestConfigure(t *testing.T) {
	var fired []string
	h := newHost(t, func(g *guest) {
		g.onConfig = append(g.onConfig, func(old, new ConfigView) error {
			if v, ok := new.Get("reject"); ok {
				return errors.New("rejected: " + v)
			}
			fired = append(fired, fmt.Sprintf("%v->%v", old.Keys(), new.Keys()))
			return nil
		})
	})
	// First config, empty: applied without firing; config_ptr now points at 00 00 00 00.
	if st, _ := h.configure(abi.Config{}); st != abi.StatusOK {
		t.Fatalf("empty configure: %v", st)
	}
	if got := h.config(); string(got) != "\x00\x00\x00\x00" || len(fired) != 0 {
		t.Fatalf("after empty config: config %x, fired %v", got, fired)
	}
	steps := []struct {
		cfg   abi.Config
		st    abi.Status
		msg   string
		fired int
	}{
		{abi.Config{"a": "1"}, abi.StatusOK, "", 1},
		{abi.Config{"a": "1"}, abi.StatusOK, "", 1}, // unchanged
		{abi.Config{"a": "1", "b": ""}, abi.StatusOK, "", 2},
		{abi.Config{"reject": "yes"}, abi.StatusConfigRejected, "rejected: yes", 2},
		{abi.Config{}, abi.StatusOK, "", 3},
	}
	for i, s := range steps {
		before := string(h.config())
		st, msg := h.configure(s.cfg)
		if st != s.st || msg != s.msg || len(fired) != s.fired {
			t.Fatalf("step %d: %v %q, fired %d; want %v %q, %d", i, st, msg, len(fired), s.st, s.msg, s.fired)
		}
		want := string(abi.AppendConfig(nil, s.cfg))
		if st != abi.StatusOK {
			want = before
		}
		if got := string(h.config()); got != want {
			t.Errorf("step %d: config bytes %x, want %x", i, got, want)
		}
		dec, err := abi.DecodeConfig([]byte(want))
		if err != nil {
			t.Fatal(err)
		}
		if v := h.g.config.view; v.Len() != len(dec) {
			t.Errorf("step %d: Config().Len() = %d, want %d", i, v.Len(), len(dec))
		}
	}
	if want := "[[]->[a] [a]->[a b] [a b]->[]]"; fmt.Sprint(fired) != want {
		t.Errorf("fired %v, want %v", fired, want)
	}
	st := h.g.configure(h.put([]byte{1, 0, 0, 0, 9}))
	if st != abi.StatusConfigRejected || h.out() != "malformed config" {
		t.Errorf("malformed: %v %q", st, h.out())
	}
}

func TestFirstConfigNonEmptyFires(t *testing.T) {
	n := 0
	h := newHost(t, func(g *guest) {
		g.onConfig = append(g.onConfig, func(old, new ConfigView) error {
			if old.Len() != 0 {
				t.Errorf("old config has %d keys", old.Len())
			}
			n++
			return nil
		})
	})
	if st, _ := h.configure(abi.Config{"k": "v"}); st != abi.StatusOK || n != 1 {
		t.Errorf("status %v, fired %d", st, n)
	}
}

func TestConfigCallbackPanics(t *testing.T) {
	h := newHost(t, func(g *guest) {
		g.onConfig = append(g.onConfig, func(old, new ConfigView) error { panic("cfg") })
	})
	if st, msg := h.configure(abi.Config{"k": "v"}); st != abi.StatusError || msg != "panic: cfg" || len(h.r.aborts) != 1 {
		t.Errorf("%v %q aborts %v", st, msg, h.r.aborts)
	}
	if h.field(abi.CtrlConfigPtr) != 0 {
		t.Errorf("config applied despite panic")
	}
}

func TestConfigView(t *testing.T) {
	v := NewConfigView(map[string]string{"b": "2", "a": "1"})
	if got := v.Keys(); fmt.Sprint(got) != "[a b]" {
		t.Errorf("Keys = %v", got)
	}
	v.Keys()[0] = "z"
	if val, ok := v.Get("a"); !ok || val != "1" {
		t.Errorf("Get(a) = %q %v", val, ok)
	}
	var zero ConfigView
	if _, ok := zero.Get("a"); ok || zero.Len() != 0 || len(zero.Keys()) != 0 {
		t.Errorf("zero view not empty")
	}
}

// events reads the ring as a host does and returns the valid events, oldest first.
func (h *host) events() (evs []string, written, dropped uint64) {
	hdr := h.field(abi.CtrlEventsPtr)
	slots, n := h.u32(hdr+abi.RingSlotsPtr), uint64(h.u32(hdr+abi.RingSlotCount))
	written, dropped = h.u64(hdr+abi.RingWritten), h.u64(hdr+abi.RingDropped)
	first := uint64(0)
	if written > n {
		first = written - n
	}
	for s := first; s < written; s++ {
		slot := slots + uint32(s%n)*abi.SlotSize
		if h.u64(slot+abi.SlotSeq) != s {
			h.t.Fatalf("slot for seq %d holds seq %d", s, h.u64(slot+abi.SlotSeq))
		}
		topic := h.mem(h.u32(slot+abi.SlotTopicPtr), h.u32(slot+abi.SlotTopicLen))
		data := h.mem(h.u32(slot+abi.SlotDataPtr), h.u32(slot+abi.SlotDataLen))
		evs = append(evs, fmt.Sprintf("%d:%s=%s", s, topic, data))
	}
	return evs, written, dropped
}

func TestEventRing(t *testing.T) {
	h := newHost(t, func(g *guest) { g.events.setCapacity(3) })
	for i := range 5 {
		h.g.emit(fmt.Sprintf("t%d", i), []byte(fmt.Sprintf("d%d", i)))
	}
	h.g.emit("", nil)
	h.g.emit("only-topic", nil)
	h.g.emit("big", make([]byte, MaxEventSize))
	evs, written, dropped := h.events()
	if want := "[4:t4=d4 5:= 6:only-topic=]"; fmt.Sprint(evs) != want || written != 7 || dropped != 1 {
		t.Errorf("events %v written %d dropped %d; want %s 7 1", evs, written, dropped, want)
	}
	h.g.emit("exact", make([]byte, MaxEventSize-len("exact")))
	if _, written, _ := h.events(); written != 8 {
		t.Errorf("a %d-byte event was refused", MaxEventSize)
	}
	mustPanic(t, "after the event ring was set up", func() { h.g.events.setCapacity(5) })
	h.g.events.setMaxSize(4)
	h.g.emit("abc", []byte("d"))
	h.g.emit("abc", []byte("de"))
	if evs, written, dropped := h.events(); written != 9 || dropped != 2 || evs[2] != "8:abc=d" {
		t.Errorf("after SetMaxEventSize(4): %v written %d dropped %d", evs, written, dropped)
	}
	mustPanic(t, "want 0 to", func() { h.g.events.setMaxSize(MaxEventSize + 1) })
}

// Once the ring has gone round, an event takes the buffer of the one it evicts when that is
// large enough: no allocation, and the host reads the new bytes, not the old.
func TestEmitReusesEvictedBuffer(t *testing.T) {
	h := newHost(t, func(g *guest) { g.events.setCapacity(2) })
	h.g.emit("long-topic", []byte("long data"))
	h.g.emit("t", []byte("x"))
	data := []byte("short")
	if n := testing.AllocsPerRun(10, func() { h.g.emit("t", data) }); n != 0 {
		t.Errorf("%v allocations per event into a ring that has gone round", n)
	}
	h.g.emit("a", []byte("1"))
	h.g.emit("bb", []byte("22"))
	h.g.emit("a-topic-longer-than-any-before", []byte("and its data")) // a new buffer
	evs, written, _ := h.events()
	if want := "[14:bb=22 15:a-topic-longer-than-any-before=and its data]"; fmt.Sprint(evs) != want || written != 16 {
		t.Errorf("events %v written %d, want %s 16", evs, written, want)
	}
}

// A ring that has not gone round yet, as in an instance started from a snapshot, records an
// event that fits its slot's first storage without allocating; a larger one gets its own.
func TestEmitIntoFreshSlotsAllocatesNothing(t *testing.T) {
	h := newHost(t, func(g *guest) { g.events.setCapacity(DefaultEventCapacity) })
	data := make([]byte, eventSlotBytes-len("t"))
	if n := testing.AllocsPerRun(10, func() { h.g.emit("t", data) }); n != 0 {
		t.Errorf("%v allocations per event into fresh slots", n)
	}
	if written := h.g.events.written; written >= DefaultEventCapacity {
		t.Fatalf("%d events written: the ring went round, the slots were not fresh", written)
	}
	h.g.emit("t", append(data, 'x')) // one byte more than a slot holds
	h.g.emit("u", []byte("after"))   // the next slot: its neighbour's large event did not spill into it
	evs, written, _ := h.events()
	if got, want := evs[len(evs)-1], fmt.Sprintf("%d:u=after", written-1); got != want {
		t.Errorf("last event %q, want %q", got, want)
	}
	if got := evs[len(evs)-2]; len(got) != len(fmt.Sprint(written-2))+1+len("t")+1+eventSlotBytes {
		t.Errorf("the large event read back as %d bytes", len(got))
	}
}

func TestEmitBeforeInit(t *testing.T) {
	h := newHost(t, func(g *guest) { g.emit("early", []byte("x")) })
	if evs, _, _ := h.events(); fmt.Sprint(evs) != "[0:early=x]" {
		t.Errorf("events %v", evs)
	}
}

func TestNoEventRing(t *testing.T) {
	h := newHost(t, func(g *guest) { g.events.setCapacity(0) })
	h.g.emit("t", nil)
	if p := h.field(abi.CtrlEventsPtr); p != 0 {
		t.Errorf("events_ptr = %#x, want 0", p)
	}
	mustPanic(t, "want 0", func() { newGuest(&recorder{}).events.setCapacity(abi.MaxSlots + 1) })
}

func TestDeliver(t *testing.T) {
	var got []string
	h := newHost(t, func(g *guest) {
		g.onEvent = append(g.onEvent, func(topic string, data []byte) error {
			got = append(got, topic+"="+string(data))
			if topic == "bad" {
				return InvalidInput(errors.New("bad payload"))
			}
			return nil
		})
	})
	if st := h.g.deliver(h.put(abi.AppendDelivery(nil, "orders", []byte("o1")))); st != abi.StatusOK {
		t.Errorf("deliver: %v %q", st, h.out())
	}
	if st := h.g.deliver(h.put(abi.AppendDelivery(nil, "bad", nil))); st != abi.StatusInvalidInput || h.out() != "bad payload" {
		t.Errorf("deliver bad: %v %q", st, h.out())
	}
	if st := h.g.deliver(h.put([]byte{9, 0, 0, 0, 'x'})); st != abi.StatusInvalidInput || h.out() != "bad delivery" {
		t.Errorf("malformed: %v %q", st, h.out())
	}
	if fmt.Sprint(got) != "[orders=o1 bad=]" {
		t.Errorf("got %v", got)
	}
	h2 := newHost(t, nil)
	if st := h2.g.deliver(h2.put(abi.AppendDelivery(nil, "t", nil))); st != abi.StatusError {
		t.Errorf("deliver without callback: %v", st)
	}
}

type hostMetric struct {
	name    string
	kind    abi.MetricKind
	value   uint64
	sum     float64
	bounds  []float64
	buckets []uint64
}

func (h *host) metrics() []hostMetric {
	p, n := h.field(abi.CtrlMetricsPtr), h.field(abi.CtrlMetricsCount)
	if p%8 != 0 {
		h.t.Fatalf("metrics_ptr %#x not 8-aligned", p)
	}
	var ms []hostMetric
	for i := range n {
		r := p + i*abi.MetricSize
		m := hostMetric{
			name:  string(h.mem(h.u32(r+abi.MetricNamePtr), h.u32(r+abi.MetricNameLen))),
			kind:  abi.MetricKind(h.u32(r + abi.MetricKindOff)),
			value: h.u64(r + abi.MetricValue),
			sum:   math.Float64frombits(h.u64(r + abi.MetricSum)),
		}
		if h.u64(r+40) != 0 {
			h.t.Errorf("metric %s: reserved field set", m.name)
		}
		nb := h.u32(r + abi.MetricBucketCount)
		for j := range nb {
			m.bounds = append(m.bounds, math.Float64frombits(h.u64(h.u32(r+abi.MetricBoundsPtr)+8*j)))
		}
		if m.kind == abi.Histogram {
			for j := range nb + 1 {
				m.buckets = append(m.buckets, h.u64(h.u32(r+abi.MetricBucketsPtr)+8*j))
			}
		}
		ms = append(ms, m)
	}
	return ms
}

func TestMetrics(t *testing.T) {
	var (
		c   *Counter
		gau *Gauge
		his *Histogram
	)
	h := newHost(t, func(g *guest) {
		c = &Counter{m: g.declare("requests_total", abi.Counter, nil)}
		gau = &Gauge{m: g.declare("level", abi.Gauge, nil)}
		his = &Histogram{m: g.declare("size", abi.Histogram, []float64{1, 10, 100, 1000})}
	})
	c.Inc()
	c.Add(41)
	gau.Set(-3)
	gau.Add(0.5)
	for _, v := range []float64{0, 1, 2, 10, 11, 1000, 1001, 5e9} {
		his.Observe(v)
	}
	// Declared after init: the records move; values stay and the control block follows.
	var late []*Counter
	for i := range 20 {
		late = append(late, &Counter{m: h.g.declare(fmt.Sprintf("late_%d", i), abi.Counter, nil)})
	}
	late[19].Add(7)
	c.Inc()
	ms := h.metrics()
	if len(ms) != 23 {
		t.Fatalf("metrics_count = %d, want 23", len(ms))
	}
	want := []hostMetric{
		{name: "requests_total", kind: abi.Counter, value: 43},
		{name: "level", kind: abi.Gauge, value: math.Float64bits(-2.5)},
		{name: "size", kind: abi.Histogram, value: 8, sum: 0 + 1 + 2 + 10 + 11 + 1000 + 1001 + 5e9,
			bounds: []float64{1, 10, 100, 1000}, buckets: []uint64{2, 2, 1, 1, 2}},
	}
	for i, w := range want {
		if fmt.Sprint(ms[i]) != fmt.Sprint(w) {
			t.Errorf("metric %d = %+v, want %+v", i, ms[i], w)
		}
	}
	if ms[22].name != "late_19" || ms[22].value != 7 {
		t.Errorf("last metric = %+v", ms[22])
	}
}

func TestMetricRejects(t *testing.T) {
	g := newGuest(&recorder{})
	g.declare("x", abi.Counter, nil)
	for _, tc := range []struct {
		name   string
		bounds []float64
		want   string
	}{
		{"x", nil, "duplicate"},
		{"9x", nil, "must match"},
		{"a-b", nil, "must match"},
		{"", nil, "must match"},
		{"h1", []float64{1, 1}, "strictly ascending"},
		{"h2", []float64{2, 1}, "strictly ascending"},
		{"h3", []float64{math.NaN()}, "not finite"},
		{"h4", []float64{math.Inf(1)}, "not finite"},
		{"h5", make([]float64, 65), "at most 64"},
	} {
		mustPanic(t, tc.want, func() { g.declare(tc.name, abi.Histogram, tc.bounds) })
	}
}

func TestPublicAPI(t *testing.T) {
	saved := std
	t.Cleanup(func() { std = saved })
	r := &recorder{}
	std = newGuest(r)

	Log(LevelWarn, "careful")
	Logf(LevelInfo, "n=%d", 3)
	if fmt.Sprint(r.logs) != "[2:careful 1:n=3]" {
		t.Errorf("logs %v", r.logs)
	}
	if err := Publish("t", []byte("d")); err != nil {
		t.Errorf("Publish: %v", err)
	}
	r.publishR = abi.PublishDropped
	if err := Publish("t", nil); !errors.Is(err, ErrDropped) {
		t.Errorf("Publish dropped: %v", err)
	}
	r.publishR = 7
	if err := Publish("t", nil); err == nil || errors.Is(err, ErrDropped) {
		t.Errorf("Publish odd result: %v", err)
	}
	Handle("h", echo)
	NewCounter("c").Inc()
	NewGauge("g").Set(1)
	NewHistogram("hist", []float64{1}).Observe(1)
	SetEventCapacity(2)
	SetMaxEventSize(100)
	Emit("t", nil)
	OnConfigChange(func(old, new ConfigView) error { return nil })
	OnEvent(func(string, []byte) error { return nil })
	std.init()
	if Config().Len() != 0 || len(std.handlers) != 1 || len(std.metrics.list) != 3 || std.events.written != 1 {
		t.Errorf("public API did not reach std")
	}
	if InvalidInput(nil) != nil {
		t.Errorf("InvalidInput(nil) != nil")
	}
}

func TestHostCall(t *testing.T) {
	r := &recorder{}
	g := newGuest(r)
	calls := 0
	r.fns = []modelHostFunc{
		{name: "kv.get", fn: func(in []byte) ([]byte, error) { calls++; return append([]byte("v:"), in...), nil }},
		{name: "fails", fn: func([]byte) ([]byte, error) { return nil, errors.New("no such key") }},
	}
	if out, err := g.hostCall("kv.get", []byte("a")); err != nil || string(out) != "v:a" {
		t.Fatalf("kv.get = %q, %v", out, err)
	}
	r.fns[0].name = "renamed" // handles are cached: the second call does not look the name up
	if out, err := g.hostCall("kv.get", []byte("b")); err != nil || string(out) != "v:b" || calls != 2 {
		t.Fatalf("cached kv.get = %q, %v (%d calls)", out, err, calls)
	}
	if _, err := g.hostCall("nope", nil); !errors.Is(err, ErrHostFuncDenied) {
		t.Fatalf("denied: %v", err)
	}
	var hf *HostFuncError
	if _, err := g.hostCall("fails", nil); !errors.As(err, &hf) || hf.Status != abi.StatusError || hf.Message != "no such key" {
		t.Fatalf("fails: %v", err)
	}
	if out, err := g.hostCall("kv.get", nil); err != nil || string(out) != "v:" {
		t.Fatalf("empty input: %q, %v", out, err)
	}
}

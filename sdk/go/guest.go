package sdk

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unsafe"

	"github.com/wasmvisor/wasmvisor/abi"
)

// platform is what the guest needs from the world outside Go: guest addresses for Go memory
// and the wasmvisor imports. On wasip1 it is the real thing (platform_wasip1.go); natively it
// is a model that tests inspect (platform_other.go).
type platform interface {
	// addr returns the guest address of b's first byte, or 0 when cap(b) is 0.
	addr(b []byte) uint32
	log(level Level, msg string)
	publish(topic string, data []byte) uint32
	// abort traps the instance on a real host; it returns only on a model.
	abort(msg string)
	// The host-function imports: host_fn, host_call, host_result.
	hostFn(name string) int32
	hostCall(h int32, in []byte) uint64
	hostResult(dst []byte) int32
}

// initialInCap is the input buffer's capacity after wasmvisor_init, so that small inputs need
// no wasmvisor_reserve.
const initialInCap = 4 << 10

// maxInCap bounds wasmvisor_reserve; beyond it the guest answers STATUS_NO_MEMORY.
const maxInCap = 1 << 30

// guest is one instance's whole SDK state. Every address handed to the host points into memory
// referenced from here, and std is a package-level variable, so none of it is collected (the
// Go collector does not move objects, so the addresses stay put).
type guest struct {
	p platform

	ctrlWords [abi.CtrlSize / 8]uint64 // 8-aligned backing of ctrl
	ctrl      []byte
	initDone  bool

	handlers []handlerEntry
	names    []byte           // handler list, '\n'-separated
	in       []byte           // input buffer
	out      []byte           // output (or error message) of the last call
	hostFns  map[string]int32 // host function handles by name, HostFnDenied included

	config   configStore
	onConfig []func(old, new ConfigView) error
	onEvent  []func(topic string, data []byte) error

	events  ring
	metrics metricSet
}

type handlerEntry struct {
	name string
	fn   func(input []byte) ([]byte, error)
}

func newGuest(p platform) *guest {
	g := &guest{p: p}
	g.ctrl = unsafe.Slice((*byte)(unsafe.Pointer(&g.ctrlWords[0])), abi.CtrlSize)
	g.events.capacity = DefaultEventCapacity
	g.events.maxSize = MaxEventSize
	return g
}

// alignedBytes returns n zeroed bytes whose first byte is 8-aligned.
func alignedBytes(n int) []byte {
	if n == 0 {
		return nil
	}
	w := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n)
}

func putU32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func putU64(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
func getU64(b []byte, off int) uint64    { return binary.LittleEndian.Uint64(b[off:]) }

func (g *guest) handle(name string, fn func(input []byte) ([]byte, error)) {
	switch {
	case g.initDone:
		panic(fmt.Sprintf("sdk: Handle(%q) after wasmvisor_init: the handler list is fixed; register handlers in init()", name))
	case fn == nil:
		panic(fmt.Sprintf("sdk: Handle(%q): nil handler", name))
	case !abi.ValidHandlerName(name):
		panic(fmt.Sprintf("sdk: Handle(%q): a handler name must match [A-Za-z0-9_.-]{1,64}", name))
	case len(g.handlers) >= abi.MaxHandlers:
		panic(fmt.Sprintf("sdk: Handle(%q): more than %d handlers", name, abi.MaxHandlers))
	}
	for _, h := range g.handlers {
		if h.name == name {
			panic(fmt.Sprintf("sdk: Handle(%q): duplicate handler name", name))
		}
	}
	g.handlers = append(g.handlers, handlerEntry{name: name, fn: fn})
}

// init is wasmvisor_init: it fixes the handler list, sets up the stores and returns the control
// block's address. A second call returns the same address and changes nothing.
func (g *guest) init() uint32 {
	if !g.initDone {
		g.initDone = true
		names := make([]string, len(g.handlers))
		for i, h := range g.handlers {
			names[i] = h.name
		}
		g.names = []byte(strings.Join(names, "\n"))
		if g.in == nil {
			g.in = make([]byte, initialInCap)
		}
		g.events.setup(g.p)
		putU32(g.ctrl, abi.CtrlMagic, abi.Magic)
		putU32(g.ctrl, abi.CtrlVersion, abi.Version)
		g.sync()
	}
	return g.p.addr(g.ctrl)
}

// sync writes every pointer/length field of the control block from the current state. It is
// a no-op before wasmvisor_init (the host does not read the block before then).
func (g *guest) sync() {
	if !g.initDone {
		return
	}
	c := g.ctrl
	putU32(c, abi.CtrlInPtr, g.p.addr(g.in))
	putU32(c, abi.CtrlInCap, uint32(len(g.in)))
	putU32(c, abi.CtrlOutPtr, g.p.addr(g.out))
	putU32(c, abi.CtrlOutLen, uint32(len(g.out)))
	putU32(c, abi.CtrlHandlersPtr, g.p.addr(g.names))
	putU32(c, abi.CtrlHandlersLen, uint32(len(g.names)))
	putU32(c, abi.CtrlConfigPtr, g.p.addr(g.config.raw))
	putU32(c, abi.CtrlConfigLen, uint32(len(g.config.raw)))
	putU32(c, abi.CtrlMetricsPtr, g.p.addr(g.metrics.recs))
	putU32(c, abi.CtrlMetricsCount, uint32(len(g.metrics.list)))
	putU32(c, abi.CtrlEventsPtr, g.p.addr(g.events.hdr))
}

// setOut makes b the output of the current export and returns st.
func (g *guest) setOut(st abi.Status, b []byte) abi.Status {
	g.out = b
	putU32(g.ctrl, abi.CtrlOutPtr, g.p.addr(b))
	putU32(g.ctrl, abi.CtrlOutLen, uint32(len(b)))
	return st
}

func (g *guest) fail(st abi.Status, msg string) abi.Status { return g.setOut(st, []byte(msg)) }

// recoverPanic is deferred by every export that runs user code: a panic becomes a call to the
// abort import with "panic: <value>", which never returns on a real host.
func (g *guest) recoverPanic(st *abi.Status) {
	if r := recover(); r != nil {
		msg := "panic: " + fmt.Sprint(r)
		*st = g.fail(abi.StatusError, msg)
		g.p.abort(msg)
	}
}

// input returns the n input bytes. An n beyond in_cap means the host skipped
// wasmvisor_reserve: a broken host contract, so the guest aborts (as the reference plugin
// does); ok is false only when abort returned (a model platform).
func (g *guest) input(n uint32) (in []byte, ok bool) {
	if uint64(n) > uint64(len(g.in)) {
		g.p.abort(msgInputTooLarge)
		return nil, false
	}
	return g.in[:n:n], true
}

const msgInputTooLarge = "input larger than input buffer"

// reserve is wasmvisor_reserve.
func (g *guest) reserve(size uint32) abi.Status {
	if uint64(size) <= uint64(len(g.in)) {
		return g.setOut(abi.StatusOK, nil)
	}
	if size > maxInCap {
		return g.fail(abi.StatusNoMemory, fmt.Sprintf("input of %d bytes exceeds the SDK's limit of %d", size, maxInCap))
	}
	n := (int(size) + 4095) &^ 4095
	g.in = make([]byte, n)
	g.sync()
	return g.setOut(abi.StatusOK, nil)
}

// call is wasmvisor_call.
func (g *guest) call(h, n uint32) (st abi.Status) {
	in, ok := g.input(n)
	if !ok {
		return g.fail(abi.StatusError, msgInputTooLarge)
	}
	if uint64(h) >= uint64(len(g.handlers)) {
		return g.setOut(abi.StatusUnknownHandler, nil) // the host knows which number it sent
	}
	defer g.recoverPanic(&st)
	out, err := g.handlers[h].fn(in)
	if err != nil {
		st, msg := statusOf(err)
		return g.fail(st, msg)
	}
	return g.setOut(abi.StatusOK, out)
}

// deliver is wasmvisor_deliver.
func (g *guest) deliver(n uint32) (st abi.Status) {
	in, ok := g.input(n)
	if !ok {
		return g.fail(abi.StatusError, msgInputTooLarge)
	}
	topic, data, err := abi.DecodeDelivery(in)
	if err != nil {
		return g.fail(abi.StatusInvalidInput, "bad delivery")
	}
	if len(g.onEvent) == 0 {
		return g.fail(abi.StatusError, "no event callback registered")
	}
	defer g.recoverPanic(&st)
	t := string(topic)
	for _, fn := range g.onEvent {
		if err := fn(t, data); err != nil {
			st, msg := statusOf(err)
			return g.fail(st, msg)
		}
	}
	return g.setOut(abi.StatusOK, nil)
}

// hostCall resolves name once (host_fn), calls it (host_call) and copies its output into a
// buffer of the size the host announced (host_result).
func (g *guest) hostCall(name string, input []byte) ([]byte, error) {
	h, ok := g.hostFns[name]
	if !ok {
		h = g.p.hostFn(name)
		if g.hostFns == nil {
			g.hostFns = map[string]int32{}
		}
		g.hostFns[name] = h // grants are fixed for the instance's life: a denial is cached too
	}
	if h < 0 {
		return nil, ErrHostFuncDenied
	}
	r := g.p.hostCall(h, input)
	status, n := abi.Status(r>>32), uint32(r)
	out := make([]byte, n)
	if got := g.p.hostResult(out); got != int32(n) {
		return nil, fmt.Errorf("sdk: host function %s: host_result returned %d for %d bytes", name, got, n)
	}
	if status != abi.StatusOK {
		return nil, &HostFuncError{Name: name, Status: status, Message: string(out)}
	}
	return out, nil
}

package sdk

import (
	"sort"
	"unsafe"

	"github.com/wasmvisor/wasmvisor/abi"
)

// modelPlatform is a stand-in for the host: the platform of native builds, and the base of
// the tests' recorder. It builds on every GOOS so that the tests vet for wasip1 too.
type modelPlatform struct {
	mem     modelMemory
	fns     []modelHostFunc // see SetHostFunc (native builds)
	pending []byte
}

type modelHostFunc struct {
	name string
	fn   func([]byte) ([]byte, error)
}

func (p *modelPlatform) hostFn(name string) int32 {
	for i, f := range p.fns {
		if f.name == name {
			return int32(i)
		}
	}
	return abi.HostFnDenied
}

func (p *modelPlatform) hostCall(h int32, in []byte) uint64 {
	if h < 0 || int(h) >= len(p.fns) {
		p.pending = []byte("no such handle")
		return uint64(abi.StatusUnknownHandler)<<32 | uint64(len(p.pending))
	}
	out, err := p.fns[h].fn(append([]byte(nil), in...))
	if err != nil {
		p.pending = []byte(err.Error())
		return uint64(abi.StatusError)<<32 | uint64(len(p.pending))
	}
	p.pending = out
	return uint64(len(out))
}

func (p *modelPlatform) hostResult(dst []byte) int32 {
	if len(dst) < len(p.pending) {
		return abi.HostResultTooSmall
	}
	n := copy(dst, p.pending)
	p.pending = nil
	return int32(n)
}

func (p *modelPlatform) addr(b []byte) uint32          { return p.mem.addr(b) }
func (p *modelPlatform) log(Level, string)             {}
func (p *modelPlatform) publish(string, []byte) uint32 { return 0 }
func (p *modelPlatform) abort(string)                  {}

// modelMemory gives Go allocations 32-bit "guest addresses" in a fake linear memory: each
// allocation the SDK hands out (identified by its backing array) gets its own address range,
// and read resolves an address range back to the live Go bytes, as a host would see them.
type modelMemory struct {
	regions []region // ascending by base
	next    uint32
}

type region struct {
	base uint32
	mem  []byte // the whole backing array, len == cap
}

func (m *modelMemory) addr(b []byte) uint32 {
	if cap(b) == 0 {
		return 0
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for _, r := range m.regions {
		start := uintptr(unsafe.Pointer(unsafe.SliceData(r.mem)))
		if p >= start && p < start+uintptr(len(r.mem)) {
			return r.base + uint32(p-start)
		}
	}
	if m.next == 0 {
		m.next = 0x10000
	}
	r := region{base: m.next, mem: b[:cap(b)]}
	m.regions = append(m.regions, r)
	m.next = (m.next + uint32(cap(b)) + 64 + 7) &^ 7
	return r.base
}

// read returns the n bytes at guest address a, or nil when they are not inside one region.
func (m *modelMemory) read(a, n uint32) []byte {
	i := sort.Search(len(m.regions), func(i int) bool { return m.regions[i].base > a }) - 1
	if i < 0 {
		return nil
	}
	r := m.regions[i]
	off := uint64(a - r.base)
	if off+uint64(n) > uint64(len(r.mem)) {
		return nil
	}
	return r.mem[off : off+uint64(n)]
}

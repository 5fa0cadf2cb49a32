package wasmbin

import (
	"fmt"
	"math"
)

// reader walks bytes, remembering the first error; every method is safe after an error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format+" at offset %d", append([]any{ErrMalformed}, append(args, r.off)...)...)
	}
}

func (r *reader) done() bool { return r.err != nil || r.off >= len(r.b) }

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n uint32) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail("length %d past the end", n)
		return nil
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

func (r *reader) skip(n int) {
	if r.err != nil {
		return
	}
	if n > len(r.b)-r.off {
		r.fail("immediate past the end")
		return
	}
	r.off += n
}

// uleb reads an unsigned LEB128 of at most bits bits.
func (r *reader) uleb(bits uint) uint64 {
	var v uint64
	var shift uint
	for {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift >= bits || (bits-shift < 7 && uint64(c&0x7f)>>(bits-shift) != 0) {
			r.fail("integer too large")
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
		shift += 7
	}
}

// sleb skips a signed LEB128 of at most bits bits.
func (r *reader) sleb(bits uint) {
	var shift uint
	for {
		c := r.byte()
		if r.err != nil {
			return
		}
		shift += 7
		if c&0x80 == 0 {
			return
		}
		if shift >= bits+7 {
			r.fail("integer too long")
			return
		}
	}
}

func (r *reader) u32() uint32 { return uint32(r.uleb(32)) }

// count reads a vector length and bounds it by the bytes left, so that a hostile count
// cannot make a caller loop or allocate without end.
func (r *reader) count() uint32 {
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)-r.off) {
		r.fail("count %d larger than the bytes left", n)
		return 0
	}
	return n
}

func (r *reader) name() string { return string(r.bytes(r.count())) }

func (r *reader) limits() Limits {
	flags := r.byte()
	if r.err != nil {
		return Limits{}
	}
	if flags&^0x03 != 0 {
		r.fail("unsupported limits flags 0x%02x", flags)
		return Limits{}
	}
	l := Limits{Min: r.uleb(32), Shared: flags&0x02 != 0}
	if flags&0x01 != 0 {
		l.Max, l.HasMax = r.uleb(32), true
	}
	return l
}

// Prefixes of the typed references of the function references proposal: (ref null ht) and
// (ref ht), where ht, the heap type, is an s33 that follows.
const (
	typedRefNull = 0x63
	typedRef     = 0x64
)

// valType reads a value type, and refuses a typed reference. wazero accepts (ref null ht) and
// (ref ht) in locals, block types, select, globals, tables and element segments even without
// the typed function references feature, and their heap type can be a type index: read as
// one byte, it would shift every instruction after it (an instruction hidden in it would get
// no fuel check), and it could name a type that Instrument adds. No toolchain emits them for
// the features the sandbox enables.
func (r *reader) valType() byte {
	t := r.byte()
	if r.err == nil && (t == typedRefNull || t == typedRef) {
		r.off--
		r.fail("typed reference type 0x%02x not supported", t)
	}
	return t
}

// valTypes reads a vector of value types, refusing typed references (see valType).
func (r *reader) valTypes() []byte {
	n := r.count()
	start := r.off
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.valType()
	}
	if r.err != nil {
		return nil
	}
	return r.b[start:r.off]
}

// skipConstExpr skips a constant expression up to and including its end opcode.
func (r *reader) skipConstExpr() {
	for depth := 0; r.err == nil; depth++ {
		if depth > math.MaxInt16 {
			r.fail("constant expression too long")
			return
		}
		op := r.byte()
		if op == 0x0b {
			return
		}
		r.skipImmediates(op)
	}
}

// skipElementSegment skips one element segment, in any of its eight encodings.
func (r *reader) skipElementSegment() { r.elementSegment(r.skipConstExpr, nil) }

// elementSegment walks one element segment, in any of its eight encodings, calling expr at
// each of its constant expressions, which expr must read, and fn, unless nil, with each
// function index of a segment that lists them (and stopping at its first error).
func (r *reader) elementSegment(expr func(), fn func(idx uint32) error) {
	flags := r.u32()
	if r.err != nil {
		return
	}
	if flags > 7 {
		r.fail("unknown element segment flags %d", flags)
		return
	}
	if flags&0x02 != 0 && flags&0x01 == 0 { // explicit table index
		r.u32()
	}
	if flags&0x01 == 0 { // active: an offset expression
		expr()
	}
	if flags&0x03 != 0 { // an element kind or reference type
		r.valType()
	}
	n := r.count()
	for i := uint32(0); i < n && r.err == nil; i++ {
		if flags&0x04 != 0 {
			expr()
		} else if idx := r.u32(); fn != nil && r.err == nil {
			r.err = fn(idx)
		}
	}
}

// dataSegment walks one data segment, calling expr at its offset expression, if it has
// one, which expr must read.
func (r *reader) dataSegment(expr func()) {
	switch flags := r.u32(); flags {
	case 0:
		expr()
	case 1:
	case 2:
		r.u32()
		expr()
	default:
		r.fail("unknown data segment flags %d", flags)
	}
	r.bytes(r.u32())
}

// s33 reads a signed LEB128 of at most 33 bits (a block type) as wazero reads one: at most five
// bytes; of the last byte's three bits past the 33rd, only the first must repeat the sign.
func (r *reader) s33() int64 {
	var v int64
	var shift uint
	for {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 != 0 && shift < 35 {
			continue
		}
		if c&0x80 != 0 {
			r.fail("integer too long")
			return 0
		}
		if shift < 33 && c&0x40 != 0 {
			v |= -1 << shift
		}
		v &= 1<<33 - 1
		if v&(1<<32) != 0 {
			v -= 1 << 33
		}
		if shift == 35 && (v < 0) != (c&0x20 != 0) {
			r.fail("integer too large")
			return 0
		}
		return v
	}
}

// s32 reads a signed LEB128 of at most 32 bits.
func (r *reader) s32() int32 {
	var v int64
	var shift uint
	for {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			if v < -1<<31 || v > 1<<31-1 {
				r.fail("integer too large")
				return 0
			}
			return int32(v)
		}
		if shift >= 35 {
			r.fail("integer too long")
			return 0
		}
	}
}

// s64 reads a signed LEB128 of at most 64 bits.
func (r *reader) s64() int64 {
	var v int64
	var shift uint
	for {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 63 && c != 0x00 && c != 0x7f { // the last byte holds bit 63 and its sign
			r.fail("integer too large")
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

package wasmbin

import "fmt"

// instrumenter holds what Instrument learned of a module while it rewrites the bodies.
type instrumenter struct {
	m              *Module
	fold           globalFold
	sections       []section // m's, with the constant globals folded (globalFold.sections)
	fuel, intr     uint32    // indices of the added globals, after the module's (less the folded)
	oom            uint32
	growFn, slowFn uint32
	tables         []Table // the table index space: imports first

	// From analyse, per defined function: whether it checks fuel at its entry, and the
	// weight of its loop-free part (what a caller pays for a leaf without an entry check).
	checked []bool
	weight  []int64
	maxLeaf int64 // the largest unchecked leaf's weight: what an indirect call pays

	helper  map[helperKey]uint32 // added helper functions by what they replace
	helpers []helperKey          // in index order, after growFn and slowFn

	memChunk, tabChunk int32 // ChunkBytes and ChunkElements; smaller in tests

	// From analyse, for snapshots: the first instruction found that can change a table
	// ("" if none), and whether any code names a data segment (memory.init, data.drop).
	tableWrite string
	usesData   bool
	// From analyse: the globals that a global.set names.
	written []bool
}

// tableWriters names the instructions that can change a table: 0x26 is table.set, the rest
// are 0xfc sub-opcodes.
var tableWriters = map[uint32]string{opTableInit: "table.init", 13: "elem.drop", opTableCopy: "table.copy",
	opTableGrow: "table.grow", opTableFill: "table.fill"}

// helperKey names an added helper: the 0xfc sub-opcode it replaces and its immediates.
type helperKey struct {
	op   uint32
	a, b uint32
}

// Sub-opcodes of the 0xfc prefix that Instrument replaces, and data.drop.
const (
	opMemoryInit = 8
	opDataDrop   = 9
	opMemoryCopy = 10
	opMemoryFill = 11
	opTableInit  = 12
	opTableCopy  = 14
	opTableGrow  = 15
	opTableFill  = 17
)

// walk calls f for every instruction of a function body (after its locals), with the
// opcode, the 0xfc sub-opcode (or 0) and the instruction's bytes.
func walkBody(body []byte, f func(op byte, sub uint32, start int, r *reader) error) (locals int, err error) {
	r := reader{b: body}
	nDecl := r.count()
	for i := uint32(0); i < nDecl && r.err == nil; i++ {
		r.u32()
		r.valType()
	}
	if r.err != nil {
		return 0, r.err
	}
	locals = r.off
	for !r.done() {
		start := r.off
		op := r.byte()
		var sub uint32
		if op == 0xfc {
			sub = r.u32()
		}
		if err := f(op, sub, start, &r); err != nil {
			return 0, err
		}
	}
	if r.err != nil {
		return 0, r.err
	}
	if len(body) == 0 || body[len(body)-1] != 0x0b {
		return 0, fmt.Errorf("%w: function body does not end with end", ErrMalformed)
	}
	return locals, nil
}

// isCall reports whether op calls a guest or host function.
func isCall(op byte) bool { return op >= 0x10 && op <= 0x15 }

// isBulk reports whether the 0xfc sub-opcode sub is one Instrument replaces.
func isBulk(sub uint32) bool {
	switch sub {
	case opMemoryInit, opMemoryCopy, opMemoryFill, opTableInit, opTableCopy, opTableGrow, opTableFill:
		return true
	}
	return false
}

// analyse finds, for every defined function, whether it calls and what its loop-free part
// weighs: a function that makes no call and weighs at most LeafMax needs no check at its
// entry, its callers pay for it. It refuses a function or type index out of range in the
// code (bounds.instr).
func (in *instrumenter) analyse() error {
	n := len(in.m.bodies)
	in.checked = make([]bool, n)
	in.weight = make([]int64, n)
	in.written = make([]bool, in.m.NumGlobals)
	b := boundsOf(in.m)
	for i, body := range in.m.bodies {
		depth, loops := 0, []int{} // loops: the depths of the open loops
		var w int64
		calls := false
		_, err := walkBody(body, func(op byte, sub uint32, _ int, r *reader) error {
			switch {
			case op == 0x26 && in.tableWrite == "":
				in.tableWrite = "table.set"
			case op == 0xfc && tableWriters[sub] != "" && in.tableWrite == "":
				in.tableWrite = tableWriters[sub]
			case op == 0xfc && (sub == opMemoryInit || sub == opDataDrop):
				in.usesData = true
			}
			switch op {
			case 0xfc:
				if sub != opMemoryInit && sub != opDataDrop {
					r.skipMisc(sub)
				} else if err := in.m.checkDataRef(sub, r); err != nil {
					return err
				}
			case 0x40:
				r.u32()
			case 0x24: // global.set
				if idx := r.u32(); idx < uint32(len(in.written)) {
					in.written[idx] = true
				}
			default:
				if err := b.instr(op, r); err != nil {
					return err
				}
			}
			if len(loops) == 0 {
				switch {
				case op == 0x40 || op == 0xfc && isBulk(sub):
					w += helperWeight
				default:
					w++
				}
			}
			switch {
			case isCall(op):
				calls = true
			case op == 0x02 || op == 0x04 || op == 0x06 || op == 0x1f:
				depth++
			case op == 0x03:
				depth++
				loops = append(loops, depth)
			case op == 0x0b || op == 0x18:
				if len(loops) > 0 && loops[len(loops)-1] == depth {
					loops = loops[:len(loops)-1]
				}
				depth--
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("function %d: %w", in.m.NumImportedFuncs+uint32(i), err)
		}
		in.weight[i] = min(w, maxWeight)
		in.checked[i] = calls || w > LeafMax
		if !in.checked[i] {
			in.maxLeaf = max(in.maxLeaf, w)
		}
	}
	return nil
}

// callWeight is what a region pays for the call instruction op with the callee idx.
func (in *instrumenter) callWeight(op byte, idx uint32) int64 {
	switch op {
	case 0x10, 0x12: // call, return_call
		if idx < in.m.NumImportedFuncs {
			return 1 // a host function: bounded by its own checks
		}
		if d := idx - in.m.NumImportedFuncs; d < uint32(len(in.checked)) && !in.checked[d] {
			return 1 + in.weight[d]
		}
		return 1
	}
	return indirectCost + in.maxLeaf
}

// A region is the code a fuel check pays for: a loop's body less its inner loops, or a
// function's body less its loops.
type region struct {
	depth int   // the block depth of its loop (0 for the function)
	fix   int   // where its check's charge is written in the output, or -1
	w     int64 // its weight so far
}

// rewriteBody inserts the fuel checks of function d (a defined function's index) and
// replaces memory.grow and the bulk instructions with calls to the added functions.
func (in *instrumenter) rewriteBody(d uint32, body []byte) ([]byte, error) {
	out := make([]byte, 0, len(body)+len(body)/8+32)
	regions := []region{{fix: -1}}
	depth := 0
	first := true
	_, err := walkBody(body, func(op byte, sub uint32, start int, r *reader) error {
		if len(regions) == 0 {
			return fmt.Errorf("%w: code after the function's end", ErrMalformed)
		}
		if first {
			first = false
			out = append(out, body[:start]...)
			if in.checked[d] {
				out, regions[0].fix = in.appendCheck(out)
			}
		}
		cur := &regions[len(regions)-1]
		switch {
		case op == 0x40: // memory.grow
			if mem := r.u32(); r.err == nil && mem != 0 {
				return fmt.Errorf("%w: memory.grow on memory %d", ErrMalformed, mem)
			}
			out = appendU32(append(out, 0x10), in.growFn)
			cur.w += helperWeight
			return nil
		case op == 0xfc && isBulk(sub):
			k, err := readBulk(sub, r)
			if err != nil {
				return err
			}
			out = appendU32(append(out, 0x10), in.helperIndex(k))
			cur.w += helperWeight
			return nil
		case op == 0x23 || op == 0x24: // global.get global.set
			idx := r.u32()
			if r.err != nil {
				return r.err
			}
			if idx >= in.m.NumGlobals {
				return globalRange(idx, in.m.NumGlobals)
			}
			out = in.fold.appendAccess(out, op, idx, body[start:r.off])
			cur.w++
			return nil
		case op == 0xfc:
			r.skipMisc(sub)
		default:
			r.skipImmediates(op)
		}
		if r.err != nil {
			return r.err
		}
		out = append(out, body[start:r.off]...)
		switch {
		case isCall(op):
			ir := reader{b: body[start+1 : r.off]}
			cur.w += in.callWeight(op, ir.u32())
		case op == 0x02 || op == 0x04 || op == 0x06 || op == 0x1f:
			cur.w++
			depth++
		case op == 0x03:
			cur.w++
			depth++
			var fix int
			out, fix = in.appendCheck(out)
			regions = append(regions, region{depth: depth, fix: fix})
		case op == 0x0b || op == 0x18:
			cur.w++
			if depth == 0 { // the function's end
				in.patch(out, regions[0])
				regions = regions[:0]
				return nil
			}
			if len(regions) > 1 && cur.depth == depth {
				in.patch(out, *cur)
				regions = regions[:len(regions)-1]
			}
			depth--
		default:
			cur.w++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(regions) != 0 {
		return nil, fmt.Errorf("%w: unbalanced blocks", ErrMalformed)
	}
	return out, nil
}

// readBulk reads the immediates of bulk instruction sub and names its helper.
func readBulk(sub uint32, r *reader) (helperKey, error) {
	k := helperKey{op: sub}
	switch sub {
	case opMemoryFill:
		if mem := r.u32(); mem != 0 {
			return k, fmt.Errorf("%w: memory.fill on memory %d", ErrMalformed, mem)
		}
	case opMemoryCopy:
		if a, b := r.u32(), r.u32(); a != 0 || b != 0 {
			return k, fmt.Errorf("%w: memory.copy between memories %d and %d", ErrMalformed, b, a)
		}
	case opMemoryInit:
		k.a = r.u32()
		if mem := r.u32(); mem != 0 {
			return k, fmt.Errorf("%w: memory.init on memory %d", ErrMalformed, mem)
		}
	case opTableInit, opTableCopy:
		k.a, k.b = r.u32(), r.u32()
	case opTableGrow, opTableFill:
		k.a = r.u32()
	}
	return k, r.err
}

// helperIndex returns the function index of the helper k, adding it on first use.
func (in *instrumenter) helperIndex(k helperKey) uint32 {
	if i, ok := in.helper[k]; ok {
		return i
	}
	i := in.slowFn + 1 + uint32(len(in.helpers))
	in.helper[k] = i
	in.helpers = append(in.helpers, k)
	return i
}

// appendCheck appends a fuel check whose charge is patched in later, and returns where.
//
//	fuel -= charge; if fuel <= 0 { slow() }
func (in *instrumenter) appendCheck(b []byte) ([]byte, int) {
	b = appendU32(append(b, 0x23), in.fuel) // global.get fuel
	b = append(b, 0x41)                     // i32.const, 5 bytes, patched
	fix := len(b)
	b = append(b, 0x81, 0x80, 0x80, 0x80, 0x00)
	return in.appendChargeTail(b), fix
}

// appendChargeTail finishes a charge whose amount was pushed after global.get fuel.
func (in *instrumenter) appendChargeTail(b []byte) []byte {
	b = appendU32(append(b, 0x6b, 0x24), in.fuel) // i32.sub global.set fuel
	b = appendU32(append(b, 0x23), in.fuel)       // global.get fuel
	b = append(b, 0x41, 0x00, 0x4c, 0x04, 0x40)   // i32.const 0 i32.le_s if
	b = appendU32(append(b, 0x10), in.slowFn)     // call slow
	return append(b, 0x0b)                        // end
}

// patch writes a region's weight into its check, as a 5-byte signed LEB128.
func (in *instrumenter) patch(out []byte, rg region) {
	if rg.fix < 0 {
		return
	}
	v := uint32(min(max(rg.w, 1), maxWeight))
	for i := range 4 {
		out[rg.fix+i] = byte(v>>(7*i))&0x7f | 0x80
	}
	out[rg.fix+4] = byte(v >> 28 & 0x07)
}

// growBody is the function that replaces memory.grow: (pages) -> old size or -1.
func (in *instrumenter) growBody() []byte {
	b := []byte{0x01, 0x01, 0x7f} // one i32 local
	// fuel -= pages >= 64 ? Fuel : pages*PageCost
	b = appendU32(append(b, 0x23), in.fuel)
	b = appendS32(append(b, 0x41), Fuel)
	b = append(b, 0x20, 0x00, 0x41, 0x0c, 0x74)             // local.get 0 i32.const 12 i32.shl
	b = append(b, 0x20, 0x00, 0x41, 0xc0, 0x00, 0x4f, 0x1b) // local.get 0 i32.const 64 i32.ge_u select
	b = in.appendChargeTail(b)
	b = append(b, 0x20, 0x00, 0x40, 0x00, 0x22, 0x01, // local.get 0 memory.grow local.tee 1
		0x41, 0x7f, 0x46, 0x04, 0x40, // i32.const -1 i32.eq if
		0x41, 0x01, 0x24) // i32.const 1 global.set
	b = appendU32(b, in.oom)
	return append(b, 0x0b, 0x20, 0x01, 0x0b) // end local.get 1 end
}

// slowBody is the safe point: refill, pass through Go, trap if interrupted.
func (in *instrumenter) slowBody() []byte {
	b := []byte{0x00, 0x41} // no locals; i32.const Fuel
	b = appendS32(b, Fuel)
	b = appendU32(append(b, 0x24), in.fuel)
	b = append(b, 0x41, 0x00, 0x40, 0x00, 0x1a, 0x23) // i32.const 0 memory.grow drop global.get
	b = appendU32(b, in.intr)
	return append(b, 0x04, 0x40, 0x00, 0x0b, 0x0b) // if unreachable end end
}

// helperType is the signature of helper k: the operands of the instruction it replaces.
func (in *instrumenter) helperType(k helperKey) (params, results []byte) {
	switch k.op {
	case opTableFill:
		return []byte{0x7f, in.refType(k.a), 0x7f}, nil
	case opTableGrow:
		return []byte{in.refType(k.a), 0x7f}, []byte{0x7f}
	}
	return []byte{0x7f, 0x7f, 0x7f}, nil
}

func (in *instrumenter) refType(table uint32) byte {
	if table < uint32(len(in.tables)) {
		return in.tables[table].RefType
	}
	return 0x70 // an invalid module: wazero refuses it
}

// tableLimit is the largest size wazero lets table t grow to.
func (in *instrumenter) tableLimit(t uint32) uint64 {
	limit := uint64(1<<32 - 2)
	if t < uint32(len(in.tables)) {
		tb := in.tables[t]
		if int(t) >= len(in.tables)-len(in.m.Tables) { // defined: clamped
			limit = min(limit, MaxTableElements)
		}
		if tb.HasMax {
			limit = min(limit, tb.Max)
		}
	}
	return limit
}

// Locals of the helpers: their three operands.
const (
	lD = 0 // destination (or offset, or the value for table.grow)
	lS = 1 // source (or value; n for table.grow)
	lN = 2 // length
)

// helperBody is the function that replaces bulk instruction k. Lengths up to one chunk
// run the original instruction after charging for it; longer ones are checked against
// the bounds first (out of bounds, the original instruction runs and traps), then done in
// chunks, each charged before it runs, from the end when a copy's destination is above its
// source.
func (in *instrumenter) helperBody(k helperKey) []byte {
	if k.op == opTableGrow {
		return in.tableGrowBody(k.a)
	}
	var (
		opBytes           []byte // the instruction, immediates included
		chunk             int32
		shift             byte
		dstSize           []byte // pushes the destination's size as an i64
		srcSize           []byte // the same for the source; nil: a fill, lS is the value
		probe             []byte // for init: traps iff the segment is shorter than s+n
		directional       bool
		advanceSrc        = true
		memSize           = []byte{0x3f, 0x00, 0xad, 0x42, 0x10, 0x86} // memory.size i64.extend_i32_u i64.const 16 i64.shl
		tableSize         = func(t uint32) []byte { return append(appendU32([]byte{0xfc, 16}, t), 0xad) }
		segLimit          = []byte{0x42, 0xff, 0xff, 0xff, 0xff, 0x0f} // i64.const 0xffffffff
		memChunk, tChunk  = in.memChunk, in.tabChunk
		memShiftB, tShift = byte(memShift), byte(tableShift)
	)
	switch k.op {
	case opMemoryFill:
		opBytes, chunk, shift, dstSize, advanceSrc = []byte{0xfc, opMemoryFill, 0x00}, memChunk, memShiftB, memSize, false
	case opMemoryCopy:
		opBytes, chunk, shift, dstSize, srcSize, directional = []byte{0xfc, opMemoryCopy, 0x00, 0x00}, memChunk, memShiftB, memSize, memSize, true
	case opMemoryInit:
		opBytes = append(appendU32([]byte{0xfc, opMemoryInit}, k.a), 0x00)
		chunk, shift, dstSize, srcSize = memChunk, memShiftB, memSize, segLimit
		// memory.init seg 0 (s+n) 0
		probe = append([]byte{0x41, 0x00, 0x20, lS, 0x20, lN, 0x6a, 0x41, 0x00}, opBytes...)
	case opTableFill:
		opBytes = appendU32([]byte{0xfc, opTableFill}, k.a)
		chunk, shift, dstSize, advanceSrc = tChunk, tShift, tableSize(k.a), false
	case opTableCopy:
		opBytes = appendU32(appendU32([]byte{0xfc, opTableCopy}, k.a), k.b)
		chunk, shift, dstSize, srcSize, directional = tChunk, tShift, tableSize(k.a), tableSize(k.b), true
	case opTableInit:
		opBytes = appendU32(appendU32([]byte{0xfc, opTableInit}, k.a), k.b)
		chunk, shift, dstSize, srcSize = tChunk, tShift, tableSize(k.b), segLimit
		probe = append([]byte{0x41, 0x00, 0x20, lS, 0x20, lN, 0x6a, 0x41, 0x00}, opBytes...)
	}
	orig := append([]byte{0x20, lD, 0x20, lS, 0x20, lN}, opBytes...)
	charge := func(b []byte, amount []byte) []byte {
		b = appendU32(append(b, 0x23), in.fuel)
		return in.appendChargeTail(append(b, amount...))
	}
	chargeN := []byte{0x20, lN, 0x41, shift, 0x76}        // n >> shift
	chargeChunk := appendS32([]byte{0x41}, chunk>>shift)  // i32.const chunk>>shift
	nGtChunk := appendS32([]byte{0x20, lN, 0x41}, chunk)  // local.get n i32.const chunk
	oob := func(b []byte, off byte, size []byte) []byte { // pushes (u64)off+n > size
		b = append(b, 0x20, off, 0xad, 0x20, lN, 0xad, 0x7c)
		return append(append(b, size...), 0x56)
	}

	b := []byte{0x00} // no locals
	// if n <= chunk { charge(n >> shift); op; return }
	b = append(append(b, nGtChunk...), 0x4d, 0x04, 0x40)
	b = charge(b, chargeN)
	b = append(append(b, orig...), 0x0f, 0x0b)
	// if dst out of bounds || src out of bounds { op (traps); return }
	b = oob(b, lD, dstSize)
	if srcSize != nil {
		b = oob(b, lS, srcSize)
		b = append(b, 0x72) // i32.or
	}
	b = append(b, 0x04, 0x40)
	b = append(append(b, orig...), 0x0f, 0x0b)
	b = append(b, probe...)
	forward := func(b []byte) []byte {
		b = append(b, 0x03, 0x40) // loop
		b = charge(b, chargeChunk)
		b = appendS32(append(b, 0x20, lD, 0x20, lS, 0x41), chunk)
		b = append(b, opBytes...)
		b = appendS32(append(b, 0x20, lD, 0x41), chunk)
		b = append(b, 0x6a, 0x21, lD) // d += chunk
		if advanceSrc {
			b = appendS32(append(b, 0x20, lS, 0x41), chunk)
			b = append(b, 0x6a, 0x21, lS) // s += chunk
		}
		b = appendS32(append(b, 0x20, lN, 0x41), chunk)
		b = append(b, 0x6b, 0x21, lN)                        // n -= chunk
		b = append(append(b, nGtChunk...), 0x4b, 0x0d, 0x00) // br_if 0 (n > chunk)
		return append(b, 0x0b)
	}
	if directional {
		// if d <= s: forward, else backward
		b = append(b, 0x20, lD, 0x20, lS, 0x4d, 0x04, 0x40)
		b = forward(b)
		b = append(b, 0x05, 0x03, 0x40) // else loop
		b = charge(b, chargeChunk)
		b = appendS32(append(b, 0x20, lN, 0x41), chunk)
		b = append(b, 0x6b, 0x21, lN) // n -= chunk
		b = append(b, 0x20, lD, 0x20, lN, 0x6a, 0x20, lS, 0x20, lN, 0x6a, 0x41)
		b = appendS32(b, chunk)
		b = append(b, opBytes...) // op(d+n, s+n, chunk)
		b = append(append(b, nGtChunk...), 0x4b, 0x0d, 0x00)
		b = append(b, 0x0b, 0x0b) // end loop, end if
	} else {
		b = forward(b)
	}
	b = charge(b, chargeN)
	b = append(b, orig...)
	return append(b, 0x0b)
}

// tableGrowBody replaces table.grow t: (value, n) -> old size or -1, all or nothing.
func (in *instrumenter) tableGrowBody(t uint32) []byte {
	const lV, lNum, lOld = 0, 1, 2
	grow := appendU32([]byte{0xfc, opTableGrow}, t)
	size := appendU32([]byte{0xfc, 16}, t)
	chunk := in.tabChunk
	nGtChunk := appendS32([]byte{0x20, lNum, 0x41}, chunk)
	charge := func(b []byte, amount []byte) []byte {
		b = appendU32(append(b, 0x23), in.fuel)
		return in.appendChargeTail(append(b, amount...))
	}
	chargeN := []byte{0x20, lNum, 0x41, tableShift, 0x76}

	b := []byte{0x01, 0x01, 0x7f} // one i32 local: the old size
	b = append(append(b, nGtChunk...), 0x4d, 0x04, 0x40)
	b = charge(b, chargeN)
	b = append(append(b, 0x20, lV, 0x20, lNum), grow...)
	b = append(b, 0x0f, 0x0b)
	// if (u64)size + n > limit { return -1 }
	b = append(append(b, size...), 0xad, 0x20, lNum, 0xad, 0x7c, 0x42)
	b = appendS64(b, int64(in.tableLimit(t)))
	b = append(b, 0x56, 0x04, 0x40, 0x41, 0x7f, 0x0f, 0x0b)
	b = append(append(b, size...), 0x21, lOld)
	b = append(b, 0x03, 0x40)
	b = charge(b, appendS32([]byte{0x41}, chunk>>tableShift))
	b = appendS32(append(b, 0x20, lV, 0x41), chunk)
	b = append(append(b, grow...), 0x1a) // drop
	b = appendS32(append(b, 0x20, lNum, 0x41), chunk)
	b = append(b, 0x6b, 0x21, lNum)
	b = append(append(b, nGtChunk...), 0x4b, 0x0d, 0x00, 0x0b)
	b = charge(b, chargeN)
	b = append(append(b, 0x20, lV, 0x20, lNum), grow...)
	b = append(b, 0x1a, 0x20, lOld, 0x0b)
	return b
}

func appendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

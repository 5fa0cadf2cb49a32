package wasmbin

// blockType reads a block type, an s33: 0x40 (-64), a value type (another negative value) or a
// type index, which it returns; for the others it returns -1. It refuses a typed reference
// (0x63 or 0x64, see valType), whose heap type follows.
func (r *reader) blockType() int64 {
	if r.err == nil && r.off >= len(r.b) {
		r.fail("missing block type")
		return -1
	}
	switch v := r.s33(); {
	case r.err != nil:
	case v == typedRefNull-0x80 || v == typedRef-0x80:
		r.fail("block type is a typed reference")
	case v >= 0:
		return v
	}
	return -1
}

func (r *reader) skipMemArg() {
	align := r.u32()
	if align&0x40 != 0 { // multi-memory: a memory index follows
		r.u32()
	}
	r.uleb(64) // offset (memory64 allows 64 bits)
}

// skipImmediates skips the immediates of opcode op, which has been read. Opcodes it does not
// know are an error, so that a rewrite never misreads an instruction stream.
func (r *reader) skipImmediates(op byte) {
	switch {
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
		op == 0x0a || op == 0x19 || op == 0xd1 || op == 0xd3:
		// no immediates: unreachable nop else end return drop select throw_ref catch_all
		// ref.is_null ref.as_non_null
	case op == 0x02 || op == 0x03 || op == 0x04 || op == 0x06:
		r.blockType() // block loop if try
	case op == 0x07 || op == 0x08 || op == 0x09 || op == 0x18 || op == 0x0c || op == 0x0d ||
		op == 0x10 || op == 0x12 || op == 0x14 || op == 0x15 || op == 0xd2 || op == 0xd4 || op == 0xd6 ||
		op >= 0x20 && op <= 0x26:
		// catch throw rethrow delegate br br_if call return_call call_ref return_call_ref
		// ref.func br_on_null br_on_non_null local.* global.* table.get table.set
		r.u32()
	case op == 0x0e: // br_table
		n := r.count()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x11 || op == 0x13: // call_indirect return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		r.valTypes()
	case op == 0x1f: // try_table
		r.blockType()
		n := r.count()
		for i := uint32(0); i < n && r.err == nil; i++ {
			switch kind := r.byte(); kind {
			case 0, 1: // catch, catch_ref: tag and label
				r.u32()
				r.u32()
			case 2, 3: // catch_all, catch_all_ref: label
				r.u32()
			default:
				r.fail("unknown catch kind %d", kind)
			}
		}
	case op >= 0x28 && op <= 0x3e:
		r.skipMemArg()
	case op == 0x3f || op == 0x40: // memory.size memory.grow
		r.u32()
	case op == 0x41:
		r.sleb(32)
	case op == 0x42:
		r.sleb(64)
	case op == 0x43:
		r.skip(4)
	case op == 0x44:
		r.skip(8)
	case op >= 0x45 && op <= 0xc4:
		// numeric instructions, including sign extension: no immediates
	case op == 0xd0: // ref.null heaptype
		r.sleb(33)
	case op == 0xfc:
		r.skipMisc(r.u32())
	case op == 0xfd:
		r.skipSIMD(r.u32())
	case op == 0xfe:
		r.skipAtomic(r.u32())
	default:
		r.fail("unknown opcode 0x%02x", op)
	}
}

func (r *reader) skipMisc(sub uint32) {
	switch {
	case sub <= 7: // saturating truncation
	case sub == 8: // memory.init data mem
		r.u32()
		r.u32()
	case sub == 9 || sub == 11 || sub == 13 || sub >= 15 && sub <= 17:
		r.u32() // data.drop, memory.fill, elem.drop, table.grow/size/fill
	case sub == 10 || sub == 12 || sub == 14: // memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	default:
		r.fail("unknown 0xfc opcode %d", sub)
	}
}

func (r *reader) skipSIMD(sub uint32) {
	switch {
	case sub <= 11 || sub == 92 || sub == 93: // loads, store, load_zero
		r.skipMemArg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.skip(16)
	case sub >= 21 && sub <= 34: // extract/replace lane
		r.skip(1)
	case sub >= 84 && sub <= 91: // load/store lane
		r.skipMemArg()
		r.skip(1)
	case sub <= 0x113:
		// all other SIMD and relaxed-SIMD instructions take no immediates
	default:
		r.fail("unknown 0xfd opcode %d", sub)
	}
}

func (r *reader) skipAtomic(sub uint32) {
	switch {
	case sub == 3: // atomic.fence
		r.skip(1)
	case sub <= 2 || sub >= 0x10 && sub <= 0x4e:
		r.skipMemArg()
	default:
		r.fail("unknown 0xfe opcode %d", sub)
	}
}

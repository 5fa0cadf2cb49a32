package extism

// IsPlugin reports whether wasm is a module that imports from the Extism kernel,
// "extism:host/env". It reads the module header and the import section only, never panics,
// and returns false for anything it cannot parse.
func IsPlugin(wasm []byte) bool {
	r := reader{b: wasm}
	if string(r.bytes(4)) != "\x00asm" || string(r.bytes(4)) != "\x01\x00\x00\x00" || r.bad {
		return false
	}
	for len(r.b) > 0 && !r.bad {
		id := r.byte()
		size := r.u32()
		body := r.bytes(int(size))
		if r.bad {
			return false
		}
		switch {
		case id == 2:
			return importsKernel(body)
		case id != 0 && id != 1:
			return false // the import section comes after types and before everything else
		}
	}
	return false
}

func importsKernel(section []byte) bool {
	r := reader{b: section}
	n := r.u32()
	for k := uint32(0); k < n && !r.bad; k++ {
		mod := r.bytes(int(r.u32()))
		if r.bad {
			return false
		}
		if string(mod) == KernelModule {
			return true
		}
		r.bytes(int(r.u32())) // field name
		switch r.byte() {
		case 0x00: // function: type index
			r.u32()
		case 0x01: // table: reference type, limits
			r.byte()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
		case 0x03: // global: value type, mutability
			r.byte()
			r.byte()
		case 0x04: // tag: attribute, type index
			r.byte()
			r.u32()
		default:
			return false
		}
	}
	return false
}

// reader reads a Wasm binary; any read past the end sets bad and returns zero values.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b) {
		r.bad = true
		r.b = nil
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

// u32 reads an unsigned LEB128 of at most 5 bytes (u64 limits of memory64 are read by limits).
func (r *reader) u32() uint32 {
	return uint32(r.leb(5))
}

func (r *reader) leb(max int) uint64 {
	var v uint64
	for i := 0; i < max; i++ {
		c := r.byte()
		if r.bad {
			return 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.bad = true
	return 0
}

func (r *reader) limits() {
	flags := r.byte()
	r.leb(10)
	if flags&0x01 != 0 {
		r.leb(10)
	}
}

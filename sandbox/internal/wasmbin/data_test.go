package wasmbin

// dataModule is idxModule whose function 1 runs code1, with one passive data segment and,
// when count >= 0, a data count section saying count: the data cases of idxCases, for which
// Instrument refuses a memory.init or data.drop naming a segment past the module's, either of
// them without a data count section, and a data count that does not count the segments.
func dataModule(code1 []byte, count int) []byte {
	extra := [][]byte{sect(secData, cat([]byte{0x01}, appendName(nil, "abcd")))}
	if count >= 0 {
		n := appendU32(nil, uint32(count))
		extra = append(extra, append(appendU32([]byte{secDataCount}, uint32(len(n))), n...))
	}
	return idxModule(i32Const(7), code1, extra...)
}

func memoryInit(seg uint32) []byte {
	return cat(i32Const(0), i32Const(0), i32Const(4), appendU32([]byte{0xfc, 0x08}, seg), []byte{0x00})
}

func dataDrop(seg uint32) []byte { return appendU32([]byte{0xfc, 0x09}, seg) }

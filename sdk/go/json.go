package sdk

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// MaxJSONDepth bounds the nesting of arrays and objects a JSONReader accepts, Skip included: a
// deeper input is an error, so a hostile input cannot grow the guest's stack.
const MaxJSONDepth = 128

// JSONError is a malformed or unexpected JSON input, as a JSONReader reports it: what was wrong
// and the byte offset in the input where the reader saw it.
type JSONError struct {
	Offset int
	Reason string
}

func (e *JSONError) Error() string {
	return "json: " + e.Reason + " at offset " + strconv.Itoa(e.Offset)
}

// JSONKind is the kind of the next JSON value, as JSONReader.Kind sees it.
type JSONKind uint8

// JSON kinds. JSONInvalid is the end of the input, a byte that cannot start a value, or a
// reader that has failed.
const (
	JSONInvalid JSONKind = iota
	JSONNull
	JSONBool
	JSONNumber
	JSONString
	JSONArray
	JSONObject
)

// JSONReader reads one JSON text from a byte slice, value by value, without reflection and
// without allocating except for strings with escapes or invalid UTF-8. The caller walks the
// input: Object then NextKey for each member, Array then NextElem for each element, and Str,
// Number, Int64, Float64, Bool, Null or Skip for each value, then End.
//
// Errors are sticky: the first malformed or unexpected byte sets Err (a *JSONError), and from
// then on every method returns a zero value without reading, so a walk checks Err once at the
// end. Nesting is bounded by MaxJSONDepth; a string's or number's length by the input's.
// Strings decode as encoding/json decodes them (escapes, surrogate pairs, each invalid UTF-8
// byte and each lone surrogate replaced by U+FFFD). Object keys are raw bytes: match them
// exactly.
//
// The zero value reads an empty input. A JSONReader is not safe for concurrent use.
type JSONReader struct {
	data  []byte
	pos   int
	depth int
	first bool // the next member or element is the container's first: no comma before it
	err   error
}

// NewJSONReader returns a reader of data. The slices it returns may alias data.
func NewJSONReader(data []byte) JSONReader { return JSONReader{data: data} }

// Err returns the first error, or nil.
func (r *JSONReader) Err() error { return r.err }

// Offset returns the offset of the next byte to read.
func (r *JSONReader) Offset() int { return r.pos }

// Fail records reason as the reader's error at the current offset, unless it already has one.
// Use it for input that is well-formed JSON but not what the caller expects.
func (r *JSONReader) Fail(reason string) {
	if r.err == nil {
		r.err = &JSONError{Offset: r.pos, Reason: reason}
	}
}

func (r *JSONReader) failAt(off int, reason string) {
	if r.err == nil {
		r.err = &JSONError{Offset: off, Reason: reason}
	}
}

func (r *JSONReader) skipSpace() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end of the input or after an
// error.
func (r *JSONReader) peek() byte {
	if r.err != nil {
		return 0
	}
	r.skipSpace()
	if r.pos >= len(r.data) {
		return 0
	}
	return r.data[r.pos]
}

// Kind returns the kind of the next value without reading it.
func (r *JSONReader) Kind() JSONKind { return kindOf[r.peek()] }

// kindOf is the kind of the value a byte starts (peek's 0, the end, is JSONInvalid): a table,
// so that Kind is small enough to inline; in wasm each call counts.
var kindOf = func() (t [256]JSONKind) {
	t['n'] = JSONNull
	t['t'], t['f'] = JSONBool, JSONBool
	t['-'] = JSONNumber
	for c := '0'; c <= '9'; c++ {
		t[c] = JSONNumber
	}
	t['"'], t['['], t['{'] = JSONString, JSONArray, JSONObject
	return t
}()

// expectValue fails unless the next byte starts a value of kind want.
func (r *JSONReader) expectValue(want JSONKind, name string) bool {
	return r.Kind() == want || r.unexpected(name)
}

// unexpected fails on the next byte, which does not start a name; it returns false.
func (r *JSONReader) unexpected(name string) bool {
	switch {
	case r.err != nil:
	case r.pos >= len(r.data):
		r.Fail("unexpected end of input, want " + name)
	default:
		r.Fail("unexpected " + quoteByte(r.data[r.pos]) + ", want " + name)
	}
	return false
}

func quoteByte(c byte) string { return strconv.QuoteRune(rune(c)) }

// value marks the end of a value: the next member or element needs a comma before it.
func (r *JSONReader) value() { r.first = false }

func (r *JSONReader) open() bool {
	if r.depth >= MaxJSONDepth {
		r.Fail("nesting deeper than " + strconv.Itoa(MaxJSONDepth))
		return false
	}
	r.depth++
	r.pos++
	r.first = true
	return true
}

// Object reads the '{' of an object; NextKey then reads its members. It returns false (and
// sets Err) when the next value is not an object.
func (r *JSONReader) Object() bool {
	if r.Kind() != JSONObject {
		return r.unexpected("object")
	}
	return r.open()
}

// Array reads the '[' of an array; NextElem then reads its elements. It returns false (and
// sets Err) when the next value is not an array.
func (r *JSONReader) Array() bool {
	return r.expectValue(JSONArray, "array") && r.open()
}

// next reads what comes before a member or element: the closing byte (false) or, unless it is
// the first, a comma.
func (r *JSONReader) next(closing byte) bool {
	c := r.peek()
	if r.err != nil {
		return false
	}
	if c == closing {
		r.pos++
		r.depth--
		r.value()
		return false
	}
	if !r.first {
		if c != ',' {
			if c == 0 {
				r.Fail("unexpected end of input, want ',' or " + quoteByte(closing))
			} else {
				r.Fail("unexpected " + quoteByte(c) + ", want ',' or " + quoteByte(closing))
			}
			return false
		}
		r.pos++
	}
	r.first = false
	return true
}

// NextKey reads the next member's key and the ':' after it, and returns the key; the caller
// then reads the member's value. At the object's '}' it returns false, as it does on error.
// The key aliases the input unless it has escapes.
func (r *JSONReader) NextKey() ([]byte, bool) {
	if !r.next('}') {
		return nil, false
	}
	if !r.expectValue(JSONString, "a key") {
		return nil, false
	}
	k := r.str()
	if r.peek() != ':' {
		r.Fail("want ':' after a key")
		return nil, false
	}
	r.pos++
	r.first = true // the member's value is not preceded by a comma
	return k, r.err == nil
}

// NextElem reports whether the array has another element, which the caller then reads. At the
// array's ']' it returns false, as it does on error.
func (r *JSONReader) NextElem() bool {
	if !r.next(']') {
		return false
	}
	r.first = true
	return true
}

// Null reads a null and returns true, or returns false and reads nothing when the next value
// is not null.
func (r *JSONReader) Null() bool {
	if r.Kind() != JSONNull {
		return false
	}
	r.literal("null")
	return r.err == nil
}

// Bool reads a boolean.
func (r *JSONReader) Bool() bool {
	if !r.expectValue(JSONBool, "true or false") {
		return false
	}
	if r.data[r.pos] == 't' {
		r.literal("true")
		return r.err == nil
	}
	r.literal("false")
	return false
}

func (r *JSONReader) literal(lit string) {
	if len(r.data)-r.pos < len(lit) || string(r.data[r.pos:r.pos+len(lit)]) != lit {
		r.Fail("invalid literal, want " + lit)
		return
	}
	r.pos += len(lit)
	r.value()
}

// Str reads a string and returns its decoded bytes. They alias the input when the string has
// no escapes and is valid UTF-8; otherwise they are a new slice.
func (r *JSONReader) Str() []byte {
	if r.Kind() != JSONString { // Kind inlines: the common case makes one call, str
		r.unexpected("string")
		return nil
	}
	return r.str()
}

// str reads the string at r.pos (a '"').
func (r *JSONReader) str() []byte {
	start := r.pos + 1
	escapes, ascii := false, true
	i := start
	for ; i < len(r.data); i++ {
		c := r.data[i]
		switch {
		case c == '"':
			s := r.data[start:i]
			r.pos = i + 1
			r.value()
			if !escapes && (ascii || utf8.Valid(s)) {
				return s[:len(s):len(s)]
			}
			return r.unquote(s, start)
		case c == '\\':
			escapes = true
			i++ // the escaped byte is never the closing quote; unquote checks it
		case c < 0x20:
			r.failAt(i, "control character in string")
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	r.failAt(len(r.data), "unexpected end of input in string")
	return nil
}

// unquote decodes a string's content s (at offset off) with escapes or invalid UTF-8.
func (r *JSONReader) unquote(s []byte, off int) []byte {
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) {
				r.failAt(off+i, "invalid escape")
				return nil
			}
			switch e := s[i+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr, ok := hex4(s[i+2:])
				if !ok {
					r.failAt(off+i, "invalid \\u escape")
					return nil
				}
				i += 6
				if utf16.IsSurrogate(rr) {
					if rr2, ok := hex4(s[min(i+2, len(s)):]); ok && i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
						if dec := utf16.DecodeRune(rr, rr2); dec != utf8.RuneError {
							b = utf8.AppendRune(b, dec)
							i += 6
							continue
						}
					}
					rr = utf8.RuneError
				}
				b = utf8.AppendRune(b, rr)
				continue
			default:
				r.failAt(off+i, "invalid escape")
				return nil
			}
			i += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			rr, size := utf8.DecodeRune(s[i:])
			if rr == utf8.RuneError && size == 1 {
				b = utf8.AppendRune(b, utf8.RuneError)
			} else {
				b = append(b, s[i:i+size]...)
			}
			i += size
		}
	}
	return b
}

// hex4 parses the 4 hex digits at the start of s.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var v rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | rune(c)
	}
	return v, true
}

// Number reads a number and returns its literal, checked against JSON's grammar.
func (r *JSONReader) Number() []byte {
	if !r.expectValue(JSONNumber, "number") {
		return nil
	}
	d, start := r.data, r.pos
	i := start
	if d[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case digits() == 0:
		r.failAt(i, "invalid number")
		return nil
	}
	if i < len(d) && d[i] == '.' {
		i++
		if digits() == 0 {
			r.failAt(i, "invalid number")
			return nil
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			r.failAt(i, "invalid number")
			return nil
		}
	}
	r.pos = i
	r.value()
	return d[start:i:i]
}

// Int64 reads a number that is an integer in int64's range (no fraction, no exponent).
func (r *JSONReader) Int64() int64 {
	start := r.pos
	lit := r.Number()
	if r.err != nil {
		return 0
	}
	neg := lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	var u uint64
	for _, c := range lit {
		if c < '0' || c > '9' {
			r.failAt(start, "number is not an integer")
			return 0
		}
		if u > (1<<63)/10 || u*10+uint64(c-'0') > 1<<63 {
			r.failAt(start, "integer out of range")
			return 0
		}
		u = u*10 + uint64(c-'0')
	}
	if !neg && u == 1<<63 {
		r.failAt(start, "integer out of range")
		return 0
	}
	if neg {
		return -int64(u)
	}
	return int64(u)
}

// Float64 reads a number as the nearest float64; one beyond float64's range is an error.
func (r *JSONReader) Float64() float64 {
	start := r.pos
	lit := r.Number()
	if r.err != nil {
		return 0
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		r.failAt(start, "number out of range")
		return 0
	}
	return f
}

// Skip reads and discards the next value, checking it as it goes.
func (r *JSONReader) Skip() {
	switch r.Kind() {
	case JSONNull:
		r.Null()
	case JSONBool:
		r.Bool()
	case JSONNumber:
		r.Number()
	case JSONString:
		r.Str()
	case JSONArray:
		if r.Array() {
			for r.NextElem() {
				r.Skip()
			}
		}
	case JSONObject:
		if r.Object() {
			for _, ok := r.NextKey(); ok; _, ok = r.NextKey() {
				r.Skip()
			}
		}
	default:
		r.expectValue(JSONObject, "a value") // fails with what is there
	}
}

// End checks that only whitespace follows the value read and returns Err.
func (r *JSONReader) End() error {
	if r.peek() != 0 || r.pos < len(r.data) && r.err == nil {
		r.Fail("data after the JSON value")
	}
	return r.err
}

// JSONWriter appends JSON to Buf, putting the commas and colons between members and elements
// itself. It does not check that the calls make a well-formed text (a key outside an object,
// an unclosed array): the caller's code does that. The zero value writes into a new slice.
type JSONWriter struct {
	Buf   []byte
	comma bool // the next key or value follows a value: a comma first
}

func (w *JSONWriter) sep() {
	if w.comma {
		w.Buf = append(w.Buf, ',')
	}
}

// BeginObject writes '{'.
func (w *JSONWriter) BeginObject() { w.sep(); w.Buf = append(w.Buf, '{'); w.comma = false }

// EndObject writes '}'.
func (w *JSONWriter) EndObject() { w.Buf = append(w.Buf, '}'); w.comma = true }

// BeginArray writes '['.
func (w *JSONWriter) BeginArray() { w.sep(); w.Buf = append(w.Buf, '['); w.comma = false }

// EndArray writes ']'.
func (w *JSONWriter) EndArray() { w.Buf = append(w.Buf, ']'); w.comma = true }

// Key writes a member's key and ':'; the member's value comes next.
func (w *JSONWriter) Key(k string) {
	w.sep()
	w.Buf = AppendJSONString(w.Buf, k)
	w.Buf = append(w.Buf, ':')
	w.comma = false
}

// Str writes a string value, escaped as AppendJSONString does.
func (w *JSONWriter) Str(s string) { w.sep(); w.Buf = AppendJSONString(w.Buf, s); w.comma = true }

// StrBytes writes a string value from bytes, escaped as AppendJSONString does.
func (w *JSONWriter) StrBytes(s []byte) {
	w.sep()
	w.Buf = AppendJSONBytes(w.Buf, s)
	w.comma = true
}

// Bool writes true or false.
func (w *JSONWriter) Bool(b bool) { w.sep(); w.Buf = strconv.AppendBool(w.Buf, b); w.comma = true }

// Null writes null.
func (w *JSONWriter) Null() { w.sep(); w.Buf = append(w.Buf, "null"...); w.comma = true }

// Int64 writes an integer.
func (w *JSONWriter) Int64(v int64) { w.sep(); w.Buf = strconv.AppendInt(w.Buf, v, 10); w.comma = true }

// Raw writes v, an encoded JSON value, as it is.
func (w *JSONWriter) Raw(v []byte) { w.sep(); w.Buf = append(w.Buf, v...); w.comma = true }

// AppendJSONBytes is AppendJSONString for bytes, which it only reads.
func AppendJSONBytes(dst, s []byte) []byte {
	return AppendJSONString(dst, unsafe.String(unsafe.SliceData(s), len(s)))
}

const hexDigits = "0123456789abcdef"

// plainJSON[c] reports whether the ASCII byte c is written as it is in a JSON string: not a
// control character, '"', '\\', '<', '>' or '&'. Bytes from 0x80 are false: UTF-8 is checked.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// AppendJSONString appends s to dst as a JSON string, escaped byte for byte as encoding/json's
// Marshal escapes it: '"' and '\\', control characters (\b, \f, \n, \r, \t or \u00XX), '<',
// '>' and '&' as \u003c, \u003e and \u0026, U+2028 and U+2029 as \u2028 and \u2029, and each
// invalid UTF-8 byte as \ufffd.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if plainJSON[c] { // most bytes: one table load (in wasm, six comparisons cost more)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		rr, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case rr == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case rr == '\u2028' || rr == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[rr&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// decodeAny walks the next value with r into what encoding/json's Unmarshal into an any with
// UseNumber gives, so that the two decoders can be compared on any input.
func decodeAny(r *JSONReader) any {
	switch r.Kind() {
	case JSONNull:
		r.Null()
		return nil
	case JSONBool:
		return r.Bool()
	case JSONNumber:
		return json.Number(r.Number())
	case JSONString:
		return string(r.Str())
	case JSONArray:
		a := []any{}
		if r.Array() {
			for r.NextElem() {
				a = append(a, decodeAny(r))
			}
		}
		return a
	case JSONObject:
		m := map[string]any{}
		if r.Object() {
			for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
				m[string(k)] = decodeAny(r)
			}
		}
		return m
	}
	r.Skip() // fails with the reason
	return nil
}

// compareWithStdlib decodes in with a JSONReader and with encoding/json and fails when they
// disagree on validity or on the value. Inputs nested deeper than MaxJSONDepth only have to
// be refused.
func compareWithStdlib(t *testing.T, in []byte) {
	t.Helper()
	r := NewJSONReader(in)
	got := decodeAny(&r)
	err := r.End()
	var je *JSONError
	if err != nil && !errors.As(err, &je) {
		t.Fatalf("%q: error %T %v, want a *JSONError", in, err, err)
	}
	if je != nil && strings.HasPrefix(je.Reason, "nesting deeper") {
		return
	}
	var want any
	var stdErr error
	if !json.Valid(in) {
		stdErr = errors.New("not valid JSON")
	} else {
		dec := json.NewDecoder(bytes.NewReader(in))
		dec.UseNumber()
		stdErr = dec.Decode(&want)
	}
	if (err == nil) != (stdErr == nil) {
		t.Fatalf("%q: JSONReader %v, encoding/json %v", in, err, stdErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: JSONReader %#v, encoding/json %#v", in, got, want)
	}
}

var jsonSeeds = []string{
	`{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`,
	`[1, -0, 0.5, -1.5e10, 2E-3, 1e+2, true, false, null, "", "a\"b\\c\/d\b\f\n\r\t"]`,
	`"\u00e9\u20ac\ud83d\ude00 lone \ud800 pair-less \udc00x \ud800\u0041"`,
	"\"invalid \xff utf-8 \xc3\x28\"",
	`  {"a" : [ {} , [] , {"b":null} ] }  `,
	`{"a":1,"a":2}`,
	`{"a":1,}`, `[1,]`, `[,1]`, `{,"a":1}`, `{"a" 1}`, `{"a":}`, `{1:2}`, `[1 2]`,
	`01`, `-`, `1.`, `1e`, `.5`, `+1`, `1.5e+`, `nul`, `tru`, `falsey`, `nulll`,
	`"unterminated`, `"bad \x escape"`, `"\u12"`, `"\u12g4"`, "\"ctl \x01\"", `"\`,
	``, ` `, `{}x`, `{} {}`, `[`, `{`, `{"a"`, `{"a":`, `]`, `}`,
	strings.Repeat("[", 200) + strings.Repeat("]", 200),
	strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth),
}

func TestJSONReaderMatchesStdlib(t *testing.T) {
	for _, in := range jsonSeeds {
		compareWithStdlib(t, []byte(in))
	}
}

func FuzzJSONReader(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) { compareWithStdlib(t, in) })
}

func TestJSONReaderErrors(t *testing.T) {
	for _, tc := range []struct {
		in     string
		read   func(r *JSONReader)
		reason string
		offset int
	}{
		{`{"a":1,}`, func(r *JSONReader) { decodeAny(r) }, `unexpected '}', want a key`, 7},
		{`[1 2]`, func(r *JSONReader) { decodeAny(r) }, `unexpected '2', want ',' or ']'`, 3},
		{`"ab`, func(r *JSONReader) { r.Str() }, "unexpected end of input in string", 3},
		{"\"a\x01\"", func(r *JSONReader) { r.Str() }, "control character in string", 2},
		{`"a\qb"`, func(r *JSONReader) { r.Str() }, "invalid escape", 2},
		{`42`, func(r *JSONReader) { r.Str() }, "unexpected '4', want string", 0},
		{`"x"`, func(r *JSONReader) { r.Object() }, `unexpected '"', want object`, 0},
		{``, func(r *JSONReader) { r.Array() }, "unexpected end of input, want array", 0},
		{`1.5`, func(r *JSONReader) { r.Int64() }, "number is not an integer", 0},
		{`9223372036854775808`, func(r *JSONReader) { r.Int64() }, "integer out of range", 0},
		{`-92233720368547758080`, func(r *JSONReader) { r.Int64() }, "integer out of range", 0},
		{`1e400`, func(r *JSONReader) { r.Float64() }, "number out of range", 0},
		{`-x`, func(r *JSONReader) { r.Number() }, "invalid number", 1},
		{`truth`, func(r *JSONReader) { r.Bool() }, "invalid literal, want true", 0},
		{`{} 1`, func(r *JSONReader) { r.Skip() }, "data after the JSON value", 3},
		{strings.Repeat("[", MaxJSONDepth+1), func(r *JSONReader) { r.Skip() }, "nesting deeper than 128", MaxJSONDepth},
	} {
		r := NewJSONReader([]byte(tc.in))
		tc.read(&r)
		err := r.End()
		var je *JSONError
		if !errors.As(err, &je) || je.Reason != tc.reason || je.Offset != tc.offset {
			t.Errorf("%q: %v, want %q at offset %d", tc.in, err, tc.reason, tc.offset)
		}
		// Sticky: nothing reads after the first error, and the error stays.
		if r.Str() != nil || r.Bool() || r.Object() || r.Kind() != JSONInvalid || !errors.Is(r.Err(), err) {
			t.Errorf("%q: the reader went on after %v", tc.in, err)
		}
	}
}

func TestJSONReaderValues(t *testing.T) {
	r := NewJSONReader([]byte(` {"n": -9223372036854775808, "f": 2.5e-3, "b": [true, false], "s": "\u00e9", "z": null} `))
	var n int64
	var f float64
	var bs []bool
	var s string
	if !r.Object() {
		t.Fatal(r.Err())
	}
	for k, ok := r.NextKey(); ok; k, ok = r.NextKey() {
		switch string(k) {
		case "n":
			n = r.Int64()
		case "f":
			f = r.Float64()
		case "b":
			for r.Array(); r.NextElem(); {
				bs = append(bs, r.Bool())
			}
		case "s":
			s = string(r.Str())
		case "z":
			if !r.Null() {
				t.Error("z is not null")
			}
		}
	}
	if err := r.End(); err != nil {
		t.Fatal(err)
	}
	if n != math.MinInt64 || f != 2.5e-3 || !reflect.DeepEqual(bs, []bool{true, false}) || s != "é" {
		t.Fatalf("n=%d f=%v b=%v s=%q", n, f, bs, s)
	}
}

// A string without escapes is a view of the input: reading it allocates nothing.
func TestJSONReaderDoesNotAllocate(t *testing.T) {
	in := []byte(`{"subject":{"id":"alice","roles":["viewer","editor"]},"action":"read","n":12,"ok":true,"x":null}`)
	allocs := testing.AllocsPerRun(100, func() {
		r := NewJSONReader(in)
		r.Skip()
		if r.End() != nil {
			t.Fatal(r.Err())
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per read", allocs)
	}
}

// A huge string is read in one pass over its bytes, and aliases the input.
func TestJSONReaderHugeString(t *testing.T) {
	in := append(append([]byte(`"`), bytes.Repeat([]byte("a"), 8<<20)...), '"')
	r := NewJSONReader(in)
	s := r.Str()
	if r.End() != nil || len(s) != 8<<20 || &s[0] != &in[1] {
		t.Fatalf("len %d, err %v", len(s), r.Err())
	}
}

func TestJSONWriter(t *testing.T) {
	w := JSONWriter{Buf: []byte("prefix:")}
	w.BeginObject()
	w.Key("allow")
	w.Bool(true)
	w.Key("reasons")
	w.BeginArray()
	w.Str(`role "a" <b> & c`)
	w.StrBytes([]byte("x\ny"))
	w.BeginObject()
	w.EndObject()
	w.Null()
	w.Int64(-7)
	w.Raw([]byte(`{"r":1}`))
	w.EndArray()
	w.Key("n")
	w.BeginArray()
	w.EndArray()
	w.EndObject()
	want := `prefix:{"allow":true,"reasons":["role \"a\" \u003cb\u003e \u0026 c","x\ny",{},null,-7,{"r":1}],"n":[]}`
	if string(w.Buf) != want {
		t.Fatalf("got  %s\nwant %s", w.Buf, want)
	}
}

func checkAppendJSONString(t *testing.T, s string) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendJSONString(nil, s); !bytes.Equal(got, want) {
		t.Fatalf("%q: got %s, encoding/json %s", s, got, want)
	}
}

var stringSeeds = []string{"", "plain", `"quoted" \back\`, "ctl \x00\x01\x1f\x7f \b\f\n\r\t", "<html> & more",
	"é€😀", "line\u2028para\u2029", "bad \xff\xfe \xc3\x28 \xe2\x82", "\xed\xa0\x80 surrogate"}

func TestAppendJSONStringMatchesStdlib(t *testing.T) {
	for _, s := range stringSeeds {
		checkAppendJSONString(t, s)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range stringSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkAppendJSONString(t, s)
		// What the writer writes, the reader reads back as encoding/json does.
		enc := AppendJSONString(nil, s)
		r := NewJSONReader(enc)
		got := r.Str()
		var want string
		if err := json.Unmarshal(enc, &want); err != nil || r.End() != nil || string(got) != want {
			t.Fatalf("%q: read back %q (%v), encoding/json %q (%v)", s, got, r.Err(), want, err)
		}
	})
}

func BenchmarkJSONReader(b *testing.B) {
	in := []byte(`{"subject":{"id":"alice","roles":["viewer","editor"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`)
	b.Run("JSONReader", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := NewJSONReader(in)
			r.Skip()
			if r.End() != nil {
				b.Fatal(r.Err())
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v struct {
				Subject struct {
					ID    string   `json:"id"`
					Roles []string `json:"roles"`
				} `json:"subject"`
				Action   string            `json:"action"`
				Resource map[string]string `json:"resource"`
			}
			if err := json.Unmarshal(in, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

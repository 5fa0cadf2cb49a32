package conformance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// jsonFixtures are the JSON fixtures of the SDKs without encoding/json (json.rs, json.c,
// json.ts next to each conformance plugin): `canon` reads its input with the SDK's JSON
// reader and writes it back with its writer, `config` does the same with a config value.
var jsonFixtures = []struct{ name, path string }{
	{"rust", "rust/json.wasm"},
	{"c", "c/json.wasm"},
	{"assemblyscript", "assemblyscript/json.wasm"},
}

// goCanon is what every SDK's canon must give for a valid input: the tokens of encoding/json's
// decoder written back compact, strings escaped by json.Marshal, numbers as written.
func goCanon(in []byte) ([]byte, error) {
	if !json.Valid(in) {
		var v any
		return nil, json.Unmarshal(in, &v)
	}
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var out []byte
	type frame struct {
		object bool
		n      int
	}
	var stack []frame
	sep := func() {
		if len(stack) == 0 {
			return
		}
		f := &stack[len(stack)-1]
		if f.n > 0 {
			if f.object && f.n%2 == 1 {
				out = append(out, ':')
			} else {
				out = append(out, ',')
			}
		}
		f.n++
	}
	for {
		t, err := d.Token()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := t.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				sep()
				out = append(out, byte(t))
				stack = append(stack, frame{object: t == '{'})
			} else {
				out = append(out, byte(t))
				stack = stack[:len(stack)-1]
			}
		case string:
			sep()
			b, _ := json.Marshal(t)
			out = append(out, b...)
		case json.Number:
			sep()
			out = append(out, t...)
		case bool:
			sep()
			out = fmt.Append(out, t)
		case nil:
			sep()
			out = append(out, "null"...)
		}
	}
}

// jsonInputs are the handwritten inputs, valid and not, of TestSDKJSON.
var jsonInputs = []string{
	`{}`, `[]`, `0`, `-0`, `1.5e-3`, `-12E+4`, `"x"`, `true`, `false`, `null`,
	` {"a" : [1, 2.5, -3e10, true, false, null, "s"], "b": {"c": {}}, "d": []} `,
	`"\u00e9\ud83d\ude00 \n\t\r\b\f \" \\ \/ <&> ` + "\u2028\u2029" + `"`,
	`"\ud800"`, `"\udc00x"`, `"\ud800\u0041"`, `"é 日本 😀"`, `["\u0000\u001f"]`,
	`{"k\u0041y": "v"}`, `[[[[[[[[[[1]]]]]]]]]]`, "\"bad utf-8: \xff\xfe\"",
	``, ` `, `[`, `]`, `{`, `}`, `[1,]`, `[,1]`, `{"a"}`, `{"a":}`, `{"a" 1}`, `{1:2}`,
	`{"a":1,}`, `[1 2]`, `01`, `1.`, `.5`, `-`, `1e`, `1e+`, `+1`, `0x10`, `tru`, `nul`,
	`truex`, `"abc`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"a\nb\"", "\"tab\there\"", `[1]]`,
	`[1] 2`, `{"a":1}}`, `"\`, `NaN`, `Infinity`, `[1}`, `{"a":1]`,
	strings.Repeat("[", 64) + strings.Repeat("]", 64),
}

// randomJSON writes a random valid document of at most depth levels.
func randomJSON(r *rand.Rand, b *strings.Builder, depth int) {
	pieces := []string{"a", "é", "日本", "😀", "<", ">", "&", "\"", "\\", "/", "\n", "\x01", "\x1f", "\u2028", " ", "\u007f"}
	str := func() {
		var s strings.Builder
		for range r.IntN(6) {
			s.WriteString(pieces[r.IntN(len(pieces))])
		}
		if r.IntN(2) == 0 {
			q, _ := json.Marshal(s.String())
			b.Write(q)
			return
		}
		b.WriteByte('"') // escaped by hand, with \u escapes for everything
		for _, c := range s.String() {
			if c >= 0x10000 {
				hi, lo := 0xD800+((c-0x10000)>>10), 0xDC00+((c-0x10000)&0x3FF)
				fmt.Fprintf(b, `\u%04X\u%04x`, hi, lo)
			} else {
				fmt.Fprintf(b, `\u%04x`, c)
			}
		}
		b.WriteByte('"')
	}
	ws := func() {
		b.WriteString([]string{"", "", " ", "\n\t", "\r "}[r.IntN(5)])
	}
	ws()
	k := r.IntN(8)
	if depth == 0 {
		k %= 6
	}
	switch k {
	case 0:
		str()
	case 1:
		b.WriteString([]string{"0", "-1", "123456789012345678901234567890", "1.25", "-0.5e-7", "6E+2", "1e400"}[r.IntN(7)])
	case 2:
		b.WriteString("true")
	case 3:
		b.WriteString("false")
	case 4:
		b.WriteString("null")
	case 5:
		str()
	case 6:
		b.WriteByte('[')
		for i := range r.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			randomJSON(r, b, depth-1)
		}
		ws()
		b.WriteByte(']')
	case 7:
		b.WriteByte('{')
		for i := range r.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			str()
			ws()
			b.WriteByte(':')
			randomJSON(r, b, depth-1)
		}
		ws()
		b.WriteByte('}')
	}
	ws()
}

// TestSDKJSON checks the JSON reader and writer of the Rust, C and AssemblyScript SDKs
// against encoding/json: every valid input comes back as goCanon writes it (semantically
// equal when it holds invalid UTF-8, which the SDKs write as \ufffd), every invalid one is an
// invalid_input error with a `json: ` message, never a trap. The inputs: jsonInputs, random
// documents, every prefix of a few (mostly invalid), and each random document with one byte
// replaced.
func TestSDKJSON(t *testing.T) {
	ctx := context.Background()
	inputs := append([]string(nil), jsonInputs...)
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		var b strings.Builder
		randomJSON(r, &b, 5)
		inputs = append(inputs, b.String())
	}
	random := inputs[len(jsonInputs):]
	for _, s := range random[len(random)-20:] {
		for n := range len(s) {
			inputs = append(inputs, s[:n])
		}
	}
	// Mutants: one byte of a random document replaced by a byte that JSON gives a meaning to.
	const meaningful = "{}[]:,\"\\u0123456789.eE+-tfn \x00\x1f\x7f\xff"
	for _, s := range random {
		if s == "" {
			continue
		}
		b := []byte(s)
		b[r.IntN(len(b))] = meaningful[r.IntN(len(meaningful))]
		inputs = append(inputs, string(b))
	}
	deep := strings.Repeat("[", 65) + strings.Repeat("]", 65) // one level over the SDKs' bound

	eng, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(cacheDir))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close(ctx)
	for _, fx := range jsonFixtures {
		t.Run(fx.name, func(t *testing.T) {
			wasm, err := os.ReadFile(filepath.FromSlash(fx.path))
			if err != nil {
				t.Fatalf("the %s JSON fixture is missing: %v", fx.name, err)
			}
			mod, err := eng.Compile(ctx, wasm, sandbox.Config{Limits: sandbox.Limits{MemoryPages: 64}})
			if err != nil {
				t.Fatal(err)
			}
			defer mod.Close(ctx)
			cfg := map[string]string{
				"limits": `{"max": 5, "tags": ["a", "b"], "deep": {"on": true}}`,
				"plain":  "not json",
			}
			inst, err := mod.Instantiate(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(ctx)

			call := func(handler, in string) (string, error) {
				out, err := inst.Call(ctx, handler, []byte(in))
				return string(out), err
			}
			wantInvalid := func(what string, err error) {
				t.Helper()
				var ge *sandbox.GuestError
				if !errors.As(err, &ge) || ge.Status != abi.StatusInvalidInput || !strings.HasPrefix(ge.Message, "json: ") {
					t.Fatalf("%s: got %v, want an invalid_input error with a json: message", what, err)
				}
			}
			for _, in := range inputs {
				got, err := call("canon", in)
				want, gerr := goCanon([]byte(in))
				if gerr != nil {
					wantInvalid(fmt.Sprintf("canon %q (Go: %v)", in, gerr), err)
					continue
				}
				if err != nil {
					t.Fatalf("canon %q: %v, want %s", in, err, want)
				}
				if utf8.ValidString(in) {
					if got != string(want) {
						t.Fatalf("canon %q:\n got %s\nwant %s", in, got, want)
					}
				} else if again, err := goCanon([]byte(got)); err != nil || !bytes.Equal(again, want) {
					t.Fatalf("canon %q: got %q, not equal to %s (%v)", in, got, want, err)
				}
			}
			_, err = call("canon", deep)
			wantInvalid("65 levels", err)

			if got, err := call("config", "limits"); err != nil || got != `{"max":5,"tags":["a","b"],"deep":{"on":true}}` {
				t.Errorf("config limits = %q, %v", got, err)
			}
			_, err = call("config", "plain")
			wantInvalid("config plain", err)
			var ge *sandbox.GuestError
			if _, err := call("config", "absent"); !errors.As(err, &ge) || ge.Message != "missing key" {
				t.Errorf("config absent: got %v, want missing key", err)
			}
		})
	}
}

// BenchmarkSDKJSON measures each SDK's canon (read every token, write it back) of a 16 KiB
// document of objects, arrays, numbers and strings with and without escapes, in MB/s of input.
func BenchmarkSDKJSON(b *testing.B) {
	ctx := context.Background()
	var doc strings.Builder
	doc.WriteByte('[')
	for i := 0; doc.Len() < 16<<10; i++ {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `{"id": %d, "name": "user-%d", "score": %d.25, "tags": ["a", "b\n\u00e9"], "ok": true}`, i, i, i)
	}
	doc.WriteByte(']')
	in := []byte(doc.String())
	eng, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(cacheDir))
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close(ctx)
	for _, fx := range jsonFixtures {
		b.Run(fx.name, func(b *testing.B) {
			wasm, err := os.ReadFile(filepath.FromSlash(fx.path))
			if err != nil {
				b.Fatal(err)
			}
			mod, err := eng.Compile(ctx, wasm, sandbox.Config{Limits: sandbox.Limits{MemoryPages: 64}})
			if err != nil {
				b.Fatal(err)
			}
			defer mod.Close(ctx)
			inst, err := mod.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close(ctx)
			want, _ := goCanon(in)
			b.SetBytes(int64(len(in)))
			b.ResetTimer()
			for b.Loop() {
				out, err := inst.Call(ctx, "canon", in)
				if err != nil || len(out) != len(want) {
					b.Fatalf("canon: %d bytes, %v; want %d bytes", len(out), err, len(want))
				}
			}
		})
	}
}

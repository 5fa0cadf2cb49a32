package builtins_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox/opa/builtins"
)

// decode is how the format gives operands: JSON with numbers as json.Number.
func decode(t *testing.T, s string) []any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v []any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return v
}

// encode is how the format returns a result.
func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return string(b)
}

var now = time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.UTC)

func TestBuiltins(t *testing.T) {
	jwt := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsIm4iOjF9.AQID"
	tests := []struct {
		name, args, want string
		err              error // nil: success; else errors.Is (or errAny for any error)
	}{
		{"time.now_ns", `[]`, fmt.Sprint(now.UnixNano()), nil},
		{"time.parse_rfc3339_ns", `["2024-02-29T00:00:00Z"]`, "1709164800000000000", nil},
		{"time.parse_rfc3339_ns", `["2024-02-30T00:00:00Z"]`, "", errAny},
		{"time.parse_rfc3339_ns", `["3000-01-01T00:00:00Z"]`, "", errAny},
		{"time.parse_ns", `["2006-01-02", "2023-12-31"]`, "1703980800000000000", nil},
		{"time.parse_ns", `["RFC822Z", "02 Jan 06 15:04 -0700"]`, "1136239440000000000", nil},
		{"time.parse_duration_ns", `["1h30m"]`, "5400000000000", nil},
		{"time.parse_duration_ns", `["1.5d"]`, "129600000000000", nil},
		{"time.parse_duration_ns", `["-1w2h"]`, "-612000000000000", nil},
		{"time.parse_duration_ns", `["x"]`, "", errAny},
		{"time.date", `[1709164800000000000]`, "[2024,2,29]", nil},
		{"time.date", `[[1709164800000000000, "America/New_York"]]`, "[2024,2,28]", nil},
		{"time.date", `[[1709164800000000000, "Nowhere/Else"]]`, "", errAny},
		{"time.date", `[1.5]`, "", errAny},
		{"time.date", `[1e999999999]`, "", builtins.ErrOperand}, // not expanded
		{"time.date", `[17091648e11]`, "[2024,2,29]", nil},
		{"time.date", `["x"]`, "", builtins.ErrOperand},
		{"time.date", `[[1, "` + strings.Repeat("a", 100) + `"]]`, "", builtins.ErrLimit},
		{"time.clock", `[[1709164800000000000, "Asia/Kolkata"]]`, "[5,30,0]", nil},
		{"time.weekday", `[1709164800000000000]`, `"Thursday"`, nil},
		{"time.format", `[0]`, `"1970-01-01T00:00:00Z"`, nil},
		{"time.format", `[[0, "UTC", "2006-01-02"]]`, `"1970-01-01"`, nil},
		{"time.add_date", `[1709164800000000000, 1, 0, 0]`, "1740787200000000000", nil},
		{"time.add_date", `[0, 1000, 0, 0]`, "", errAny},
		{"time.diff", `[1709164800000000000, 0]`, "[54,1,28,0,0,0]", nil},
		{"crypto.md5", `["abc"]`, `"900150983cd24fb0d6963f7d28e17f72"`, nil},
		{"crypto.sha256", `[""]`, `"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"`, nil},
		{"crypto.hmac.sha256", `["msg", "key"]`, `"2d93cbc1be167bcb1637a4a23cbff01a7878f0c50ee833954ea5221bb1b8c628"`, nil},
		{"crypto.hmac.equal", `["a", "a"]`, "true", nil},
		{"crypto.hmac.equal", `["a", 1]`, "", builtins.ErrOperand},
		{"hex.encode", `["é"]`, `"c3a9"`, nil},
		{"hex.decode", `["c3a9"]`, `"é"`, nil},
		{"hex.decode", `["zz"]`, "", errAny},
		{"base64url.encode_no_pad", `["ab?"]`, `"YWI_"`, nil},
		{"urlquery.encode", `["a b&c"]`, `"a+b%26c"`, nil},
		{"urlquery.decode", `["%zz"]`, "", errAny},
		{"urlquery.encode_object", `[{"b":["2","1"],"a":"x y"}]`, `"a=x+y\u0026b=2\u0026b=1"`, nil},
		{"urlquery.encode_object", `[{"a":1}]`, "", builtins.ErrOperand},
		{"urlquery.decode_object", `["a=1&a=2&b"]`, `{"a":["1","2"],"b":[""]}`, nil},
		{"io.jwt.decode", `["` + jwt + `"]`, `[{"alg":"HS256","typ":"JWT"},{"n":1,"sub":"alice"},"010203"]`, nil},
		{"io.jwt.decode", `["a.b"]`, "", errAny},
		{"io.jwt.decode", `["!!.e30.AQID"]`, "", errAny},
		{"io.jwt.decode", `["` + strings.Repeat("a", builtins.MaxToken) + `.."]`, "", builtins.ErrLimit},
		{"regex.find_n", `["a+", "baaab aa", -1]`, `["aaa","aa"]`, nil},
		{"regex.find_n", `["a+", "baaab aa", 1]`, `["aaa"]`, nil},
		{"regex.find_n", `["(", "x", 1]`, "", errAny},
		{"regex.find_n", `["` + strings.Repeat("a", builtins.MaxPattern+1) + `", "x", 1]`, "", builtins.ErrLimit},
		{"regex.split", `["[,;]", "a,b;c"]`, `["a","b","c"]`, nil},
		{"regex.replace", `["héllo", "l+", "L"]`, `"héLo"`, nil},
		{"regex.replace", `["ab", "(a)", "$1$1"]`, `"aab"`, nil},
		{"regex.replace", `["` + strings.Repeat("a", 4096) + `", "a", "` + strings.Repeat("b", 2048) + `"]`, "", builtins.ErrLimit},
		{"glob.quote_meta", `["*.{a,b}[x]?\\"]`, `"\\*.\\{a,b\\}\\[x\\]\\?\\\\"`, nil},
		{"sprintf", `["%d %v %s %.2f %v", [1, 1.0, "x", 2.5, true]]`, `"1 1 x 2.50 true"`, nil},
		{"sprintf", `["%d", [123456789012345678901234567890]]`, `"123456789012345678901234567890"`, nil},
		{"sprintf", `["%99999d", [1]]`, "", builtins.ErrLimit},
		{"sprintf", `["%*d", [1, 2]]`, "", builtins.ErrOperand},
		{"sprintf", `["%v", [[1]]]`, "", builtins.ErrOperand},
		{"indexof_n", `["aaa", "aa"]`, `[0,1]`, nil},
		{"indexof_n", `["éaéa", "a"]`, `[1,3]`, nil},
		{"indexof_n", `["a", ""]`, "", errAny},
		{"strings.count", `["cheese", "e"]`, `3`, nil},
		{"strings.any_prefix_match", `[["x", "foobar"], ["foo"]]`, `true`, nil},
		{"strings.any_suffix_match", `["foobar", "baz"]`, `false`, nil},
		{"strings.any_suffix_match", `["foobar", 1]`, "", builtins.ErrOperand},
		{"strings.count", `["x"]`, "", builtins.ErrOperand},
	}
	ctx := builtins.Context{Now: now, Regexps: builtins.NewRegexpCache(0, 0)}
	for _, tt := range tests {
		t.Run(tt.name+tt.args[:min(len(tt.args), 40)], func(t *testing.T) {
			fn, ok := builtins.Lookup(tt.name)
			if !ok {
				t.Fatalf("%s not provided", tt.name)
			}
			got, err := fn(ctx, decode(t, tt.args))
			if tt.err != nil {
				var be *builtins.Error
				if err == nil || !errors.As(err, &be) || be.Builtin != tt.name {
					t.Fatalf("got %v, %v; want a *builtins.Error of %s", got, err, tt.name)
				}
				if !errors.Is(tt.err, errAny) && !errors.Is(err, tt.err) {
					t.Fatalf("got %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := encode(t, got); s != tt.want {
				t.Fatalf("got %s, want %s", s, tt.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestLookupUnknown(t *testing.T) {
	for _, name := range []string{"http.send", "net.lookup_ip_addr", "opa.runtime", "rand.intn", "nope"} {
		if _, ok := builtins.Lookup(name); ok {
			t.Errorf("%s is provided", name)
		}
	}
	if n := len(builtins.Provided()); n != 35 {
		t.Errorf("%d builtins provided, the package doc lists 35", n)
	}
}

func TestNowIsTheEvaluations(t *testing.T) {
	fn, _ := builtins.Lookup("time.now_ns")
	ctx := builtins.Context{Now: now}
	a, _ := fn(ctx, nil)
	b, _ := fn(ctx, nil)
	if a != b || a != now.UnixNano() {
		t.Fatalf("got %v and %v, want %d twice", a, b, now.UnixNano())
	}
}

func TestRegexpCacheBounds(t *testing.T) {
	c := builtins.NewRegexpCache(3, 10)
	fn, _ := builtins.Lookup("regex.split")
	ctx := builtins.Context{Regexps: c}
	for _, p := range []string{"a", "b", "c", "d"} {
		if _, err := fn(ctx, []any{p, "xax"}); err != nil {
			t.Fatal(err)
		}
	}
	if n, b := c.Len(); n != 3 || b != 3 {
		t.Fatalf("%d entries, %d bytes; want 3, 3", n, b)
	}
	if _, err := fn(ctx, []any{"aaaaaaaa", "x"}); err != nil {
		t.Fatal(err)
	}
	if n, b := c.Len(); b > 10 || n > 3 {
		t.Fatalf("%d entries, %d bytes; want at most 3, 10", n, b)
	}
	if _, err := fn(ctx, []any{"aaaaaaaaaaaa", "x"}); err != nil { // larger than the cache
		t.Fatal(err)
	}
	if _, b := c.Len(); b > 10 {
		t.Fatalf("%d bytes, want at most 10", b)
	}
}

package opa

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/wasmvisor/wasmvisor/sandbox/opa/builtins"
)

// oracleStrings are string operands tried on every builtin taking strings: unicode,
// empty, padding, separators, invalid encodings.
var oracleStrings = []string{
	"", "a", "abc", "héllo wörld", "日本語", "a b&c=d", "%zz", "%41%42", "a+b", "YWJj", "YWJ", "Y",
	"c3a9", "zz", "0", "aaa", "a,b;c", "*.{a,b}[x]?\\", "\x00\xff", "🙂🙂",
}

// oracleTimes are nanosecond operands for time.*: the epoch, a leap day, around the
// year 2262 limit, negative, fractional, and the forms with a zone and a layout.
var oracleTimes = []string{
	`0`, `1709164800000000000`, `1709251199999999999`, `-1`, `-6795364578871345152`,
	`9223372036854775807`, `1.5`, `"x"`, `[]`, `[0]`, `[1709164800000000000, "America/New_York"]`,
	`[1709164800000000000, "Asia/Kolkata"]`, `[1709164800000000000, "Australia/Lord_Howe"]`,
	`[1711846800000000000, "Europe/Paris"]`, `[1709164800000000000, "Nowhere/Else"]`,
	`[1709164800000000000, ""]`, `[1709164800000000000, "UTC", "2006-01-02 Mon"]`,
	`[1709164800000000000, "UTC", "RFC1123"]`, `[1, 2]`, `9223372036854775808`, `17091648e11`, `1.0`,
}

// oracleCases are the operand lists (JSON arrays) tried on each builtin, besides those
// oracleStrings gives.
func oracleCases() map[string][]string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var ones, twos []string
	for _, s := range oracleStrings {
		ones = append(ones, "["+q(s)+"]")
		for _, t := range []string{"", "a", "é", "b"} {
			twos = append(twos, "["+q(s)+","+q(t)+"]")
		}
	}
	var times, timePairs, addDates []string
	for _, a := range oracleTimes {
		times = append(times, "["+a+"]")
		for _, b := range []string{`0`, `1709164800000000000`, `[951782400000000000, "Europe/Paris"]`, `1582934400000000000`} {
			timePairs = append(timePairs, "["+a+","+b+"]")
		}
		for _, d := range []string{`1,0,0`, `0,1,1`, `-1,-1,-1`, `0,12,0`, `400,0,0`, `1.5,0,0`} {
			addDates = append(addDates, "["+a+","+d+"]")
		}
	}
	cases := map[string][]string{
		"time.now_ns": {`[]`},
		"time.parse_ns": {
			`["2006-01-02", "2024-02-29"]`, `["2006-01-02", "2023-02-29"]`, `["RFC3339", "2024-02-29T10:00:00+05:30"]`,
			`["RFC822Z", "02 Jan 06 15:04 -0700"]`, `["Jan 2 2006 MST", "Feb 3 2020 PST"]`, `["2006", "3000"]`,
			`["2006", 1]`, `[1, "x"]`,
		},
		"time.parse_rfc3339_ns": {
			`["2024-02-29T00:00:00Z"]`, `["2024-02-30T00:00:00Z"]`, `["2024-02-29T23:59:60Z"]`,
			`["2262-04-11T23:47:16.854775807Z"]`, `["2262-04-11T23:47:16.854775808Z"]`, `["1677-09-21T00:12:43.145224192Z"]`,
			`["2024-02-29T00:00:00.123456789+14:00"]`, `["x"]`, `[1]`,
		},
		"time.parse_duration_ns": {
			`["1h30m"]`, `["1.5d"]`, `["-1w2h"]`, `["1y"]`, `["0"]`, `[""]`, `["x"]`, `["1d1d"]`, `["+2.5w"]`,
			`["300ms"]`, `["1µs"]`, `["9999999h"]`, `["1.5"]`, `["d"]`, `["-"]`, `["1e3d"]`, `[1]`,
		},
		"time.date": times, "time.clock": times, "time.weekday": times, "time.format": times,
		"time.diff": timePairs, "time.add_date": addDates,
		"crypto.md5": ones, "crypto.sha1": ones, "crypto.sha256": ones,
		"crypto.hmac.md5": twos, "crypto.hmac.sha1": twos, "crypto.hmac.sha256": twos, "crypto.hmac.sha512": twos,
		"crypto.hmac.equal": twos,
		"hex.encode":        ones, "hex.decode": ones, "base64url.encode_no_pad": ones,
		"urlquery.encode": ones, "urlquery.decode": ones, "urlquery.decode_object": append(ones,
			`["a=1&a=2&b"]`, `["a=1;b=2"]`, `["%zz=1"]`, `["=1&&x=%41"]`),
		"urlquery.encode_object": {
			`[{}]`, `[{"a":"x y","b":["2","1"]}]`, `[{"é":"ü"}]`, `[{"a":1}]`, `[{"a":["x",1]}]`, `["x"]`, `[{"a":[]}]`,
		},
		"io.jwt.decode": append(ones, jwtCases()...),
		"regex.find_n": {
			`["a+", "baaab aa", -1]`, `["a+", "baaab aa", 1]`, `["a+", "baaab aa", 0]`, `["", "héllo", -1]`,
			`["(", "x", 1]`, `["\\pL+", "héllo wörld", -1]`, `["a*", "baaac", -1]`, `["a+", "b", 1.5]`, `["a", 1, 1]`,
		},
		"regex.split": {
			`["[,;]", "a,b;c"]`, `["", "abc"]`, `["x*", "axbxxc"]`, `["(", "a"]`, `["é", "aébéc"]`, `["a", ""]`,
		},
		"regex.replace": {
			`["héllo", "l+", "L"]`, `["ab", "(a)", "$1$1"]`, `["abc", "", "-"]`, `["abc", "x*", "-"]`, `["abc", "(", "x"]`,
			`["abcabc", "(?P<n>b)", "[${n}]"]`, `["aaa", "a*", "b"]`, `["abc", "^", "X"]`, `["a.b", "\\.", "$$"]`, `["x", "x", "$2"]`,
		},
		"glob.quote_meta": ones,
		"sprintf": {
			`["%d %v %s %.2f %v", [1, 1.0, "x", 2.5, true]]`, `["%d", [123456789012345678901234567890]]`,
			`["%v %v", [null, false]]`, `["%x", ["héllo"]]`, `["%5.1f|%-5d|%05d", [3.14159, 42, -7]]`, `["%d", [1e3]]`,
			`["%v", [1e400]]`, `["%s", []]`, `["", [1]]`, `["%q", ["a\"b"]]`, `["%e", [0.000001]]`, `["%v", [-0]]`,
			`["%d%%", [50]]`, `["%08.3f", [-3.5]]`, `[1, []]`, `["%v", 1]`,
		},
		"indexof_n":     append(twos, `["aaa", "aa"]`, `["éaéa", "a"]`, `["日本語日本", "本"]`),
		"strings.count": append(twos, `["cheese", "e"]`, `["five", ""]`, `["日本日本", "日"]`),
		"strings.any_prefix_match": {
			`["foobar", "foo"]`, `[["x", "foobar"], ["foo"]]`, `[[], ["a"]]`, `["a", []]`, `["", ""]`, `["a", 1]`, `[1, "a"]`, `[["a", 1], "a"]`,
		},
		"strings.any_suffix_match": {
			`["foobar", "bar"]`, `[["x", "foobar"], ["baz", "r"]]`, `[[], []]`, `["é", "é"]`, `["a", 1]`,
		},
	}
	return cases
}

// jwtCases are tokens for io.jwt.decode: valid, unpadded, padded, nested, a JWE, bad parts.
func jwtCases() []string {
	enc := func(s string) string {
		return strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(b64(s)), "=")
	}
	tok := func(h, p, sig string) string {
		b, _ := json.Marshal(enc(h) + "." + enc(p) + "." + sig)
		return "[" + string(b) + "]"
	}
	inner := enc(`{"alg":"none"}`) + "." + enc(`{"sub":"bob"}`) + "."
	return []string{
		tok(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"alice","n":1,"f":1.50,"big":123456789012345678901}`, "AQID"),
		tok(`{"alg":"none"}`, `{}`, ""),
		tok(`{"alg":"none"}`, `[1]`, ""),
		tok(`{"alg":"none"}`, `not json`, ""),
		tok(`{"alg":"none","enc":"A128GCM"}`, `{}`, ""),
		tok(`{"alg":"none","cty":"JWT"}`, `"`+inner+`"`, ""),
		tok(`{"alg":"none"}`, `{"a":1} x`, ""),
		tok(`{"alg":"none"}`, `{"a":"é🙂"}`, "A"),
		tok(`[]`, `{}`, ""),
		`["a.b"]`, `["a.b.c.d"]`, `["!!.e30.AQID"]`, `["e30.!!.AQID"]`, `["e30.e30.!!"]`, `["e30=.e30=.AQID"]`, `[".."]`,
	}
}

// TestBuiltinsAgainstOPA evaluates each builtin the host provides with OPA's own
// evaluator (strict builtin errors, a fixed clock) and with sandbox/opa/builtins on the
// same operands: the same value, or an error on both sides.
func TestBuiltinsAgainstOPA(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	cases := oracleCases()
	for _, name := range builtins.Provided() {
		if len(cases[name]) == 0 {
			t.Errorf("%s: no oracle cases", name)
		}
	}
	bctx := builtins.Context{Now: now, Regexps: builtins.NewRegexpCache(0, 0)}
	values := map[string]int{} // per builtin, the cases both answered with a value
	for name, list := range cases {
		fn, ok := builtins.Lookup(name)
		if !ok {
			t.Errorf("%s: not provided", name)
			continue
		}
		for _, argsJSON := range list {
			args := decodeArgs(t, argsJSON)
			ops := make([]string, len(args))
			for k := range args {
				ops[k] = fmt.Sprintf("input[%d]", k)
			}
			query := fmt.Sprintf("x := %s(%s)", name, strings.Join(ops, ", "))
			rs, opaErr := rego.New(rego.Query(query), rego.Input(args), rego.StrictBuiltinErrors(true),
				rego.Time(now)).Eval(ctx)
			var want any
			if opaErr == nil {
				if len(rs) != 1 {
					opaErr = fmt.Errorf("%d results", len(rs))
				} else {
					want = rs[0].Bindings["x"]
				}
			}
			got, err := fn(bctx, args)
			switch {
			case opaErr != nil && err != nil:
			case opaErr != nil:
				t.Errorf("%s%s: OPA fails (%v), the host answers %s", name, argsJSON, opaErr, canon(t, got))
			case err != nil:
				t.Errorf("%s%s: OPA answers %s, the host fails: %v", name, argsJSON, canon(t, want), err)
			default:
				if g, w := canon(t, got), canon(t, want); !reflect.DeepEqual(g, w) {
					t.Errorf("%s%s: OPA answers %v, the host %v", name, argsJSON, w, g)
				}
				values[name]++
			}
		}
	}
	for name := range cases {
		if values[name] == 0 {
			t.Errorf("%s: no case answered with a value on both sides", name)
		}
	}
}

func decodeArgs(t *testing.T, s string) []any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v []any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

// canon is v through JSON, numbers as json.Number, for a comparison of values.
func canon(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var out any
	if err := d.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

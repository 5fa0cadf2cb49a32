package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

// refConfigs are the configs of the differential tests.
var refConfigs = []map[string]string{
	{},
	ordersConfig,
	{"mode": "monitor", "routes": "GET /, POST /a*, /b/*", "decision_header": "X-V&rdict", "required_headers": "k,x-a",
		"body.routes": "*", "body.required": "a.b, a", "body.type.a": "object", "body.type.a.b.c": "integer",
		"body.min.s": "2", "body.max.s": "3", "body.pattern.s": "^[é-ï]+$", "body.enum.e": "x,é,<&>", "body.max.n": "1e300",
		"body.min.a.b.c": "-5", "body.type.z": "null", "body.type.l": "boolean"},
	{"routes": "", "decision_header": "", "max_body_bytes": "0", "body.routes": "PUT /*", "body.type.v": "number", "body.min.v": "0.5"},
}

func deep(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }

// refInputs are validate inputs, valid and not: those of policy_test.go and more.
var refInputs = []string{
	`{"method":"POST","path":"/api/orders","headers":{"Content-Type":"application/json","X-Request-Id":"r-1"},"body_json":{"customer_id":"c-42","items":[{"sku":"A1","qty":2}],"currency":"EUR","total":19.9}}`,
	`{"method":"post","path":"/api/orders?dry=1","headers":{"content-type":"a","x-request-id":"r"},"body":"{\"customer_id\":\"c-1\",\"items\":[1]}"}`,
	`{"method":"GET","path":"/api/orders/7?x=1","headers":{"content-type":"text/plain","x-request-id":"r-3"}}`,
	`{"method":"PUT","path":"/admin","headers":{"content-type":"text/plain"},"body_size":4096}`,
	`{"method":"POST","path":"/api/orders","headers":{"content-type":"  ","x-request-id":null},"body_json":{"customer_id":5,"items":[],"currency":"GBP","total":-1,"customer":{"vip":"yes"}}}`,
	`{"method":"POST","path":"/api/orders","body_json":{"customer_id":"x","items":[1,2,3,4],"total":1e400,"currency":null}}`,
	`{"method":"POST","path":"/api/orders","body_json":[1,2]}`,
	`{"method":"POST","path":"/api/orders","body_json":-12.5e3}`,
	`{"method":"POST","path":"/api/orders","body_json":"text"}`,
	`{"method":"POST","path":"/api/orders","body":"{\"customer_id\": \"c-1\", }"}`,
	`{"method":"POST","path":"/api/orders","body":"{} {}"}`,
	`{"method":"POST","path":"/api/orders","body":"{} x"}`,
	`{"method":"POST","path":"/api/orders","body":" \u00a0 "}`,
	`{"method":"POST","path":"/api/orders","body":"` + strings.ReplaceAll(deep(200), `"`, `\"`) + `"}`,
	`{"method":"POST","path":"/api/orders","body_json":` + deep(100) + `}`,
	`{"method":"POST","path":"/api/orders"}`,
	`{"method":"POST","path":"/a","headers":{"K":"1","x-A":"2"},"body_json":{"a":{"b":{"c":3}},"s":"éé","e":"é","n":2,"z":null,"l":true}}`,
	`{"method":"POST","path":"/a","headers":{"\u212a":"1"},"body_json":{"a":{"b":{"c":3.5}},"a":{"x":1},"s":"ÿ","e":"<&>","n":1e301,"z":0,"l":null}}`,
	`{"method":"POST","path":"/ab","body_json":{"a":[1],"s":["a","b","c","d"],"e":1,"a":{"b":{"c":-9,"c":-4}}}}`,
	`{"method":"POST","path":"/ab","body_json":{"a":{"b":7},"s":"a\u0000b","e":"x","s":"abc"}}`,
	`{"method":"POST","path":"/ab","body_json":{"a":{"b":{"c":9223372036854775808}},"s":"\ud800x"}}`,
	`{"method":"PUT","path":"/b","body_json":{"v":0.25}}`,
	`{"method":"PUT","path":"/b/c","body":"{\"v\":\"1\"}","body_size":0}`,
	`{"method":"gét","path":"/b/<x>&\"q\"","headers":null}`,
	`{"method":"DELETE","path":"/","headers":{"K":"a"},"headers":{"x-a":"b"}}`,
	`{"method":"DELETE","path":"/","headers":{"K":"a"},"headers":null}`,
	`{"method":"GET","path":"/","method":null,"path":null,"body":"x","body":null}`,
	`{"method":"GET","path":"/","body_json":{},"body_json":null}`,
	`{"method":"GET","path":"/","body":"","body_json":null,"body_size":5,"body_size":null}`,
	`{"method":"GET","path":"/","body_json" :  [ 1 , 2 ]  }`,
	`{"method":"GET","path":"/","body_size":-0}`,
	`{"method":`,
	`"GET /"`,
	`{"method":"GET","path":"/","header":{}}`,
	`{"method":"GET","path":"/"} x`,
	`{"path":"/"}`,
	`{"method":"GET","path":"api"}`,
	`{"method":"GET","path":"/","body":"{}","body_json":{}}`,
	`{"method":"GET","path":"/","body":"x","body_json":null}`,
	`{"method":"GET","path":"/","body_size":-1}`,
	`{"method":"GET","path":"/","body_size":1.5}`,
	`{"method":"GET","path":"/","headers":{"a":1}}`,
	`{"Method":"GET","path":"/"}`,
	``, `null`, `{}`, `[]`,
}

// checkAgainstReference decides input under cfg with the fast path and with the reference
// (encoding/json, the policy as it was): when the fast path accepts the input, the reference
// must too and give the same output and event bytes. The fast path may refuse what the
// reference took only for keys that differ in case (encoding/json matches keys
// case-insensitively), which strict says is not expected here. It returns whether the fast
// path accepted the input.
func checkAgainstReference(t *testing.T, cfg map[string]string, input []byte, strict bool) bool {
	t.Helper()
	p, err := ParsePolicy(sdk.NewConfigView(cfg))
	if err != nil {
		t.Fatalf("config %v: %v", cfg, err)
	}
	var req Request
	derr := DecodeRequest(input, &req)
	rreq, rerr := refDecodeRequest(input)
	if derr != nil {
		if rerr == nil && strict {
			t.Fatalf("%q: refused (%v), the reference accepted it", input, derr)
		}
		return false
	}
	if rerr != nil {
		t.Fatalf("%q: accepted, the reference refused it: %v", input, rerr)
	}
	if foldedTwice(req.Headers) {
		return true // the reference's answer depends on its map's order: nothing to compare
	}
	out, d := p.Evaluate(nil, &req, &Scratch{})
	rd := p.refEvaluate(rreq)
	want, _ := json.Marshal(rd)
	if !bytes.Equal(out, want) || d.Allow != rd.Allow || d.Status != rd.Status {
		t.Fatalf("config %v, input %q:\ngot       %s (allow %v, status %d)\nreference %s", cfg, input, out, d.Allow, d.Status, want)
	}
	ev := appendEvent(nil, &req, d, out[d.reasonsStart:d.reasonsEnd])
	wantEv, _ := json.Marshal(refDecisionEvent{Method: rreq.Method, Path: rreq.Path, Allow: rd.Allow, Status: rd.Status, Reasons: rd.Reasons})
	if !bytes.Equal(ev, wantEv) {
		t.Fatalf("input %q: event %s, reference %s", input, ev, wantEv)
	}
	return true
}

// foldedTwice reports whether two different header names fold to the same lower-case name:
// the reference (a map, folded in its random order) keeps either value.
func foldedTwice(headers []Header) bool {
	seen := map[string]string{}
	for _, h := range headers {
		k := strings.ToLower(string(h.Name))
		if n, ok := seen[k]; ok && n != string(h.Name) {
			return true
		}
		seen[k] = string(h.Name)
	}
	return false
}

// refDecisionEvent is the reference payload of a "decision" event.
type refDecisionEvent struct {
	Method  string   `json:"method"`
	Path    string   `json:"path"`
	Allow   bool     `json:"allow"`
	Status  int      `json:"status,omitempty"`
	Reasons []string `json:"reasons"`
}

func TestValidateMatchesReference(t *testing.T) {
	accepted := 0
	for _, cfg := range refConfigs {
		for _, in := range refInputs {
			if checkAgainstReference(t, cfg, []byte(in), !strings.HasPrefix(in, `{"Method"`)) {
				accepted++
			}
		}
	}
	if want := 31 * len(refConfigs); accepted != want {
		t.Fatalf("%d decisions compared, want %d", accepted, want)
	}
}

func FuzzValidateMatchesReference(f *testing.F) {
	for i, in := range refInputs {
		f.Add(uint8(i), []byte(in))
	}
	f.Fuzz(func(t *testing.T, cfg uint8, input []byte) {
		checkAgainstReference(t, refConfigs[int(cfg)%len(refConfigs)], input, false)
	})
}

// The handler's decision allocates nothing for requests with an ASCII method and a valid JSON
// body or none, once the event ring has gone round (its slots' buffers are reused): the
// output is built in one buffer reused from call to call. A string with escapes is the
// exception: the scanner decodes it into new memory (refInputs[1]'s body).
func TestValidateAllocations(t *testing.T) {
	t.Cleanup(func() { policy = mustPolicy(sdk.ConfigView{}) })
	for i, cfg := range refConfigs[:3] {
		policy = mustPolicy(sdk.NewConfigView(cfg))
		for _, in := range append([]string{refInputs[0], `{"method":"put","path":"/x","body":"[1, 2]"}`}, refInputs[2:5]...) {
			input := []byte(in)
			for range sdk.DefaultEventCapacity {
				if _, err := validate(input); err != nil {
					t.Fatal(err)
				}
			}
			if n := testing.AllocsPerRun(50, func() { _, _ = validate(input) }); n > 0 {
				t.Errorf("config %d, %s: %v allocations per decision, want 0", i, in, n)
			}
		}
	}
}

// A request with many headers or a long method does not leave its memory to the next calls.
func TestValidateDropsHugeBuffers(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"method":"` + strings.Repeat("a", 5000) + `","path":"/","headers":{`)
	for i := range 2000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"h` + strings.Repeat("x", i%7) + `":"v"`)
	}
	b.WriteString(`}}`)
	if _, err := validate([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	if cap(req.Headers) != 0 || cap(req.upper) != 0 {
		t.Fatalf("kept %d headers' and %d bytes' capacity", cap(req.Headers), cap(req.upper))
	}
	if _, err := validate([]byte(refInputs[2])); err != nil || len(req.Headers) != 2 {
		t.Fatalf("next call: %v, %d headers", err, len(req.Headers))
	}
}

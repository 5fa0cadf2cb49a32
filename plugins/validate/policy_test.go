package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

var ordersConfig = map[string]string{
	"routes":                   "GET /api/*, POST /api/orders, DELETE /api/orders/*",
	"required_headers":         "content-type, X-Request-Id",
	"max_body_bytes":           "1024",
	"body.routes":              "POST /api/orders",
	"body.required":            "customer_id,items",
	"body.type.items":          "array",
	"body.min.items":           "1",
	"body.max.items":           "3",
	"body.type.customer_id":    "string",
	"body.pattern.customer_id": "^c-[0-9]+$",
	"body.enum.currency":       "EUR, USD",
	"body.type.total":          "number",
	"body.min.total":           "0",
	"body.type.customer.vip":   "boolean",
}

func decode(t *testing.T, in string) *Request {
	t.Helper()
	var r Request
	if err := DecodeRequest([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// evaluate is p's decision on req as the handler writes it, read back.
func evaluate(t *testing.T, p *Policy, req *Request) refDecision {
	t.Helper()
	out, _ := p.Evaluate(nil, req, &Scratch{})
	var d refDecision
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	return d
}

const okHeaders = `"headers":{"Content-Type":"application/json","x-request-id":"r1"}`

func TestEvaluate(t *testing.T) {
	def := mustPolicy(sdk.ConfigView{})
	orders := mustPolicy(sdk.NewConfigView(ordersConfig))
	cfg := map[string]string{"mode": "monitor", "decision_header": ""}
	for k, v := range ordersConfig {
		cfg[k] = v
	}
	monitor := mustPolicy(sdk.NewConfigView(cfg))
	for _, tc := range []struct {
		name    string
		p       *Policy
		in      string
		allow   bool
		status  int
		reasons []string
		header  string
	}{
		{"default allows anything", def, `{"method":"DELETE","path":"/x/y"}`, true, 0,
			[]string{`route "*" allows DELETE /x/y`}, "allow"},
		{"default body limit", def, `{"method":"PUT","path":"/x","body_size":1048577}`, false, 413,
			[]string{"body of 1048577 bytes exceeds the maximum of 1048576"}, "deny"},
		{"valid order", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_json":{"customer_id":"c-42","items":[{"sku":"a"}],"currency":"EUR","total":12.5,"customer":{"vip":true}}}`,
			true, 0, []string{`route "POST /api/orders" allows POST /api/orders`}, "allow"},
		{"valid order as a string body", orders, `{"method":"POST","path":"/api/orders?x=1",` + okHeaders + `,"body":"{\"customer_id\":\"c-1\",\"items\":[1]}"}`,
			true, 0, []string{`route "POST /api/orders" allows POST /api/orders`}, "allow"},
		{"prefix route", orders, `{"method":"GET","path":"/api/orders/7",` + okHeaders + `}`,
			true, 0, []string{`route "GET /api/*" allows GET /api/orders/7`}, "allow"},
		{"prefix route matches its root", orders, `{"method":"GET","path":"/api",` + okHeaders + `}`,
			true, 0, []string{`route "GET /api/*" allows GET /api`}, "allow"},
		{"unknown path", orders, `{"method":"GET","path":"/admin",` + okHeaders + `}`, false, 403,
			[]string{"no route allows GET /admin"}, "deny"},
		{"method not allowed", orders, `{"method":"put","path":"/api/orders",` + okHeaders + `}`, false, 405,
			[]string{"method PUT is not allowed on /api/orders"}, "deny"},
		{"missing headers", orders, `{"method":"GET","path":"/api/x","headers":{"x-request-id":"  "}}`, false, 400,
			[]string{`required header "content-type" is missing`, `required header "x-request-id" is missing`}, "deny"},
		{"too large and no body", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_size":2048}`, false, 413,
			[]string{"body of 2048 bytes exceeds the maximum of 1024", "body is empty, want a JSON object"}, "deny"},
		{"not JSON", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body":"customer=1"}`, false, 400,
			[]string{"body is not valid JSON: invalid character 'c' looking for beginning of value"}, "deny"},
		{"trailing data in body", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body":"{} {}"}`, false, 400,
			[]string{"body is not valid JSON: data after the JSON value"}, "deny"},
		{"body not an object", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_json":[1]}`, false, 400,
			[]string{"body is array, want a JSON object"}, "deny"},
		{"missing fields", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_json":{}}`, false, 400,
			[]string{`body field "customer_id" is required`, `body field "items" is required`}, "deny"},
		{"wrong types", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_json":{"customer_id":7,"items":"x","total":"1","customer":{"vip":1}}}`, false, 400,
			[]string{`body field "customer.vip" is integer, want boolean`, `body field "customer_id" is integer, want string`,
				`body field "items" is string, want array`, `body field "total" is string, want number`}, "deny"},
		{"constraints", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_json":{"customer_id":"x-1","items":[1,2,3,4],"currency":"GBP","total":-1}}`, false, 400,
			[]string{`body field "currency" must be one of EUR, USD`, `body field "customer_id" does not match ^c-[0-9]+$`,
				`body field "items" has length 4, above the maximum 3`, `body field "total" is -1, below the minimum 0`}, "deny"},
		{"empty items", orders, `{"method":"POST","path":"/api/orders",` + okHeaders + `,"body_json":{"customer_id":"c-1","items":[]}}`, false, 400,
			[]string{`body field "items" has length 0, below the minimum 1`}, "deny"},
		{"body checks only on body routes", orders, `{"method":"DELETE","path":"/api/orders/1",` + okHeaders + `,"body":"junk"}`,
			true, 0, []string{`route "DELETE /api/orders/*" allows DELETE /api/orders/1`}, "allow"},
		{"monitor mode", monitor, `{"method":"GET","path":"/admin"}`, true, 0,
			[]string{"no route allows GET /admin", `required header "content-type" is missing`, `required header "x-request-id" is missing`,
				`allowed by config "mode" = "monitor"`}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := evaluate(t, tc.p, decode(t, tc.in))
			if d.Allow != tc.allow || d.Status != tc.status || strings.Join(d.Reasons, "|") != strings.Join(tc.reasons, "|") {
				t.Errorf("got allow=%v status=%d %q\nwant allow=%v status=%d %q", d.Allow, d.Status, d.Reasons, tc.allow, tc.status, tc.reasons)
			}
			if got := d.Mutations.Headers["x-policy-decision"]; got != tc.header {
				t.Errorf("decision header = %q, want %q", got, tc.header)
			}
		})
	}
}

func TestMonitorHeader(t *testing.T) {
	p := mustPolicy(sdk.NewConfigView(map[string]string{"mode": "monitor", "routes": "GET /", "decision_header": "X-Verdict"}))
	d := evaluate(t, p, decode(t, `{"method":"POST","path":"/"}`))
	if !d.Allow || d.Mutations.Headers["x-verdict"] != "monitor-deny" {
		t.Errorf("got %+v", d)
	}
}

func TestRoutePatterns(t *testing.T) {
	p := mustPolicy(sdk.NewConfigView(map[string]string{"routes": "GET /users/*/profile, /health, POST /a*"}))
	for path, want := range map[string]bool{
		"/users/1/profile": true, "/users/1/2/profile": false, "/users/profile": false,
		"/health": true, "/health/x": false, "/a": true, "/abc/d": true, "/b": false,
	} {
		method := "GET"
		if strings.HasPrefix(path, "/a") {
			method = "POST"
		}
		if got := evaluate(t, p, &Request{Method: []byte(method), Path: []byte(path)}).Allow; got != want {
			t.Errorf("%s %s: allow = %v, want %v", method, path, got, want)
		}
	}
	if !evaluate(t, p, &Request{Method: []byte("DELETE"), Path: []byte("/health")}).Allow {
		t.Error("a route without a method should match every method")
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]string
		want string
	}{
		{map[string]string{"route": "*"}, `unknown config key "route"`},
		{map[string]string{"routes": "GET /a,,POST /b"}, `config key "routes": empty item`},
		{map[string]string{"routes": "GET api"}, `config key "routes": bad route "GET api": the path must start with /`},
		{map[string]string{"routes": "GET /a /b"}, `bad route "GET /a /b": want METHOD PATH`},
		{map[string]string{"routes": "G(T /a"}, `bad route "G(T /a": bad method`},
		{map[string]string{"routes": "GET /[a"}, `bad route "GET /[a": syntax error in pattern`},
		{map[string]string{"body.routes": "x"}, `config key "body.routes"`},
		{map[string]string{"required_headers": "a b"}, `config key "required_headers": bad header name "a b"`},
		{map[string]string{"max_body_bytes": "-1"}, `config key "max_body_bytes": want a non-negative integer`},
		{map[string]string{"max_body_bytes": "1k"}, `config key "max_body_bytes": want a non-negative integer, got "1k"`},
		{map[string]string{"body.required": "a..b"}, `config key "body.required": bad field "a..b"`},
		{map[string]string{"body.type.x": "list"}, `config key "body.type.x": want one of string, number`},
		{map[string]string{"body.type.": "string"}, `config key "body.type.": bad field ""`},
		{map[string]string{"body.min.x": "one"}, `config key "body.min.x": want a number, got "one"`},
		{map[string]string{"body.max.x": "NaN"}, `config key "body.max.x": want a number`},
		{map[string]string{"body.min.x": "5", "body.max.x": "4"}, `config key "body.min.x": above "body.max.x"`},
		{map[string]string{"body.enum.x": " "}, `config key "body.enum.x": want at least one value`},
		{map[string]string{"body.pattern.x": "("}, `config key "body.pattern.x": error parsing regexp`},
		{map[string]string{"decision_header": "x y"}, `config key "decision_header": bad header name`},
		{map[string]string{"mode": "audit"}, `config key "mode": want enforce or monitor, got "audit"`},
	} {
		_, err := ParsePolicy(sdk.NewConfigView(tc.cfg))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestValidateHandler(t *testing.T) {
	t.Cleanup(func() { policy = mustPolicy(sdk.ConfigView{}) })
	for _, tc := range []struct {
		name, in string
		out      string
		invalid  string
	}{
		{name: "allow", in: `{"method":"GET","path":"/"}`,
			out: `{"allow":true,"reasons":["route \"*\" allows GET /"],"mutations":{"headers":{"x-policy-decision":"allow"}}}`},
		{name: "deny", in: `{"method":"POST","path":"/","body":"x","body_size":2000000}`,
			out: `{"allow":false,"status":413,"reasons":["body of 2000000 bytes exceeds the maximum of 1048576"],"mutations":{"headers":{"x-policy-decision":"deny"}}}`},
		{name: "malformed JSON", in: `{"method":`, invalid: "malformed request: json: unexpected end of input, want string at offset 10"},
		{name: "not an object", in: `"GET /"`, invalid: `malformed request: json: unexpected '"', want object at offset 0`},
		{name: "unknown field", in: `{"method":"GET","path":"/","header":{}}`, invalid: `malformed request: json: unknown field "header"`},
		{name: "trailing data", in: `{"method":"GET","path":"/"} x`, invalid: "malformed request: json: data after the JSON value at offset 28"},
		{name: "no method", in: `{"path":"/"}`, invalid: `"method" is missing or empty`},
		{name: "relative path", in: `{"method":"GET","path":"api"}`, invalid: `"path" must start with /`},
		{name: "both bodies", in: `{"method":"GET","path":"/","body":"{}","body_json":{}}`, invalid: `give "body" or "body_json", not both`},
		{name: "negative size", in: `{"method":"GET","path":"/","body_size":-1}`, invalid: `"body_size" is negative`},
		{name: "header not a string", in: `{"method":"GET","path":"/","headers":{"a":1}}`, invalid: "malformed request"},
		{name: "empty input", in: ``, invalid: "malformed request: json: unexpected end of input, want object at offset 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := validate([]byte(tc.in))
			if tc.invalid != "" {
				if err == nil || !strings.Contains(err.Error(), tc.invalid) || errors.Unwrap(err) == nil {
					t.Errorf("err = %v, want an InvalidInput containing %q", err, tc.invalid)
				}
				return
			}
			if err != nil || string(out) != tc.out {
				t.Errorf("got %s %v\nwant %s", out, err, tc.out)
			}
			var d refDecision
			if err := json.Unmarshal(out, &d); err != nil || len(d.Reasons) == 0 {
				t.Errorf("output %s: %v", out, err)
			}
		})
	}
}

func TestConfigChangeTakesEffect(t *testing.T) {
	t.Cleanup(func() { policy = mustPolicy(sdk.ConfigView{}) })
	in := []byte(`{"method":"DELETE","path":"/api/orders/1"}`)
	if out, _ := validate(in); !strings.Contains(string(out), `"allow":true`) {
		t.Fatalf("before: %s", out)
	}
	if err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"routes": "GET /api/*"})); err != nil {
		t.Fatal(err)
	}
	if out, _ := validate(in); !strings.Contains(string(out), `"status":405`) {
		t.Fatalf("after: %s", out)
	}
	if err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"routes": ""})); err != nil {
		t.Fatal(err) // an empty allow-list is valid: it denies everything
	}
	if out, _ := validate(in); !strings.Contains(string(out), `"status":403`) {
		t.Fatalf("empty routes: %s", out)
	}
	err := applyConfig(sdk.ConfigView{}, sdk.NewConfigView(map[string]string{"max_body_bytes": "lots"}))
	if err == nil || !strings.Contains(err.Error(), `config key "max_body_bytes"`) {
		t.Fatalf("bad config accepted: %v", err)
	}
	if out, _ := validate(in); !strings.Contains(string(out), `"status":403`) {
		t.Fatalf("after rejected config: %s", out)
	}
}

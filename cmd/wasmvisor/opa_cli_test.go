package main

import (
	"strings"
	"testing"
)

// Rego policies compiled by opa build -t wasm (plugins/rego): the command loads them with the
// OPA format.
func TestOPACall(t *testing.T) {
	p := func(name string) string { return "../../plugins/rego/" + name + "/policy.wasm" }
	data := `data={"roles":{"bob":["w"]},"grants":{"w":["write"]}}`
	for _, c := range []struct {
		name       string
		args       []string
		code       int
		out, inErr string
	}{
		{"allowed by data", []string{"call", p("example"), "example/allow", "--input", `{"user":"bob","action":"write"}`, "--config", data}, 0, `[{"result":true}]`, ""},
		{"no data", []string{"call", p("example"), "example/allow", "--input", `{"user":"bob","action":"write"}`}, 0, `[{"result":false}]`, ""},
		{"bad data", []string{"call", p("example"), "example/allow", "--input", `{}`, "--config", "data={"}, 1, "", "not valid JSON"},
		{"bad input", []string{"call", p("example"), "example/allow", "--input", `{"user":`}, 3, "", "not valid JSON"},
		{"unknown entrypoint", []string{"call", p("example"), "example/nope", "--input", `{}`}, 1, "", "unknown handler"},
		{"deadline", []string{"call", p("spin"), "spin/never", "--input", `{}`, "--timeout", "30ms"}, 4, "", "call deadline exceeded (30ms)"},
		{"abort", []string{"call", p("spin"), "spin/conflict", "--input", `{"a":1,"b":1}`}, 4, "", "var assignment conflict"},
		{"builtin refused", []string{"call", p("httpsend"), "httpsend/status", "--input", `{}`}, 1, "", "builtins the host does not provide: http.send"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := cli(t, "", c.args...)
			if code != c.code || out != c.out || !strings.Contains(errOut, c.inErr) {
				t.Fatalf("code %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errOut, c.code, c.out, c.inErr)
			}
		})
	}
}

func TestOPAInspect(t *testing.T) {
	code, out, errOut := cli(t, "", "inspect", "../../plugins/rego/example/policy.wasm")
	if code != 0 {
		t.Fatalf("code %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"abi:       opa", "handlers:  example/allow, example/reasons", "env.opa_abort function", "problems:  none"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	code, out, _ = cli(t, "", "inspect", "../../plugins/rego/httpsend/policy.wasm")
	if code != 1 || !strings.Contains(out, "http.send") || !strings.Contains(out, "abi:       opa") {
		t.Fatalf("httpsend: code %d:\n%s", code, out)
	}
}

// TestOPATest runs a cases file against a policy: entrypoints as handlers, the data document
// pushed as config, a bad one refused with the last good one kept.
func TestOPATest(t *testing.T) {
	cases := writeCases(t, `
config: {data: '{"roles":{"ann":["r"]},"grants":{"r":["read"]}}'}
cases:
  - {name: allowed, handler: example/allow, input: '{"user":"ann","action":"read"}', output_json: [{result: true}]}
  - {name: denied, handler: example/allow, input: '{"user":"ann","action":"write"}', output_json: [{result: false}]}
  - name: data replaced, a bad document refused
    steps:
      - {configure: {data: '{"roles":{"ann":["w"]},"grants":{"w":["write"]}}'}}
      - {handler: example/allow, input: '{"user":"ann","action":"write"}', output_json: [{result: true}]}
      - {configure: {data: '{"roles":'}, error: {kind: guest, status: config_rejected}}
      - {handler: example/allow, input: '{"user":"ann","action":"write"}', output_json: [{result: true}]}
`)
	code, out, errOut := runTestCmd(t, "../../plugins/rego/example/policy.wasm", cases)
	if code != 0 || !strings.Contains(out, "3 passed, 0 failed") {
		t.Fatalf("code %d\n%s%s", code, out, errOut)
	}
}

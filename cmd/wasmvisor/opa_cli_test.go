package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Rego policies compiled by opa build -t wasm (plugins/rego): the command loads them with the
// OPA format.
func TestOPACall(t *testing.T) {
	p := func(name string) string { return "../../plugins/rego/" + name + "/policy.wasm" }
	data := `data={"roles":{"bob":["w"]},"grants":{"w":["write"]}}`
	b := "../../plugins/rego/example/bundle.tar.gz"
	for _, c := range []struct {
		name       string
		args       []string
		code       int
		out, inErr string
	}{
		{"allowed by data", []string{"call", p("example"), "example/allow", "--input", `{"user":"bob","action":"write"}`, "--config", data}, 0, `[{"result":true}]`, ""},
		{"default handler: entrypoint 0", []string{"call", p("example"), "default", "--input", `{"user":"bob","action":"write"}`, "--config", data}, 0, `[{"result":true}]`, ""},
		{"no data", []string{"call", p("example"), "example/allow", "--input", `{"user":"bob","action":"write"}`}, 0, `[{"result":false}]`, ""},
		{"bad data", []string{"call", p("example"), "example/allow", "--input", `{}`, "--config", "data={"}, 1, "", "not valid JSON"},
		{"bad input", []string{"call", p("example"), "example/allow", "--input", `{"user":`}, 3, "", "not valid JSON"},
		{"unknown entrypoint", []string{"call", p("example"), "example/nope", "--input", `{}`}, 1, "", "unknown handler"},
		{"deadline", []string{"call", p("spin"), "spin/never", "--input", `{}`, "--timeout", "30ms"}, 4, "", "call deadline exceeded (30ms)"},
		{"abort", []string{"call", p("spin"), "spin/conflict", "--input", `{"a":1,"b":1}`}, 4, "", "var assignment conflict"},
		{"bundle, its data", []string{"call", b, "example/allow", "--input", `{"user":"bob","action":"write"}`}, 0, `[{"result":true}]`, ""},
		{"bundle, the config's data", []string{"call", b, "example/allow", "--input", `{"user":"bob","action":"write"}`, "--config", `data={"roles":{}}`}, 0, `[{"result":false}]`, ""},
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
	for _, want := range []string{"abi:       opa", "handlers:  default, example/allow, example/reasons", "builtins:  none", "env.opa_abort function", "problems:  none"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	code, out, errOut = cli(t, "", "inspect", "../../plugins/rego/example/bundle.tar.gz")
	if code != 0 {
		t.Fatalf("bundle: code %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"file:      ../../plugins/rego/example/bundle.tar.gz", "abi:       opa", "bundle:    module /policy.wasm, data document 73 bytes", "handlers:  default, example/allow, example/reasons", "problems:  none"} {
		if !strings.Contains(out, want) {
			t.Errorf("bundle: missing %q in:\n%s", want, out)
		}
	}
	code, out, _ = cli(t, "", "inspect", "../../plugins/rego/httpsend/policy.wasm")
	if code != 1 || !strings.Contains(out, "builtins:\n  http.send NOT provided by the host\nimports:") || !strings.Contains(out, "abi:       opa") ||
		!strings.Contains(out, "compile: opa: the policy needs builtins the host does not provide: http.send") {
		t.Fatalf("httpsend: code %d:\n%s", code, out)
	}
}

// TestOPAInspectBuiltins: inspect lists the builtins a policy needs from the host (those
// hostbuiltins.rego and httpsend.rego call that OPA does not compile into the module), each
// with whether the host provides it.
func TestOPAInspectBuiltins(t *testing.T) {
	type builtin struct {
		Name     string `json:"name"`
		Provided bool   `json:"provided"`
	}
	for _, c := range []struct {
		policy string
		code   int
		want   []builtin
	}{
		{"hostbuiltins", 0, func() []builtin {
			var bs []builtin
			for _, n := range []string{"base64url.encode_no_pad", "crypto.hmac.sha256", "crypto.md5", "crypto.sha256", "hex.decode",
				"hex.encode", "indexof_n", "io.jwt.decode", "regex.find_n", "regex.replace", "regex.split", "strings.any_prefix_match",
				"strings.count", "time.add_date", "time.date", "time.parse_rfc3339_ns", "time.weekday", "urlquery.decode",
				"urlquery.encode", "urlquery.encode_object"} {
				bs = append(bs, builtin{n, true})
			}
			return bs
		}()},
		{"httpsend", 1, []builtin{{"http.send", false}}},
		{"example", 0, nil},
	} {
		t.Run(c.policy, func(t *testing.T) {
			code, out, errOut := cli(t, "", "inspect", "--json", "../../plugins/rego/"+c.policy+"/policy.wasm")
			var r struct {
				ABI      string    `json:"abi"`
				Builtins []builtin `json:"builtins"`
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil || code != c.code || r.ABI != "opa" {
				t.Fatalf("code %d, %v:\n%s%s", code, err, out, errOut)
			}
			if !slices.Equal(r.Builtins, c.want) {
				t.Fatalf("builtins %v, want %v", r.Builtins, c.want)
			}
		})
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
	for _, p := range []string{"../../plugins/rego/example/policy.wasm", "../../plugins/rego/example/bundle.tar.gz"} {
		code, out, errOut := runTestCmd(t, p, cases)
		if code != 0 || !strings.Contains(out, "3 passed, 0 failed") {
			t.Fatalf("%s: code %d\n%s%s", p, code, out, errOut)
		}
	}
}

// A gzip'd file that is no OPA bundle is refused by name, by call and by inspect.
func TestOPABadBundle(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "../data.json", Typeflag: tar.TypeReg, Mode: 0o600, Size: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"call", p, "example/allow"}, {"inspect", p}} {
		code, out, errOut := cli(t, "", args...)
		if code != 1 || !strings.Contains(errOut, `opa: bundle: "../data.json": a path outside the bundle`) {
			t.Errorf("%s: code %d, stdout %q, stderr %q", args[0], code, out, errOut)
		}
	}
}

package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A Rego policy compiled by opa build -t wasm is served like any plugin: its entrypoint is
// the handler, the rest of the path, slashes included ("example/allow", or escaped,
// "example%2Fallow"), its data the config's data key.
func TestServeOPAPolicy(t *testing.T) {
	wasm, err := os.ReadFile("../../../../plugins/rego/example/policy.wasm")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "example.wasm")
	if err := os.WriteFile(p, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	_, base := newServer(t, `
plugins:
  - name: example
    wasm: `+p+`
    config:
      data: '{"roles":{"bob":["w"]},"grants":{"w":["write"]}}'
`)
	res, body := post(t, base+"/v1/plugins/example/call/example%2Fallow", []byte(`{"user":"bob","action":"write"}`))
	if res.StatusCode != 200 || string(body) != `[{"result":true}]` {
		t.Errorf("allowed: %d %s", res.StatusCode, body)
	}
	res, body = post(t, base+"/v1/plugins/example/call/example/allow", []byte(`{"user":"ann","action":"write"}`))
	if res.StatusCode != 200 || string(body) != `[{"result":false}]` {
		t.Errorf("denied: %d %s", res.StatusCode, body)
	}
}

// TestServeOPABundle: the bundle.tar.gz of opa build is a plugin's wasm as is, from the
// config file and by PUT; its data.json is the data document unless the config gives one.
func TestServeOPABundle(t *testing.T) {
	b, err := os.ReadFile("../../../../plugins/rego/example/bundle.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: example, wasm: "+p+"}\n", true)
	call := func(plugin, want string) {
		t.Helper()
		a := ts.do(t, "POST", "/v1/plugins/"+plugin+"/call/example%2Fallow", "", "", []byte(`{"user":"bob","action":"write"}`))
		if a.status != 200 || string(a.body) != want {
			t.Errorf("%s: %d %s, want %s", plugin, a.status, a.body, want)
		}
	}
	call("example", `[{"result":true}]`)
	if a := ts.do(t, "PUT", "/v1/plugins/put", testToken, "application/wasm", b); a.status != 201 {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	call("put", `[{"result":true}]`)
	if a := ts.do(t, "PUT", "/v1/plugins/put2?config.data=%7B%7D", testToken, "application/wasm", b); a.status != 201 {
		t.Fatalf("PUT with data: %d %s", a.status, a.body)
	}
	call("put2", `[{"result":false}]`)
	bad := append([]byte{}, b[:len(b)/2]...)
	if a := ts.do(t, "PUT", "/v1/plugins/bad", testToken, "application/wasm", bad); a.status < 400 || !strings.Contains(string(a.body), "opa: bundle") {
		t.Fatalf("PUT of a cut bundle: %d %s", a.status, a.body)
	}
}

// TestServeOPADecisions: the decisions of an OPA plugin are counted per entrypoint, the
// default handler's under entrypoint 0's, in the host's sums of guest counters.
func TestServeOPADecisions(t *testing.T) {
	b, err := os.ReadFile("../../../../plugins/rego/example/bundle.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := openServer(t, "plugins:\n  - {name: example, wasm: "+p+"}\n", true)
	for _, h := range []string{"example%2Fallow", "default", "example%2Freasons", "example%2Fallow"} {
		if a := ts.do(t, "POST", "/v1/plugins/example/call/"+h, "", "", []byte(`{"user":"bob","action":"write"}`)); a.status != 200 {
			t.Fatalf("%s: %d %s", h, a.status, a.body)
		}
	}
	body := string(ts.do(t, "GET", "/metrics", "", "", nil).body)
	for _, want := range []string{
		`wasmvisor_guest_metric_total{metric="opa_decisions_example_allow",plugin="example"} 3`,
		`wasmvisor_guest_metric_total{metric="opa_decisions_example_reasons",plugin="example"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in:\n%s", want, grepLines([]byte(body), "opa_decisions"))
		}
	}
}

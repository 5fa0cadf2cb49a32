package server

import (
	"os"
	"path/filepath"
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

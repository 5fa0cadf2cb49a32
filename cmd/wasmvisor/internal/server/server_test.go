package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, yaml string) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	ref, err := os.ReadFile("../../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ref.wasm"), ref, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(config.Input{Data: []byte(yaml), Dir: dir, Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	c.CacheDir = "off"
	ctx := context.Background()
	s, err := New(ctx, Options{Config: c, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return s, "http://" + ln.Addr().String()
}

type reply struct {
	StatusCode int
	Header     http.Header
}

func post(t *testing.T, url string, body []byte) (reply, []byte) {
	t.Helper()
	res, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return reply{res.StatusCode, res.Header}, b
}

// The failure policies: deny fails closed, allow and monitor answer a marked allow.
func TestFailurePolicies(t *testing.T) {
	_, base := newServer(t, `
plugins:
  - {name: deny, wasm: ref.wasm}
  - {name: allow, wasm: ref.wasm, failure_policy: allow}
  - {name: monitor, wasm: ref.wasm, failure_policy: monitor}
`)
	for _, c := range []struct {
		name   string
		status int
		header string
	}{{"deny", 502, ""}, {"allow", 200, "allow"}, {"monitor", 200, "monitor"}} {
		res, body := post(t, base+"/v1/plugins/"+c.name+"/call/trap", nil)
		if res.StatusCode != c.status || res.Header.Get(HeaderFailurePolicy) != c.header ||
			res.Header.Get(HeaderPluginError) != "trap" || !json.Valid(body) {
			t.Errorf("%s: %d %v %s", c.name, res.StatusCode, res.Header, body)
		}
		// The successor serves.
		if res, body := post(t, base+"/v1/plugins/"+c.name+"/call/echo", []byte("x")); res.StatusCode != 200 || string(body) != "x" {
			t.Errorf("%s after the crash: %d %q", c.name, res.StatusCode, body)
		}
	}
	// A guest error is an answer, not a failure: no policy applies.
	if res, body := post(t, base+"/v1/plugins/allow/call/fail", []byte("boom")); res.StatusCode != 422 {
		t.Errorf("guest error: %d %s", res.StatusCode, body)
	}
}

func TestGroup(t *testing.T) {
	var g Group
	stop := make(chan struct{})
	g.Add(func() error { <-stop; return nil }, func(error) { close(stop) })
	g.Add(func() error { return io.EOF }, func(error) {})
	if err := g.Run(); !errors.Is(err, io.EOF) {
		t.Fatalf("Run: %v", err)
	}
}

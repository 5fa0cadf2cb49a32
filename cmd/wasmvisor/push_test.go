package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/server"
)

// push PUTs the module and its settings to a node; the node's refusals are the command's
// error, one line with the API's code.
func TestPush(t *testing.T) {
	t.Parallel()
	const token = "push-test-admin-token"
	c, err := config.Parse(config.Input{Data: []byte("admin_token: " + token + "\ncache_dir: \"off\"\n"), Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Options{Config: c, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer func() {
		hs.Close()
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	ref := "../../plugins/reference/reference.wasm"
	code, out, stderr := cli(t, "", "push", ref, "--name", "ref", "--server", hs.URL, "--token", token,
		"--config", "k=v", "--instances", "2")
	if code != exitOK || !strings.Contains(out, `"name": "ref"`) || !strings.Contains(out, `"k": "v"`) {
		t.Fatalf("push: exit %d, %s %s", code, out, stderr)
	}
	code, _, stderr = cli(t, "", "push", ref, "--name", "ref", "--server", hs.URL, "--token", "wrong-token-wrong")
	if code != exitFailure || !strings.Contains(stderr, "unauthorized") {
		t.Fatalf("bad token: exit %d, %q", code, stderr)
	}
	code, _, _ = cli(t, "", "push", ref, "--server", hs.URL)
	if code != exitUsage {
		t.Fatalf("no --name: exit %d", code)
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clusterConfig is a lone cluster node: its file's plugin seeds the cluster.
const clusterConfig = `cache_dir: %q
cluster:
  node: e1
  cache_dir: %q
  %s
  bus: {topics: [news]}
plugins:
  - name: seeded
    wasm: ref.wasm
    config: {k: %s}
`

// TestE2ECluster runs `wasmvisor serve` as a cluster's node (cluster.embedded, alone): the
// file's plugin seeds the cluster, a file change reaches it at a reload, a PUT goes through
// it, GET /v1/cluster shows the node at the bucket's revision, SIGTERM stops the node and its
// NATS server, and a restart with NATS unreachable serves the cache.
func TestE2ECluster(t *testing.T) {
	t.Parallel()
	refWasm, err := os.ReadFile("../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "wasmvisor.yaml")
	writeAtomic(t, filepath.Join(dir, "ref.wasm"), refWasm)
	cache, state := compileCache(dir), filepath.Join(dir, "state")
	embedded := fmt.Sprintf("embedded: {listen: '127.0.0.1:0', store_dir: %q}", filepath.Join(dir, "js"))
	writeAtomic(t, cfgPath, fmt.Appendf(nil, clusterConfig, cache, state, embedded, "v1"))
	env := []string{"WASMVISOR_ADMIN_TOKEN=" + e2eToken}
	p := startServe(t, env, "--config", cfgPath)

	type cluster struct {
		Connected bool   `json:"connected"`
		Revision  uint64 `json:"revision"`
		Nodes     []struct {
			Node     string            `json:"node"`
			Revision uint64            `json:"revision"`
			Lag      uint64            `json:"lag"`
			Plugins  map[string]string `json:"plugins"`
		} `json:"nodes"`
	}
	status := func(p *proc) cluster {
		var c cluster
		if err := json.Unmarshal(p.must("GET", "/v1/cluster", "", "", nil, 200).body, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	atRevision := func(p *proc, rev uint64, plugin string) func() bool {
		return func() bool {
			c := status(p)
			return c.Connected && c.Revision == rev && len(c.Nodes) == 1 && c.Nodes[0].Lag == 0 &&
				c.Nodes[0].Plugins[plugin] != ""
		}
	}
	config := func(p *proc, name string) map[string]any {
		return p.must("GET", "/v1/plugins/"+name, e2eToken, "", nil, 200).json(t)["config"].(map[string]any)
	}
	eventually(t, 60*time.Second, "seeded, revision 1", atRevision(p, 1, "seeded"))
	// cluster.bus: the bridge of topic news is up on the node's connection.
	eventually(t, 30*time.Second, "the bus bridged", func() bool {
		return strings.Contains(p.logs(), "bus bridged across the cluster")
	})

	// A plugin changed in the file is written to the cluster at the reload.
	writeAtomic(t, cfgPath, fmt.Appendf(nil, clusterConfig, cache, state, embedded, "v2"))
	p.must("POST", "/v1/reload", e2eToken, "", nil, 200)
	eventually(t, 20*time.Second, "the file's change, revision 2", atRevision(p, 2, "seeded"))
	if k := config(p, "seeded")["k"]; k != "v2" {
		t.Fatalf("config k = %v", k)
	}
	// A PUT goes through the cluster.
	p.must("PUT", "/v1/plugins/pushed?config.a=b", e2eToken, "application/wasm", refWasm, 201)
	eventually(t, 20*time.Second, "the PUT, revision 3", atRevision(p, 3, "pushed"))
	p.stop()

	// NATS unreachable (a port nobody listens on): the node serves its cache.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	writeAtomic(t, cfgPath, fmt.Appendf(nil, clusterConfig, cache, state, "nats_url: nats://"+dead, "v2"))
	q := startServe(t, env, "--config", cfgPath)
	q.must("GET", "/readyz", "", "", nil, 200)
	if r := q.must("POST", "/v1/plugins/pushed/call/echo", "", "", []byte("cached"), 200); string(r.body) != "cached" {
		t.Fatalf("echo %q", r.body)
	}
	if c := status(q); c.Connected || len(c.Nodes) != 1 || c.Nodes[0].Revision != 3 {
		t.Fatalf("with NATS down: %+v", c)
	}
	if a := config(q, "pushed")["a"]; a != "b" {
		t.Fatalf("pushed's config from the cache: %v", a)
	}
	r := q.must("PUT", "/v1/plugins/pushed?config.a=c", e2eToken, "application/wasm", refWasm, 503)
	if code := r.errCode(t); code != "cluster_unavailable" {
		t.Fatalf("PUT with NATS down: %s", code)
	}
	q.stop()
}

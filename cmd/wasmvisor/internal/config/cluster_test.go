package config

import (
	"errors"
	"strings"
	"testing"
)

func TestCluster(t *testing.T) {
	c, err := parse(t, `
cluster:
  node: a
  cache_dir: state
  replicas: 3
  embedded: {listen: "127.0.0.1:4222", cluster_listen: "127.0.0.1:6222", store_dir: js,
             routes: ["nats://127.0.0.1:6223", "nats://127.0.0.1:6224"]}
`, "WASMVISOR_CLUSTER_MAX_PLUGINS=10")
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled || cl.Node != "a" || cl.Replicas != 3 || cl.MaxPlugins != 10 || len(cl.Embedded.Routes) != 2 ||
		cl.MaxSpecBytes != DefaultClusterMaxSpecBytes || cl.MaxModuleBytes != DefaultMaxModuleBytes ||
		!strings.HasSuffix(cl.CacheDir, "/state") || !strings.HasSuffix(cl.Embedded.StoreDir, "/js") ||
		cl.Embedded.Name != DefaultClusterName {
		t.Fatalf("cluster: %+v", cl)
	}
	// cluster.bus: the topics that cross nodes, natsbus's own keys.
	c, err = parse(t, "cluster: {nats_url: nats://x:4222, cache_dir: s, bus: {topics: [a, b], at_least_once: [b], ack_wait: 2s}}")
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Cluster.Bus; len(b.Topics) != 2 || len(b.AtLeastOnce) != 1 || b.AckWait.Seconds() != 2 {
		t.Fatalf("cluster.bus: %+v", b)
	}
	// Without the section: a single node.
	if c, err := parse(t, "listen: 127.0.0.1:1\n"); err != nil || c.Cluster.Enabled {
		t.Fatalf("no section: %+v %v", c.Cluster, err)
	}
	for _, tc := range []struct{ yaml, key string }{
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, embedded: {listen: '127.0.0.1:1', store_dir: j}}", "cluster.embedded"},
		{"cluster: {node: a}", "cluster"},
		{"cluster: {nats_url: 'http://x', cache_dir: s}", "cluster.nats_url"},
		{"cluster: {nats_url: nats://x:4222}", "cluster.cache_dir"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, node: '-a'}", "cluster.node"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, replicas: 7}", "cluster.replicas"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, max_spec_bytes: 10}", "cluster.max_spec_bytes"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, credentials: nope.creds}", "cluster.credentials"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, tls: {cert: c.pem}}", "cluster.tls.cert"},
		{"cluster: {cache_dir: s, embedded: {listen: '127.0.0.1:1'}}", "cluster.embedded.store_dir"},
		{"cluster: {cache_dir: s, embedded: {listen: '127.0.0.1:1', store_dir: j, routes: ['nats://h:1']}}", "cluster.embedded.cluster_listen"},
		{"cluster: {cache_dir: s, embedded: {listen: '127.0.0.1:1', cluster_listen: '127.0.0.1:2', store_dir: j, routes: ['h:1']}}", "cluster.embedded.routes[0]"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, bogus: 1}", "cluster.bogus"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s}\nplugins: [{name: b, wasm: p.wasm, capabilities: {env: {A: b}}}]", "plugins[0](b).capabilities"},
		{"cluster: {bus: {topics: [a]}}", "cluster"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, bus: {topics: [a], max_message_bytes: -1}}", "cluster.bus.max_message_bytes"},
		{"cluster: {nats_url: nats://x:4222, cache_dir: s, bus: {topics: [a], bogus: 1}}", "cluster.bus.bogus"},
	} {
		_, err := parse(t, tc.yaml)
		var es Errors
		if !errors.As(err, &es) || es[0].Key != tc.key {
			t.Errorf("%s: got %v, want an error on %s", tc.yaml, err, tc.key)
		}
	}
}

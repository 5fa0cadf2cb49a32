package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const refPath = "../../../../plugins/reference/reference.wasm"

// soloCluster is the config of a lone embedded node (cluster.embedded, no routes) keeping its
// cache and JetStream store under dir.
func soloCluster(dir string, maxPlugins int) config.Cluster {
	return config.Cluster{Enabled: true, Node: "solo", CacheDir: filepath.Join(dir, "cache"), Replicas: 1,
		MaxPlugins: maxPlugins, MaxSpecBytes: 4096, MaxModuleBytes: 1 << 20,
		Embedded: config.ClusterEmbedded{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), Name: "t"}}
}

// resolvePath reads a plugin's module from its path.
func resolvePath(p config.Plugin) ([]byte, error) { return os.ReadFile(p.Path) }

func validSpec(t *testing.T) Spec {
	t.Helper()
	b, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	return SpecOf(config.Plugin{Name: "ref", Instances: 1}, digestOf(b), int64(len(b)))
}

func TestSpecValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		field  string
		change func(*Spec)
	}{
		{"name", func(s *Spec) { s.Name = "-x" }},
		{"digest", func(s *Spec) { s.Digest = "md5:00" }},
		{"size", func(s *Spec) { s.Size = 1 << 40 }},
		{"instances", func(s *Spec) { s.Instances = 0 }},
		{"memory_pages", func(s *Spec) { s.MemoryPages = 70000 }},
		{"failure_policy", func(s *Spec) { s.FailurePolicy = "maybe" }},
		{"failure_answer", func(s *Spec) { s.FailureAnswer = json.RawMessage(`{}`) }}, // under deny
		{"config", func(s *Spec) { s.Config = map[string]string{"": "x"} }},
		{"restart", func(s *Spec) { s.Restart = "always" }},
	} {
		t.Run(c.field, func(t *testing.T) {
			s := validSpec(t)
			c.change(&s)
			err := s.Validate(64 << 20)
			var se *SpecError
			if !errors.As(err, &se) || se.Field != c.field || !errors.Is(err, ErrRefused) {
				t.Fatalf("got %v, want a SpecError on %s", err, c.field)
			}
		})
	}
	if err := validSpec(t).Validate(64 << 20); err != nil {
		t.Fatal(err)
	}
	// The bucket's bytes: unknown fields, a name under another key, too long.
	b, _ := json.Marshal(validSpec(t))
	for _, c := range []struct {
		key string
		b   []byte
	}{
		{"ref", []byte(`{"name":"ref","evil":1}`)},
		{"other", b},
		{"ref", []byte(strings.Repeat(" ", 2000))},
		{"ref", append(b, []byte(" {}")...)},
	} {
		if _, err := decodeSpec(c.key, c.b, 1024, 64<<20); !errors.Is(err, ErrRefused) {
			t.Errorf("decodeSpec(%q, %.40q): %v, want refused", c.key, c.b, err)
		}
	}
}

// applier records what a node asks of the server.
type applier struct {
	mu      sync.Mutex
	loaded  map[string]string // name: digest
	configs map[string]map[string]string
	applied chan string
	fail    map[string]bool
}

func newApplier() *applier {
	return &applier{loaded: map[string]string{}, configs: map[string]map[string]string{},
		applied: make(chan string, 64), fail: map[string]bool{}}
}

func (a *applier) ApplyCluster(_ context.Context, p config.Plugin, wasm []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail[p.Name] {
		return errors.New("the host will not load it")
	}
	a.loaded[p.Name] = digestOf(wasm)
	a.configs[p.Name] = p.Config
	a.applied <- p.Name
	return nil
}

func (a *applier) RemoveCluster(_ context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.loaded, name)
	a.applied <- "-" + name
	return nil
}

func (a *applier) digest(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loaded[name]
}

func wait(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %q within 30s", want)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 30s", what)
		}
		<-tick.C
	}
}

// An embedded lone node (cluster.embedded, no routes): the file's plugin seeds the bucket;
// what the bucket gets that is invalid is refused, counted and listed, and the last good
// version stays; a good change is applied; the cache holds what is served.
func TestEmbeddedNodeRefusesBadState(t *testing.T) {
	dir := t.TempDir()
	ref, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	c := soloCluster(dir, 3)
	seed := config.Plugin{Name: "seeded", Wasm: "ref.wasm", Path: refPath, Instances: 1, Restart: "permanent",
		FailurePolicy: config.FailDeny, Required: true}
	n, err := Open(Options{Config: c, Seed: []config.Plugin{seed}, Logger: zaptest.NewLogger(t),
		Resolve: resolvePath})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	a := newApplier()
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Restore(ctx, a); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "seeded")
	// The file changes while the cluster is out of reach: written once it answers.
	changed := seed
	changed.Config = map[string]string{"k": "file"}
	if err := n.FileChanged(ctx, []config.Plugin{changed}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- n.Run(ctx, a) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	}()
	eventually(t, "connected, seeded (1), the file's change written (2) and applied", func() bool {
		st := n.Status(ctx)
		a.mu.Lock()
		k := a.configs["seeded"]["k"]
		a.mu.Unlock()
		return st.Connected && st.Revision == 2 && st.Nodes[0].Revision == 2 && k == "file"
	})
	js, err := jetstream.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, PluginsBucket)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(name, part string) func() bool {
		return func() bool {
			st := n.Status(ctx)
			return len(st.Nodes) == 1 && strings.Contains(st.Nodes[0].Refused[name], part)
		}
	}
	// Not JSON, for the serving plugin: refused, the last good one stays.
	if _, err := kv.Put(ctx, "seeded", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not JSON refused", refused("seeded", "not a spec"))
	if a.digest("seeded") != digestOf(ref) {
		t.Fatal("the last good version was not kept")
	}
	// A spec whose module the object store does not have.
	s := validSpec(t)
	s.Name, s.Digest = "ghost", "sha256:"+strings.Repeat("ab", 32)
	b, _ := json.Marshal(s)
	if _, err := kv.Put(ctx, "ghost", b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a missing module refused", refused("ghost", "module"))
	// A module whose bytes do not match its digest.
	obj, err := js.ObjectStore(ctx, ModulesBucket)
	if err != nil {
		t.Fatal(err)
	}
	s.Name, s.Digest = "forged", "sha256:"+strings.Repeat("cd", 32)
	if _, err := obj.PutBytes(ctx, hexOf(s.Digest), ref); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(s)
	if _, err := kv.Put(ctx, "forged", b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a forged module refused", refused("forged", "do not match"))
	// A spec over max_spec_bytes: the bucket itself refuses it.
	if _, err := kv.Put(ctx, "big", make([]byte, 8192)); err == nil {
		t.Fatal("the bucket took a spec over max_spec_bytes")
	}
	// A module the host will not load: refused, counted as apply.
	a.mu.Lock()
	a.fail["broken"] = true
	a.mu.Unlock()
	if _, err := n.Write(ctx, config.Plugin{Name: "broken", Instances: 1}, ref); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an apply failure listed", refused("broken", "will not load"))
	// A good change is applied, and is what the cache holds.
	if _, err := n.Write(ctx, config.Plugin{Name: "seeded", Instances: 1, Config: map[string]string{"k": "v"}}, ref); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "seeded")
	eventually(t, "the refusal cleared", func() bool { return n.Status(ctx).Nodes[0].Refused["seeded"] == "" })
	cached, rev, err := n.readCache()
	if err != nil || cached["seeded"].Config["k"] != "v" || rev == 0 {
		t.Fatalf("cache: %v %d %v", cached, rev, err)
	}
	// max_plugins (3): the node serves seeded; two more fill it, the third is refused.
	for _, name := range []string{"p1", "p2"} {
		if _, err := n.Write(ctx, config.Plugin{Name: name, Instances: 1}, ref); err != nil {
			t.Fatal(err)
		}
		wait(t, a.applied, name)
	}
	if _, err := n.Write(ctx, config.Plugin{Name: "p3", Instances: 1}, ref); err != nil {
		t.Fatal(err)
	}
	eventually(t, "max_plugins refused", refused("p3", "max_plugins"))
	// A module of many object store chunks (128 KiB each) arrives whole.
	n.mu.Lock()
	delete(n.specs, "p2") // room for one more under max_plugins
	n.mu.Unlock()
	big := make([]byte, 700<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	bs := SpecOf(config.Plugin{Name: "big", Instances: 1}, digestOf(big), int64(len(big)))
	if _, err := obj.PutBytes(ctx, hexOf(bs.Digest), big); err != nil { // another writer: not in this node's cache
		t.Fatal(err)
	}
	b, _ = json.Marshal(bs)
	if _, err := kv.Put(ctx, "big", b); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "big")
	if a.digest("big") != digestOf(big) {
		t.Fatal("the big module arrived changed")
	}
	// Deleted: removed.
	if err := n.Delete(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "-p1")
}

// A plugin deleted, and its deletion purged, while the node was away is removed when the node
// comes back: its cache has it, the bucket's watch never names it again.
func TestPruneDeletedWhileAway(t *testing.T) {
	dir := t.TempDir()
	ref, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	c := soloCluster(dir, 8)
	seed := config.Plugin{Name: "seeded", Path: refPath, Instances: 1}
	o := Options{Config: c, Seed: []config.Plugin{seed}, Logger: zaptest.NewLogger(t),
		Resolve: resolvePath}
	// start opens a node, restores it and runs it; the returned func stops it.
	start := func(a *applier, before func(*Node)) (*Node, func()) {
		n, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := n.Restore(ctx, a); err != nil {
			t.Fatal(err)
		}
		if before != nil {
			before(n)
		}
		ran := make(chan error, 1)
		go func() { ran <- n.Run(ctx, a) }()
		return n, func() {
			cancel()
			if err := <-ran; err != nil {
				t.Error(err)
			}
			_ = n.Close()
		}
	}
	a := newApplier()
	n, stop := start(a, nil)
	eventually(t, "connected", func() bool { return n.Status(context.Background()).Connected })
	if _, err := n.Write(context.Background(), config.Plugin{Name: "gone", Instances: 1}, ref); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "gone")
	stop()

	b := newApplier()
	_, stop = start(b, func(n *Node) {
		ctx := context.Background()
		js, err := jetstream.New(n.Conn())
		if err != nil {
			t.Fatal(err)
		}
		var kv jetstream.KeyValue
		eventually(t, "the bucket", func() bool {
			kv, err = js.KeyValue(ctx, PluginsBucket)
			return err == nil
		})
		if err := kv.Delete(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := kv.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(-1)); err != nil {
			t.Fatal(err)
		}
	})
	defer stop()
	wait(t, b.applied, "-gone")
	if b.digest("seeded") == "" {
		t.Fatal("seeded was removed too")
	}
}

// A token on up with no reconnection behind it (the client announces its first connection on
// a goroutine of its own, which can come after a session started on that connection) does
// not end the session: the node keeps taking writes, and no session ends.
func TestLateConnectTokenIsNoReconnection(t *testing.T) {
	dir := t.TempDir()
	ref, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	c := soloCluster(dir, 8)
	core, logs := observer.New(zapcore.InfoLevel)
	n, err := Open(Options{Config: c, Logger: zap.New(core),
		Resolve: resolvePath})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()
	a := newApplier()
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.Restore(ctx, a); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- n.Run(ctx, a) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	}()
	eventually(t, "connected", func() bool { return n.Status(ctx).Connected })
	if _, err := n.Write(ctx, config.Plugin{Name: "first", Instances: 1}, ref); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "first") // the session watches
	n.up <- struct{}{}          // the connection's token, late
	eventually(t, "the token taken", func() bool { return len(n.up) == 0 })
	if _, err := n.Write(ctx, config.Plugin{Name: "second", Instances: 1}, ref); err != nil {
		t.Fatal(err)
	}
	wait(t, a.applied, "second")
	if ended := logs.FilterMessage("cluster: session ended; serving the last good state").All(); len(ended) > 0 {
		t.Fatalf("a session ended: %v", ended[0].ContextMap())
	}
}

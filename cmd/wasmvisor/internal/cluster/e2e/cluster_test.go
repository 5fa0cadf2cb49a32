package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/cluster"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/natsbus"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/server"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/plugins"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "cluster-test-admin-token"

// natsNode is one NATS server of the test's JetStream cluster, restartable on its ports.
type natsNode struct {
	name, dir         string
	port, clusterPort int
	routes            []*url.URL
	ns                *natsserver.Server
}

func (n *natsNode) start(t *testing.T) {
	t.Helper()
	if err := n.tryStart(); err != nil {
		t.Fatal(err)
	}
}

// tryStart starts the server on n's ports. A server that is not ready for connections within
// 30 s is shut down, and the error carries what it logged (kept in memory unless NATS_LOG is
// set): with no logger, a port taken by another process fails silently, as "did not start".
func (n *natsNode) tryStart() error {
	ns, err := natsserver.NewServer(&natsserver.Options{ServerName: n.name, Host: "127.0.0.1", Port: n.port,
		JetStream: true, StoreDir: n.dir, NoSigs: true, NoLog: os.Getenv("NATS_LOG") == "",
		Cluster: natsserver.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: n.clusterPort}, Routes: n.routes})
	if err != nil {
		return err
	}
	logs := &natsLog{}
	if os.Getenv("NATS_LOG") != "" {
		ns.ConfigureLogger()
	} else {
		ns.SetLoggerV2(logs, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return &natsStartError{name: n.name, log: logs.String()}
	}
	n.ns = ns
	return nil
}

// natsStartError is a server that did not start, with its log.
type natsStartError struct{ name, log string }

func (e *natsStartError) Error() string {
	return fmt.Sprintf("NATS %s did not start; its log:\n%s", e.name, e.log)
}

// portTaken reports whether the server did not start because a port of its was taken.
func (e *natsStartError) portTaken() bool { return strings.Contains(e.log, "address already in use") }

// natsLog keeps a server's last lines of log (notices, warnings, errors), and its first
// errors apart, so that a flood of warnings does not push out the one that says why, for the
// error of a server that did not start.
type natsLog struct {
	mu     sync.Mutex
	lines  []string
	errors []string
}

func (l *natsLog) add(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := level + " " + fmt.Sprintf(format, v...)
	if (level == "[ERR]" || level == "[FTL]") && len(l.errors) < 20 {
		l.errors = append(l.errors, line)
	}
	if len(l.lines) == 100 {
		l.lines = l.lines[1:]
	}
	l.lines = append(l.lines, line)
}

func (l *natsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return "errors:\n" + strings.Join(l.errors, "\n") + "\nlast lines:\n" + strings.Join(l.lines, "\n")
}

func (l *natsLog) Noticef(format string, v ...any) { l.add("[INF]", format, v...) }
func (l *natsLog) Warnf(format string, v ...any)   { l.add("[WRN]", format, v...) }
func (l *natsLog) Fatalf(format string, v ...any)  { l.add("[FTL]", format, v...) }
func (l *natsLog) Errorf(format string, v ...any)  { l.add("[ERR]", format, v...) }
func (l *natsLog) Debugf(format string, v ...any)  {}
func (l *natsLog) Tracef(format string, v ...any)  {}

func (n *natsNode) stop() {
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
		n.ns = nil
	}
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// freePort is a loopback port free a moment ago: the servers' ports are known before they
// start, since each one's routes name the others.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNATS starts three servers routed to each other.
func startNATS(t *testing.T) []*natsNode {
	t.Helper()
	ns := make([]*natsNode, 3)
	for i := range ns {
		ns[i] = &natsNode{name: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), port: freePort(t), clusterPort: freePort(t)}
	}
	for _, n := range ns {
		for _, o := range ns {
			if o != n {
				n.routes = append(n.routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", o.clusterPort)})
			}
		}
	}
	t.Cleanup(func() {
		for _, n := range ns {
			n.stop()
		}
	})
	for _, n := range ns {
		// freePort's ports are free a moment before the server listens on them: another
		// process of a loaded machine can take one meanwhile. A first start then gets new
		// ones, once (a route of a server already started may name the old cluster port; it
		// finds the new one through the cluster's gossip).
		err := n.tryStart()
		var se *natsStartError
		if errors.As(err, &se) && se.portTaken() {
			t.Logf("NATS %s: a port was taken (%d, %d); new ones", n.name, n.port, n.clusterPort)
			oldRoute := fmt.Sprintf("127.0.0.1:%d", n.clusterPort)
			n.port, n.clusterPort = freePort(t), freePort(t)
			for _, o := range ns {
				for k, r := range o.routes {
					if o != n && o.ns == nil && r.Host == oldRoute {
						o.routes[k] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", n.clusterPort)}
					}
				}
			}
			err = n.tryStart()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// wnode is one wasmvisor server joined to the cluster, wired as `wasmvisor serve` does.
type wnode struct {
	name, base string
	srv        *server.Server
	node       *cluster.Node
	stopped    bool
	stopRun    context.CancelFunc
	ran        chan error
	served     chan error
}

func startNode(t *testing.T, name, natsURL, cacheDir string) *wnode {
	t.Helper()
	return startNodeWith(t, name, "nats_url: "+natsURL, cacheDir)
}

// startNodeWith starts a node whose cluster section joins with engine: a nats_url or an
// embedded line.
func startNodeWith(t *testing.T, name, engine, cacheDir string) *wnode {
	t.Helper()
	yaml := fmt.Sprintf(`admin_token: %s
cache_dir: "off"
reload:
  watch: false
cluster:
  node: %s
  %s
  cache_dir: %s
  replicas: 3
plugins:
  - name: seeded
    wasm: %s
`, token, name, engine, cacheDir, refPath)
	c, err := config.Parse(config.Input{Data: []byte(yaml), Env: []string{}, Builtin: plugins.Builtin,
		Builtins: plugins.Builtins()})
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(logLevel())).Named(name)
	node, err := cluster.Open(cluster.Options{Config: c.Cluster, Seed: c.Plugins, Logger: log,
		Resolve: func(p config.Plugin) ([]byte, error) { return os.ReadFile(p.Path) }})
	if err != nil {
		t.Fatal(err)
	}
	sc := *c
	sc.Plugins = nil
	ctx := context.Background()
	srv, err := server.New(ctx, server.Options{Config: &sc, Logger: log, Builtin: plugins.Builtin, Cluster: node})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Restore(ctx, srv); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wnode{name: name, base: "http://" + ln.Addr().String(), srv: srv, node: node,
		ran: make(chan error, 1), served: make(chan error, 1)}
	go func() { w.served <- srv.Serve(ln) }()
	rctx, cancel := context.WithCancel(ctx)
	w.stopRun = cancel
	go func() { w.ran <- node.Run(rctx, srv) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

func (w *wnode) stop(t *testing.T) {
	t.Helper()
	if w.stopped {
		return
	}
	w.stopped = true
	w.stopRun()
	for _, ch := range []chan error{w.ran} {
		select {
		case err := <-ch:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s: Run did not return", w.name)
		}
	}
	if err := w.srv.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	select {
	case <-w.served:
	case <-time.After(10 * time.Second):
		t.Errorf("%s: Serve did not return", w.name)
	}
	_ = w.node.Close()
}

func do(t *testing.T, method, u, ctype string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// plugin is the part of GET /v1/plugins/{name} the test reads.
type plugin struct {
	Digest string            `json:"digest"`
	Config map[string]string `json:"config"`
	Source string            `json:"source"`
}

func getPlugin(t *testing.T, w *wnode, name string) (plugin, bool) {
	t.Helper()
	code, b := do(t, "GET", w.base+"/v1/plugins/"+name, "", nil)
	if code != 200 {
		return plugin{}, false
	}
	var p plugin
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p, true
}

// eventually polls cond every 10 ms until it holds, failing the test past within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	t0 := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(t0) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		<-tick.C
	}
	return time.Since(t0)
}

// served reports whether every node serves name with digest (and, when cfg is not nil,
// that config).
func served(t *testing.T, ws []*wnode, name, digest string, cfg map[string]string) bool {
	for _, w := range ws {
		p, ok := getPlugin(t, w, name)
		if !ok || p.Digest != digest {
			return false
		}
		for k, v := range cfg {
			if p.Config[k] != v {
				return false
			}
		}
	}
	return true
}

// refPath is the reference plugin, the module every node's file names.
const refPath = "../../../../../plugins/reference/reference.wasm"

// serving checks that w answers the seeded plugin's echo.
func serving(t *testing.T, w *wnode) {
	t.Helper()
	if code, b := do(t, "POST", w.base+"/v1/plugins/seeded/call/echo", "", []byte(w.name)); code != 200 || string(b) != w.name {
		t.Fatalf("%s: echo answered %d %q", w.name, code, b)
	}
}

// synced reports whether w's status shows n nodes, every one at the bucket's revision and
// serving name with digest.
func synced(w *wnode, n int, name, digest string) bool {
	st := w.node.Status(context.Background())
	if len(st.Nodes) != n || !st.Connected || st.Revision == 0 {
		return false
	}
	for _, ns := range st.Nodes {
		if ns.Lag != 0 || ns.Plugins[name] != digest {
			return false
		}
	}
	return true
}

func putModule(t *testing.T, w *wnode, name string, wasm []byte, cfg map[string]string) {
	t.Helper()
	q := url.Values{}
	for k, v := range cfg {
		q.Set("config."+k, v)
	}
	code, b := do(t, "PUT", w.base+"/v1/plugins/"+name+"?"+q.Encode(), "application/wasm", wasm)
	if code != 200 && code != 201 {
		t.Fatalf("PUT %s on %s: %d %s", name, w.name, code, b)
	}
}

func putConfig(t *testing.T, w *wnode, name string, cfg map[string]string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"config": cfg})
	code, out := do(t, "PUT", w.base+"/v1/plugins/"+name, "application/json", b)
	if code != 200 {
		t.Fatalf("PUT config %s on %s: %d %s", name, w.name, code, out)
	}
}

func digest(t *testing.T, w *wnode, name string) string {
	t.Helper()
	p, ok := getPlugin(t, w, name)
	if !ok {
		t.Fatalf("%s does not serve %s", w.name, name)
	}
	return p.Digest
}

func TestCluster(t *testing.T) {
	ref, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	nats := startNATS(t)
	caches := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	ws := make([]*wnode, 3)
	for i := range ws {
		ws[i] = startNode(t, fmt.Sprintf("w%d", i+1), nats[i].url(), caches[i])
	}
	const within = 20 * time.Second

	// The file's plugin seeded the cluster; every node serves it from the cluster.
	seeded := digest(t, ws[0], "seeded")
	// A fresh JetStream cluster elects its meta leader within raft's election timeouts (4-9 s),
	// then each bucket's group: the join gets a longer bound than a change.
	d := eventually(t, 60*time.Second, "3 nodes joined, serving the seeded plugin from the cluster", func() bool {
		return synced(ws[0], 3, "seeded", seeded)
	})
	t.Logf("3 nodes joined the JetStream cluster in %v", d)

	// A module pushed to one node is served by all three.
	t0 := time.Now()
	putModule(t, ws[0], "ref", ref, map[string]string{"v": "1"})
	refDigest := digest(t, ws[0], "ref")
	eventually(t, within, "ref on every node", func() bool { return served(t, ws, "ref", refDigest, nil) })
	t.Logf("module push → served by 3 nodes: %v", time.Since(t0))
	for _, w := range ws {
		if code, b := do(t, "POST", w.base+"/v1/plugins/ref/call/echo", "", []byte("hi")); code != 200 || string(b) != "hi" {
			t.Fatalf("%s: echo answered %d %q", w.name, code, b)
		}
	}

	// A publish on one node reaches the subscribers of the other two through the bus bridge
	// (package natsbus, on the node's connection, as wasmvisor serve runs it for cluster.bus),
	// marked with its node; the publisher's own subscriber gets it once, from its local bus.
	crossNodePublish(t, ws)

	// A config change on another node converges: the propagation, measured.
	var lat []time.Duration
	for i := range 10 {
		cfg := map[string]string{"v": strconv.Itoa(i + 2)}
		t0 := time.Now()
		putConfig(t, ws[1+i%2], "ref", cfg)
		eventually(t, within, "config change on every node", func() bool { return served(t, ws, "ref", refDigest, cfg) })
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("config change → applied by 3 nodes (10 changes): min %v median %v max %v", lat[0], lat[5], lat[9])

	// The status bucket: every node at the bucket's revision.
	eventually(t, within, "status of 3 nodes without lag", func() bool { return synced(ws[2], 3, "ref", refDigest) })
	if code, b := do(t, "GET", ws[0].base+"/v1/cluster", "", nil); code != 200 || !bytes.Contains(b, []byte(`"w3"`)) {
		t.Fatalf("GET /v1/cluster: %d %s", code, b)
	}

	// An invalid module PUT to a node is refused there (422) and never reaches the cluster;
	// an invalid spec is not written.
	before := ws[0].node.Status(context.Background()).Revision
	if code, b := do(t, "PUT", ws[1].base+"/v1/plugins/ref", "application/wasm", []byte("\x00asm garbage")); code != 422 {
		t.Fatalf("PUT of an invalid module: %d %s", code, b)
	}
	if _, err := ws[0].node.Write(context.Background(), config.Plugin{Name: "ref", Instances: 0}, ref); !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("an invalid spec: %v", err)
	}
	if after := ws[0].node.Status(context.Background()).Revision; after != before {
		t.Fatalf("the bucket moved from revision %d to %d", before, after)
	}
	if !served(t, ws, "ref", refDigest, nil) {
		t.Fatal("a node stopped serving ref")
	}

	// NATS node 1 killed: w1 is cut off and keeps serving; w2 and w3 take a change.
	nats[0].stop()
	for _, w := range ws {
		serving(t, w)
	}
	cfg := map[string]string{"v": "partition"}
	eventually(t, within, "a write with 2 of 3 NATS servers", func() bool {
		b, _ := json.Marshal(map[string]any{"config": cfg})
		code, _ := do(t, "PUT", ws[1].base+"/v1/plugins/ref", "application/json", b)
		return code == 200
	})
	eventually(t, within, "the change on w2 and w3", func() bool { return served(t, ws[1:], "ref", refDigest, cfg) })
	serving(t, ws[0])
	// NATS node 1 restarted: w1 reconverges.
	nats[0].start(t)
	eventually(t, within, "w1 reconverged", func() bool { return served(t, ws, "ref", refDigest, cfg) })

	// w1 stopped; NATS 1 down; w1 started again: it serves its cache.
	ws[0].stop(t)
	nats[0].stop()
	cfg = map[string]string{"v": "while-w1-away"}
	putConfig(t, ws[2], "ref", cfg)
	w1 := startNode(t, "w1", nats[0].url(), caches[0])
	serving(t, w1)
	if code, b := do(t, "POST", w1.base+"/v1/plugins/ref/call/echo", "", []byte("cached")); code != 200 || string(b) != "cached" {
		t.Fatalf("w1 from its cache: %d %q", code, b)
	}
	if st := w1.node.Status(context.Background()); st.Connected {
		t.Fatal("w1 connected with its NATS down")
	}
	nats[0].start(t)
	eventually(t, within, "w1 converged after NATS came back", func() bool {
		return served(t, []*wnode{w1, ws[1], ws[2]}, "ref", refDigest, cfg)
	})

	// DELETE on one node removes the plugin everywhere.
	if code, b := do(t, "DELETE", ws[1].base+"/v1/plugins/ref", "", nil); code != 204 {
		t.Fatalf("DELETE: %d %s", code, b)
	}
	eventually(t, within, "ref gone everywhere", func() bool {
		for _, w := range []*wnode{w1, ws[1], ws[2]} {
			if _, ok := getPlugin(t, w, "ref"); ok {
				return false
			}
		}
		return true
	})
}

// crossNodePublish bridges topic "news" on every node and publishes on the first until the
// others' subscribers have a message (a subscription's interest takes a moment to cross the
// NATS cluster's routes, and the topic is at most once: an early message may find no one).
func crossNodePublish(t *testing.T, ws []*wnode) {
	t.Helper()
	got := make([]chan host.Message, len(ws))
	for i, w := range ws {
		b, err := natsbus.New(context.Background(), natsbus.Options{Conn: w.node.Conn(), Host: w.srv.Host(),
			Node: w.name, Config: natsbus.Config{Topics: []string{"news"}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(context.Background()); err != nil {
				t.Error(err)
			}
		})
		ch := make(chan host.Message, 1024)
		got[i] = ch
		sub, err := w.srv.Host().Subscribe("news", func(m host.Message) { ch <- m })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Unsubscribe)
	}
	sent := 0
	t0 := time.Now()
	eventually(t, 20*time.Second, "a publish on w1 delivered on w2 and w3", func() bool {
		if _, err := ws[0].srv.Host().Publish("news", []byte("n"+strconv.Itoa(sent))); err != nil {
			t.Fatal(err)
		}
		sent++
		return len(got[1]) > 0 && len(got[2]) > 0
	})
	t.Logf("cross-node publish delivered on 2 nodes after %v (%d sent)", time.Since(t0), sent)
	for i, ch := range got[1:] {
		m := <-ch
		if m.Node != ws[0].name || m.Topic != "news" || !strings.HasPrefix(string(m.Data), "n") {
			t.Errorf("%s got %+v, want a news message from %s", ws[i+1].name, m, ws[0].name)
		}
	}
	// The publisher's subscriber has each of its messages once, none marked remote: the bridge
	// does not bring its own messages back.
	eventually(t, 5*time.Second, "w1's own subscriber has its messages", func() bool { return len(got[0]) >= sent })
	for range sent {
		if m := <-got[0]; m.Node != "" {
			t.Fatalf("w1's subscriber got a message from %q: an echo", m.Node)
		}
	}
	if n := len(got[0]); n != 0 {
		t.Fatalf("w1's subscriber got %d more messages than it published", n)
	}
}

// logLevel is warn, or info with CLUSTER_TEST_LOG set.
func logLevel() zapcore.Level {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return zapcore.InfoLevel
	}
	return zapcore.WarnLevel
}

// Three nodes with cluster.embedded: each runs its NATS server in-process, routed to the two
// others; no other daemon. A module pushed to one is served by all three.
func TestClusterEmbedded(t *testing.T) {
	ref, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatal(err)
	}
	routes := []int{freePort(t), freePort(t), freePort(t)}
	ws := make([]*wnode, 3)
	for i := range ws {
		var peers []string
		for j, p := range routes {
			if j != i {
				peers = append(peers, fmt.Sprintf("'nats://127.0.0.1:%d'", p))
			}
		}
		engine := fmt.Sprintf("embedded: {listen: '127.0.0.1:0', cluster_listen: '127.0.0.1:%d', routes: [%s], store_dir: %q}",
			routes[i], strings.Join(peers, ", "), t.TempDir())
		ws[i] = startNodeWith(t, fmt.Sprintf("e%d", i+1), engine, t.TempDir())
	}
	seeded := digest(t, ws[0], "seeded")
	d := eventually(t, 60*time.Second, "3 embedded nodes joined", func() bool { return synced(ws[1], 3, "seeded", seeded) })
	t.Logf("3 embedded nodes joined in %v", d)
	t0 := time.Now()
	putModule(t, ws[2], "ref", append(ref[:len(ref):len(ref)], 0, 4, 1, 'x', 'y', 'z'), nil) // a custom section: another digest
	refDigest := digest(t, ws[2], "ref")
	eventually(t, 20*time.Second, "ref on every embedded node", func() bool { return served(t, ws, "ref", refDigest, nil) })
	t.Logf("module push → served by 3 embedded nodes: %v", time.Since(t0))
}

// Package cluster runs `wasmvisor serve` as one node of a cluster whose desired state lives
// in NATS JetStream. It is linked only by the CLI: the library packages (host, sandbox) know
// nothing of NATS.
//
// # Design
//
// The desired state is two JetStream stores: the object store "wasmvisor_modules" holds each
// module under its SHA-256 (hex), and the key-value bucket "wasmvisor_plugins" holds one Spec
// per plugin name (JSON). The bucket's stream sequence is the cluster's revision: every put
// or delete gets the next one. A PUT or DELETE through any node's API, a changed plugin in a
// node's configuration file, or `wasmvisor push` writes there (Node.Write, Node.Delete).
//
// Every node watches the bucket (Node.Run). Each entry is checked (Spec.Validate, the
// module's size and digest) and handed to the Applier, which is the server's own path for a
// file reload: a changed module is a host Replace, made before the old one is broken. The
// node then records in the key-value bucket "wasmvisor_status", under its name, the revision
// it has processed, the digest of each plugin it serves and the ones it refused; GET
// /v1/cluster (Node.Status) shows every node and its lag behind the bucket.
//
// A spec or module that is refused (invalid, too large, a digest that does not match, a
// module the host will not load) is logged, counted (wasmvisor_cluster_refused_total) and
// listed in the node's status; the plugin's last good version keeps serving.
//
// Each node keeps what it serves on disk (cluster.cache_dir: state.json and modules/HEX.wasm).
// At start (Node.Restore) it serves that cache before it reaches NATS, or, on its first start,
// its configuration file's plugins. It then converges to the bucket as soon as JetStream
// answers, and again after every reconnection: a new watch delivers the latest value of every
// key, and the plugins the bucket no longer has are removed.
//
// Precedence: the cluster owns the plugins it has. The configuration file's plugins seed an
// empty bucket (the first start of the cluster: each node creates the keys it names, the
// first writer wins); later, a plugin changed in a node's file is written to the bucket like
// a PUT. A plugin that the file names and the bucket holds with another spec serves the
// bucket's spec.
//
// # Consistency
//
// Eventual, with the revision visible: each node applies the bucket's entries in order and
// reports the last revision it processed; two nodes may serve different revisions for as
// long as the lag GET /v1/cluster shows. The bucket itself is as consistent as JetStream
// makes it (cluster.replicas; with 3 replicas a write needs 2 of 3 servers). Under a partition,
// a node cut off from the JetStream quorum keeps serving what it last applied and refuses
// writes (503 cluster_unavailable); it converges when the partition heals.
//
// # Bounds
//
// cluster.max_spec_bytes bounds a spec (the bucket's max value size and the decoder),
// http.max_module_bytes a module (checked on its object info and again while reading it),
// cluster.max_plugins the plugins a node serves from the cluster, and statusNodes the nodes
// GET /v1/cluster lists. The watch backlog: the node takes at most max_plugins+64 entries at
// a time and applies only the latest of each key; what waits behind them is in the watch's
// channel (256 entries) and the NATS client's subscription buffer, bounded by its pending
// limits (nats.go's defaults, 512 Ki messages or 64 MiB). Past those the client drops and the
// watch's ordered consumer, seeing the gap, restarts from the last entry it delivered: a slow
// node loses no change, and never holds more than those bounds.
package cluster

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// The JetStream stores.
const (
	PluginsBucket = "wasmvisor_plugins"
	ModulesBucket = "wasmvisor_modules"
	StatusBucket  = "wasmvisor_status"
)

// Applier is what a node drives: the server. ApplyCluster loads p, or brings the loaded
// plugin of that name to p (make-before-break for a new module); on an error the plugin's
// running version, if any, stays. RemoveCluster unloads a plugin the cluster no longer has.
// A node calls them from one goroutine at a time.
type Applier interface {
	ApplyCluster(ctx context.Context, p config.Plugin, wasm []byte) error
	RemoveCluster(ctx context.Context, name string) error
}

// Options are what Open needs. Config (Enabled) and Logger are required.
type Options struct {
	Config config.Cluster
	// Seed is the configuration file's plugins and Resolve reads their modules: what the node
	// serves on its first start, and what seeds an empty bucket.
	Seed    []config.Plugin
	Resolve func(config.Plugin) ([]byte, error)
	Logger  *zap.Logger
}

// Node is this process's membership of the cluster. Write, Delete, Status and Conn may be
// called from any goroutine; Restore and then Run from one; Close once Run returned.
type Node struct {
	o   Options
	c   config.Cluster
	log *zap.Logger
	ns  *server.Server // the embedded NATS server; nil with nats_url
	nc  *nats.Conn
	up  chan struct{} // a token on each (re)connection

	mu       sync.Mutex // what follows
	st       *stores    // nil outside a session
	specs    map[string]Spec
	refused  map[string]string
	revision uint64

	fileMu      sync.Mutex      // FileChanged
	file        map[string]Spec // the configuration file's plugins as last written
	filePending []config.Plugin // a file's plugins not written yet: the cluster was unavailable

	refusedTotal *prometheus.CounterVec
	applied      prometheus.Counter
	closeOnce    sync.Once
}

type stores struct {
	kv     jetstream.KeyValue
	obj    jetstream.ObjectStore
	status jetstream.KeyValue
}

// Open starts the embedded NATS server (cluster.embedded) and the client connection, without
// waiting for the cluster: a node whose NATS is unreachable opens all the same and serves
// its cache. Close stops both.
func Open(o Options) (*Node, error) {
	n := &Node{o: o, c: o.Config, log: o.Logger, up: make(chan struct{}, 1), specs: map[string]Spec{},
		refused: map[string]string{}}
	if !n.c.Enabled {
		return nil, errors.New("cluster: no cluster section")
	}
	n.refusedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_cluster_refused_total",
		Help: "Specs or modules from the cluster this node refused (the last good version kept serving), by reason."},
		[]string{"reason"})
	n.applied = prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmvisor_cluster_applied_total",
		Help: "Changes from the cluster this node applied."})
	urls := n.c.NATSURL
	if n.c.Embedded.Listen != "" {
		ns, err := startEmbedded(n.c)
		if err != nil {
			return nil, err
		}
		n.ns, urls = ns, ns.ClientURL()
	}
	nc, err := connect(n.c, urls, n.up)
	if err != nil {
		n.stopEmbedded()
		return nil, err
	}
	n.nc = nc
	return n, nil
}

// Collectors are the node's metrics, for the server's registry.
func (n *Node) Collectors() []prometheus.Collector {
	return []prometheus.Collector{n.refusedTotal, n.applied}
}

// Conn is the node's NATS connection, for the packages that share it (the bus, the decision
// log's stream). It reconnects by itself; it is closed by Close.
func (n *Node) Conn() *nats.Conn { return n.nc }

// Name is the node's name (cluster.node).
func (n *Node) Name() string { return n.c.Node }

// Close closes the connection and stops the embedded server. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.nc.Close()
		n.stopEmbedded()
	})
	return nil
}

func (n *Node) stopEmbedded() {
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
}

// Restore makes a serve what this node served last (its cache), or, when it has no cache,
// the configuration file's plugins. A cached plugin that no longer loads is skipped and
// logged; a file plugin that does not load is the error, as without a cluster.
func (n *Node) Restore(ctx context.Context, a Applier) error {
	cached, rev, err := n.readCache()
	if err != nil {
		n.log.Warn("cluster: the cache cannot be read; starting from the configuration file", zap.Error(err))
	}
	if len(cached) > 0 || rev > 0 {
		for _, s := range ordered(cached) {
			wasm, err := n.cachedModule(s)
			if err == nil {
				err = a.ApplyCluster(ctx, s.Plugin(), wasm)
			}
			if err != nil {
				n.refuse(s.Name, err)
				continue
			}
			n.mu.Lock()
			n.specs[s.Name] = s
			n.mu.Unlock()
		}
		n.mu.Lock()
		n.revision = rev
		n.mu.Unlock()
		n.log.Info("cluster: serving the cached state", zap.Uint64("revision", rev), zap.Int("plugins", len(cached)))
		return nil
	}
	for _, p := range n.o.Seed {
		wasm, err := n.o.Resolve(p)
		if err != nil {
			return fmt.Errorf("plugins(%s).wasm: %w", p.Name, err)
		}
		if err := a.ApplyCluster(ctx, p, wasm); err != nil {
			return err
		}
		s := SpecOf(p, digestOf(wasm), int64(len(wasm)))
		if err := n.saveModule(s, wasm); err != nil {
			return err
		}
		n.mu.Lock()
		n.specs[p.Name] = s
		n.mu.Unlock()
	}
	return n.saveCache()
}

// ordered is the specs in dependency order (config.Order), or by name when they have a cycle.
func ordered(m map[string]Spec) []Spec {
	ps := make([]config.Plugin, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		ps = append(ps, m[k].Plugin())
	}
	if o, err := config.Order(ps); err == nil {
		ps = o
	}
	out := make([]Spec, len(ps))
	for i, p := range ps {
		out[i] = m[p.Name]
	}
	return out
}

// Run converges a to the bucket until ctx ends: a session (buckets, seed, watch) at a time,
// the next one reconnectWait after the last ended. It returns nil when ctx ends.
func (n *Node) Run(ctx context.Context, a Applier) error {
	for {
		err := n.session(ctx, a)
		n.mu.Lock()
		n.st = nil
		n.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		n.log.Warn("cluster: session ended; serving the last good state", zap.Error(err))
		t := time.NewTimer(reconnectWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-n.up:
			t.Stop()
		}
	}
}

// errResync ends a session so that the next one watches afresh.
var errResync = errors.New("cluster: resynchronising")

func (n *Node) session(ctx context.Context, a Applier) error {
	if !n.nc.IsConnected() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.up:
		}
	}
	// Drain a token of the connection we are about to use, and note how many reconnections
	// the client has made: a token that comes later is a reconnection only if that count
	// moved. The client calls its handlers on a goroutine of its own, so the first
	// connection's token can come after the session has started on it; taken for a
	// reconnection, it ended the session at once, and for that moment the node refused writes
	// (ErrUnavailable; TestPruneDeletedWhileAway failed so).
	select {
	case <-n.up:
	default:
	}
	conn := n.nc.Stats().Reconnects
	st, fresh, err := n.openStores(ctx)
	if err != nil {
		return err
	}
	if fresh {
		n.seed(ctx, st)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := st.kv.WatchAll(sctx)
	if err != nil {
		return fmt.Errorf("cluster: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	n.mu.Lock()
	n.st = st
	n.mu.Unlock()
	n.putStatus(ctx)
	n.writePending(ctx)

	seen := map[string]bool{} // the keys of the initial values
	initial := true
	limit := n.c.MaxPlugins + 64
	for {
		var batch []jetstream.KeyValueEntry
		var marker bool
		// Wait for one entry, then take what else is there: coalesced by key.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.up:
			if n.nc.Stats().Reconnects == conn {
				continue // this session's own connection, announced late
			}
			return errResync // reconnected: watch afresh
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("cluster: the watch ended")
			}
			if e == nil {
				marker = true
			} else {
				batch = append(batch, e)
			}
		}
	drain:
		for !marker && len(batch) < limit {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					break drain
				}
				if e == nil {
					marker = true
				} else {
					batch = append(batch, e)
				}
			default:
				break drain
			}
		}
		latest := map[string]jetstream.KeyValueEntry{}
		for _, e := range batch {
			latest[e.Key()] = e
			if initial {
				seen[e.Key()] = e.Operation() == jetstream.KeyValuePut
			}
		}
		es := slices.Collect(maps.Values(latest))
		slices.SortFunc(es, func(x, y jetstream.KeyValueEntry) int { return cmp.Compare(x.Revision(), y.Revision()) })
		for _, e := range es {
			n.handle(ctx, a, e)
		}
		if marker && initial {
			initial = false
			n.prune(ctx, a, st, seen)
		}
		if len(batch) > 0 || marker {
			if err := n.saveCache(); err != nil {
				n.log.Error("cluster: cache", zap.Error(err))
			}
			n.putStatus(ctx)
		}
	}
}

// openStores creates or binds the three stores; fresh reports a plugins bucket with no entry
// at all, not even a deletion: the cluster's first start.
func (n *Node) openStores(ctx context.Context) (*stores, bool, error) {
	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, false, fmt.Errorf("cluster: %w", err)
	}
	// A short bound: while JetStream elects its leaders a request gets no answer, and the
	// next session asks again.
	octx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(octx, jetstream.KeyValueConfig{Bucket: PluginsBucket, History: 8,
		MaxValueSize: int32(n.c.MaxSpecBytes), Replicas: n.c.Replicas,
		Description: "wasmvisor: the desired plugins (Spec JSON by name)"})
	if err != nil {
		return nil, false, fmt.Errorf("cluster: bucket %s: %w", PluginsBucket, err)
	}
	obj, err := js.CreateOrUpdateObjectStore(octx, jetstream.ObjectStoreConfig{Bucket: ModulesBucket,
		Replicas: n.c.Replicas, Description: "wasmvisor: modules by SHA-256"})
	if err != nil {
		return nil, false, fmt.Errorf("cluster: object store %s: %w", ModulesBucket, err)
	}
	status, err := js.CreateOrUpdateKeyValue(octx, jetstream.KeyValueConfig{Bucket: StatusBucket, History: 1,
		MaxValueSize: 1 << 20, Replicas: n.c.Replicas, Description: "wasmvisor: what each node serves"})
	if err != nil {
		return nil, false, fmt.Errorf("cluster: bucket %s: %w", StatusBucket, err)
	}
	ks, err := kv.Status(octx)
	if err != nil {
		return nil, false, fmt.Errorf("cluster: bucket %s: %w", PluginsBucket, err)
	}
	return &stores{kv: kv, obj: obj, status: status}, lastSeq(ks) == 0, nil
}

// seed writes the file's plugins into an empty bucket, each only if no other node did first.
func (n *Node) seed(ctx context.Context, st *stores) {
	for _, p := range n.o.Seed {
		wasm, err := n.o.Resolve(p)
		if err == nil {
			_, err = n.write(ctx, st, p, wasm, true)
		}
		switch {
		case errors.Is(err, jetstream.ErrKeyExists):
		case err != nil:
			n.log.Warn("cluster: seeding", zap.String("plugin", p.Name), zap.Error(err))
		default:
			n.log.Info("cluster: seeded", zap.String("plugin", p.Name))
		}
	}
}

// handle applies one entry of the bucket.
func (n *Node) handle(ctx context.Context, a Applier, e jetstream.KeyValueEntry) {
	name, rev := e.Key(), e.Revision()
	defer func() {
		n.mu.Lock()
		n.revision = max(n.revision, rev)
		n.mu.Unlock()
	}()
	n.mu.Lock()
	cur, serving := n.specs[name]
	count := len(n.specs)
	n.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		if !serving {
			return
		}
		if err := a.RemoveCluster(ctx, name); err != nil {
			n.refuse(name, err)
			return
		}
		n.mu.Lock()
		delete(n.specs, name)
		delete(n.refused, name)
		n.mu.Unlock()
		n.applied.Inc()
		n.log.Info("cluster: removed", zap.String("plugin", name), zap.Uint64("revision", rev))
		return
	}
	s, err := decodeSpec(name, e.Value(), n.c.MaxSpecBytes, n.c.MaxModuleBytes)
	if err == nil && !serving && count >= n.c.MaxPlugins {
		err = &SpecError{name, "(plugins)", fmt.Sprintf("this node serves cluster.max_plugins (%d) plugins", n.c.MaxPlugins)}
	}
	if err != nil {
		n.refuse(name, err)
		return
	}
	n.mu.Lock()
	_, wasRefused := n.refused[name]
	n.mu.Unlock()
	if serving && !wasRefused && equalSpec(cur, s) {
		return
	}
	wasm, err := n.module(ctx, s)
	if err == nil {
		err = a.ApplyCluster(ctx, s.Plugin(), wasm)
	}
	if err != nil {
		n.refuse(name, err)
		return
	}
	n.mu.Lock()
	n.specs[name] = s
	delete(n.refused, name)
	n.mu.Unlock()
	n.applied.Inc()
	n.log.Info("cluster: applied", zap.String("plugin", name), zap.String("digest", s.Digest), zap.Uint64("revision", rev))
}

// prune removes the plugins this node serves that the bucket's initial values lack: deleted
// while the node was away. Each is asked of the bucket first: a plugin is removed only when
// the bucket answers that it has no such key, never on the watch's word alone.
func (n *Node) prune(ctx context.Context, a Applier, st *stores, seen map[string]bool) {
	n.mu.Lock()
	var gone []string
	for name := range n.specs {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	n.mu.Unlock()
	for _, name := range gone {
		octx, cancel := withOp(ctx)
		_, err := st.kv.Get(octx, name)
		cancel()
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // there (the watch delivers it), or unknown: keep serving
		}
		if err := a.RemoveCluster(ctx, name); err != nil {
			n.refuse(name, err)
			continue
		}
		n.mu.Lock()
		delete(n.specs, name)
		n.mu.Unlock()
		n.log.Info("cluster: removed (not in the bucket)", zap.String("plugin", name))
	}
}

func equalSpec(a, b Spec) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// refuse logs, counts and records a refused change; the plugin's last good version serves.
func (n *Node) refuse(name string, err error) {
	reason := "apply"
	var se *SpecError
	if errors.As(err, &se) {
		reason = "spec"
		if se.Field == "module" || se.Field == "size" {
			reason = "module"
		}
	}
	n.refusedTotal.WithLabelValues(reason).Inc()
	n.mu.Lock()
	n.refused[name] = err.Error()
	n.mu.Unlock()
	n.log.Error("cluster: refused; the last good version keeps serving", zap.String("plugin", name), zap.Error(err))
}

// module is s's module: from the cache, or the object store (bounded, digest checked).
func (n *Node) module(ctx context.Context, s Spec) ([]byte, error) {
	if b, err := n.cachedModule(s); err == nil {
		return b, nil
	}
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	if st == nil {
		return nil, ErrUnavailable
	}
	octx, cancel := withOp(ctx)
	defer cancel()
	info, err := st.obj.GetInfo(octx, hexOf(s.Digest))
	if err != nil {
		return nil, &SpecError{s.Name, "module", fmt.Sprintf("%s: %v", s.Digest, err)}
	}
	if int64(info.Size) != s.Size || int64(info.Size) > n.c.MaxModuleBytes {
		return nil, &SpecError{s.Name, "module", fmt.Sprintf("%d bytes in the object store, the spec says %d (at most %d)",
			info.Size, s.Size, n.c.MaxModuleBytes)}
	}
	r, err := st.obj.Get(octx, hexOf(s.Digest))
	if err != nil {
		return nil, &SpecError{s.Name, "module", err.Error()}
	}
	defer func() { _ = r.Close() }()
	b, err := io.ReadAll(io.LimitReader(r, n.c.MaxModuleBytes+1))
	if err != nil {
		return nil, &SpecError{s.Name, "module", err.Error()}
	}
	if int64(len(b)) > n.c.MaxModuleBytes || digestOf(b) != s.Digest {
		return nil, &SpecError{s.Name, "module", "the object store's bytes do not match the digest " + s.Digest}
	}
	if err := n.saveModule(s, b); err != nil {
		n.log.Warn("cluster: caching a module", zap.Error(err))
	}
	return b, nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Write makes p with module wasm the cluster's desired state: the module into the object
// store (unless there), then the spec into the bucket. It returns the new revision. Without
// a session it is ErrUnavailable; a spec out of bounds is a *SpecError.
func (n *Node) Write(ctx context.Context, p config.Plugin, wasm []byte) (uint64, error) {
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	if st == nil {
		return 0, ErrUnavailable
	}
	if wasm == nil {
		n.mu.Lock()
		s, ok := n.specs[p.Name]
		n.mu.Unlock()
		var err error
		if ok {
			wasm, err = n.module(ctx, s)
		}
		if !ok || err != nil {
			return 0, &SpecError{p.Name, "module", "this node does not serve the plugin from the cluster: send its module"}
		}
	}
	return n.write(ctx, st, p, wasm, false)
}

func (n *Node) write(ctx context.Context, st *stores, p config.Plugin, wasm []byte, create bool) (uint64, error) {
	s := SpecOf(p, digestOf(wasm), int64(len(wasm)))
	if err := s.Validate(n.c.MaxModuleBytes); err != nil {
		return 0, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	if int64(len(b)) > n.c.MaxSpecBytes {
		return 0, &SpecError{p.Name, "(spec)", fmt.Sprintf("%d bytes, over cluster.max_spec_bytes (%d)", len(b), n.c.MaxSpecBytes)}
	}
	octx, cancel := withOp(ctx)
	defer cancel()
	if _, err := st.obj.GetInfo(octx, hexOf(s.Digest)); errors.Is(err, jetstream.ErrObjectNotFound) {
		if _, err := st.obj.PutBytes(octx, hexOf(s.Digest), wasm); err != nil {
			return 0, fmt.Errorf("%w: module: %w", ErrUnavailable, err)
		}
	} else if err != nil {
		return 0, fmt.Errorf("%w: module: %w", ErrUnavailable, err)
	}
	if err := n.saveModule(s, wasm); err != nil {
		n.log.Warn("cluster: caching a module", zap.Error(err))
	}
	var rev uint64
	if create {
		rev, err = st.kv.Create(octx, p.Name, b)
	} else {
		rev, err = st.kv.Put(octx, p.Name, b)
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return rev, err
}

// Delete removes name from the cluster's desired state: every node unloads it.
func (n *Node) Delete(ctx context.Context, name string) error {
	n.mu.Lock()
	st := n.st
	n.mu.Unlock()
	if st == nil {
		return ErrUnavailable
	}
	octx, cancel := withOp(ctx)
	defer cancel()
	if err := st.kv.Delete(octx, name); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// FileChanged writes to the cluster the plugins of a reread configuration file whose spec or
// module differs from the file's previous version (the seed at first): a config change made
// on one node's file reaches every node. A plugin removed from the file stays in the cluster
// (another node's file may name it; DELETE removes it). Without a session the changes are
// kept and written when the next session starts; a later call replaces them. The error is a
// module that cannot be read or a spec the cluster refuses.
func (n *Node) FileChanged(ctx context.Context, ps []config.Plugin) error {
	n.fileMu.Lock()
	defer n.fileMu.Unlock()
	if n.file == nil {
		n.file = map[string]Spec{}
		for _, p := range n.o.Seed {
			if b, err := n.o.Resolve(p); err == nil {
				n.file[p.Name] = SpecOf(p, digestOf(b), int64(len(b)))
			}
		}
	}
	var errs []error
	n.filePending = nil
	for _, p := range ps {
		wasm, err := n.o.Resolve(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("plugins(%s).wasm: %w", p.Name, err))
			continue
		}
		s := SpecOf(p, digestOf(wasm), int64(len(wasm)))
		if old, ok := n.file[p.Name]; ok && equalSpec(old, s) {
			continue
		}
		_, err = n.Write(ctx, p, wasm)
		if errors.Is(err, ErrUnavailable) {
			n.filePending = append(n.filePending, p)
			n.log.Warn("cluster: a plugin changed in the file is written when the cluster answers",
				zap.String("plugin", p.Name), zap.Error(err))
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.file[p.Name] = s
		n.log.Info("cluster: written from the configuration file", zap.String("plugin", p.Name))
	}
	return errors.Join(errs...)
}

// writePending writes the file's changes FileChanged could not write; at a session's start.
func (n *Node) writePending(ctx context.Context) {
	n.fileMu.Lock()
	ps := n.filePending
	n.fileMu.Unlock()
	if len(ps) == 0 {
		return
	}
	if err := n.FileChanged(ctx, ps); err != nil {
		n.log.Error("cluster: writing the file's changes", zap.Error(err))
	}
}

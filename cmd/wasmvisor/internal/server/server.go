// Package server is `wasmvisor serve`: a host (package host) whose plugins come from a
// configuration (package config, beside this one under cmd/wasmvisor/internal), an HTTP API
// over it, hot reload of the configuration and of the plugins' modules, and graceful shutdown.
// The HTTP API and the failure policies are documented in API.md next to this file; the
// configuration keys in ../config/CONFIG.md.
//
// A Server is wired by its caller (cmd/wasmvisor) as execute/interrupt pairs: Serve and
// Shutdown, Watch and the cancellation of its context, and Reload on SIGHUP. Every method is
// safe for concurrent use. Reloads, PUT and DELETE are serialised with each other.
package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/decisionlog"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/opa"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Options are what New needs. Config and Logger are required.
type Options struct {
	Config *config.Config
	// Reread reads the configuration again for a reload; nil disables reload.
	Reread func() (*config.Config, error)
	Logger *zap.Logger
	// Builtin resolves builtin:NAME modules.
	Builtin func(string) ([]byte, bool)
	// Cluster, when set, is the cluster node (package cluster) a PUT or DELETE is written to
	// after it succeeded here, and what GET /v1/cluster shows; the node applies the cluster's
	// changes through ApplyCluster and RemoveCluster. Nil: a single node.
	Cluster Cluster
	// NATS is the cluster node's connection, which decision_log.jetstream publishes through;
	// nil on a single node, where that key is refused.
	NATS *nats.Conn
}

// Cluster is what the server writes to when it is a cluster's node (package cluster's Node).
type Cluster interface {
	// Write makes p, with module wasm, the cluster's desired state for p.Name; wasm nil means
	// the module the node already serves under that name.
	Write(ctx context.Context, p config.Plugin, wasm []byte) (uint64, error)
	// Delete removes a plugin from the cluster's desired state.
	Delete(ctx context.Context, name string) error
	// Report is GET /v1/cluster's body.
	Report(ctx context.Context) any
}

// sourceCluster is the source of the plugins of a cluster's node: every one comes from, or
// goes to, the cluster's desired state.
const sourceCluster = "cluster"

// ApplyCluster loads p, or brings the loaded plugin to p, through the path of a file reload
// (a new module is a host Replace, made before the old one is broken). On an error the
// running version stays. It is the cluster node's Applier.
func (s *Server) ApplyCluster(ctx context.Context, p config.Plugin, wasm []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout())
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	what, err := s.put(ctx, p, wasm, sourceCluster, nil)
	if err != nil {
		return fmt.Errorf("plugin %q: %w", p.Name, err)
	}
	if what != "" {
		s.log.Info("plugin "+what, zap.String("plugin", p.Name), zap.String("by", sourceCluster))
	}
	return nil
}

// RemoveCluster unloads a plugin the cluster no longer has; one not loaded is no error.
func (s *Server) RemoveCluster(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout())
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entry(name) == nil {
		return nil
	}
	if err := s.h.Unload(ctx, name); err != nil {
		return fmt.Errorf("plugin %q: %w", name, err)
	}
	s.setEntry(name, nil)
	s.log.Info("unloaded", zap.String("plugin", name), zap.String("by", sourceCluster))
	return nil
}

// Server serves one host's plugins over HTTP.
type Server struct {
	h       *host.Host
	log     *zap.Logger
	opts    Options
	cfg     atomic.Pointer[config.Config] // the settings in force
	entries atomic.Pointer[map[string]*entry]
	m       *metrics
	bundles *bundleState        // signed bundles and persisted PUTs (bundles.go, state.go)
	dlog    *decisionlog.Logger // the decision_log section as it was at Open
	dash    *dashboard          // the dashboards' model and streams (dashboard.go)
	mux     *http.ServeMux
	srvMu   sync.Mutex // srv, set by Serve unless Shutdown began
	srv     *http.Server

	mu     sync.Mutex // reloads, PUT, DELETE, restart, reset, the initial load
	status atomic.Pointer[reloadStatus]
	phase  atomic.Int32 // phaseLoading, phaseLoaded, phaseLoadFailed
	// streams counts the open event streams, against events.max_streams.
	streams atomic.Int64

	stopOnce sync.Once
	stopping chan struct{} // closed when shutdown begins: event streams end

	// closeHost closes the host: s.h.Close, replaced by tests that need a host that will not
	// close in time.
	closeHost  func(context.Context) error
	closeOnce  sync.Once
	hostClosed chan struct{} // closed when closeHost returned; closeErr is then set
	closeErr   error
}

// The server's phases: the initial load of the configured plugins, then serving.
const (
	phaseLoading int32 = iota
	phaseLoaded
	phaseLoadFailed
)

// ErrShutdownTimeout is returned by Shutdown when the calls in flight did not finish, or the
// host did not close, within http.shutdown_timeout. The calls were cut off (their connections
// closed) and any guest still running was abandoned to the process's exit.
var ErrShutdownTimeout = errors.New("server: shutdown timed out")

// entry is what the server knows about one loaded plugin beyond the host.
type entry struct {
	spec      config.Plugin     // as declared (config file or PUT)
	source    string            // "config" or "api"
	digest    string            // sha256 of the module bytes
	override  map[string]string // config set through the API; nil when none
	loadedAt  time.Time
	hostSpecs host.Plugin // what the host holds, without the bytes
	// slots admits calls into the host: one token per instance. A call waits here, where its
	// client going away ends the wait, before it enters the host, where it is no longer
	// canceled (see Server.call).
	slots chan struct{}
}

type reloadStatus struct {
	At       time.Time `json:"at"`
	Reason   string    `json:"reason"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	Changes  []string  `json:"changes,omitempty"`
	Warnings []string  `json:"warnings,omitempty"`
}

// New starts a host with the configuration's supervision settings and loads every plugin in
// dependency order: Open and then Load. Any failure closes the host and is returned: the
// server does not start on an invalid configuration.
func New(ctx context.Context, o Options) (*Server, error) {
	s, err := Open(ctx, o)
	if err != nil {
		return nil, err
	}
	if err := s.Load(ctx); err != nil {
		_ = s.h.Close(context.WithoutCancel(ctx))
		_ = s.closeDecisionLog(context.WithoutCancel(ctx), time.Now())
		return nil, err
	}
	return s, nil
}

// Open starts a host with the configuration's supervision settings and returns a Server whose
// API already answers, with no plugin loaded yet: /healthz answers 200, /readyz 503 naming
// the plugins still loading, and calls to them 503 plugin_loading (with Retry-After). Load
// loads them. This lets a caller listen before the (possibly long) load, so that the port
// never accepts connections it does not answer.
func Open(ctx context.Context, o Options) (*Server, error) {
	c := o.Config
	hopts := []host.Option{host.WithLogger(o.Logger), host.WithFormats(extism.Format(), opa.Format()),
		host.WithRestartIntensity(c.Supervisor.MaxRestarts, c.Supervisor.Period, c.Supervisor.MinUptime),
		host.WithQuarantineBackoff(c.Supervisor.QuarantineBase, c.Supervisor.QuarantineMax, 0),
		host.WithPoisonInput(c.Supervisor.PoisonLimit, c.Supervisor.PoisonWindow, 0),
		host.WithLatencySampling(uint(c.Metrics.LatencySampling))}
	if dir := cacheDir(c.CacheDir); dir != "" {
		hopts = append(hopts, host.WithCacheDir(dir))
	}
	if c.Events.BusBuffer > 0 {
		hopts = append(hopts, host.WithBusBuffer(c.Events.BusBuffer))
	}
	dash := newDashboard()
	hopts = append(hopts, host.WithEventHook(dash.hook))
	h, err := host.New(ctx, hopts...)
	if err != nil {
		return nil, err
	}
	s := &Server{h: h, log: o.Logger, opts: o, dash: dash, stopping: make(chan struct{}), hostClosed: make(chan struct{})}
	s.closeHost = h.Close
	s.entries.Store(&map[string]*entry{})
	s.cfg.Store(c)
	s.m = newMetrics(h.Metrics())
	dash.mu.Lock()
	dash.dropped = s.m.dropped.Inc
	dash.mu.Unlock()
	s.bundles = newBundleState(h.Metrics(), c)
	if s.dlog, err = newDecisionLog(c.DecisionLog, h, o.Logger, o.NATS); err != nil {
		_ = h.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	s.mux = s.routes()
	s.status.Store(&reloadStatus{At: time.Now(), Reason: "start"})
	return s, nil
}

// Load loads the configured plugins in dependency order; the server is ready (/readyz) once
// it returned nil. On an error the plugins loaded so far stay loaded, /readyz answers 503
// load_failed, and the caller is expected to Shutdown: the server does not serve a
// configuration it could not load. Call it once.
func (s *Server) Load(ctx context.Context) error {
	s.mu.Lock()
	changes, _, err := s.apply(ctx, s.cfg.Load(), true)
	var warnings []string
	if err == nil {
		var more []string
		more, warnings, err = s.loadState(ctx)
		changes = append(changes, more...)
	}
	s.mu.Unlock()
	if err != nil {
		s.phase.Store(phaseLoadFailed)
		s.status.Store(&reloadStatus{At: time.Now(), Reason: "start", Error: err.Error()})
		return err
	}
	s.status.Store(&reloadStatus{At: time.Now(), Reason: "start", OK: true, Changes: changes, Warnings: warnings})
	s.phase.Store(phaseLoaded)
	s.log.Info("ready", zap.Int("plugins", len(*s.entries.Load())))
	return nil
}

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler { return s.mux }

// Host is the server's host.
func (s *Server) Host() *host.Host { return s.h }

// Serve serves the API on ln until Shutdown. It may be called before Load: the API answers
// while the plugins load.
func (s *Server) Serve(ln net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: zap.NewStdLog(s.log.Named("http"))}
	srv.RegisterOnShutdown(s.beginStop)
	// A Shutdown that came first (the load failed at once) finds no server to stop: Serve
	// must not start one after it.
	s.srvMu.Lock()
	select {
	case <-s.stopping:
		s.srvMu.Unlock()
		_ = ln.Close()
		return nil
	default:
	}
	s.srv = srv
	s.srvMu.Unlock()
	s.log.Info("listening", zap.String("addr", ln.Addr().String()))
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) beginStop() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// closeReserve is the part of http.shutdown_timeout kept for closing the host after the
// calls in flight drained (at most a third of the timeout).
const closeReserve = 5 * time.Second

// Shutdown stops accepting requests, ends event streams, waits for the calls in flight, then
// closes the host (which stops every plugin through its supervisor). The whole of it is
// bounded by http.shutdown_timeout: the calls get the timeout less a reserve for the host
// (min(timeout/3, 5s)); calls still running then are cut off (their connections closed), and
// a host that has not closed by the end of the timeout (a guest that does not stop) is
// abandoned. Either is an error matching ErrShutdownTimeout; instances that outlived their
// supervisor are an error matching host.ErrLeak. It is safe to call more than once and
// before Serve.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginStop()
	total := s.cfg.Load().HTTP.ShutdownTimeout
	end := time.Now().Add(total)
	ctx = context.WithoutCancel(ctx)
	var errs []error
	s.srvMu.Lock()
	srv := s.srv
	s.srvMu.Unlock()
	if srv != nil {
		dctx, cancel := context.WithDeadline(ctx, end.Add(-min(total/3, closeReserve)))
		err := srv.Shutdown(dctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: draining calls: %w", ErrShutdownTimeout, err))
			_ = srv.Close()
		}
	}
	s.closeOnce.Do(func() {
		cctx, cancel := context.WithDeadline(ctx, end)
		go func() {
			defer cancel()
			s.closeErr = s.closeHost(cctx)
			close(s.hostClosed)
		}()
	})
	t := time.NewTimer(time.Until(end) + 100*time.Millisecond) // Close's own bound, then ours
	defer t.Stop()
	select {
	case <-s.hostClosed:
		if err := s.closeErr; err != nil && !errors.Is(err, supervisor.ErrShutdown) {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w: closing the host: %w", ErrShutdownTimeout, err)
			}
			errs = append(errs, err)
		}
	case <-t.C:
		errs = append(errs, fmt.Errorf("%w: the host did not close within http.shutdown_timeout (%v): "+
			"a guest does not stop; abandoned", ErrShutdownTimeout, total))
	}
	errs = append(errs, s.closeDecisionLog(ctx, end))
	return errors.Join(errs...)
}

func (s *Server) entry(name string) *entry { return (*s.entries.Load())[name] }

// setEntry replaces or (e == nil) removes name's entry; under s.mu.
func (s *Server) setEntry(name string, e *entry) {
	m := maps.Clone(*s.entries.Load())
	if e == nil {
		delete(m, name)
	} else {
		m[name] = e
	}
	s.entries.Store(&m)
}

// Reload rereads the configuration and applies the difference. On an invalid configuration
// nothing changes; the error is logged, counted and kept in GET /v1/status.
func (s *Server) Reload(ctx context.Context, reason string) error {
	if s.opts.Reread == nil {
		return errors.New("reload: the configuration has no file")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &reloadStatus{At: time.Now(), Reason: reason}
	c, err := s.opts.Reread()
	if err == nil {
		st.Changes, st.Warnings, err = s.apply(ctx, c, false)
	}
	if err != nil {
		st.Error = err.Error()
		s.m.reloads.WithLabelValues("error").Inc()
		s.log.Error("reload failed; the running configuration stays", zap.String("reason", reason), zap.Error(err))
	} else {
		st.OK = true
		s.m.reloads.WithLabelValues("ok").Inc()
		s.log.Info("reloaded", zap.String("reason", reason), zap.Strings("changes", st.Changes),
			zap.Strings("warnings", st.Warnings))
	}
	s.status.Store(st)
	return err
}

// apply makes the loaded plugins those of c and of its bundles: it loads added ones, unloads
// removed ones, pushes changed config and replaces changed modules. Plugins loaded through
// the API (source "api") are left alone unless c or a bundle names them. At start any
// failure is returned at once; on reload each plugin's failure is collected and that plugin
// keeps its running version, and a refused bundle is replaced by its last good version (see
// bundlePlugins) and reported in err after everything else is applied. Under s.mu.
func (s *Server) apply(ctx context.Context, c *config.Config, start bool) (changes, warnings []string, err error) {
	old := s.cfg.Load()
	// Resolve every module first: a missing file refuses the whole reload.
	wasm := map[string][]byte{}
	for _, p := range c.Plugins {
		b, err := s.resolve(p)
		if err != nil {
			return nil, nil, fmt.Errorf("plugins(%s).wasm: %w", p.Name, err)
		}
		wasm[p.Name] = b
	}
	fromBundles, bundleWasm, refusals, err := s.bundlePlugins(c, start)
	if err != nil {
		return nil, nil, err
	}
	source := map[string]string{}
	for _, p := range fromBundles {
		wasm[p.Name], source[p.Name] = bundleWasm[p.Name], SourceBundle
	}
	ordered, err := config.Order(append(slices.Clone(c.Plugins), fromBundles...))
	if err != nil {
		return nil, nil, err
	}
	declared := map[string]bool{}
	for _, p := range ordered {
		declared[p.Name] = true
	}
	s.bundles.declared = declared
	if !start {
		warnings = restartOnly(old, c)
	}
	var errs []error
	// Removed: unload dependents first (reverse load order).
	want := map[string]bool{}
	for _, p := range ordered {
		want[p.Name] = true
	}
	cur := *s.entries.Load()
	oldOrder, _ := config.Order(specsOf(cur))
	for i := len(oldOrder) - 1; i >= 0; i-- {
		name := oldOrder[i].Name
		// Only what the file or a bundle declared: a plugin PUT by the API, or the cluster's,
		// is not the file's to remove.
		if e := cur[name]; e != nil && (e.source == "config" || e.source == SourceBundle) && !want[name] {
			if err := s.h.Unload(ctx, name); err != nil {
				errs = append(errs, err)
				continue
			}
			s.setEntry(name, nil)
			changes = append(changes, "unloaded "+name)
		}
	}
	for _, p := range ordered {
		src := cmp.Or(source[p.Name], "config")
		what, err := s.put(ctx, p, wasm[p.Name], src, nil)
		if err != nil {
			if start {
				return nil, nil, err
			}
			errs = append(errs, err)
			continue
		}
		if what != "" {
			changes = append(changes, what+" "+p.Name)
		}
	}
	if len(errs) > 0 {
		return changes, warnings, errors.Join(append(errs, refusals...)...)
	}
	// The settings that can change while running take effect; keep the others.
	next := *c
	if !start {
		next.Listen, next.Log.Level, next.Log.Format, next.CacheDir = old.Listen, old.Log.Level, old.Log.Format, old.CacheDir
		next.Supervisor, next.Events.BusBuffer, next.Metrics = old.Supervisor, old.Events.BusBuffer, old.Metrics
	}
	s.cfg.Store(&next)
	return changes, warnings, errors.Join(refusals...)
}

func restartOnly(a, b *config.Config) []string {
	var w []string
	note := func(changed bool, key string) {
		if changed {
			w = append(w, key+" changed: takes effect at the next start")
		}
	}
	note(a.Listen != b.Listen, "listen")
	note(a.Log.Level != b.Log.Level || a.Log.Format != b.Log.Format, "log.level/log.format")
	note(a.CacheDir != b.CacheDir, "cache_dir")
	note(a.Supervisor != b.Supervisor, "supervisor")
	note(a.Events.BusBuffer != b.Events.BusBuffer, "events.bus_buffer")
	note(a.Metrics != b.Metrics, "metrics.latency_sampling")
	note(!reflect.DeepEqual(a.DecisionLog, b.DecisionLog), "decision_log")
	note(!reflect.DeepEqual(a.Cluster, b.Cluster), "cluster")
	return w
}

func specsOf(m map[string]*entry) []config.Plugin {
	out := make([]config.Plugin, 0, len(m))
	for _, e := range m {
		out = append(out, e.spec)
	}
	return out
}

// put loads p, or brings the loaded plugin of that name to p: config only → Configure;
// module, limits or capabilities → Replace (make-before-break); pool size, restart type,
// dependencies or subscriptions → Unload and Load. It returns what it did ("" for nothing).
// Under s.mu.
func (s *Server) put(ctx context.Context, p config.Plugin, wasm []byte, source string, override map[string]string) (string, error) {
	hp := hostPlugin(p)
	hp.Wasm = wasm
	if override != nil {
		hp.Config = override
	}
	e := &entry{spec: p, source: source, digest: digest(wasm), override: override, loadedAt: time.Now(), hostSpecs: hp}
	e.hostSpecs.Wasm = nil
	old := s.entry(p.Name)
	if old != nil && old.hostSpecs.Instances == hp.Instances {
		e.slots = old.slots
	} else {
		e.slots = make(chan struct{}, max(hp.Instances, 1))
	}
	if old == nil {
		if err := s.h.Load(ctx, hp); err != nil {
			return "", err
		}
		s.setEntry(p.Name, e)
		return "loaded", nil
	}
	if source != "api" && old.override != nil && override == nil && maps.Equal(old.spec.Config, p.Config) {
		// The file did not change this plugin's config: an API override stays.
		hp.Config, e.override = old.override, old.override
	}
	o, n := old.hostSpecs, e.hostSpecs
	structural := o.Instances != n.Instances || o.Restart != n.Restart || o.OnFailure != n.OnFailure ||
		o.RestartPolicy != n.RestartPolicy || // Replace keeps a pool's restart policy
		o.Isolation != n.Isolation || // and its isolation
		!equalStrings(o.DependsOn, n.DependsOn) || !equalStrings(o.Subscribe, n.Subscribe)
	module := old.digest != e.digest || o.Limits != n.Limits || !equalCaps(o.Capabilities, n.Capabilities) ||
		o.NoSnapshot != n.NoSnapshot // another Module: with or without a snapshot
	switch {
	case structural:
		if err := s.h.Unload(ctx, p.Name); err != nil {
			return "", err
		}
		s.setEntry(p.Name, nil)
		if err := s.h.Load(ctx, hp); err != nil {
			return "", err
		}
		s.setEntry(p.Name, e)
		return "reloaded (unload and load)", nil
	case module:
		if err := s.h.Replace(ctx, hp); err != nil {
			return "", err
		}
		s.setEntry(p.Name, e)
		return "replaced", nil
	case !maps.Equal(o.Config, hp.Config):
		if err := s.h.Configure(ctx, p.Name, hp.Config); err != nil {
			return "", err
		}
		e.hostSpecs.Config = hp.Config
		s.setEntry(p.Name, e)
		return "configured", nil
	case old.spec.FailurePolicy != p.FailurePolicy || !bytes.Equal(old.spec.FailureAnswer, p.FailureAnswer) ||
		old.spec.Required != p.Required || old.source != source:
		e.loadedAt = old.loadedAt
		s.setEntry(p.Name, e)
		return "updated", nil
	}
	return "", nil
}

func (s *Server) resolve(p config.Plugin) ([]byte, error) {
	if p.Builtin != "" {
		if s.opts.Builtin != nil {
			if b, ok := s.opts.Builtin(p.Builtin); ok {
				return b, nil
			}
		}
		return nil, fmt.Errorf("no built-in plugin %q", p.Builtin)
	}
	return os.ReadFile(p.Path)
}

// hostPlugin turns a plugin's settings into the host's plain values.
func hostPlugin(p config.Plugin) host.Plugin {
	hp := host.Plugin{Name: p.Name, Config: maps.Clone(p.Config), Instances: p.Instances,
		DependsOn: p.DependsOn, Subscribe: p.Subscribe,
		Limits: sandbox.Limits{MemoryPages: p.MemoryPages, CallTimeout: p.CallTimeout, StartTimeout: p.StartTimeout,
			Output: sandbox.OutputLimits{CallBytes: p.Output.CallBytes, CallLines: p.Output.CallCount,
				SecondBytes: p.Output.SecondBytes, SecondLines: p.Output.SecondCount},
			Publish: sandbox.PublishLimits{CallMessages: p.Publish.CallCount, CallBytes: p.Publish.CallBytes,
				SecondMessages: p.Publish.SecondCount, SecondBytes: p.Publish.SecondBytes}},
		Capabilities: sandbox.Capabilities{Env: p.Env, InheritEnv: p.InheritEnv}}
	if hp.Config == nil {
		hp.Config = map[string]string{}
	}
	if p.OnFailure == config.OnFailureEscalate {
		hp.OnFailure = host.Escalate
	}
	if p.Isolation == config.IsolationPerCall {
		hp.Isolation = host.InstancePerCall
	}
	hp.NoSnapshot = p.NoSnapshot
	rp := p.RestartPolicy
	hp.RestartPolicy = host.RestartPolicy{Intensity: rp.MaxRestarts, Period: rp.Period, MinUptime: rp.MinUptime,
		Backoff: supervisor.Backoff{Initial: rp.BackoffInitial, Max: rp.BackoffMax}}
	switch p.Restart {
	case "transient":
		hp.Restart = supervisor.Transient
	case "temporary":
		hp.Restart = supervisor.Temporary
	}
	if p.Clock == "real" {
		hp.Capabilities.Clock = sandbox.ClockReal
	}
	if p.Random == "crypto" {
		hp.Capabilities.Random = sandbox.RandomCrypto
	}
	for _, d := range p.Dirs {
		hp.Capabilities.Dirs = append(hp.Capabilities.Dirs, sandbox.Dir{Host: d[0], Guest: d[1]})
	}
	return hp
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalCaps(a, b sandbox.Capabilities) bool {
	if !maps.Equal(a.Env, b.Env) || !equalStrings(a.InheritEnv, b.InheritEnv) || a.Clock != b.Clock ||
		a.Random != b.Random || len(a.Dirs) != len(b.Dirs) {
		return false
	}
	for i := range a.Dirs {
		if a.Dirs[i] != b.Dirs[i] {
			return false
		}
	}
	return true
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// cacheDir maps cache_dir: "" is the user cache directory, "off" none.
func cacheDir(s string) string {
	switch s {
	case "off":
		return ""
	case "":
		if dir, err := os.UserCacheDir(); err == nil {
			return filepath.Join(dir, "wasmvisor")
		}
		return ""
	}
	return s
}

// Watch polls the configuration file and every module file it names, every reload.interval,
// and reloads when one changed (size or modification time). It returns when ctx ends. It is
// a no-op when the configuration has no file or reload.watch is false.
func (s *Server) Watch(ctx context.Context) error {
	c := s.cfg.Load()
	if s.opts.Reread == nil || !c.Reload.Watch {
		<-ctx.Done()
		return nil
	}
	last := s.fingerprint()
	t := time.NewTicker(c.Reload.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fp := s.fingerprint()
		if fp == last {
			continue
		}
		_ = s.Reload(ctx, "file changed")
		last = s.fingerprint() // the reload may name other files
	}
}

func (s *Server) fingerprint() string {
	c := s.cfg.Load()
	files := []string{c.Source}
	for _, p := range c.Plugins {
		if p.Path != "" {
			files = append(files, p.Path)
		}
	}
	var b []byte
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			b = fmt.Appendf(b, "%s:missing;", f)
			continue
		}
		b = fmt.Appendf(b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
	}
	return string(bundleFingerprint(c, b))
}

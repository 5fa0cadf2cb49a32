package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/ui"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Headers set on a call's response.
const (
	// HeaderFailurePolicy is set when the response is a synthetic decision made by the
	// plugin's failure policy ("allow" or "monitor") because the plugin failed.
	HeaderFailurePolicy = "Wasmvisor-Failure-Policy"
	// HeaderPluginError carries the kind of the plugin's failure (trap, deadline, memory…).
	HeaderPluginError = "Wasmvisor-Plugin-Error"
	// HeaderDigest is the digest of the module that answered.
	HeaderDigest = "Wasmvisor-Plugin-Digest"
)

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	handle := func(pattern string, admin bool, f http.HandlerFunc) {
		if admin {
			f = s.admin(f)
		}
		// The route label is the pattern without a trailing wildcard's "...": the call
		// route's label stayed the same when its handler began to take slashes.
		mux.Handle(pattern, s.instrument(strings.Replace(pattern, "...}", "}", 1), f))
	}
	handle("GET /v1/plugins", false, s.listPlugins)
	handle("GET /v1/plugins/{name}", false, s.getPlugin)
	handle("POST /v1/plugins/{name}/call/{handler...}", false, s.call) // a handler may hold slashes: a Rego entrypoint
	handle("GET /v1/plugins/{name}/events", false, s.guestEvents)
	handle("POST /v1/plugins/{name}/restart", true, s.restart)
	handle("POST /v1/plugins/{name}/reset", true, s.reset)
	handle("PUT /v1/plugins/{name}", true, s.putPlugin)
	handle("DELETE /v1/plugins/{name}", true, s.deletePlugin)
	handle("POST /v1/reload", true, s.reloadHandler)
	handle("GET /v1/status", false, s.getStatus)
	handle("GET /v1/cluster", false, s.getCluster)
	handle("GET /v1/events", false, s.events)
	handle("GET /v1/dashboard/stream", false, s.dashboardStream)
	handle("GET /v1/auth", true, s.authCheck)
	// The dashboard's page and files (package ui): open like the read-only routes; the page
	// asks for the admin token before it shows any admin control.
	mux.Handle("GET /ui", s.instrument("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently)))
	mux.Handle("GET /ui/", s.instrument("GET /ui/", http.StripPrefix("/ui", ui.Handler())))
	handle("GET /healthz", false, s.healthz)
	handle("GET /readyz", false, s.readyz)
	mux.Handle("GET /metrics", s.instrument("GET /metrics",
		promhttp.HandlerFor(s.h.Metrics(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})))
	handle("/", false, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// apiError is every error response's body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Kind    string `json:"kind,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeErrorKind(w, status, code, msg, "")
}

func writeErrorKind(w http.ResponseWriter, status int, code, msg, kind string) {
	b, _ := json.Marshal(struct {
		Error apiError `json:"error"`
	}{apiError{Code: code, Message: msg, Kind: kind}})
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(b))) // a flush then ends the answer
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeJSON encodes v before it writes the status, so that a value that cannot be encoded is
// a 500 with an error body, never a 200 with an empty one.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument counts and times requests by route and turns a panic into a JSON 500.
func (s *Server) instrument(route string, next http.Handler) http.Handler {
	hist := s.m.duration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		t0 := time.Now()
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // a sentinel panic value
					panic(v)
				}
				s.log.Error("panic in handler", zap.String("route", route), zap.Any("panic", v),
					zap.ByteString("stack", debug.Stack()))
				if rec.status == 0 {
					writeError(rec, http.StatusInternalServerError, "internal", "internal error")
				}
			}
			hist.Observe(time.Since(t0).Seconds())
			s.m.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		}()
		next.ServeHTTP(rec, r)
	})
}

// admin requires the bearer token from admin_token (or WASMVISOR_ADMIN_TOKEN). Without a
// token configured the admin routes are refused. While the initial load runs they answer 503
// loading (with Retry-After): they would wait for it.
func (s *Server) admin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want := s.cfg.Load().AdminToken
		if want == "" {
			writeError(w, http.StatusForbidden, "admin_disabled",
				"no admin token is configured (admin_token or WASMVISOR_ADMIN_TOKEN)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wasmvisor"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing bearer token")
			return
		}
		if !tokenOK(got, want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wasmvisor", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid bearer token")
			return
		}
		if s.phase.Load() == phaseLoading {
			s.m.refused.WithLabelValues("loading").Inc()
			setRetryAfter(w, defaultRetryAfter)
			writeError(w, http.StatusServiceUnavailable, "loading", "the configured plugins are still loading")
			return
		}
		next(w, r)
	}
}

// tokenOK compares tokens as SHA-256 digests in constant time: neither content nor length
// leaks through timing.
func tokenOK(got, want string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// isAdmin reports whether r carries the admin token. Routes open to all use it to decide what
// to show: plugin config values only to the admin.
func (s *Server) isAdmin(r *http.Request) bool {
	want := s.cfg.Load().AdminToken
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return want != "" && ok && got != "" && tokenOK(got, want)
}

// redacted replaces a config value in the views of clients that are not the admin: plugin
// config may hold secrets.
const redacted = "(redacted)"

// pluginView is a plugin in GET /v1/plugins.
type pluginView struct {
	Name          string            `json:"name"`
	Digest        string            `json:"digest"`
	Format        string            `json:"format"`   // wasmvisor, extism
	Handlers      []string          `json:"handlers"` // what the plugin can be called with
	Source        string            `json:"source"`
	Wasm          string            `json:"wasm"`
	Status        string            `json:"status"` // up, degraded, down
	State         string            `json:"state"`  // as /readyz: up, degraded, down, failed
	Required      bool              `json:"required"`
	FailurePolicy string            `json:"failure_policy"`
	Config        map[string]string `json:"config"`
	ConfigVersion uint64            `json:"config_version"`
	Overridden    bool              `json:"config_overridden"`
	Restarts      uint64            `json:"restarts"`
	Isolation     string            `json:"isolation"` // shared, per_call
	Resets        uint64            `json:"resets"`    // instances replaced after their call (per_call)
	Rewinds       uint64            `json:"rewinds"`   // of them, rewound in place
	Snapshot      bool              `json:"snapshot"`  // instances start from a snapshot
	SnapshotOff   string            `json:"snapshot_off,omitempty"`
	DependsOn     []string          `json:"depends_on,omitempty"`
	Subscribe     []string          `json:"subscribe,omitempty"`
	LoadedAt      time.Time         `json:"loaded_at"`
	Instances     []instanceView    `json:"instances"`
}

type instanceView struct {
	Index         int            `json:"index"`
	Up            bool           `json:"up"`
	Incarnation   uint64         `json:"incarnation"`
	ConfigVersion uint64         `json:"config_version"`
	Read          bool           `json:"read"`
	ReadError     string         `json:"read_error,omitempty"` // why the stores were not read
	MemoryPages   uint32         `json:"memory_pages"`
	Telemetry     map[string]any `json:"telemetry,omitempty"`
}

// view is a plugin as the API shows it; admin sees its config values, others only its keys.
func (s *Server) view(pi host.PluginInfo, admin bool) pluginView {
	v := pluginView{Name: pi.Name, Digest: "sha256:" + pi.Digest, Config: pi.Config, ConfigVersion: pi.ConfigVersion,
		Restarts: pi.Restarts, Isolation: config.IsolationShared, Resets: pi.Resets, Rewinds: pi.Rewinds, DependsOn: pi.DependsOn, Subscribe: pi.Subscribe, FailurePolicy: config.FailDeny,
		Instances: []instanceView{}, Format: string(pi.Format), Handlers: pi.Handlers,
		Snapshot: pi.Snapshot, SnapshotOff: pi.SnapshotOff}
	if v.Handlers == nil {
		v.Handlers = []string{} // JSON lists are never null
	}
	if pi.Isolation == host.InstancePerCall {
		v.Isolation = config.IsolationPerCall
	}
	switch {
	case !admin:
		v.Config = make(map[string]string, len(pi.Config))
		for k := range pi.Config {
			v.Config[k] = redacted
		}
	case v.Config == nil:
		v.Config = map[string]string{} // JSON objects and lists are never null
	}
	if e := s.entry(pi.Name); e != nil {
		v.Source, v.Wasm, v.FailurePolicy, v.LoadedAt, v.Overridden = e.source, e.spec.Wasm, e.spec.FailurePolicy,
			e.loadedAt, e.override != nil
		v.Digest, v.Required = e.digest, e.spec.Required
	}
	v.State = s.pluginState(pi.Name, len(pi.Instances))
	up := 0
	for _, ii := range pi.Instances {
		iv := instanceView{Index: ii.Index, Up: ii.Up, Incarnation: ii.Incarnation, ConfigVersion: ii.ConfigVersion,
			Read: ii.Read, MemoryPages: ii.MemoryPages}
		if ii.ReadErr != nil {
			iv.ReadError = ii.ReadErr.Error()
		}
		if len(ii.Telemetry) > 0 {
			iv.Telemetry = map[string]any{}
			for _, m := range ii.Telemetry {
				iv.Telemetry[m.Name] = m
			}
		}
		if ii.Up {
			up++
		}
		v.Instances = append(v.Instances, iv)
	}
	switch {
	case up == len(pi.Instances):
		v.Status = "up"
	case up > 0:
		v.Status = "degraded"
	default:
		v.Status = "down"
	}
	return v
}

func (s *Server) listPlugins(w http.ResponseWriter, r *http.Request) {
	out := []pluginView{}
	admin := s.isAdmin(r)
	for _, pi := range s.h.Plugins() {
		if s.entry(pi.Name) == nil {
			continue // not served (yet): as getPlugin
		}
		out = append(out, s.view(pi, admin))
	}
	writeJSON(w, http.StatusOK, map[string]any{"plugins": out})
}

func (s *Server) getPlugin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.entry(name) == nil {
		// Not served: the host may hold the plugin already (a load between the host's Load
		// and the server's entry), but a call would answer 404 or 503, and so does this. Told
		// apart, a client that waited for this to show the plugin had its first call refused
		// (the cluster's end-to-end test failed so, once in a loaded run).
		s.notServed(w, name)
		return
	}
	pi, err := s.h.Plugin(name)
	if err != nil {
		s.hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(pi, s.isAdmin(r)))
}

// hostError answers an error from a host operation (load, replace, unload, reset, configure).
func (s *Server) hostError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, host.ErrNotFound):
		writeError(w, http.StatusNotFound, "plugin_not_found", err.Error())
	case errors.Is(err, host.ErrDependency):
		writeError(w, http.StatusConflict, "dependency", err.Error())
	case errors.Is(err, host.ErrInvalidPlugin):
		writeError(w, http.StatusConflict, "invalid_plugin", err.Error())
	case errors.Is(err, sandbox.ErrInvalidModule), errors.Is(err, sandbox.ErrABI):
		writeError(w, http.StatusUnprocessableEntity, "invalid_module", err.Error())
	case errors.Is(err, sandbox.ErrGuest):
		writeError(w, http.StatusUnprocessableEntity, "config_rejected", err.Error())
	case errors.Is(err, sandbox.ErrInvalidConfig):
		// Limits or capabilities the sandbox cannot honour, such as a directory grant that
		// can no longer be opened: the request's or the file's fault, not the server's.
		writeError(w, http.StatusUnprocessableEntity, "invalid_config", err.Error())
	case sandbox.Fatal(err):
		writeErrorKind(w, http.StatusUnprocessableEntity, "start_failed", err.Error(), host.Kind(err))
	case errors.Is(err, host.ErrNoInstance), errors.Is(err, context.DeadlineExceeded), errors.Is(err, sandbox.ErrNotEntered):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, host.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// opTimeout bounds an admin operation: http.request_timeout, at least 30 s.
func (s *Server) opTimeout() time.Duration {
	return max(s.cfg.Load().HTTP.RequestTimeout, 30*time.Second)
}

func (s *Server) opContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.opTimeout())
}

// restart restarts the plugin's instances (host Reset), or with ?slot=N the instance in pool
// slot N only (host RestartInstance): 400 bad_slot for a slot that is not a number, 404
// instance_not_found for one the pool does not have.
func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	slot := -1
	if q := r.URL.Query(); q.Has("slot") {
		n, err := strconv.Atoi(q.Get("slot"))
		if err != nil || n < 0 || n > maxSlot {
			writeError(w, http.StatusBadRequest, "bad_slot", fmt.Sprintf("slot %q: want a pool slot index, 0 to %d", q.Get("slot"), maxSlot))
			return
		}
		slot = n
	}
	ctx, cancel := s.opContext(r)
	defer cancel()
	s.mu.Lock()
	var err error
	if slot < 0 {
		err = s.h.Reset(ctx, name)
	} else {
		err = s.restartSlot(ctx, name, slot)
	}
	s.mu.Unlock()
	var nf *slotNotFound
	switch {
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, "instance_not_found", err.Error())
		return
	case err != nil:
		s.hostError(w, err)
		return
	}
	if slot < 0 {
		s.log.Info("restarted", zap.String("plugin", name))
	} else {
		s.log.Info("restarted instance", zap.String("plugin", name), zap.Int("slot", slot))
	}
	s.getPlugin(w, r)
}

// maxSlot bounds ?slot=: no pool is larger (config's instances bound).
const maxSlot = 1 << 16

// slotNotFound is restartSlot's error for a slot the plugin's pool does not have.
type slotNotFound struct {
	plugin string
	slot   int
	size   int
}

func (e *slotNotFound) Error() string {
	return fmt.Sprintf("plugin %q: no instance %d (the pool has %d)", e.plugin, e.slot, e.size)
}

// restartSlot restarts one instance of a plugin. Under s.mu.
func (s *Server) restartSlot(ctx context.Context, name string, slot int) error {
	pi, err := s.h.Plugin(name)
	if err != nil {
		return err
	}
	if slot >= len(pi.Instances) {
		return &slotNotFound{plugin: name, slot: slot, size: len(pi.Instances)}
	}
	return s.h.RestartInstance(ctx, name, slot)
}

// reset drops a config override set through the API (the declared config becomes desired
// again) and restarts the plugin's instances.
func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := s.opContext(r)
	defer cancel()
	s.mu.Lock()
	err := func() error {
		e := s.entry(name)
		if e == nil {
			return fmt.Errorf("plugin %q: %w", name, host.ErrNotFound)
		}
		if e.override != nil {
			if err := s.h.Configure(ctx, name, hostPlugin(e.spec).Config); err != nil {
				return err
			}
			ne := *e
			ne.override, ne.hostSpecs.Config = nil, hostPlugin(e.spec).Config
			s.setEntry(name, &ne)
		}
		return s.h.Reset(ctx, name)
	}()
	s.mu.Unlock()
	if err != nil {
		s.hostError(w, err)
		return
	}
	s.log.Info("reset", zap.String("plugin", name))
	s.getPlugin(w, r)
}

func (s *Server) deletePlugin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := s.opContext(r)
	defer cancel()
	s.mu.Lock()
	err := s.h.Unload(ctx, name)
	var perr error
	if err == nil {
		s.setEntry(name, nil)
		perr = s.unpersist(name)
	}
	s.mu.Unlock()
	if err != nil {
		s.hostError(w, err)
		return
	}
	if perr != nil {
		s.persistFailed(w, name, perr)
		return
	}
	s.log.Info("unloaded", zap.String("plugin", name), zap.String("by", "api"))
	if c := s.opts.Cluster; c != nil {
		if err := c.Delete(ctx, name); err != nil {
			clusterError(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getStatus(w http.ResponseWriter, _ *http.Request) {
	c := s.cfg.Load()
	_, ready := s.ready()
	writeJSON(w, http.StatusOK, map[string]any{
		"ready": ready, "config": map[string]string{"source": c.Source, "digest": c.Digest},
		"listen": c.Listen, "last_reload": s.status.Load(), "plugins": len(*s.entries.Load()),
		"event_streams": s.streams.Load(), "bundles": s.bundles.view()})
}

// getCluster is GET /v1/cluster: the nodes, the revision each serves and its lag; 404
// cluster_off on a single node.
func (s *Server) getCluster(w http.ResponseWriter, r *http.Request) {
	if s.opts.Cluster == nil {
		writeError(w, http.StatusNotFound, "cluster_off", "this server has no cluster section")
		return
	}
	writeJSON(w, http.StatusOK, s.opts.Cluster.Report(r.Context()))
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-s.h.Done():
		writeError(w, http.StatusServiceUnavailable, "host_stopped", fmt.Sprintf("the host stopped: %v", s.h.Err()))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	decisions   *prometheus.CounterVec
	failures    *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	dropped     prometheus.Counter
	streams     prometheus.Gauge
	interrupted *prometheus.CounterVec
	refused     *prometheus.CounterVec
}

// newMetrics registers the server's metrics in the host's registry, so that GET /metrics
// serves both.
func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_http_requests_total",
			Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wasmvisor_http_request_duration_seconds",
			Help:    "HTTP request duration by route.",
			Buckets: []float64{5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 1, 5}}, []string{"route"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_decisions_total",
			Help: "Plugin calls over HTTP by outcome (allow, deny, ok, error, failure_deny, failure_allow, failure_monitor, canceled)."},
			[]string{"plugin", "outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_failure_policy_total",
			Help: "Plugin failures answered by the failure policy, by policy and failure kind."},
			[]string{"plugin", "policy", "kind"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_reloads_total",
			Help: "Configuration reloads by result."}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmvisor_events_dropped_total",
			Help: "Server-sent events dropped because a client's buffer was full."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmvisor_event_streams",
			Help: "Open server-sent event streams."}),
		interrupted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_call_interruptions_total",
			Help: "Calls ended before the plugin answered, by cause: client_gone (the client went away), " +
				"request_timeout (http.request_timeout), body_timeout (the body did not arrive in time)."},
			[]string{"plugin", "cause"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmvisor_http_refused_total",
			Help: "Requests refused before any work, by reason: too_many_streams (events.max_streams), " +
				"plugin_loading (a call to a plugin not loaded yet), loading (an admin request during the initial load)."},
			[]string{"reason"}),
	}
	reg.MustRegister(m.requests, m.duration, m.decisions, m.failures, m.reloads, m.dropped, m.streams,
		m.interrupted, m.refused)
	return m
}

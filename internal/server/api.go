package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/internal/config"
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
		mux.Handle(pattern, s.instrument(pattern, f))
	}
	handle("GET /v1/plugins", false, s.listPlugins)
	handle("GET /v1/plugins/{name}", false, s.getPlugin)
	handle("POST /v1/plugins/{name}/call/{handler}", false, s.call)
	handle("POST /v1/plugins/{name}/restart", true, s.restart)
	handle("POST /v1/plugins/{name}/reset", true, s.reset)
	handle("PUT /v1/plugins/{name}", true, s.putPlugin)
	handle("DELETE /v1/plugins/{name}", true, s.deletePlugin)
	handle("POST /v1/reload", true, s.reloadHandler)
	handle("GET /v1/status", false, s.getStatus)
	handle("GET /v1/events", false, s.events)
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
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error apiError `json:"error"`
	}{apiError{Code: code, Message: msg, Kind: kind}})
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
// token configured the admin routes are refused.
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
		a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
		if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wasmvisor", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid bearer token")
			return
		}
		next(w, r)
	}
}

// pluginView is a plugin in GET /v1/plugins.
type pluginView struct {
	Name          string            `json:"name"`
	Digest        string            `json:"digest"`
	Source        string            `json:"source"`
	Wasm          string            `json:"wasm"`
	Status        string            `json:"status"` // up, degraded, down
	FailurePolicy string            `json:"failure_policy"`
	Config        map[string]string `json:"config"`
	ConfigVersion uint64            `json:"config_version"`
	Overridden    bool              `json:"config_overridden"`
	Restarts      uint64            `json:"restarts"`
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

func (s *Server) view(pi host.PluginInfo) pluginView {
	v := pluginView{Name: pi.Name, Digest: pi.Digest, Config: pi.Config, ConfigVersion: pi.ConfigVersion,
		Restarts: pi.Restarts, DependsOn: pi.DependsOn, Subscribe: pi.Subscribe, FailurePolicy: config.FailDeny}
	if e := s.entry(pi.Name); e != nil {
		v.Source, v.Wasm, v.FailurePolicy, v.LoadedAt, v.Overridden = e.source, e.spec.Wasm, e.spec.FailurePolicy,
			e.loadedAt, e.override != nil
		v.Digest = e.digest
	}
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

func (s *Server) listPlugins(w http.ResponseWriter, _ *http.Request) {
	out := []pluginView{}
	for _, pi := range s.h.Plugins() {
		out = append(out, s.view(pi))
	}
	writeJSON(w, http.StatusOK, map[string]any{"plugins": out})
}

func (s *Server) getPlugin(w http.ResponseWriter, r *http.Request) {
	pi, err := s.h.Plugin(r.PathValue("name"))
	if err != nil {
		s.hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(pi))
}

// errKind names a call error's kind, as the host's metrics do.
func errKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, sandbox.ErrMemoryLimit):
		return "memory"
	case errors.Is(err, sandbox.ErrTrap):
		return "trap"
	case errors.Is(err, sandbox.ErrDeadline):
		return "deadline"
	case errors.Is(err, sandbox.ErrExit):
		return "exit"
	case errors.Is(err, sandbox.ErrABIViolation):
		return "violation"
	case errors.Is(err, sandbox.ErrUnknownHandler):
		return "unknown_handler"
	case errors.Is(err, sandbox.ErrGuest):
		return "guest"
	case errors.Is(err, host.ErrNotFound):
		return "not_found"
	case errors.Is(err, host.ErrNoInstance):
		return "no_instance"
	case errors.Is(err, sandbox.ErrCanceled), errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, host.ErrClosed):
		return "closed"
	}
	return "other"
}

func (s *Server) call(w http.ResponseWriter, r *http.Request) {
	name, handler := r.PathValue("name"), r.PathValue("handler")
	e := s.entry(name)
	if e == nil {
		writeError(w, http.StatusNotFound, "plugin_not_found", fmt.Sprintf("no plugin %q", name))
		return
	}
	c := s.cfg.Load()
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(c.HTTP.RequestTimeout))
	input, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.HTTP.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("the input exceeds http.max_body_bytes (%d bytes)", c.HTTP.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_body", "reading the body: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.HTTP.RequestTimeout)
	defer cancel()
	t0 := time.Now()
	out, err := s.h.Call(ctx, name, handler, input)
	dur := time.Since(t0)
	kind := errKind(err)
	var outcome string
	policy := e.spec.FailurePolicy
	w.Header().Set(HeaderDigest, e.digest)
	switch kind {
	case "":
		outcome = decision(out)
		ct := "application/octet-stream"
		if json.Valid(out) {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	case "not_found":
		outcome = "error"
		writeError(w, http.StatusNotFound, "plugin_not_found", fmt.Sprintf("no plugin %q", name))
	case "unknown_handler":
		outcome = "error"
		writeError(w, http.StatusNotFound, "unknown_handler", fmt.Sprintf("plugin %q has no handler %q", name, handler))
	case "guest":
		outcome = "error"
		msg, status := err.Error(), ""
		var ge *sandbox.GuestError
		if errors.As(err, &ge) {
			msg, status = ge.Message, ge.Status.String()
		}
		writeErrorKind(w, http.StatusUnprocessableEntity, "guest_error", msg, status)
	default:
		if r.Context().Err() != nil { // the client went away: nobody to answer
			outcome = "canceled"
			break
		}
		s.m.failures.WithLabelValues(name, policy, kind).Inc()
		switch policy {
		case config.FailAllow, config.FailMonitor:
			outcome = "failure_" + policy
			w.Header().Set(HeaderFailurePolicy, policy)
			w.Header().Set(HeaderPluginError, kind)
			body, _ := json.Marshal(map[string]any{"allow": true, "reasons": []string{
				fmt.Sprintf("plugin %q failed (%s); allowed by failure_policy %s", name, kind, policy)}})
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body)
			if policy == config.FailMonitor {
				s.log.Warn("monitor: plugin failed, request allowed", zap.String("plugin", name),
					zap.String("handler", handler), zap.String("error_kind", kind), zap.Error(err))
			}
		default:
			outcome = "failure_deny"
			w.Header().Set(HeaderPluginError, kind)
			status, code := http.StatusBadGateway, "plugin_failed"
			switch kind {
			case "deadline":
				status, code = http.StatusGatewayTimeout, "plugin_timeout"
			case "no_instance", "closed":
				status, code = http.StatusServiceUnavailable, "plugin_unavailable"
			}
			writeErrorKind(w, status, code, err.Error(), kind)
		}
	}
	s.m.decisions.WithLabelValues(name, outcome).Inc()
	if c.Log.Decisions || kind != "" && kind != "guest" {
		lvl := zap.InfoLevel
		if kind != "" && kind != "guest" && kind != "unknown_handler" {
			lvl = zap.WarnLevel
		}
		if ce := s.log.Check(lvl, "decision"); ce != nil {
			ce.Write(zap.String("plugin", name), zap.String("digest", e.digest), zap.String("handler", handler),
				zap.String("outcome", outcome), zap.Duration("duration", dur), zap.String("error_kind", kind),
				zap.String("failure_policy", policy))
		}
	}
}

// decision reads a policy decision's "allow" field: "allow", "deny", or "ok" when the output
// is not a decision.
func decision(out []byte) string {
	if len(out) == 0 || out[0] != '{' {
		return "ok"
	}
	switch {
	case bytes.Contains(out, []byte(`"allow":true`)):
		return "allow"
	case bytes.Contains(out, []byte(`"allow":false`)):
		return "deny"
	}
	return "ok"
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
	case sandbox.Fatal(err):
		writeErrorKind(w, http.StatusUnprocessableEntity, "start_failed", err.Error(), errKind(err))
	case errors.Is(err, host.ErrNoInstance), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, host.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "shutting_down", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (s *Server) opContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), max(s.cfg.Load().HTTP.RequestTimeout, 30*time.Second))
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, cancel := s.opContext(r)
	defer cancel()
	s.mu.Lock()
	err := s.h.Reset(ctx, name)
	s.mu.Unlock()
	if err != nil {
		s.hostError(w, err)
		return
	}
	s.log.Info("restarted", zap.String("plugin", name))
	s.getPlugin(w, r)
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
	if err == nil {
		s.setEntry(name, nil)
	}
	s.mu.Unlock()
	if err != nil {
		s.hostError(w, err)
		return
	}
	s.log.Info("unloaded", zap.String("plugin", name), zap.String("by", "api"))
	w.WriteHeader(http.StatusNoContent)
}

// putEnvelope is PUT /v1/plugins/{name} with Content-Type application/json.
type putEnvelope struct {
	WasmBase64    string            `json:"wasm_base64,omitempty"`
	Builtin       string            `json:"builtin,omitempty"`
	Config        map[string]string `json:"config,omitempty"`
	Instances     int               `json:"instances,omitempty"`
	FailurePolicy string            `json:"failure_policy,omitempty"`
	MemoryPages   uint32            `json:"memory_pages,omitempty"`
	CallTimeout   string            `json:"call_timeout,omitempty"`
}

func (s *Server) putPlugin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	c := s.cfg.Load()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.HTTP.MaxModuleBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("the body exceeds http.max_module_bytes (%d bytes)", c.HTTP.MaxModuleBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "bad_body", "reading the body: "+err.Error())
		return
	}
	var env putEnvelope
	var wasm []byte
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&env); err != nil || dec.More() {
			if err == nil {
				err = errors.New("trailing data after the object")
			}
			writeError(w, http.StatusBadRequest, "malformed_json", "the JSON envelope: "+err.Error())
			return
		}
		switch {
		case env.WasmBase64 != "" && env.Builtin != "":
			writeError(w, http.StatusBadRequest, "bad_request", "give one of wasm_base64 and builtin")
			return
		case env.WasmBase64 != "":
			if wasm, err = base64.StdEncoding.DecodeString(env.WasmBase64); err != nil {
				writeError(w, http.StatusBadRequest, "malformed_json", "wasm_base64: "+err.Error())
				return
			}
		case env.Builtin != "":
			b, ok := s.opts.Builtin(env.Builtin)
			if !ok || s.opts.Builtin == nil {
				writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("no built-in plugin %q", env.Builtin))
				return
			}
			wasm = b
		}
	} else {
		wasm = body
		q := r.URL.Query()
		for k, vs := range q {
			if ck, ok := strings.CutPrefix(k, "config."); ok && ck != "" {
				if env.Config == nil {
					env.Config = map[string]string{}
				}
				env.Config[ck] = vs[len(vs)-1]
			}
		}
		env.FailurePolicy = q.Get("failure_policy")
		if v := q.Get("instances"); v != "" {
			if env.Instances, err = strconv.Atoi(v); err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", "instances: want an integer")
				return
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.entry(name)
	if len(wasm) == 0 {
		if old == nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("plugin %q is not loaded: send its module", name))
			return
		}
		// A config (or failure policy) update of the running module.
		s.updateConfig(w, r, old, env)
		return
	}
	p := config.Plugin{Name: name, Wasm: "api", Instances: 1, Restart: "permanent", FailurePolicy: config.FailDeny}
	if old != nil {
		p = old.spec
		p.Wasm = "api"
		p.Builtin, p.Path = "", ""
	}
	if env.Builtin != "" {
		p.Wasm = config.BuiltinPrefix + env.Builtin
	}
	if env.Config != nil {
		p.Config = env.Config
	}
	if env.Instances > 0 {
		p.Instances = env.Instances
	}
	if env.MemoryPages > 0 {
		p.MemoryPages = env.MemoryPages
	}
	if env.CallTimeout != "" {
		d, err := time.ParseDuration(env.CallTimeout)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "call_timeout: want a positive duration")
			return
		}
		p.CallTimeout = d
	}
	if env.FailurePolicy != "" {
		if !validPolicy(env.FailurePolicy) {
			writeError(w, http.StatusBadRequest, "bad_request", "failure_policy: want deny, allow or monitor")
			return
		}
		p.FailurePolicy = env.FailurePolicy
	}
	if !nameOK(name) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("plugin name %q: want letters, digits, '_', '.', '-'", name))
		return
	}
	ctx, cancel := s.opContext(r)
	defer cancel()
	what, err := s.put(ctx, p, wasm, "api", nil)
	if err != nil {
		s.log.Warn("PUT refused; the running version (if any) keeps serving", zap.String("plugin", name), zap.Error(err))
		s.hostError(w, err)
		return
	}
	s.log.Info("plugin "+what, zap.String("plugin", name), zap.String("by", "api"))
	pi, err := s.h.Plugin(name)
	if err != nil {
		s.hostError(w, err)
		return
	}
	status := http.StatusOK
	if old == nil {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.view(pi))
}

func (s *Server) updateConfig(w http.ResponseWriter, r *http.Request, old *entry, env putEnvelope) {
	ctx, cancel := s.opContext(r)
	defer cancel()
	ne := *old
	if env.FailurePolicy != "" {
		if !validPolicy(env.FailurePolicy) {
			writeError(w, http.StatusBadRequest, "bad_request", "failure_policy: want deny, allow or monitor")
			return
		}
		ne.spec.FailurePolicy = env.FailurePolicy
	}
	if env.Config != nil {
		if err := s.h.Configure(ctx, old.spec.Name, env.Config); err != nil {
			s.hostError(w, err)
			return
		}
		ne.override = env.Config
		ne.hostSpecs.Config = env.Config
	}
	s.setEntry(old.spec.Name, &ne)
	pi, err := s.h.Plugin(old.spec.Name)
	if err != nil {
		s.hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(pi))
}

func validPolicy(p string) bool {
	return p == config.FailDeny || p == config.FailAllow || p == config.FailMonitor
}

func nameOK(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for i, c := range n {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

func (s *Server) reloadHandler(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.opContext(r)
	defer cancel()
	if err := s.Reload(ctx, "api"); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "reload_failed", err.Error())
		return
	}
	s.getStatus(w, r)
}

func (s *Server) getStatus(w http.ResponseWriter, _ *http.Request) {
	c := s.cfg.Load()
	writeJSON(w, http.StatusOK, map[string]any{
		"ready": s.ready.Load(), "config": map[string]string{"source": c.Source, "digest": c.Digest},
		"listen": c.Listen, "last_reload": s.status.Load(), "plugins": len(*s.entries.Load())})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-s.h.Done():
		writeError(w, http.StatusServiceUnavailable, "host_stopped", fmt.Sprintf("the host stopped: %v", s.h.Err()))
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		writeError(w, http.StatusServiceUnavailable, "not_ready", "starting or shutting down")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	decisions *prometheus.CounterVec
	failures  *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	dropped   prometheus.Counter
	streams   prometheus.Gauge
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
	}
	reg.MustRegister(m.requests, m.duration, m.decisions, m.failures, m.reloads, m.dropped, m.streams)
	return m
}

package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// Bounds of admin input, the same as the configuration file's (CONFIG.md).
const (
	maxInstances   = 1024
	maxMemoryPages = 65536 // 4 GiB: the wasm32 limit
)

// inputError is an admin request's input refused: a 4xx with a stable code, naming the field.
type inputError struct {
	status int
	code   string
	msg    string
}

func (e *inputError) Error() string { return e.msg }

func invalid(field, format string, a ...any) *inputError {
	return &inputError{http.StatusBadRequest, "invalid_parameter", field + ": " + fmt.Sprintf(format, a...)}
}

// putEnvelope is PUT /v1/plugins/{name} with Content-Type application/json. Integers are
// json.Number so that a negative, fractional or huge value is named and refused, not wrapped
// or zeroed.
type putEnvelope struct {
	WasmBase64    string            `json:"wasm_base64"`
	Builtin       string            `json:"builtin"`
	Config        map[string]string `json:"config"`
	Instances     json.Number       `json:"instances"`
	FailurePolicy string            `json:"failure_policy"`
	MemoryPages   json.Number       `json:"memory_pages"`
	CallTimeout   string            `json:"call_timeout"`
	Required      *bool             `json:"required"`
	// FailureAnswer is the plugin's failure_answer (CONFIG.md); only with failure_policy
	// allow or monitor in the same PUT.
	FailureAnswer json.RawMessage `json:"failure_answer"`
}

// putRequest is a validated PUT: zero fields change nothing.
type putRequest struct {
	wasm          []byte
	builtin       string
	config        map[string]string
	instances     int
	memoryPages   uint32
	callTimeout   time.Duration // -1: none
	failurePolicy string
	failureAnswer []byte
	required      *bool
}

// putQueryKeys are the query parameters of a PUT with the module as the body (besides
// config.KEY).
const putQueryKeys = "instances, failure_policy, memory_pages, call_timeout, required"

// parsePut reads and validates a PUT's body and query. Every refusal is an *inputError.
func (s *Server) parsePut(r *http.Request, body []byte) (putRequest, *inputError) {
	var env putEnvelope
	var pr putRequest
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&env); err != nil || dec.More() {
			var te *json.UnmarshalTypeError
			switch {
			case err == nil:
				return pr, &inputError{http.StatusBadRequest, "malformed_json", "the JSON envelope: trailing data after the object"}
			case strings.HasPrefix(err.Error(), "json: unknown field "):
				return pr, &inputError{http.StatusBadRequest, "unknown_field", "the JSON envelope: " +
					strings.TrimPrefix(err.Error(), "json: ") + " (known: wasm_base64, builtin, config, instances, " +
					"failure_policy, memory_pages, call_timeout, required)"}
			case errors.As(err, &te):
				return pr, invalid(te.Field, "want %s, got a JSON %s", te.Type, te.Value)
			}
			return pr, &inputError{http.StatusBadRequest, "malformed_json", "the JSON envelope: " + err.Error()}
		}
		switch {
		case env.WasmBase64 != "" && env.Builtin != "":
			return pr, invalid("wasm_base64", "give one of wasm_base64 and builtin")
		case env.WasmBase64 != "":
			b, err := base64.StdEncoding.DecodeString(env.WasmBase64)
			if err != nil {
				return pr, invalid("wasm_base64", "not base64: %v", err)
			}
			pr.wasm = b
		case env.Builtin != "":
			var b []byte
			ok := false
			if s.opts.Builtin != nil {
				b, ok = s.opts.Builtin(env.Builtin)
			}
			if !ok {
				return pr, invalid("builtin", "no built-in plugin %q", env.Builtin)
			}
			pr.wasm, pr.builtin = b, env.Builtin
		}
	} else {
		pr.wasm = body
		q := r.URL.Query()
		for k, vs := range q {
			if ck, ok := strings.CutPrefix(k, "config."); ok {
				if ck == "" {
					return pr, invalid(k, "empty config key")
				}
				if env.Config == nil {
					env.Config = map[string]string{}
				}
				env.Config[ck] = vs[len(vs)-1]
				continue
			}
			if !slices.Contains(strings.Split(putQueryKeys, ", "), k) {
				return pr, &inputError{http.StatusBadRequest, "unknown_field",
					fmt.Sprintf("unknown query parameter %q (known: config.KEY, %s)", k, putQueryKeys)}
			}
		}
		env.FailurePolicy, env.CallTimeout = q.Get("failure_policy"), q.Get("call_timeout")
		env.Instances, env.MemoryPages = json.Number(q.Get("instances")), json.Number(q.Get("memory_pages"))
		if v := q.Get("required"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return pr, invalid("required", "want true or false, got %q", v)
			}
			env.Required = &b
		}
	}
	pr.config, pr.required = env.Config, env.Required
	for k := range env.Config {
		if k == "" {
			return pr, invalid("config", "empty config key")
		}
	}
	n, ierr := intField("instances", string(env.Instances), 1, maxInstances)
	if ierr != nil {
		return pr, ierr
	}
	pr.instances = int(n)
	n, ierr = intField("memory_pages", string(env.MemoryPages), 1, maxMemoryPages)
	if ierr != nil {
		return pr, ierr
	}
	pr.memoryPages = uint32(n)
	switch env.CallTimeout {
	case "":
	case "none":
		pr.callTimeout = -1
	default:
		d, err := time.ParseDuration(env.CallTimeout)
		if err != nil || d <= 0 {
			return pr, invalid("call_timeout", "want a positive duration such as 50ms, or none, got %q", env.CallTimeout)
		}
		pr.callTimeout = d
	}
	if env.FailurePolicy != "" && !validPolicy(env.FailurePolicy) {
		return pr, invalid("failure_policy", "want deny, allow or monitor, got %q", env.FailurePolicy)
	}
	pr.failurePolicy = env.FailurePolicy
	if env.FailureAnswer != nil {
		switch {
		case env.FailurePolicy != config.FailAllow && env.FailurePolicy != config.FailMonitor:
			return pr, invalid("failure_answer", "only with failure_policy allow or monitor in the same request")
		case len(env.FailureAnswer) > config.MaxFailureAnswerBytes:
			return pr, invalid("failure_answer", "longer than %d bytes", config.MaxFailureAnswerBytes)
		}
		pr.failureAnswer = bytes.Clone(env.FailureAnswer)
	}
	return pr, nil
}

// intField parses an integer field: "" is unset (0); anything else must be an integer within
// [lo, hi].
func intField(field, v string, lo, hi int64) (int64, *inputError) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, invalid(field, "want an integer from %d to %d, got %q", lo, hi, v)
	}
	return n, nil
}

// readAdminBody reads an admin request's body within limit bytes and the admin operation's
// deadline (a slow body cannot hold the connection longer).
func (s *Server) readAdminBody(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, *inputError) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.opTimeout()))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		_ = rc.SetReadDeadline(time.Time{})
	} else {
		w.Header().Set("Connection", "close") // see Server.call
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, &inputError{http.StatusRequestEntityTooLarge, "body_too_large",
				fmt.Sprintf("the body exceeds %s (%d bytes)", what, limit)}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, &inputError{http.StatusRequestTimeout, "body_timeout", "the body did not arrive in time"}
		}
		return nil, &inputError{http.StatusBadRequest, "bad_body", "reading the body: " + err.Error()}
	}
	return body, nil
}

func (s *Server) putPlugin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !nameOK(name) {
		writeError(w, http.StatusBadRequest, "invalid_parameter",
			fmt.Sprintf("plugin name %q: want letters, digits, '_', '.', '-' (at most 128, not starting with a symbol)", name))
		return
	}
	body, ierr := s.readAdminBody(w, r, s.cfg.Load().HTTP.MaxModuleBytes, "http.max_module_bytes")
	if ierr == nil {
		var pr putRequest
		if pr, ierr = s.parsePut(r, body); ierr == nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.applyPut(w, r, name, pr)
			return
		}
	}
	writeError(w, ierr.status, ierr.code, ierr.msg)
}

// applyPut loads, replaces or updates name as pr says. Under s.mu.
func (s *Server) applyPut(w http.ResponseWriter, r *http.Request, name string, pr putRequest) {
	old := s.entry(name)
	if len(pr.wasm) == 0 {
		switch {
		case old == nil:
			writeError(w, http.StatusBadRequest, "module_required", fmt.Sprintf("plugin %q is not loaded: send its module", name))
		case pr.instances != 0 || pr.memoryPages != 0 || pr.callTimeout != 0:
			writeError(w, http.StatusBadRequest, "module_required",
				"instances, memory_pages and call_timeout restart the plugin's instances: send the module with them")
		default:
			s.updateConfig(w, r, old, pr) // config, failure policy, required: in place
		}
		return
	}
	p := config.Plugin{Name: name, Wasm: "api", Instances: 1, Restart: "permanent", FailurePolicy: config.FailDeny}
	if old != nil {
		p = old.spec
		p.Wasm = "api"
		p.Builtin, p.Path = "", ""
	}
	if pr.builtin != "" {
		p.Wasm = config.BuiltinPrefix + pr.builtin
	}
	if pr.config != nil {
		p.Config = pr.config
	}
	if pr.instances != 0 {
		p.Instances = pr.instances
	}
	if pr.memoryPages != 0 {
		p.MemoryPages = pr.memoryPages
	}
	if pr.callTimeout != 0 {
		p.CallTimeout = pr.callTimeout
	}
	if pr.failurePolicy != "" {
		p.FailurePolicy = pr.failurePolicy
	}
	if pr.failureAnswer != nil {
		p.FailureAnswer = pr.failureAnswer
	}
	if pr.required != nil {
		p.Required = *pr.required
	}
	ctx, cancel := s.opContext(r)
	defer cancel()
	source := "api"
	if s.opts.Cluster != nil {
		source = sourceCluster
	}
	what, err := s.put(ctx, p, pr.wasm, source, nil)
	if err != nil {
		s.log.Warn("PUT refused; the running version (if any) keeps serving", zap.String("plugin", name), zap.Error(err))
		s.hostError(w, err)
		return
	}
	s.log.Info("plugin "+what, zap.String("plugin", name), zap.String("by", "api"))
	if err := s.persist(name, pr.wasm); err != nil {
		s.persistFailed(w, name, err)
		return
	}
	if c := s.opts.Cluster; c != nil {
		if _, err := c.Write(ctx, p, pr.wasm); err != nil {
			clusterError(w, err)
			return
		}
	}
	pi, err := s.h.Plugin(name)
	if err != nil {
		s.hostError(w, err)
		return
	}
	status := http.StatusOK
	if old == nil {
		status = http.StatusCreated
	}
	writeJSON(w, status, s.view(pi, true))
}

// updateConfig changes a loaded plugin in place: its config (an override, kept until reset),
// its failure policy, whether readiness requires it. Under s.mu.
func (s *Server) updateConfig(w http.ResponseWriter, r *http.Request, old *entry, pr putRequest) {
	ctx, cancel := s.opContext(r)
	defer cancel()
	ne := *old
	if pr.failurePolicy != "" {
		ne.spec.FailurePolicy = pr.failurePolicy
	}
	if pr.failureAnswer != nil {
		ne.spec.FailureAnswer = pr.failureAnswer
	}
	if pr.required != nil {
		ne.spec.Required = *pr.required
	}
	if pr.config != nil {
		if err := s.h.Configure(ctx, old.spec.Name, pr.config); err != nil {
			s.hostError(w, err)
			return
		}
		ne.override = pr.config
		ne.hostSpecs.Config = pr.config
		if s.opts.Cluster != nil { // the cluster's spec is the config: no override
			ne.spec.Config, ne.override = pr.config, nil
		}
	}
	s.setEntry(old.spec.Name, &ne)
	if err := s.persist(old.spec.Name, nil); err != nil {
		s.persistFailed(w, old.spec.Name, err)
		return
	}
	if c := s.opts.Cluster; c != nil {
		if _, err := c.Write(ctx, ne.spec, nil); err != nil {
			clusterError(w, err)
			return
		}
	}
	pi, err := s.h.Plugin(old.spec.Name)
	if err != nil {
		s.hostError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(pi, true))
}

// clusterError answers a change applied on this node that the cluster did not take: 503
// cluster_unavailable (JetStream unreachable: the node converges back to the cluster's state
// when it reconnects), or 422 cluster_refused (a spec out of the cluster's bounds).
func clusterError(w http.ResponseWriter, err error) {
	var re interface{ Refused() bool }
	if errors.As(err, &re) && re.Refused() {
		writeError(w, http.StatusUnprocessableEntity, "cluster_refused", "applied on this node only; "+
			"the cluster refused it, and the node returns to the cluster's state at its next resynchronisation: "+err.Error())
		return
	}
	writeError(w, http.StatusServiceUnavailable, "cluster_unavailable", "applied on this node only; "+
		"the cluster is unreachable, and the node returns to the cluster's state when it reconnects: "+err.Error())
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

// configProblem is one problem of an invalid configuration file, in a reload's error body.
type configProblem struct {
	File    string `json:"file,omitempty"`
	Key     string `json:"key"`
	Problem string `json:"problem"`
}

// reloadHandler is POST /v1/reload. An invalid file is 422 invalid_config listing each
// problem (file, key, reason); a plugin that failed to load or change is 422 reload_failed.
// Either way the running configuration stays.
func (s *Server) reloadHandler(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.opContext(r)
	defer cancel()
	err := s.Reload(ctx, "api")
	if err == nil {
		s.getStatus(w, r)
		return
	}
	var ces config.Errors
	if errors.As(err, &ces) {
		problems := make([]configProblem, len(ces))
		for i, e := range ces {
			problems[i] = configProblem{File: e.File, Key: e.Key, Problem: e.Problem}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(struct {
			Error    apiError        `json:"error"`
			Problems []configProblem `json:"problems"`
		}{apiError{Code: "invalid_config", Message: err.Error()}, problems})
		return
	}
	writeError(w, http.StatusUnprocessableEntity, "reload_failed", err.Error())
}

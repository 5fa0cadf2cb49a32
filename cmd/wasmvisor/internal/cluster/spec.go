package cluster

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
)

// ErrRefused is matched (errors.Is) by every spec or module this node refuses: a SpecError.
var ErrRefused = errors.New("cluster: refused")

// ErrUnavailable is returned by Write, Delete and Status's bucket reads while the node has
// no session with JetStream (NATS unreachable, or JetStream without a quorum).
var ErrUnavailable = errors.New("cluster: JetStream unavailable")

// SpecError is one spec or module refused: the plugin, the field and the problem. It matches
// ErrRefused.
type SpecError struct {
	Plugin, Field, Problem string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("cluster: plugin %q: %s: %s", e.Plugin, e.Field, e.Problem)
}

// Refused is true: the server tells a refused spec (422) from an unavailable cluster (503)
// without importing this package.
func (e *SpecError) Refused() bool { return true }

// Is makes a SpecError match ErrRefused.
func (e *SpecError) Is(target error) bool { return target == ErrRefused }

// Spec is a plugin's desired state as the key-value bucket holds it, as JSON (durations in
// nanoseconds). It carries everything of a config.Plugin but the machine's own: no path,
// no env, inherit_env or dirs. The module is in the object store under Digest's hex.
type Spec struct {
	Name          string               `json:"name"`
	Digest        string               `json:"digest"` // sha256:HEX of the module
	Size          int64                `json:"size"`   // the module's bytes
	Wasm          string               `json:"wasm"`   // as first declared: builtin:authz, api, a path (informative)
	Config        map[string]string    `json:"config,omitempty"`
	Instances     int                  `json:"instances"`
	Restart       string               `json:"restart"`
	DependsOn     []string             `json:"depends_on,omitempty"`
	Subscribe     []string             `json:"subscribe,omitempty"`
	MemoryPages   uint32               `json:"memory_pages,omitempty"`
	CallTimeout   time.Duration        `json:"call_timeout,omitempty"`
	StartTimeout  time.Duration        `json:"start_timeout,omitempty"`
	Output        config.Budget        `json:"output"`
	Publish       config.Budget        `json:"publish"`
	FailurePolicy string               `json:"failure_policy"`
	FailureAnswer json.RawMessage      `json:"failure_answer,omitempty"`
	OnFailure     string               `json:"on_failure"`
	RestartPolicy config.RestartPolicy `json:"restart_policy"`
	Isolation     string               `json:"isolation"`
	NoSnapshot    bool                 `json:"no_snapshot,omitempty"`
	Required      bool                 `json:"required"`
	Clock         string               `json:"clock"`
	Random        string               `json:"random"`
}

// SpecOf is p's spec with its module's digest and size; the settings p leaves empty (a PUT's
// plugin) are written as their defaults, so that every node reads the same spec.
func SpecOf(p config.Plugin, digest string, size int64) Spec {
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	p.Restart, p.FailurePolicy = def(p.Restart, "permanent"), def(p.FailurePolicy, config.FailDeny)
	p.OnFailure, p.Isolation = def(p.OnFailure, config.OnFailureQuarantine), def(p.Isolation, config.IsolationShared)
	p.Clock, p.Random = def(p.Clock, "deterministic"), def(p.Random, "deterministic")
	return Spec{Name: p.Name, Digest: digest, Size: size, Wasm: p.Wasm, Config: maps.Clone(p.Config),
		Instances: p.Instances, Restart: p.Restart, DependsOn: slices.Clone(p.DependsOn),
		Subscribe: slices.Clone(p.Subscribe), MemoryPages: p.MemoryPages, CallTimeout: p.CallTimeout,
		StartTimeout: p.StartTimeout, Output: p.Output, Publish: p.Publish, FailurePolicy: p.FailurePolicy,
		FailureAnswer: bytes.Clone(p.FailureAnswer), OnFailure: p.OnFailure, RestartPolicy: p.RestartPolicy,
		Isolation: p.Isolation, NoSnapshot: p.NoSnapshot, Required: p.Required, Clock: p.Clock, Random: p.Random}
}

// Plugin is the spec as the server's plugin settings.
func (s Spec) Plugin() config.Plugin {
	return config.Plugin{Name: s.Name, Wasm: s.Wasm, Config: maps.Clone(s.Config), Instances: s.Instances,
		Restart: s.Restart, DependsOn: slices.Clone(s.DependsOn), Subscribe: slices.Clone(s.Subscribe),
		MemoryPages: s.MemoryPages, CallTimeout: s.CallTimeout, StartTimeout: s.StartTimeout, Output: s.Output,
		Publish: s.Publish, FailurePolicy: s.FailurePolicy, FailureAnswer: bytes.Clone(s.FailureAnswer),
		OnFailure: s.OnFailure, RestartPolicy: s.RestartPolicy, Isolation: s.Isolation, NoSnapshot: s.NoSnapshot,
		Required: s.Required, Clock: s.Clock, Random: s.Random}
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// hexOf is the digest's hex: the module's name in the object store and the cache.
func hexOf(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

// decodeSpec reads a bucket value for key: at most maxBytes, known fields only, then Validate.
func decodeSpec(key string, b []byte, maxBytes, maxModule int64) (Spec, error) {
	var s Spec
	if int64(len(b)) > maxBytes {
		return s, &SpecError{key, "(spec)", fmt.Sprintf("%d bytes, over cluster.max_spec_bytes (%d)", len(b), maxBytes)}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, &SpecError{key, "(spec)", "not a spec: " + err.Error()}
	}
	if dec.More() {
		return s, &SpecError{key, "(spec)", "trailing data after the spec"}
	}
	if s.Name != key {
		return s, &SpecError{key, "name", fmt.Sprintf("%q under the key %q", s.Name, key)}
	}
	return s, s.Validate(maxModule)
}

// Validate checks every field against the configuration file's bounds; maxModule bounds
// Size. The error is a *SpecError.
func (s Spec) Validate(maxModule int64) error {
	bad := func(field, format string, a ...any) error {
		return &SpecError{s.Name, field, fmt.Sprintf(format, a...)}
	}
	oneOf := func(field, v string, allowed ...string) error {
		if !slices.Contains(allowed, v) {
			return bad(field, "want one of %s, got %q", strings.Join(allowed, ", "), v)
		}
		return nil
	}
	switch {
	case !nameRE.MatchString(s.Name):
		return bad("name", "want letters, digits, '_', '.', '-' (at most 128), got %q", s.Name)
	case !digestRE.MatchString(s.Digest):
		return bad("digest", "want sha256: and 64 lower-case hex digits, got %q", s.Digest)
	case s.Size < 8 || s.Size > maxModule:
		return bad("size", "want 8 to %d bytes (http.max_module_bytes), got %d", maxModule, s.Size)
	case s.Instances < 1 || s.Instances > 1024:
		return bad("instances", "want 1 to 1024, got %d", s.Instances)
	case s.MemoryPages > 65536:
		return bad("memory_pages", "want at most 65536, got %d", s.MemoryPages)
	case s.CallTimeout < -1 || s.StartTimeout < -1:
		return bad("call_timeout", "negative")
	case len(s.FailureAnswer) > config.MaxFailureAnswerBytes:
		return bad("failure_answer", "longer than %d bytes", config.MaxFailureAnswerBytes)
	case len(s.FailureAnswer) > 0 && s.FailurePolicy == config.FailDeny:
		return bad("failure_answer", "only under failure_policy allow or monitor")
	}
	for k := range s.Config {
		if k == "" {
			return bad("config", "empty key")
		}
	}
	for _, err := range []error{
		oneOf("restart", s.Restart, "permanent", "transient", "temporary"),
		oneOf("failure_policy", s.FailurePolicy, config.FailDeny, config.FailAllow, config.FailMonitor),
		oneOf("on_failure", s.OnFailure, config.OnFailureQuarantine, config.OnFailureEscalate),
		oneOf("isolation", s.Isolation, config.IsolationShared, config.IsolationPerCall),
		oneOf("clock", s.Clock, "deterministic", "real"),
		oneOf("random", s.Random, "deterministic", "crypto"),
	} {
		if err != nil {
			return err
		}
	}
	if _, err := hex.DecodeString(hexOf(s.Digest)); err != nil {
		return bad("digest", "%v", err)
	}
	return nil
}

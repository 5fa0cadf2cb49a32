// Package config reads the configuration of `wasmvisor serve`: a YAML file, overridden by
// environment variables (WASMVISOR_<KEY>, dots as underscores) and then by flags, through
// viper. It validates everything and names the key and the problem in every error. Every key
// is documented in CONFIG.md, next to this file; Parse is the only entry point.
//
// Only cmd/wasmvisor and its server use this package (it lives under cmd/wasmvisor/internal):
// library packages (host, sandbox) take the plain Go values it produces.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/decisionlog"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/natsbus"
)

// EnvPrefix prefixes the environment variables that override scalar keys:
// WASMVISOR_LISTEN, WASMVISOR_ADMIN_TOKEN, WASMVISOR_LOG_LEVEL, WASMVISOR_HTTP_REQUEST_TIMEOUT…
const EnvPrefix = "WASMVISOR"

// BuiltinPrefix marks a plugin's wasm as a built-in module: `wasm: builtin:authz`.
const BuiltinPrefix = "builtin:"

// Failure policies: what a call's response is when the plugin fails (see CONFIG.md).
const (
	FailDeny    = "deny"
	FailAllow   = "allow"
	FailMonitor = "monitor"
)

// What a call shares with the calls before it (host.Plugin.Isolation).
const (
	IsolationShared  = "shared"
	IsolationPerCall = "per_call"
)

// What a plugin past its restart intensity does (host.Plugin.OnFailure).
const (
	OnFailureQuarantine = "quarantine"
	OnFailureEscalate   = "escalate"
)

// Config is a validated configuration.
type Config struct {
	Listen     string
	AdminToken string
	CacheDir   string // "" for none
	Log        Log
	HTTP       HTTP
	Reload     Reload
	Events     Events
	Metrics    Metrics
	Supervisor Supervisor
	// DecisionLog is the decision log's settings (package decisionlog).
	DecisionLog DecisionLog
	// Cluster is the cluster section (package cluster): Enabled false without one, and then
	// nothing of NATS runs.
	Cluster Cluster
	Plugins []Plugin
	// StateDir (state_dir) keeps the plugins loaded by PUT across restarts; "" for none.
	StateDir string
	// Bundles are the signed bundles to load beside Plugins (bundles.go).
	Bundles Bundles
	// Source is the file the config came from, or "(embedded default)".
	Source string
	// Digest identifies the file's bytes: "sha256:" and the hex SHA-256.
	Digest string
}

// Log configures the server's zap logger.
type Log struct {
	Level     string // debug, info, warn, error
	Format    string // json, console
	Decisions bool   // one info line per policy call
}

// HTTP bounds requests.
type HTTP struct {
	MaxBodyBytes    int64
	MaxModuleBytes  int64
	RequestTimeout  time.Duration
	ShutdownTimeout time.Duration
}

// Reload configures hot reload.
type Reload struct {
	Watch    bool
	Interval time.Duration
}

// Events configures the server-sent event streams.
type Events struct {
	Buffer     int // per client
	BusBuffer  int // per host subscription
	MaxStreams int // open streams at once; more are refused (503 too_many_streams)
}

// Metrics configures what the host measures.
type Metrics struct {
	// LatencySampling times one call in 2^LatencySampling for the call latency histogram
	// (host.WithLatencySampling): 0, the default, times every call; 0 to 31.
	LatencySampling int
}

// DecisionLog configures the decision log: what its records hold and its sinks beyond the
// process log (log.decisions). Zero sizes and counts mean the package decisionlog defaults.
type DecisionLog struct {
	Input, Result bool
	// Mask lists OPA mask paths (/input/password, /result/reasons/0, /input/users/*/ssn),
	// checked with decisionlog.ParseMask.
	Mask          []string
	MaxValueBytes int64
	File          DecisionLogFile      // Path "" for none
	HTTP          DecisionLogHTTP      // URL "" for none
	JetStream     DecisionLogJetStream // Subject "" for none
}

// DecisionLogJetStream is decision_log.jetstream: records published on a NATS subject that a
// JetStream stream captures, through the cluster's connection.
type DecisionLogJetStream struct {
	Subject       string
	BatchSize     int
	FlushInterval time.Duration
	Queue         int
	MaxInFlight   int
	MaxRetries    int // -1: none
	RetryBackoff  time.Duration
	MaxBackoff    time.Duration
	Timeout       time.Duration
}

// DecisionLogFile is decision_log.file: a rotating file sink.
type DecisionLogFile struct {
	Path     string
	MaxBytes int64
	MaxFiles int
	Queue    int
}

// DecisionLogHTTP is decision_log.http: a batching HTTP sink.
type DecisionLogHTTP struct {
	URL           string
	BatchSize     int
	FlushInterval time.Duration
	Queue         int
	MaxRetries    int // -1: none
	RetryBackoff  time.Duration
	MaxBackoff    time.Duration
	Timeout       time.Duration
	// Headers are sent with every POST (an Authorization, say).
	Headers map[string]string
}

// Cluster is the cluster section: the node joins a NATS JetStream cluster through NATSURL
// (an existing one) or runs Embedded (a NATS server in the process, routed to its peers).
// Exactly one of the two; the zero value (Enabled false) is a single node.
type Cluster struct {
	Enabled bool
	// Node names this node in the status bucket and GET /v1/cluster; default the host name.
	Node string
	// CacheDir holds the node's copy of the desired state (specs and modules), served when
	// the engine is unreachable. Required.
	CacheDir string
	// NATSURL is a comma-separated list of nats:// or tls:// URLs.
	NATSURL string
	// Credentials is a NATS .creds file (user JWT and NKey seed); "" for none.
	Credentials string
	TLS         ClusterTLS
	// Replicas of the buckets (1–5, default 1); 3 on a three-node cluster survives a node.
	Replicas int
	// MaxPlugins bounds the plugins the cluster may hold (default 256, 1–4096); MaxSpecBytes
	// one spec's JSON (default 64 KiB, 1 KiB–1 MiB); MaxModuleBytes one module (http.max_module_bytes).
	MaxPlugins     int
	MaxSpecBytes   int64
	MaxModuleBytes int64
	Embedded       ClusterEmbedded
	// Bus is cluster.bus: the topics of the host's bus that cross nodes (package natsbus),
	// validated by natsbus.Config.Validate. The zero value bridges nothing.
	Bus natsbus.Config
}

// ClusterTLS is cluster.tls: a CA to verify the NATS servers and a client certificate.
type ClusterTLS struct{ CA, Cert, Key string }

// ClusterEmbedded is cluster.embedded: the NATS server this process runs.
type ClusterEmbedded struct {
	// Listen is the client HOST:PORT; ClusterListen the route HOST:PORT ("" for a lone node).
	Listen, ClusterListen string
	// Routes are the peers' route URLs (nats://HOST:PORT); Name the NATS cluster's name
	// (default "wasmvisor"); StoreDir JetStream's directory (required).
	Routes   []string
	Name     string
	StoreDir string
}

// Supervisor is the host's supervision settings.
type Supervisor struct {
	Strategy    string
	MaxRestarts int
	Period      time.Duration
	MinUptime   time.Duration
	// QuarantineBase and QuarantineMax are the probe backoff of a quarantined plugin
	// (host.WithQuarantineBackoff); 0 means host's defaults.
	QuarantineBase time.Duration
	QuarantineMax  time.Duration
	// PoisonLimit and PoisonWindow are the poison-input defence (host.WithPoisonInput): 0 means
	// host's defaults, PoisonLimit -1 turns it off.
	PoisonLimit  int
	PoisonWindow time.Duration
}

// Plugin is one plugin's settings.
type Plugin struct {
	Name string
	// Wasm is the key as written: "builtin:NAME" or a path.
	Wasm string
	// Builtin is NAME for a built-in; Path is the resolved file otherwise.
	Builtin       string
	Path          string
	Config        map[string]string
	MemoryPages   uint32
	CallTimeout   time.Duration // 0: default; -1: none
	StartTimeout  time.Duration
	Output        Budget // limits.output: Count is lines
	Publish       Budget // limits.publish: Count is messages
	Instances     int
	Restart       string // permanent, transient, temporary
	DependsOn     []string
	Subscribe     []string
	FailurePolicy string
	// FailureAnswer is the JSON the allow and monitor failure policies answer in place of
	// authz's {"allow":true,"reasons":[…]}; nil for that default.
	FailureAnswer []byte
	// OnFailure is what a plugin past its restart intensity does: OnFailureQuarantine (fail
	// fast, probed with backoff) or OnFailureEscalate (restarted through the host's root,
	// which stops the server past its own intensity).
	OnFailure string
	// RestartPolicy overrides the supervisor section for this plugin's instances
	// (host.Plugin.RestartPolicy); zero fields take the server's.
	RestartPolicy RestartPolicy
	// Isolation is IsolationShared (an instance serves call after call) or IsolationPerCall
	// (every call runs in a fresh instance: host.InstancePerCall).
	Isolation string
	// NoSnapshot (the file's `snapshot: false`): each instance runs its start sequence
	// instead of starting from a snapshot of the module's initialized state
	// (host.Plugin.NoSnapshot), for a plugin whose init must see each instance's own clock or
	// randomness. The zero value, snapshots on, is the default.
	NoSnapshot bool
	// Required: /readyz answers 503 while this plugin is loading, down or failed. Default true.
	Required   bool
	Env        map[string]string
	InheritEnv []string
	Dirs       [][2]string // host, guest
	Clock      string      // deterministic, real
	Random     string      // deterministic, crypto
}

// RestartPolicy is a plugin's own restart intensity and backoff: 0 means the server's
// (the supervisor section); BackoffInitial 0 restarts at once.
type RestartPolicy struct {
	MaxRestarts                int
	Period, MinUptime          time.Duration
	BackoffInitial, BackoffMax time.Duration
}

// Budget is the per-call and per-second bounds of limits.output or limits.publish, as
// sandbox.OutputLimits and sandbox.PublishLimits: 0 means the default, -1 none.
type Budget struct {
	CallBytes, CallCount, SecondBytes, SecondCount int64
}

// Error is one problem with one key of one file. Parse returns them, gathered in Errors.
type Error struct {
	File    string // the Input's Source; "" when it has none
	Key     string // plugins[0].limits.call_timeout
	Problem string
}

func (e *Error) Error() string {
	if e.File != "" {
		return e.File + ": " + e.Key + ": " + e.Problem
	}
	return e.Key + ": " + e.Problem
}

// Errors is every problem Parse found, in file order: the error Parse returns for an invalid
// configuration. Its message is one line, naming the file once:
// `config FILE: KEY: PROBLEM; KEY: PROBLEM`.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	file := ""
	for i, e := range es {
		s[i] = e.Key + ": " + e.Problem
		if file == "" {
			file = e.File
		}
	}
	if file != "" {
		return "config " + file + ": " + strings.Join(s, "; ")
	}
	return "config: " + strings.Join(s, "; ")
}

// Input is what Parse reads.
type Input struct {
	// Data is the YAML; Source names it in errors and status; Dir resolves relative wasm
	// paths.
	Data   []byte
	Source string
	Dir    string
	// Env is the environment (os.Environ form); nil reads the process environment.
	Env []string
	// Flags overrides keys by flag name: "listen" overrides listen. Only changed flags apply.
	Flags *pflag.FlagSet
	// Builtin resolves builtin:NAME; Builtins lists the names for errors.
	Builtin  func(string) ([]byte, bool)
	Builtins []string
	// Modules, when not nil, are a bundle's module files: a plugin's wasm path names one of
	// them instead of a file (Plugin.Path is then that name), and a plugin may not grant host
	// directories (capabilities.dirs) nor take keys other than plugins (package bundle).
	Modules map[string][]byte
}

// ReadFile returns the Input of a config file. A file that cannot be read is an Errors
// naming it (key "(file)").
func ReadFile(path string) (Input, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		reason := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			reason = pe.Op + ": " + pe.Err.Error()
		}
		return Input{}, Errors{{File: path, Key: "(file)", Problem: reason}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	return Input{Data: b, Source: path, Dir: filepath.Dir(abs)}, nil
}

// raw mirrors the file. Scalars are read through viper (so env and flags apply); the walk
// below checks every key and type, and names the unknown ones.
type raw struct {
	Listen     string     `yaml:"listen"`
	AdminToken string     `yaml:"admin_token"`
	CacheDir   string     `yaml:"cache_dir"`
	Log        rawLog     `yaml:"log"`
	HTTP       rawHTTP    `yaml:"http"`
	Reload     rawReload  `yaml:"reload"`
	Events     rawEvents  `yaml:"events"`
	Metrics    rawMetrics `yaml:"metrics"`
	Supervisor rawSup     `yaml:"supervisor"`
	// DecisionLog's scalars are read through viper; only the mask list here.
	DecisionLog rawDecisionLog `yaml:"decision_log"`
	Cluster     rawCluster     `yaml:"cluster"`
	Plugins     []rawPlugin    `yaml:"plugins"`
	StateDir    string         `yaml:"state_dir"`
	Bundles     rawBundles     `yaml:"bundles"`
}

type rawCluster struct {
	Node         string         `yaml:"node"`
	CacheDir     string         `yaml:"cache_dir"`
	NATSURL      string         `yaml:"nats_url"`
	Credentials  string         `yaml:"credentials"`
	TLS          rawClusterTLS  `yaml:"tls"`
	Replicas     string         `yaml:"replicas"`
	MaxPlugins   string         `yaml:"max_plugins"`
	MaxSpecBytes string         `yaml:"max_spec_bytes"`
	Embedded     rawClusterEmbd `yaml:"embedded"`
	// Bus is read from the file only (no environment override): natsbus.Config's own keys.
	Bus natsbus.Config `yaml:"bus"`
}

type rawClusterTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

type rawClusterEmbd struct {
	Listen        string   `yaml:"listen"`
	ClusterListen string   `yaml:"cluster_listen"`
	Routes        []string `yaml:"routes"`
	Name          string   `yaml:"name"`
	StoreDir      string   `yaml:"store_dir"`
}

type rawDecisionLog struct {
	Input         string    `yaml:"input"`
	Result        string    `yaml:"result"`
	Mask          []string  `yaml:"mask"`
	MaxValueBytes string    `yaml:"max_value_bytes"`
	File          rawDLFile `yaml:"file"`
	HTTP          rawDLHTTP `yaml:"http"`
	JetStream     rawDLJS   `yaml:"jetstream"`
}

type rawDLJS struct {
	Subject       string `yaml:"subject"`
	BatchSize     string `yaml:"batch_size"`
	FlushInterval string `yaml:"flush_interval"`
	Queue         string `yaml:"queue"`
	MaxInFlight   string `yaml:"max_in_flight"`
	MaxRetries    string `yaml:"max_retries"`
	RetryBackoff  string `yaml:"retry_backoff"`
	MaxBackoff    string `yaml:"max_backoff"`
	Timeout       string `yaml:"timeout"`
}

type rawDLFile struct {
	Path     string `yaml:"path"`
	MaxBytes string `yaml:"max_bytes"`
	MaxFiles string `yaml:"max_files"`
	Queue    string `yaml:"queue"`
}

type rawDLHTTP struct {
	URL           string            `yaml:"url"`
	BatchSize     string            `yaml:"batch_size"`
	FlushInterval string            `yaml:"flush_interval"`
	Queue         string            `yaml:"queue"`
	MaxRetries    string            `yaml:"max_retries"`
	RetryBackoff  string            `yaml:"retry_backoff"`
	MaxBackoff    string            `yaml:"max_backoff"`
	Timeout       string            `yaml:"timeout"`
	Headers       map[string]string `yaml:"headers"`
}

type rawLog struct {
	Level     string `yaml:"level"`
	Format    string `yaml:"format"`
	Decisions string `yaml:"decisions"`
}

type rawHTTP struct {
	MaxBodyBytes    string `yaml:"max_body_bytes"`
	MaxModuleBytes  string `yaml:"max_module_bytes"`
	RequestTimeout  string `yaml:"request_timeout"`
	ShutdownTimeout string `yaml:"shutdown_timeout"`
}

type rawReload struct {
	Watch    string `yaml:"watch"`
	Interval string `yaml:"interval"`
}

type rawEvents struct {
	Buffer     string `yaml:"buffer"`
	BusBuffer  string `yaml:"bus_buffer"`
	MaxStreams string `yaml:"max_streams"`
}

type rawMetrics struct {
	LatencySampling string `yaml:"latency_sampling"`
}

type rawSup struct {
	Strategy       string `yaml:"strategy"`
	MaxRestarts    string `yaml:"max_restarts"`
	Period         string `yaml:"period"`
	MinUptime      string `yaml:"min_uptime"`
	QuarantineBase string `yaml:"quarantine_base"`
	QuarantineMax  string `yaml:"quarantine_max"`
	PoisonLimit    string `yaml:"poison_limit"`
	PoisonWindow   string `yaml:"poison_window"`
}

type rawPlugin struct {
	Name          string            `yaml:"name"`
	Wasm          string            `yaml:"wasm"`
	Config        pluginConfigNodes `yaml:"config"`
	Limits        rawLimits         `yaml:"limits"`
	Instances     string            `yaml:"instances"`
	Restart       string            `yaml:"restart"`
	DependsOn     []string          `yaml:"depends_on"`
	Subscribe     []string          `yaml:"subscribe"`
	FailurePolicy string            `yaml:"failure_policy"`
	FailureAnswer string            `yaml:"failure_answer"`
	Capabilities  rawCaps           `yaml:"capabilities"`
	Required      string            `yaml:"required"`
	OnFailure     string            `yaml:"on_failure"`
	RestartPolicy rawRestartPolicy  `yaml:"restart_policy"`
	Isolation     string            `yaml:"isolation"`
	Snapshot      string            `yaml:"snapshot"`
}

type rawRestartPolicy struct {
	MaxRestarts    string `yaml:"max_restarts"`
	Period         string `yaml:"period"`
	MinUptime      string `yaml:"min_uptime"`
	BackoffInitial string `yaml:"backoff_initial"`
	BackoffMax     string `yaml:"backoff_max"`
}

type rawLimits struct {
	MemoryPages  string     `yaml:"memory_pages"`
	CallTimeout  string     `yaml:"call_timeout"`
	StartTimeout string     `yaml:"start_timeout"`
	Output       rawOutput  `yaml:"output"`
	Publish      rawPublish `yaml:"publish"`
}

type rawOutput struct {
	CallBytes   string `yaml:"call_bytes"`
	CallLines   string `yaml:"call_lines"`
	SecondBytes string `yaml:"second_bytes"`
	SecondLines string `yaml:"second_lines"`
}

type rawPublish struct {
	CallMessages   string `yaml:"call_messages"`
	CallBytes      string `yaml:"call_bytes"`
	SecondMessages string `yaml:"second_messages"`
	SecondBytes    string `yaml:"second_bytes"`
}

type rawCaps struct {
	Env        map[string]string `yaml:"env"`
	InheritEnv []string          `yaml:"inherit_env"`
	Dirs       []rawCapDir       `yaml:"dirs"`
	Clock      string            `yaml:"clock"`
	Random     string            `yaml:"random"`
}

type rawCapDir struct {
	Host  string `yaml:"host"`
	Guest string `yaml:"guest"`
}

// Defaults, documented in CONFIG.md.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxModuleBytes  = 64 << 20
	DefaultRequestTimeout  = 5 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultReloadInterval  = time.Second
	DefaultEventBuffer     = 64
	DefaultMaxStreams      = 64
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// headerNameRE is an HTTP header name (RFC 9110's token).
var headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")

// scalarKeys are read through viper: file < env < flag.
var scalarKeys = []string{
	"listen", "admin_token", "cache_dir", "state_dir",
	"log.level", "log.format", "log.decisions",
	"http.max_body_bytes", "http.max_module_bytes", "http.request_timeout", "http.shutdown_timeout",
	"reload.watch", "reload.interval",
	"events.buffer", "events.bus_buffer", "events.max_streams",
	"metrics.latency_sampling",
	"supervisor.strategy", "supervisor.max_restarts", "supervisor.period", "supervisor.min_uptime",
	"supervisor.quarantine_base", "supervisor.quarantine_max", "supervisor.poison_limit", "supervisor.poison_window",
	"decision_log.input", "decision_log.result", "decision_log.max_value_bytes",
	"decision_log.file.path", "decision_log.file.max_bytes", "decision_log.file.max_files", "decision_log.file.queue",
	"decision_log.http.url", "decision_log.http.batch_size", "decision_log.http.flush_interval", "decision_log.http.queue",
	"decision_log.http.max_retries", "decision_log.http.retry_backoff", "decision_log.http.max_backoff",
	"decision_log.http.timeout",
	"decision_log.jetstream.subject", "decision_log.jetstream.batch_size", "decision_log.jetstream.flush_interval",
	"decision_log.jetstream.queue", "decision_log.jetstream.max_in_flight", "decision_log.jetstream.max_retries",
	"decision_log.jetstream.retry_backoff", "decision_log.jetstream.max_backoff", "decision_log.jetstream.timeout",
	"cluster.node", "cluster.cache_dir", "cluster.nats_url", "cluster.credentials",
	"cluster.tls.ca", "cluster.tls.cert", "cluster.tls.key", "cluster.replicas", "cluster.max_plugins",
	"cluster.max_spec_bytes", "cluster.embedded.listen", "cluster.embedded.cluster_listen",
	"cluster.embedded.name", "cluster.embedded.store_dir",
}

// Parse reads, layers and validates a configuration. Every problem found is in the returned
// Errors.
func Parse(in Input) (*Config, error) {
	var errs Errors
	add := func(key, format string, a ...any) {
		errs = append(errs, &Error{Key: key, Problem: fmt.Sprintf(format, a...)})
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(in.Data, &doc); err != nil {
		return nil, Errors{{File: in.Source, Key: "(file)", Problem: "not YAML: " + oneLine(err.Error())}}
	}
	var r raw
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if root.Kind != yaml.MappingNode && !(root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
			return nil, Errors{{File: in.Source, Key: "(file)", Problem: "want a mapping of keys"}}
		}
		walk(root, reflect.TypeFor[raw](), "", add)
		if len(errs) > 0 {
			return nil, withFile(errs, in.Source)
		}
		if err := root.Decode(&r); err != nil {
			return nil, Errors{{File: in.Source, Key: "(file)", Problem: oneLine(err.Error())}}
		}
	}

	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(in.Data)); err != nil {
		return nil, Errors{{File: in.Source, Key: "(file)", Problem: oneLine(err.Error())}}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	env := in.Env
	if env == nil {
		env = os.Environ()
	}
	envMap := map[string]string{}
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix+"_") {
			envMap[k] = val
		}
	}
	for _, k := range scalarKeys {
		ev := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
		if in.Flags != nil {
			if f := in.Flags.Lookup(strings.NewReplacer("_", "-", ".", "-").Replace(k)); f != nil && f.Changed {
				_ = v.BindPFlag(k, f) // a flag beats the environment
				continue
			}
		}
		if val, ok := envMap[ev]; ok {
			v.Set(k, val) // the environment of Input (the process's by default) beats the file
		}
	}
	for k := range envMap {
		name := strings.ToLower(strings.TrimPrefix(k, EnvPrefix+"_"))
		if !slices.ContainsFunc(scalarKeys, func(s string) bool { return strings.ReplaceAll(s, ".", "_") == name }) {
			add(k, "unknown environment override (the overridable keys are %s)", strings.Join(scalarKeys, ", "))
		}
	}
	str := func(key, def string) string {
		if v.IsSet(key) {
			if s := v.GetString(key); s != "" {
				return s
			}
		}
		return def
	}
	dur := func(key string, def time.Duration, allowNone bool) time.Duration {
		s := str(key, "")
		if s == "" {
			return def
		}
		if allowNone && s == "none" {
			return -1
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			add(key, "want a positive duration such as 500ms or 2s, got %q", s)
			return def
		}
		return d
	}
	integer := func(key string, def, lo, hi int64) int64 {
		s := str(key, "")
		if s == "" {
			return def
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			add(key, "want an integer from %d to %d, got %q", lo, hi, s)
			return def
		}
		return n
	}
	boolean := func(key string, def bool) bool {
		s := str(key, "")
		if s == "" {
			return def
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			add(key, "want true or false, got %q", s)
			return def
		}
		return b
	}
	oneOf := func(key, def string, allowed ...string) string {
		s := str(key, def)
		if !slices.Contains(allowed, s) {
			add(key, "want one of %s, got %q", strings.Join(allowed, ", "), s)
			return def
		}
		return s
	}

	c := &Config{Source: in.Source}
	c.Listen = str("listen", DefaultListen)
	if _, _, err := splitHostPort(c.Listen); err != nil {
		add("listen", "want HOST:PORT, got %q", c.Listen)
	}
	c.AdminToken = str("admin_token", "")
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		add("admin_token", "too short: use at least 16 characters")
	}
	c.CacheDir = str("cache_dir", "")
	c.StateDir = str("state_dir", "")
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) && in.Dir != "" {
		c.StateDir = filepath.Join(in.Dir, c.StateDir)
	}
	c.Bundles = parseBundles(r.Bundles, in.Dir, add)
	if in.Modules != nil && (c.StateDir != "" || len(c.Bundles.Paths) > 0) {
		add("(file)", "a bundle's manifest names plugins only")
	}
	c.Log = Log{Level: oneOf("log.level", "info", "debug", "info", "warn", "error"),
		Format: oneOf("log.format", "json", "json", "console"), Decisions: boolean("log.decisions", true)}
	c.HTTP = HTTP{
		MaxBodyBytes:    integer("http.max_body_bytes", DefaultMaxBodyBytes, 1, 1<<30),
		MaxModuleBytes:  integer("http.max_module_bytes", DefaultMaxModuleBytes, 8, 1<<30),
		RequestTimeout:  dur("http.request_timeout", DefaultRequestTimeout, false),
		ShutdownTimeout: dur("http.shutdown_timeout", DefaultShutdownTimeout, false),
	}
	c.Reload = Reload{Watch: boolean("reload.watch", true), Interval: dur("reload.interval", DefaultReloadInterval, false)}
	c.Events = Events{Buffer: int(integer("events.buffer", DefaultEventBuffer, 1, 1<<16)),
		BusBuffer:  int(integer("events.bus_buffer", 0, 0, 1<<20)),
		MaxStreams: int(integer("events.max_streams", DefaultMaxStreams, 1, 1<<16))}
	c.Metrics = Metrics{LatencySampling: int(integer("metrics.latency_sampling", 0, 0, 31))}
	c.Supervisor = Supervisor{
		Strategy:    oneOf("supervisor.strategy", "one_for_one", "one_for_one"),
		MaxRestarts: int(integer("supervisor.max_restarts", 0, 0, 1<<20)),
		Period:      dur("supervisor.period", 0, false),
		MinUptime:   dur("supervisor.min_uptime", 0, true),

		QuarantineBase: dur("supervisor.quarantine_base", 0, false),
		QuarantineMax:  dur("supervisor.quarantine_max", 0, false),
		PoisonLimit:    int(integer("supervisor.poison_limit", 0, -1, 1000)),
		PoisonWindow:   dur("supervisor.poison_window", 0, false),
	}

	c.DecisionLog = DecisionLog{
		Input:         boolean("decision_log.input", false),
		Result:        boolean("decision_log.result", false),
		MaxValueBytes: bytesKey("decision_log.max_value_bytes", 0, 64, 64<<20, add, str),
		File: DecisionLogFile{
			Path:     str("decision_log.file.path", ""),
			MaxBytes: bytesKey("decision_log.file.max_bytes", 0, 4<<10, 1<<40, add, str),
			MaxFiles: int(integer("decision_log.file.max_files", 0, 1, 1000)),
			Queue:    int(integer("decision_log.file.queue", 0, 1, 1<<20)),
		},
		HTTP: DecisionLogHTTP{
			URL:           str("decision_log.http.url", ""),
			BatchSize:     int(integer("decision_log.http.batch_size", 0, 1, 100_000)),
			FlushInterval: dur("decision_log.http.flush_interval", 0, false),
			Queue:         int(integer("decision_log.http.queue", 0, 1, 1<<20)),
			MaxRetries:    int(integer("decision_log.http.max_retries", 0, -1, 100)),
			RetryBackoff:  dur("decision_log.http.retry_backoff", 0, false),
			MaxBackoff:    dur("decision_log.http.max_backoff", 0, false),
			Timeout:       dur("decision_log.http.timeout", 0, false),
		},
		JetStream: DecisionLogJetStream{
			Subject:       str("decision_log.jetstream.subject", ""),
			BatchSize:     int(integer("decision_log.jetstream.batch_size", 0, 1, 100_000)),
			FlushInterval: dur("decision_log.jetstream.flush_interval", 0, false),
			Queue:         int(integer("decision_log.jetstream.queue", 0, 1, 1<<20)),
			MaxInFlight:   int(integer("decision_log.jetstream.max_in_flight", 0, 1, 1<<16)),
			MaxRetries:    int(integer("decision_log.jetstream.max_retries", 0, -1, 100)),
			RetryBackoff:  dur("decision_log.jetstream.retry_backoff", 0, false),
			MaxBackoff:    dur("decision_log.jetstream.max_backoff", 0, false),
			Timeout:       dur("decision_log.jetstream.timeout", 0, false),
		},
	}
	if sub := c.DecisionLog.JetStream.Subject; sub != "" && !decisionlog.ValidSubject(sub) {
		add("decision_log.jetstream.subject", "want a NATS subject without wildcards (decisions.node1), got %q", sub)
	}
	if u := c.DecisionLog.HTTP.URL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			add("decision_log.http.url", "want an http:// or https:// URL, got %q", u)
		}
	}
	for k, v := range r.DecisionLog.HTTP.Headers {
		switch {
		case !headerNameRE.MatchString(k):
			add("decision_log.http.headers."+k, "not a header name")
		case strings.ContainsAny(v, "\r\n\x00"):
			add("decision_log.http.headers."+k, "a header value cannot hold a line break or NUL")
		default:
			if c.DecisionLog.HTTP.Headers == nil {
				c.DecisionLog.HTTP.Headers = map[string]string{}
			}
			c.DecisionLog.HTTP.Headers[k] = v
		}
	}
	if h := c.DecisionLog.HTTP; h.MaxBackoff != 0 && h.MaxBackoff < h.RetryBackoff {
		add("decision_log.http.max_backoff", "%v is below retry_backoff %v", h.MaxBackoff, h.RetryBackoff)
	}
	if p := c.DecisionLog.File.Path; p != "" {
		if !filepath.IsAbs(p) && in.Dir != "" {
			c.DecisionLog.File.Path = filepath.Join(in.Dir, p)
		}
		if st, err := os.Stat(filepath.Dir(c.DecisionLog.File.Path)); err != nil || !st.IsDir() {
			add("decision_log.file.path", "the directory of %q does not exist", p)
		}
	}
	for i, m := range r.DecisionLog.Mask {
		if _, err := decisionlog.ParseMask(m); err != nil {
			var me *decisionlog.MaskError
			errors.As(err, &me)
			add(fmt.Sprintf("decision_log.mask[%d]", i), "%s, got %q", me.Reason, m)
			continue
		}
		c.DecisionLog.Mask = append(c.DecisionLog.Mask, m)
	}

	c.Cluster = parseCluster(r.Cluster, in.Dir, c.HTTP.MaxModuleBytes, str, integer, add)

	names := map[string]int{}
	for i, rp := range r.Plugins {
		key := func(k string) string { return fmt.Sprintf("plugins[%d].%s", i, k) }
		if rp.Name != "" {
			key = func(k string) string { return fmt.Sprintf("plugins[%d](%s).%s", i, rp.Name, k) }
		}
		p := Plugin{Name: rp.Name, Wasm: rp.Wasm, Config: configValues(rp.Config, key, add), DependsOn: rp.DependsOn,
			Subscribe: rp.Subscribe, Env: rp.Capabilities.Env, InheritEnv: rp.Capabilities.InheritEnv}
		switch {
		case rp.Name == "":
			add(key("name"), "missing")
		case !nameRE.MatchString(rp.Name):
			add(key("name"), "want letters, digits, '_', '.', '-' (at most 128, not starting with a symbol), got %q", rp.Name)
		default:
			if j, dup := names[rp.Name]; dup {
				add(key("name"), "%q is also plugins[%d]", rp.Name, j)
			}
			names[rp.Name] = i
		}
		switch {
		case rp.Wasm == "":
			add(key("wasm"), "missing: want builtin:NAME or a path to a .wasm file")
		case strings.HasPrefix(rp.Wasm, BuiltinPrefix):
			p.Builtin = strings.TrimPrefix(rp.Wasm, BuiltinPrefix)
			if in.Builtin == nil {
				add(key("wasm"), "no built-in plugins in this build")
			} else if _, ok := in.Builtin(p.Builtin); !ok {
				add(key("wasm"), "no built-in plugin %q (built-in: %s)", p.Builtin, strings.Join(in.Builtins, ", "))
			}
		case in.Modules != nil:
			p.Path = rp.Wasm
			if _, ok := in.Modules[rp.Wasm]; !ok {
				add(key("wasm"), "no module %q in the bundle", rp.Wasm)
			}
		default:
			p.Path = rp.Wasm
			if !filepath.IsAbs(p.Path) && in.Dir != "" {
				p.Path = filepath.Join(in.Dir, p.Path)
			}
			if st, err := os.Stat(p.Path); err != nil {
				add(key("wasm"), "cannot read %q: %s", rp.Wasm, errors.Unwrap(err))
			} else if st.IsDir() {
				add(key("wasm"), "%q is a directory", rp.Wasm)
			}
		}
		if rp.Limits.MemoryPages != "" {
			n, err := strconv.ParseUint(rp.Limits.MemoryPages, 10, 32)
			if err != nil || n < 1 || n > 65536 {
				add(key("limits.memory_pages"), "want 1 to 65536 (64 KiB pages), got %q", rp.Limits.MemoryPages)
			}
			p.MemoryPages = uint32(n)
		}
		p.CallTimeout = parseLimit(rp.Limits.CallTimeout, key("limits.call_timeout"), add)
		p.StartTimeout = parseLimit(rp.Limits.StartTimeout, key("limits.start_timeout"), add)
		o, pb := rp.Limits.Output, rp.Limits.Publish
		p.Output = Budget{
			CallBytes:   parseAmount(o.CallBytes, true, key("limits.output.call_bytes"), add),
			CallCount:   parseAmount(o.CallLines, false, key("limits.output.call_lines"), add),
			SecondBytes: parseAmount(o.SecondBytes, true, key("limits.output.second_bytes"), add),
			SecondCount: parseAmount(o.SecondLines, false, key("limits.output.second_lines"), add),
		}
		p.Publish = Budget{
			CallBytes:   parseAmount(pb.CallBytes, true, key("limits.publish.call_bytes"), add),
			CallCount:   parseAmount(pb.CallMessages, false, key("limits.publish.call_messages"), add),
			SecondBytes: parseAmount(pb.SecondBytes, true, key("limits.publish.second_bytes"), add),
			SecondCount: parseAmount(pb.SecondMessages, false, key("limits.publish.second_messages"), add),
		}
		p.Instances = 1
		if rp.Instances != "" {
			n, err := strconv.Atoi(rp.Instances)
			if err != nil || n < 1 || n > 1024 {
				add(key("instances"), "want 1 to 1024, got %q", rp.Instances)
			}
			p.Instances = max(n, 1)
		}
		p.Restart = pick(rp.Restart, "permanent", key("restart"), add, "permanent", "transient", "temporary")
		p.FailurePolicy = pick(rp.FailurePolicy, FailDeny, key("failure_policy"), add, FailDeny, FailAllow, FailMonitor)
		if rp.FailureAnswer != "" {
			switch {
			case len(rp.FailureAnswer) > MaxFailureAnswerBytes:
				add(key("failure_answer"), "longer than %d bytes", MaxFailureAnswerBytes)
			case !json.Valid([]byte(rp.FailureAnswer)):
				add(key("failure_answer"), "want a JSON value such as '{\"allowed\": true}', got %q", rp.FailureAnswer)
			case p.FailurePolicy == FailDeny:
				add(key("failure_answer"), "only answered under failure_policy allow or monitor (this plugin's is deny)")
			default:
				p.FailureAnswer = []byte(rp.FailureAnswer)
			}
		}
		p.OnFailure = pick(rp.OnFailure, OnFailureQuarantine, key("on_failure"), add, OnFailureQuarantine, OnFailureEscalate)
		p.Isolation = pick(rp.Isolation, IsolationShared, key("isolation"), add, IsolationShared, IsolationPerCall)
		p.RestartPolicy = parseRestartPolicy(rp.RestartPolicy, func(k string) string { return key("restart_policy." + k) }, add)
		if rp.Snapshot != "" {
			b, err := strconv.ParseBool(rp.Snapshot)
			if err != nil {
				add(key("snapshot"), "want true or false, got %q", rp.Snapshot)
			}
			p.NoSnapshot = !b && err == nil
		}
		p.Required = true
		if rp.Required != "" {
			b, err := strconv.ParseBool(rp.Required)
			if err != nil {
				add(key("required"), "want true or false, got %q", rp.Required)
			}
			p.Required = b || err != nil
		}
		p.Clock = pick(rp.Capabilities.Clock, "deterministic", key("capabilities.clock"), add, "deterministic", "real")
		p.Random = pick(rp.Capabilities.Random, "deterministic", key("capabilities.random"), add, "deterministic", "crypto")
		for j, d := range rp.Capabilities.Dirs {
			k := key(fmt.Sprintf("capabilities.dirs[%d]", j))
			switch {
			case in.Modules != nil:
				add(k, "a bundle cannot grant host directories")
			case d.Host == "":
				add(k+".host", "missing")
			case d.Guest == "" || !strings.HasPrefix(d.Guest, "/"):
				add(k+".guest", "want an absolute guest path, got %q", d.Guest)
			default:
				h := d.Host
				if !filepath.IsAbs(h) && in.Dir != "" {
					h = filepath.Join(in.Dir, h)
				}
				if st, err := os.Stat(h); err != nil || !st.IsDir() {
					add(k+".host", "%q is not a directory", d.Host)
				}
				p.Dirs = append(p.Dirs, [2]string{h, d.Guest})
			}
		}
		for j, s := range rp.Subscribe {
			if s == "" {
				add(key(fmt.Sprintf("subscribe[%d]", j)), "empty topic")
			}
		}
		if c.Cluster.Enabled && (len(p.Env) > 0 || len(p.InheritEnv) > 0 || len(p.Dirs) > 0) {
			add(key("capabilities"), "env, inherit_env and dirs are this machine's: "+
				"a plugin shared through the cluster section cannot have them")
		}
		c.Plugins = append(c.Plugins, p)
	}
	// Dependencies: named, not self, acyclic.
	for i, p := range c.Plugins {
		for j, d := range p.DependsOn {
			k := fmt.Sprintf("plugins[%d](%s).depends_on[%d]", i, p.Name, j)
			if _, ok := names[d]; !ok {
				add(k, "no plugin %q in this config", d)
			} else if d == p.Name {
				add(k, "a plugin cannot depend on itself")
			}
		}
	}
	if len(errs) == 0 {
		if _, err := Order(c.Plugins); err != nil {
			var ces Errors
			if !errors.As(err, &ces) {
				ces = Errors{{Key: "plugins", Problem: err.Error()}}
			}
			errs = append(errs, ces...)
		}
	}
	if len(errs) > 0 {
		return nil, withFile(errs, in.Source)
	}
	c.Digest = digest(in.Data)
	return c, nil
}

// Bounds and defaults of the cluster section (CONFIG.md).
const (
	DefaultClusterMaxPlugins   = 256
	DefaultClusterMaxSpecBytes = 64 << 10
	DefaultClusterName         = "wasmvisor"
)

// parseCluster reads the cluster section; Enabled when nats_url or embedded is set.
func parseCluster(r rawCluster, dir string, maxModule int64, str func(string, string) string,
	integer func(string, int64, int64, int64) int64, add func(string, string, ...any),
) Cluster {
	abs := func(p string) string {
		if p != "" && !filepath.IsAbs(p) && dir != "" {
			return filepath.Join(dir, p)
		}
		return p
	}
	c := Cluster{
		NATSURL: str("cluster.nats_url", ""), Credentials: abs(str("cluster.credentials", "")),
		TLS: ClusterTLS{CA: abs(str("cluster.tls.ca", "")), Cert: abs(str("cluster.tls.cert", "")),
			Key: abs(str("cluster.tls.key", ""))},
		Embedded: ClusterEmbedded{Listen: str("cluster.embedded.listen", ""),
			ClusterListen: str("cluster.embedded.cluster_listen", ""), Routes: r.Embedded.Routes,
			Name: str("cluster.embedded.name", DefaultClusterName), StoreDir: abs(str("cluster.embedded.store_dir", ""))},
	}
	embedded := c.Embedded.Listen != "" || c.Embedded.ClusterListen != "" || len(c.Embedded.Routes) > 0 ||
		c.Embedded.StoreDir != ""
	rest := str("cluster.node", "") != "" || str("cluster.cache_dir", "") != "" || c.Credentials != "" ||
		c.TLS != (ClusterTLS{}) || str("cluster.replicas", "") != "" || str("cluster.max_plugins", "") != "" ||
		str("cluster.max_spec_bytes", "") != "" || !reflect.DeepEqual(r.Bus, natsbus.Config{})
	switch {
	case c.NATSURL != "" && embedded:
		add("cluster.embedded", "give one of cluster.nats_url and cluster.embedded")
		return Cluster{}
	case c.NATSURL == "" && !embedded:
		if rest {
			add("cluster", "want cluster.nats_url (an existing NATS cluster) or cluster.embedded (a NATS server in this process)")
		}
		return Cluster{}
	}
	c.Enabled = true
	c.Bus = r.Bus
	if err := c.Bus.Validate(); err != nil {
		var ces interface{ Unwrap() []error }
		if errors.As(err, &ces) {
			for _, e := range ces.Unwrap() {
				var ce *natsbus.ConfigError
				if errors.As(e, &ce) {
					add(ce.Key, "%s", ce.Reason)
				}
			}
		} else {
			add("cluster.bus", "%v", err)
		}
	}
	c.Node = str("cluster.node", "")
	if c.Node == "" {
		if h, err := os.Hostname(); err == nil {
			c.Node = h
		}
	}
	if !nameRE.MatchString(c.Node) {
		add("cluster.node", "want letters, digits, '_', '.', '-' (at most 128, not starting with a symbol), got %q", c.Node)
	}
	if c.CacheDir = abs(str("cluster.cache_dir", "")); c.CacheDir == "" {
		add("cluster.cache_dir", "missing: the directory of this node's copy of the desired state")
	}
	c.Replicas = int(integer("cluster.replicas", 1, 1, 5))
	c.MaxPlugins = int(integer("cluster.max_plugins", DefaultClusterMaxPlugins, 1, 4096))
	c.MaxSpecBytes = integer("cluster.max_spec_bytes", DefaultClusterMaxSpecBytes, 1<<10, 1<<20)
	c.MaxModuleBytes = maxModule
	for _, u := range strings.Split(c.NATSURL, ",") {
		if c.NATSURL == "" {
			break
		}
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
			add("cluster.nats_url", "want nats://HOST:PORT or tls://HOST:PORT (comma-separated), got %q", u)
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		add("cluster.tls.cert", "cluster.tls.cert and cluster.tls.key go together")
	}
	for k, f := range map[string]string{"cluster.credentials": c.Credentials, "cluster.tls.ca": c.TLS.CA,
		"cluster.tls.cert": c.TLS.Cert, "cluster.tls.key": c.TLS.Key} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				add(k, "cannot read %q: %s", f, errors.Unwrap(err))
			}
		}
	}
	if !embedded {
		return c
	}
	e := &c.Embedded
	if _, _, err := splitHostPort(e.Listen); err != nil {
		add("cluster.embedded.listen", "want HOST:PORT, got %q", e.Listen)
	}
	if e.ClusterListen != "" {
		if _, _, err := splitHostPort(e.ClusterListen); err != nil {
			add("cluster.embedded.cluster_listen", "want HOST:PORT, got %q", e.ClusterListen)
		}
	} else if len(e.Routes) > 0 {
		add("cluster.embedded.cluster_listen", "missing: routes need a route address of this node")
	}
	for i, rt := range e.Routes {
		pu, err := url.Parse(rt)
		if err != nil || pu.Scheme != "nats" || pu.Host == "" {
			add(fmt.Sprintf("cluster.embedded.routes[%d]", i), "want nats://HOST:PORT, got %q", rt)
		}
	}
	if e.StoreDir == "" {
		add("cluster.embedded.store_dir", "missing: JetStream's directory")
	}
	if !nameRE.MatchString(e.Name) {
		add("cluster.embedded.name", "want letters, digits, '_', '.', '-', got %q", e.Name)
	}
	return c
}

// withFile names the file in every error.
func withFile(es Errors, file string) Errors {
	for _, e := range es {
		e.File = file
	}
	return es
}

// parseRestartPolicy reads a plugin's restart_policy: non-negative values, a backoff maximum
// no smaller than its start.
func parseRestartPolicy(r rawRestartPolicy, key func(string) string, add func(string, string, ...any)) RestartPolicy {
	var rp RestartPolicy
	if r.MaxRestarts != "" {
		n, err := strconv.Atoi(r.MaxRestarts)
		if err != nil || n < 0 || n > 1<<20 {
			add(key("max_restarts"), "want an integer from 0 to %d, got %q", 1<<20, r.MaxRestarts)
		}
		rp.MaxRestarts = max(n, 0)
	}
	d := func(k, s string) time.Duration {
		if s == "" {
			return 0
		}
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			add(key(k), "want a non-negative duration such as 5s, got %q", s)
			return 0
		}
		return v
	}
	rp.Period, rp.MinUptime = d("period", r.Period), d("min_uptime", r.MinUptime)
	rp.BackoffInitial, rp.BackoffMax = d("backoff_initial", r.BackoffInitial), d("backoff_max", r.BackoffMax)
	if rp.BackoffMax != 0 && rp.BackoffMax < rp.BackoffInitial {
		add(key("backoff_max"), "%v is below backoff_initial %v", rp.BackoffMax, rp.BackoffInitial)
	}
	return rp
}

// MaxFailureAnswerBytes bounds a plugin's failure_answer.
const MaxFailureAnswerBytes = 64 << 10

// bytesKey reads a scalar key as parseAmount's bytes (65536, 64KiB), from lo to hi; empty is
// def.
func bytesKey(key string, def, lo, hi int64, add func(string, string, ...any), str func(string, string) string) int64 {
	s := str(key, "")
	if s == "" {
		return def
	}
	var bad bool
	n := parseAmount(s, true, key, func(string, string, ...any) { bad = true })
	if bad || n < lo || n > hi {
		add(key, "want a number of bytes from %d to %d such as 65536 or 64KiB, got %q", lo, hi, s)
		return def
	}
	return n
}

func parseLimit(s, key string, add func(string, string, ...any)) time.Duration {
	switch s {
	case "":
		return 0
	case "none":
		return -1
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		add(key, "want a positive duration such as 50ms, or none, got %q", s)
		return 0
	}
	return d
}

// parseAmount reads a bound of limits.output or limits.publish: a positive integer (for
// bytes, optionally with a KiB, MiB or GiB suffix), or none (-1); empty is 0, the default.
func parseAmount(s string, bytes bool, key string, add func(string, string, ...any)) int64 {
	switch s {
	case "":
		return 0
	case "none":
		return -1
	}
	num, mult := s, int64(1)
	if bytes {
		for _, u := range []struct {
			suffix string
			mult   int64
		}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
			if n, ok := strings.CutSuffix(s, u.suffix); ok {
				num, mult = n, u.mult
				break
			}
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 1 || n > (1<<40)/mult {
		if bytes {
			add(key, "want a positive number of bytes such as 65536 or 64KiB, or none, got %q", s)
		} else {
			add(key, "want a positive integer, or none, got %q", s)
		}
		return 0
	}
	return n * mult
}

func pick(s, def, key string, add func(string, string, ...any), allowed ...string) string {
	if s == "" {
		return def
	}
	if !slices.Contains(allowed, s) {
		add(key, "want one of %s, got %q", strings.Join(allowed, ", "), s)
		return def
	}
	return s
}

// Order returns the plugins in an order where each comes after those it depends on, or
// Errors with one Error (key "plugins") naming a cycle.
func Order(ps []Plugin) ([]Plugin, error) {
	byName := map[string]Plugin{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	state := map[string]int{} // 1 visiting, 2 done
	var out []Plugin
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return Errors{{Key: "plugins", Problem: "dependency cycle: " + strings.Join(append(path, n), " -> ")}}
		case 2:
			return nil
		}
		p, ok := byName[n]
		if !ok {
			return nil // loaded outside this config
		}
		state[n] = 1
		for _, d := range p.DependsOn {
			if err := visit(d, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		out = append(out, p)
		return nil
	}
	for _, p := range ps {
		if err := visit(p.Name, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// walk checks node against t: every key known, every value of the right shape.
func walk(n *yaml.Node, t reflect.Type, path string, add func(string, string, ...any)) {
	at := func() string {
		if path == "" {
			return "(file)"
		}
		return path
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			add(at(), "want a mapping, got %s (line %d)", shape(n), n.Line)
			return
		}
		fields := map[string]reflect.StructField{}
		var known []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f
			known = append(known, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			f, ok := fields[k.Value]
			if !ok {
				add(sub, "unknown key (line %d); known keys here: %s", k.Line, strings.Join(known, ", "))
				continue
			}
			if t == reflect.TypeFor[raw]() && k.Value == "plugins" {
				walkPlugins(val, add)
				continue
			}
			walk(val, f.Type, sub, add)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			add(at(), "want a mapping of strings, got %s (line %d)", shape(n), n.Line)
			return
		}
		if t == reflect.TypeFor[pluginConfigNodes]() {
			return // any values: configValues checks them
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; v.Kind != yaml.ScalarNode {
				add(at()+"."+n.Content[i].Value, "want a string value, got %s (line %d)", shape(v), v.Line)
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			add(at(), "want a list, got %s (line %d)", shape(n), n.Line)
			return
		}
		for i, e := range n.Content {
			walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), add)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			add(at(), "want a single value, got %s (line %d)", shape(n), n.Line)
		}
	}
}

func walkPlugins(n *yaml.Node, add func(string, string, ...any)) {
	if n.Kind != yaml.SequenceNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		add("plugins", "want a list of plugins, got %s (line %d)", shape(n), n.Line)
		return
	}
	for i, e := range n.Content {
		walk(e, reflect.TypeFor[rawPlugin](), fmt.Sprintf("plugins[%d]", i), add)
	}
}

func shape(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

func splitHostPort(s string) (string, string, error) { return net.SplitHostPort(s) }

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

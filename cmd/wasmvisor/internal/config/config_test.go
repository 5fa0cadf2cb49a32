package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func builtin(name string) ([]byte, bool) { return []byte("wasm"), name == "authz" }

func parse(t *testing.T, yaml string, env ...string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.wasm"), []byte("wasm"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Parse(Input{Data: []byte(yaml), Source: "test.yaml", Dir: dir, Env: append([]string{}, env...),
		Builtin: builtin, Builtins: []string{"authz"}})
}

func TestValid(t *testing.T) {
	c, err := parse(t, `
listen: 127.0.0.1:9000
admin_token: 0123456789abcdef
log: {level: debug, format: console, decisions: false}
http: {max_body_bytes: 100, request_timeout: 2s}
supervisor: {strategy: one_for_one, max_restarts: 5, period: 10s, min_uptime: none}
plugins:
  - name: authz
    wasm: builtin:authz
    config: {role.admin: "*", default: deny, n: 5}
    limits: {memory_pages: 16, call_timeout: 50ms, start_timeout: none,
             output: {call_bytes: 8KiB, call_lines: 10, second_lines: none}, publish: {second_messages: 5, call_bytes: 100}}
    instances: 4
    restart: transient
    failure_policy: monitor
  - name: b
    wasm: p.wasm
    depends_on: [authz]
    capabilities: {clock: real, random: crypto, env: {A: b}}
`, "WASMVISOR_LISTEN=127.0.0.1:9001", "WASMVISOR_HTTP_REQUEST_TIMEOUT=3s")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9001" || c.HTTP.RequestTimeout != 3*time.Second || c.HTTP.MaxBodyBytes != 100 {
		t.Fatalf("env overrides: %+v", c)
	}
	if c.Log.Decisions || c.Log.Format != "console" || c.Supervisor.MaxRestarts != 5 || c.Supervisor.MinUptime != -1 {
		t.Fatalf("settings: %+v", c)
	}
	a := c.Plugins[0]
	if a.Config["role.admin"] != "*" || a.Config["n"] != "5" || a.MemoryPages != 16 || a.CallTimeout != 50*time.Millisecond ||
		a.StartTimeout != -1 || a.Instances != 4 || a.Restart != "transient" || a.FailurePolicy != "monitor" || a.Builtin != "authz" {
		t.Fatalf("plugin: %+v", a)
	}
	if a.Output != (Budget{CallBytes: 8 << 10, CallCount: 10, SecondCount: -1}) || a.Publish != (Budget{CallBytes: 100, SecondCount: 5}) {
		t.Fatalf("plugin output %+v publish %+v", a.Output, a.Publish)
	}
	if b := c.Plugins[1]; !strings.HasSuffix(b.Path, "p.wasm") || b.Clock != "real" || b.FailurePolicy != "deny" || b.Instances != 1 {
		t.Fatalf("plugin b: %+v", b)
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("listen", "", "")
	fs.String("log-level", "", "")
	if err := fs.Parse([]string{"--listen", "127.0.0.1:7000", "--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(Input{Data: []byte("listen: 127.0.0.1:1\n"), Env: []string{"WASMVISOR_LISTEN=127.0.0.1:2"}, Flags: fs})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7000" || c.Log.Level != "warn" {
		t.Fatalf("listen %q level %q", c.Listen, c.Log.Level)
	}
}

// Each bad key is refused with an error naming it.
func TestInvalid(t *testing.T) {
	for _, c := range []struct{ name, yaml, key, problem string }{
		{"unknown top", "listn: x", "listn", "unknown key"},
		{"unknown nested", "http: {max_body: 1}", "http.max_body", "unknown key"},
		{"unknown plugin key", "plugins: [{name: a, wasm: builtin:authz, instance: 2}]", "plugins[0].instance", "unknown key"},
		{"unknown limit", "plugins: [{name: a, wasm: builtin:authz, limits: {pages: 2}}]", "plugins[0].limits.pages", "unknown key"},
		{"listen", "listen: nowhere", "listen", "HOST:PORT"},
		{"level", "log: {level: loud}", "log.level", "want one of"},
		{"format", "log: {format: xml}", "log.format", "want one of"},
		{"decisions", "log: {decisions: maybe}", "log.decisions", "true or false"},
		{"body", "http: {max_body_bytes: -1}", "http.max_body_bytes", "integer"},
		{"timeout", "http: {request_timeout: soon}", "http.request_timeout", "duration"},
		{"interval", "reload: {interval: 0s}", "reload.interval", "duration"},
		{"strategy", "supervisor: {strategy: rest_for_one}", "supervisor.strategy", "one_for_one"},
		{"token", "admin_token: short", "admin_token", "too short"},
		{"plugins shape", "plugins: {a: 1}", "plugins", "want a list"},
		{"no name", "plugins: [{wasm: builtin:authz}]", "plugins[0].name", "missing"},
		{"bad name", "plugins: [{name: a/b, wasm: builtin:authz}]", "plugins[0](a/b).name", "letters"},
		{"dup", "plugins: [{name: a, wasm: builtin:authz}, {name: a, wasm: builtin:authz}]", "plugins[1](a).name", "also plugins[0]"},
		{"no wasm", "plugins: [{name: a}]", "plugins[0](a).wasm", "missing"},
		{"builtin", "plugins: [{name: a, wasm: builtin:nope}]", "plugins[0](a).wasm", `no built-in plugin "nope"`},
		{"file", "plugins: [{name: a, wasm: missing.wasm}]", "plugins[0](a).wasm", "cannot read"},
		{"pages", "plugins: [{name: a, wasm: builtin:authz, limits: {memory_pages: 0}}]", "plugins[0](a).limits.memory_pages", "1 to 65536"},
		{"call timeout", "plugins: [{name: a, wasm: builtin:authz, limits: {call_timeout: 5}}]", "plugins[0](a).limits.call_timeout", "duration"},
		{"output bytes", "plugins: [{name: a, wasm: builtin:authz, limits: {output: {call_bytes: 64kb}}}]", "plugins[0](a).limits.output.call_bytes", "64KiB"},
		{"output lines", "plugins: [{name: a, wasm: builtin:authz, limits: {output: {second_lines: 0}}}]", "plugins[0](a).limits.output.second_lines", "positive integer"},
		{"unknown output", "plugins: [{name: a, wasm: builtin:authz, limits: {output: {lines: 1}}}]", "plugins[0].limits.output.lines", "unknown key"},
		{"publish", "plugins: [{name: a, wasm: builtin:authz, limits: {publish: {call_messages: many}}}]", "plugins[0](a).limits.publish.call_messages", "positive integer"},
		{"instances", "plugins: [{name: a, wasm: builtin:authz, instances: 0}]", "plugins[0](a).instances", "1 to 1024"},
		{"restart", "plugins: [{name: a, wasm: builtin:authz, restart: always}]", "plugins[0](a).restart", "permanent"},
		{"policy", "plugins: [{name: a, wasm: builtin:authz, failure_policy: open}]", "plugins[0](a).failure_policy", "deny, allow, monitor"},
		{"clock", "plugins: [{name: a, wasm: builtin:authz, capabilities: {clock: wall}}]", "plugins[0](a).capabilities.clock", "want one of"},
		{"dir", "plugins: [{name: a, wasm: builtin:authz, capabilities: {dirs: [{host: /nonexistent, guest: /d}]}}]", "plugins[0](a).capabilities.dirs[0].host", "not a directory"},
		{"config shape", "plugins: [{name: a, wasm: builtin:authz, config: [1]}]", "plugins[0].config", "want a mapping"},
		{"config inf", "plugins: [{name: a, wasm: builtin:authz, config: {k: [.inf]}}]", "plugins[0](a).config.k", "no JSON form"},
		{"dep", "plugins: [{name: a, wasm: builtin:authz, depends_on: [b]}]", "plugins[0](a).depends_on[0]", `no plugin "b"`},
		{"self dep", "plugins: [{name: a, wasm: builtin:authz, depends_on: [a]}]", "plugins[0](a).depends_on[0]", "itself"},
		{"cycle", "plugins: [{name: a, wasm: builtin:authz, depends_on: [b]}, {name: b, wasm: builtin:authz, depends_on: [a]}]", "plugins", "cycle"},
		{"not yaml", "listen: [", "(file)", "not YAML"},
		{"env", "", "WASMVISOR_LISTN", "unknown environment override"},
		{"required", "plugins: [{name: a, wasm: builtin:authz, required: maybe}]", "plugins[0](a).required", "true or false"},
		{"streams", "events: {max_streams: 0}", "events.max_streams", "integer from 1"},
		{"latency sampling", "metrics: {latency_sampling: 32}", "metrics.latency_sampling", "integer from 0"},
		{"latency sampling type", "metrics: {latency_sampling: often}", "metrics.latency_sampling", "integer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var env []string
			if c.key == "WASMVISOR_LISTN" {
				env = []string{"WASMVISOR_LISTN=x"}
			}
			_, err := parse(t, c.yaml, env...)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.key+": ") || !strings.Contains(msg, c.problem) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want key %q and %q on one line", msg, c.key, c.problem)
			}
			var ces Errors
			if !errors.As(err, &ces) || len(ces) == 0 {
				t.Fatalf("error %q (%T) is not a config.Errors", msg, err)
			}
		})
	}
}

// An invalid file is an Errors naming the file, the key and the reason, each error typed.
func TestErrorsNameTheFile(t *testing.T) {
	_, err := parse(t, "plugins: [{name: a, wasm: builtin:authz, instances: -3}]")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].File != "test.yaml" || es[0].Key != "plugins[0](a).instances" ||
		!strings.HasPrefix(err.Error(), "config test.yaml: plugins[0](a).instances: want 1 to 1024") {
		t.Fatalf("err %v (%#v)", err, es)
	}
	_, err = ReadFile(filepath.Join(t.TempDir(), "gone.yaml"))
	if !errors.As(err, &es) || !strings.HasSuffix(es[0].File, "gone.yaml") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

// required defaults to true; events.max_streams to DefaultMaxStreams.
func TestRequiredAndStreams(t *testing.T) {
	c, err := parse(t, "events: {max_streams: 3}\nplugins: [{name: a, wasm: builtin:authz}, {name: b, wasm: builtin:authz, required: false}]")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Plugins[0].Required || c.Plugins[1].Required || c.Events.MaxStreams != 3 {
		t.Fatalf("%+v %+v", c.Plugins, c.Events)
	}
	if c, _ := parse(t, ""); c.Events.MaxStreams != DefaultMaxStreams {
		t.Fatalf("default max_streams %d", c.Events.MaxStreams)
	}
}

// metrics.latency_sampling defaults to 0 (every call timed) and takes 0 to 31.
func TestLatencySampling(t *testing.T) {
	if c, err := parse(t, ""); err != nil || c.Metrics.LatencySampling != 0 {
		t.Fatalf("default: %+v %v", c, err)
	}
	if c, err := parse(t, "metrics: {latency_sampling: 6}"); err != nil || c.Metrics.LatencySampling != 6 {
		t.Fatalf("6: %+v %v", c, err)
	}
	if c, err := parse(t, "", "WASMVISOR_METRICS_LATENCY_SAMPLING=31"); err != nil || c.Metrics.LatencySampling != 31 {
		t.Fatalf("env: %+v %v", c, err)
	}
}

func TestEnvBadValue(t *testing.T) {
	_, err := parse(t, "", "WASMVISOR_HTTP_REQUEST_TIMEOUT=never")
	if err == nil || !strings.Contains(err.Error(), "http.request_timeout: ") {
		t.Fatalf("err %v", err)
	}
}

// The containment settings: the quarantine backoff, the poison-input window (off with -1) and
// each plugin's failure mode; out-of-range values are errors naming the key.
func TestContainmentKeys(t *testing.T) {
	c, err := parse(t, `
supervisor: {quarantine_base: 2s, quarantine_max: 1m, poison_limit: -1, poison_window: 30s}
plugins:
  - {name: a, wasm: p.wasm, on_failure: escalate}
  - {name: b, wasm: p.wasm}
`)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Supervisor
	if s.QuarantineBase != 2*time.Second || s.QuarantineMax != time.Minute || s.PoisonLimit != -1 || s.PoisonWindow != 30*time.Second {
		t.Fatalf("supervisor: %+v", s)
	}
	if c.Plugins[0].OnFailure != OnFailureEscalate || c.Plugins[1].OnFailure != OnFailureQuarantine {
		t.Fatalf("on_failure: %q %q", c.Plugins[0].OnFailure, c.Plugins[1].OnFailure)
	}
	_, err = parse(t, `
supervisor: {quarantine_base: -1s, poison_limit: 5000, poison_window: soon}
plugins:
  - {name: a, wasm: p.wasm, on_failure: restart}
`)
	for _, key := range []string{"supervisor.quarantine_base", "supervisor.poison_limit", "supervisor.poison_window", "plugins[0](a).on_failure"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}

// Order's cycle is typed too, as Errors, so that a server applying an order it did not parse
// answers it as an invalid configuration.
func TestOrderCycleIsTyped(t *testing.T) {
	_, err := Order([]Plugin{{Name: "a", DependsOn: []string{"b"}}, {Name: "b", DependsOn: []string{"a"}}})
	var ces Errors
	if !errors.As(err, &ces) || len(ces) != 1 || ces[0].Key != "plugins" || !strings.Contains(ces[0].Problem, "dependency cycle: a -> b -> a") {
		t.Fatalf("Order of a cycle: %v (%T), want one config.Error naming it", err, err)
	}
}

func TestRestartPolicy(t *testing.T) {
	c, err := parse(t, `
plugins:
  - {name: a, wasm: p.wasm, restart_policy: {max_restarts: 1, period: 10s, min_uptime: 1s, backoff_initial: 100ms, backoff_max: 5s}}
  - {name: b, wasm: p.wasm}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := RestartPolicy{MaxRestarts: 1, Period: 10 * time.Second, MinUptime: time.Second,
		BackoffInitial: 100 * time.Millisecond, BackoffMax: 5 * time.Second}
	if c.Plugins[0].RestartPolicy != want || c.Plugins[1].RestartPolicy != (RestartPolicy{}) {
		t.Fatalf("restart_policy: %+v, %+v", c.Plugins[0].RestartPolicy, c.Plugins[1].RestartPolicy)
	}
	_, err = parse(t, `
plugins:
  - {name: a, wasm: p.wasm, restart_policy: {max_restarts: -2, period: soon, min_uptime: -1s, backoff_initial: 2s, backoff_max: 1s}}
`)
	for _, key := range []string{"restart_policy.max_restarts", "restart_policy.period", "restart_policy.min_uptime",
		"restart_policy.backoff_max"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
	_, err = parse(t, "plugins:\n  - {name: a, wasm: p.wasm, restart_policy: {jitter: 3}}\n")
	if err == nil || !strings.Contains(err.Error(), "restart_policy.jitter: unknown key") {
		t.Errorf("an unknown restart_policy key: %v", err)
	}
}

func TestIsolation(t *testing.T) {
	c, err := parse(t, `
plugins:
  - {name: a, wasm: p.wasm, isolation: per_call}
  - {name: b, wasm: p.wasm, isolation: shared}
  - {name: c, wasm: p.wasm}
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{c.Plugins[0].Isolation, c.Plugins[1].Isolation, c.Plugins[2].Isolation}; got[0] != IsolationPerCall ||
		got[1] != IsolationShared || got[2] != IsolationShared {
		t.Fatalf("isolation: %v", got)
	}
	_, err = parse(t, "plugins:\n  - {name: a, wasm: p.wasm, isolation: per-call}\n")
	if err == nil || !strings.Contains(err.Error(), "plugins[0](a).isolation") || !strings.Contains(err.Error(), `"per-call"`) {
		t.Errorf("a bad isolation: %v", err)
	}
}

func TestSnapshotKey(t *testing.T) {
	c, err := parse(t, `
plugins:
  - {name: a, wasm: p.wasm, snapshot: false}
  - {name: b, wasm: p.wasm, snapshot: true}
  - {name: c, wasm: p.wasm}
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := []bool{c.Plugins[0].NoSnapshot, c.Plugins[1].NoSnapshot, c.Plugins[2].NoSnapshot}; !got[0] || got[1] || got[2] {
		t.Fatalf("NoSnapshot: %v, want [true false false]", got)
	}
	_, err = parse(t, "plugins:\n  - {name: a, wasm: p.wasm, snapshot: off}\n")
	if err == nil || !strings.Contains(err.Error(), "plugins[0](a).snapshot") || !strings.Contains(err.Error(), `"off"`) {
		t.Errorf("a bad snapshot: %v", err)
	}
}

// A plugin's config values: strings as written, null as "", anything else as compact JSON
// with sorted keys (CONFIG.md, "Structured config values").
func TestStructuredConfigValues(t *testing.T) {
	c, err := parse(t, `
plugins:
  - name: a
    wasm: builtin:authz
    config:
      s: plain text
      quoted: "5"
      empty:
      n: 5
      neg: -12
      hex: 0x10
      big: 18446744073709551615
      f: 1.50
      e: 1e3
      b: true
      list: [1, two, {z: null, a: [true, 2.5]}, "<&>"]
      map: {b: 1, a: {d: x, c: "é\n\"q\""}, 10: ten, 9: nine}
      date: 2001-12-14
      anchor: &x {k: v}
      alias: *x
      nested: [[[]], {}]
`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"s":      "plain text",
		"quoted": "5",
		"empty":  "",
		"n":      "5",
		"neg":    "-12",
		"hex":    "16",
		"big":    "18446744073709551615",
		"f":      "1.5",
		"e":      "1000",
		"b":      "true",
		"list":   `[1,"two",{"a":[true,2.5],"z":null},"\u003c\u0026\u003e"]`,
		"map":    `{"10":"ten","9":"nine","a":{"c":"é\n\"q\"","d":"x"},"b":1}`,
		"date":   "2001-12-14",
		"anchor": `{"k":"v"}`,
		"alias":  `{"k":"v"}`,
		"nested": `[[[]],{}]`,
	}
	got := c.Plugins[0].Config
	for k, v := range want {
		if got[k] != v {
			t.Errorf("config %s = %q, want %q", k, got[k], v)
		}
		if strings.ContainsAny(v, "[{") && !json.Valid([]byte(got[k])) {
			t.Errorf("config %s = %q: not JSON", k, got[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("config has %d keys, want %d: %v", len(got), len(want), got)
	}
}

func TestStructuredConfigValueBounds(t *testing.T) {
	deep := strings.Repeat("[", MaxConfigValueDepth+1) + strings.Repeat("]", MaxConfigValueDepth+1)
	ok := strings.Repeat("[", MaxConfigValueDepth) + strings.Repeat("]", MaxConfigValueDepth)
	half := strings.Repeat("x", MaxConfigValueBytes/2)
	for _, c := range []struct{ name, config, key, problem string }{
		{"deep", "      k: " + deep + "\n", "plugins[0](a).config.k", "nested deeper than 64"},
		{"long string", "      k: " + strings.Repeat("x", MaxConfigValueBytes+1) + "\n", "plugins[0](a).config.k", "longer than 65536 bytes"},
		{"long list", "      k: [" + half + ", " + half + "]\n", "plugins[0](a).config.k", "longer than 65536 bytes as JSON"},
		{"nan", "      k: {x: .nan}\n", "plugins[0](a).config.k", "no JSON form"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(t, "plugins:\n  - name: a\n    wasm: builtin:authz\n    config:\n"+c.config)
			var ces Errors
			if !errors.As(err, &ces) || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.problem) {
				t.Fatalf("got %v, want a config.Errors with %s: ...%s", err, c.key, c.problem)
			}
		})
	}
	c, err := parse(t, "plugins:\n  - name: a\n    wasm: builtin:authz\n    config:\n      k: "+ok+"\n")
	if err != nil || c.Plugins[0].Config["k"] != ok {
		t.Fatalf("64 levels: %v", err)
	}
}

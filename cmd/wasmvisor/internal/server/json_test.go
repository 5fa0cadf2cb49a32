package server

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// The API's JSON is in one style (API.md, "JSON"): snake_case keys, no null lists, digests
// with their algorithm. A plugin view and its telemetry, key by key.
func TestJSONStyle(t *testing.T) {
	ts := openServer(t, "plugins:\n  - {name: authz, wasm: \"builtin:authz\", instances: 1}\n", true)
	in := `{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`
	if a := ts.do(t, "POST", "/v1/plugins/authz/call/evaluate", "", "application/json", []byte(in)); a.status != 200 {
		t.Fatalf("call: %d %s", a.status, a.body)
	}
	a := ts.do(t, "GET", "/v1/plugins/authz", "", "", nil)
	if a.status != 200 || bytes.Contains(a.body, []byte("null")) {
		t.Fatalf("plugin: %d %s", a.status, a.body)
	}
	var v map[string]any
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatal(err)
	}
	assertKeys(t, "plugin", v, "name", "digest", "format", "handlers", "source", "wasm", "status", "state", "required",
		"failure_policy", "config", "config_version", "config_overridden", "restarts", "isolation", "resets", "rewinds", "snapshot", "loaded_at", "instances")
	if d, _ := v["digest"].(string); !strings.HasPrefix(d, "sha256:") {
		t.Errorf("digest %q lacks its algorithm", d)
	}
	if f, _ := v["format"].(string); f != "wasmvisor" {
		t.Errorf("format %q, want wasmvisor", f)
	}
	if hs, _ := v["handlers"].([]any); len(hs) == 0 || hs[0] != "evaluate" {
		t.Errorf("handlers %v, want authz's, evaluate first", v["handlers"])
	}
	insts, _ := v["instances"].([]any)
	if len(insts) != 1 {
		t.Fatalf("instances: %v", v["instances"])
	}
	inst, _ := insts[0].(map[string]any)
	assertKeys(t, "instance", inst, "index", "up", "incarnation", "config_version", "read", "memory_pages", "telemetry")
	tel, _ := inst["telemetry"].(map[string]any)
	counter, _ := tel["decisions_total"].(map[string]any)
	assertKeys(t, "counter", counter, "name", "kind", "value", "count", "sum")
	if counter["kind"] != "counter" || counter["value"] != 1.0 {
		t.Errorf("decisions_total: %v", counter)
	}
	hist, _ := tel["input_bytes"].(map[string]any)
	assertKeys(t, "histogram", hist, "name", "kind", "value", "bounds", "buckets", "count", "sum")
	if hist["kind"] != "histogram" {
		t.Errorf("input_bytes: %v", hist)
	}

	// The decision the call recorded, through the guest events route.
	a = ts.do(t, "GET", "/v1/plugins/authz/events?since=0", "", "", nil)
	if a.status != 200 || bytes.Contains(a.body, []byte("null")) {
		t.Fatalf("events: %d %s", a.status, a.body)
	}
	v = nil
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatal(err)
	}
	assertKeys(t, "guest events", v, "plugin", "events", "next", "lost", "guest_lost")
	evs, _ := v["events"].([]any)
	if len(evs) != 1 {
		t.Fatalf("events: %s", a.body)
	}
	ev, _ := evs[0].(map[string]any)
	assertKeys(t, "guest event", ev, "seq", "instance", "incarnation", "guest_seq", "topic", "data")
	if ev["topic"] != "decision" {
		t.Errorf("event topic %v, want decision", ev["topic"])
	}
	a = ts.do(t, "GET", "/v1/plugins/authz/events?since=1", "", "", nil)
	if a.status != 200 || !bytes.Contains(a.body, []byte(`"events": []`)) {
		t.Errorf("no events: %s", a.body)
	}

	a = ts.do(t, "GET", "/v1/status", "", "", nil)
	var st struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
	}
	if err := json.Unmarshal(a.body, &st); err != nil || !strings.HasPrefix(st.Config.Digest, "sha256:") {
		t.Errorf("status: %v %s", err, a.body)
	}
}

func assertKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	got := make([]string, 0, len(m))
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s keys: got %v, want %v", what, got, want)
	}
}

// A plugin's restart_policy reaches the host's plugin spec.
func TestHostPluginRestartPolicy(t *testing.T) {
	hp := hostPlugin(config.Plugin{Name: "a", RestartPolicy: config.RestartPolicy{MaxRestarts: 2, Period: time.Second,
		MinUptime: time.Millisecond, BackoffInitial: 10 * time.Millisecond, BackoffMax: time.Second}})
	want := host.RestartPolicy{Intensity: 2, Period: time.Second, MinUptime: time.Millisecond,
		Backoff: supervisor.Backoff{Initial: 10 * time.Millisecond, Max: time.Second}}
	if hp.RestartPolicy != want {
		t.Fatalf("RestartPolicy = %+v, want %+v", hp.RestartPolicy, want)
	}
}

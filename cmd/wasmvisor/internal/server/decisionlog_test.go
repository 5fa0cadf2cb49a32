package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/decisionlog"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/plugins"
)

// Every call gets its own decision ID in Wasmvisor-Decision-Id, and the file sink's record of
// that decision carries it, with the input and result masked, and the failure policy's
// fallback recorded as the result it was.
func TestDecisionLogFile(t *testing.T) {
	ts := openServer(t, `
decision_log:
  input: true
  result: true
  mask: [/input/password, /result/password]
  file: {path: decisions.log}
plugins:
  - {name: ref, wasm: ref.wasm}
  - {name: open, wasm: ref.wasm, failure_policy: allow, failure_answer: '{"allowed": true}'}
`, true)
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(path string, body string) (string, int, string) {
		res, err := client.Post(ts.base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.Header.Get(HeaderDecisionID), res.StatusCode, string(b)
	}
	const n = 50
	ids := map[string]int{}
	for i := range n {
		id, status, body := call("/v1/plugins/ref/call/echo", fmt.Sprintf(`{"password":"s3cret","n":%d}`, i))
		if status != 200 || !strings.Contains(body, "s3cret") { // the answer itself is not masked
			t.Fatalf("echo: %d %s", status, body)
		}
		if _, dup := ids[id]; dup || id == "" {
			t.Fatalf("decision ID %q: empty or seen before", id)
		}
		ids[id] = i
	}
	trapID, status, body := call("/v1/plugins/open/call/trap", `{}`)
	if status != 200 || body != `{"allowed": true}` {
		t.Fatalf("failure_answer: %d %s", status, body)
	}
	guestID, status, _ := call("/v1/plugins/ref/call/fail", `{}`)
	if status != 422 || guestID == "" {
		t.Fatalf("a guest error: %d, ID %q", status, guestID)
	}
	if _, status, _ := call("/v1/plugins/nope/call/x", `{}`); status != 404 {
		t.Fatalf("no plugin: %d", status)
	}
	if err := ts.Shutdown(context.Background()); err != nil { // flushes the file
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(ts.dir, "decisions.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r decisionlog.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(r.DecisionID) {
			t.Errorf("decision ID %q is not a UUID version 7", r.DecisionID)
		}
		switch r.DecisionID {
		case trapID:
			if r.Outcome != "failure_allow" || !r.FailurePolicyApplied || r.ErrorKind != "trap" || string(r.Result) != `{"allowed":true}` ||
				r.Path != "open/trap" || r.Status != 200 {
				t.Errorf("the trap's record: %s", sc.Text())
			}
		case guestID:
			if r.Outcome != "error" || r.Status != 422 || r.Result != nil || r.FailurePolicyApplied {
				t.Errorf("the guest error's record: %s", sc.Text())
			}
		default:
			i, ok := ids[r.DecisionID]
			if !ok {
				t.Errorf("a record of no call: %s", sc.Text())
				continue
			}
			want := fmt.Sprintf(`{"n":%d}`, i)
			if string(r.Input) != want || string(r.Result) != want || strings.Contains(sc.Text(), "s3cret") ||
				len(r.Erased) != 2 || r.Plugin != "ref" || r.Handler != "echo" || r.Outcome != "ok" || r.Digest == "" ||
				r.Metrics.TimerServerHandlerNs <= 0 || r.Timestamp.IsZero() {
				t.Errorf("record %d: %s", i, sc.Text())
			}
		}
		seen++
	}
	if seen != n+2 {
		t.Fatalf("%d records, want %d (a call to no plugin is no decision)", seen, n+2)
	}
}

// A decision log HTTP endpoint that never answers: calls are answered as fast as without it,
// the records past the queue are dropped and counted in /metrics, and shutdown is bounded.
func TestDecisionLogStalledSink(t *testing.T) {
	release := make(chan struct{})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer sink.Close()
	defer close(release)
	ts := openServer(t, fmt.Sprintf(`
http: {shutdown_timeout: 2s}
decision_log:
  http: {url: %q, batch_size: 5, queue: 10, flush_interval: 1ms, timeout: 1h, max_retries: 3}
plugins:
  - {name: ref, wasm: ref.wasm}
`, sink.URL), true)
	client := &http.Client{Timeout: 10 * time.Second} // the failure limit: a blocked call fails
	const n = 200
	for i := range n {
		res, err := client.Post(ts.base+"/v1/plugins/ref/call/echo", "application/json", strings.NewReader(strconv.Itoa(i)))
		if err != nil {
			t.Fatalf("call %d with the sink stalled: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get(HeaderDecisionID) == "" {
			t.Fatalf("call %d: %d", i, res.StatusCode)
		}
	}
	res, err := client.Get(ts.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`wasmvisor_decision_log_dropped_total\{reason="queue_full",sink="http"\} (\d+)`).FindSubmatch(metrics)
	if m == nil {
		t.Fatalf("no queue_full drops in /metrics:\n%s", grepLines(metrics, "decision_log"))
	}
	// The sink holds at most one batch (5) and its queue (10): the rest are dropped.
	if d, _ := strconv.Atoi(string(m[1])); d < n-15 {
		t.Fatalf("%d dropped, want at least %d", d, n-15)
	}
	start := time.Now()
	if err := ts.Shutdown(context.Background()); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Shutdown with the sink stalled: %v after %v, want the decision log's timeout within the bound",
			err, time.Since(start))
	}
}

func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(l, []byte(s)) {
			out = append(out, string(l))
		}
	}
	return strings.Join(out, "\n")
}

// The process log line of a decision carries its ID, and its input masked as the sinks get it.
func TestDecisionLogLine(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ts := openServerLog(t, `
decision_log: {input: true, mask: [/input/password]}
plugins:
  - {name: ref, wasm: ref.wasm}
`, true, zap.New(core))
	res, err := http.Post(ts.base+"/v1/plugins/ref/call/echo", "application/json", strings.NewReader(`{"password":"s3cret","n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	id := res.Header.Get(HeaderDecisionID)
	lines := logs.FilterMessage("decision").All()
	if len(lines) != 1 {
		t.Fatalf("%d decision lines", len(lines))
	}
	f := lines[0].ContextMap()
	in, _ := json.Marshal(f["input"])
	if f["decision_id"] != id || id == "" || string(in) != `{"n":1}` || fmt.Sprint(f["erased"]) != "[/input/password]" {
		t.Fatalf("the log line: %v (input %s), want decision_id %q and the input masked", f, in, id)
	}
}

// A plugin's failure_answer is the fallback of its own failures, and a reload changes it live;
// a change of decision_log is reported as taking effect at the next start.
func TestFailureAnswerReloaded(t *testing.T) {
	ts := openServer(t, `
plugins:
  - {name: open, wasm: ref.wasm, failure_policy: allow}
  - {name: other, wasm: ref.wasm, failure_policy: monitor, failure_answer: '{"patch": []}'}
`, true)
	trap := func(name string) string {
		t.Helper()
		a := ts.do(t, "POST", "/v1/plugins/"+name+"/call/trap", "", "", nil)
		if a.status != 200 || a.header.Get(HeaderFailurePolicy) == "" {
			t.Fatalf("%s: %d %v %s", name, a.status, a.header, a.body)
		}
		return string(a.body)
	}
	if b := trap("open"); !strings.HasPrefix(b, `{"allow":true,"reasons":[`) {
		t.Fatalf("the default fallback: %s", b)
	}
	if b := trap("other"); b != `{"patch": []}` {
		t.Fatalf("other's fallback: %s", b)
	}
	if err := os.WriteFile(filepath.Join(ts.dir, "wasmvisor.yaml"), []byte(`
decision_log: {input: true}
plugins:
  - {name: open, wasm: ref.wasm, failure_policy: allow, failure_answer: '{"allowed": true}'}
  - {name: other, wasm: ref.wasm, failure_policy: monitor, failure_answer: '{"patch": []}'}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	if st := ts.status.Load(); !slices.Contains(st.Warnings, "decision_log changed: takes effect at the next start") ||
		!slices.ContainsFunc(st.Changes, func(c string) bool { return strings.Contains(c, "open") }) {
		t.Fatalf("reload status: %+v", st)
	}
	if b := trap("open"); b != `{"allowed": true}` {
		t.Fatalf("after the reload: %s", b)
	}
}

// PUT sets a plugin's failure_answer in place, with its failure policy; without allow or
// monitor in the same request it is refused and nothing changes.
func TestFailureAnswerPut(t *testing.T) {
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	for _, body := range []string{`{"failure_answer": {"ok": true}}`, `{"failure_policy": "deny", "failure_answer": {"ok": true}}`} {
		if a := ts.do(t, "PUT", "/v1/plugins/ref", testToken, "application/json", []byte(body)); a.status != 400 || a.code(t) != "invalid_parameter" {
			t.Fatalf("PUT %s: %d %s", body, a.status, a.body)
		}
	}
	if a := ts.do(t, "POST", "/v1/plugins/ref/call/trap", "", "", nil); a.status != 502 {
		t.Fatalf("deny after the refused PUTs: %d %s", a.status, a.body)
	}
	put := `{"failure_policy": "allow", "failure_answer": {"ok": true}}`
	if a := ts.do(t, "PUT", "/v1/plugins/ref", testToken, "application/json", []byte(put)); a.status != 200 {
		t.Fatalf("PUT: %d %s", a.status, a.body)
	}
	if a := ts.do(t, "POST", "/v1/plugins/ref/call/trap", "", "", nil); a.status != 200 || string(a.body) != `{"ok": true}` {
		t.Fatalf("after the PUT: %d %s", a.status, a.body)
	}
}

// decision_log.jetstream needs the cluster node's NATS connection (Options.NATS): without one
// New refuses it, naming the key, instead of starting without the sink.
func TestDecisionLogJetStreamRefused(t *testing.T) {
	c, err := config.Parse(config.Input{Data: []byte("decision_log: {jetstream: {subject: decisions.n1}}\nplugins: []\n"),
		Dir: t.TempDir(), Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	c.CacheDir = "off"
	s, err := New(context.Background(), Options{Config: c, Logger: zaptest.NewLogger(t)})
	if err == nil {
		_ = s.Shutdown(context.Background())
		t.Fatal("New accepted decision_log.jetstream without a cluster connection")
	}
	if !errors.Is(err, errNoCluster) || !strings.Contains(err.Error(), "decision_log.jetstream.subject") {
		t.Fatalf("New: %v", err)
	}
}

// On a cluster's node (Options.NATS, the node's connection), decision_log.jetstream publishes
// every decision's record to the stream that captures its subject: the record that arrives
// carries the decision ID the call answered in its header.
func TestDecisionLogJetStream(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DECISIONS", Subjects: []string{"decisions.>"}})
	if err != nil {
		t.Fatal(err)
	}

	c, err := config.Parse(config.Input{Env: []string{}, Dir: t.TempDir(), Builtin: plugins.Builtin, Builtins: plugins.Builtins(),
		Data: []byte("decision_log: {jetstream: {subject: decisions.n1, flush_interval: 10ms}}\nplugins: [{name: authz, wasm: 'builtin:authz'}]\n")})
	if err != nil {
		t.Fatal(err)
	}
	c.CacheDir = hosttest.CacheDir()
	s, err := Open(context.Background(), Options{Config: c, Logger: zaptest.NewLogger(t), Builtin: plugins.Builtin, NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		hs.Close()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := http.Post(hs.URL+"/v1/plugins/authz/call/evaluate", "application/json",
		strings.NewReader(`{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document"}}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	id := res.Header.Get(HeaderDecisionID)
	if res.StatusCode != 200 || id == "" {
		t.Fatalf("call: %d, decision ID %q", res.StatusCode, id)
	}
	// A context of its own: the load above (a cold compilation cache under -race takes its
	// time) must not eat the consumer's.
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	cons, err := st.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no record in the stream: %v", err)
	}
	var rec struct {
		DecisionID string `json:"decision_id"`
		Plugin     string `json:"plugin"`
	}
	if err := json.Unmarshal(msg.Data(), &rec); err != nil || rec.DecisionID != id || rec.Plugin != "authz" {
		t.Fatalf("record %s (%v), want decision %s of authz", msg.Data(), err, id)
	}
}

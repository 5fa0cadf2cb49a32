package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
)

// A plugin's guest events are readable through the API with a cursor that goes on across
// instances: a crash does not lose them nor restart the numbering.
func TestGuestEventsAPI(t *testing.T) {
	ts := openServer(t, "supervisor: {max_restarts: 100}\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	emit := func(data string) {
		if a := ts.do(t, "POST", "/v1/plugins/ref/call/emit", "", "", []byte("decision\n"+data)); a.status != 200 {
			t.Fatalf("emit: %d %s", a.status, a.body)
		}
	}
	read := func(q string) guestEventsBody {
		a := ts.do(t, "GET", "/v1/plugins/ref/events"+q, "", "", nil)
		var b guestEventsBody
		if a.status != 200 || json.Unmarshal(a.body, &b) != nil || bytes.Contains(a.body, []byte("null")) {
			t.Fatalf("events%s: %d %s", q, a.status, a.body)
		}
		return b
	}
	if b := read(""); len(b.Events) != 0 || b.Next != 0 {
		t.Fatalf("empty: %+v", b)
	}
	emit(`{"allow":true}`)
	ts.do(t, "POST", "/v1/plugins/ref/call/trap", "", "", nil)
	emit("plain")
	b := read("?since=0")
	if len(b.Events) != 2 || b.Next != 2 || compact(b.Events[0].Data) != `{"allow":true}` || b.Events[1].Text != "plain" ||
		b.Events[1].Seq != 1 || b.Events[0].Incarnation == b.Events[1].Incarnation || b.Events[0].Topic != "decision" {
		t.Fatalf("across a crash: %+v", b)
	}
	if b := read("?since=2"); len(b.Events) != 0 || b.Next != 2 {
		t.Fatalf("resumed: %+v", b)
	}
	if b := read("?since=0&limit=1"); len(b.Events) != 1 || b.Next != 1 {
		t.Fatalf("limit: %+v", b)
	}
	for _, c := range []struct{ q, code string }{
		{"?since=-1", "bad_since"}, {"?since=x", "bad_since"}, {"?limit=0", "bad_limit"}, {"?limit=100000", "bad_limit"},
	} {
		if a := ts.do(t, "GET", "/v1/plugins/ref/events"+c.q, "", "", nil); a.status != 400 || !bytes.Contains(a.body, []byte(c.code)) {
			t.Errorf("%s: %d %s", c.q, a.status, a.body)
		}
	}
	if a := ts.do(t, "GET", "/v1/plugins/nope/events", "", "", nil); a.status != 404 {
		t.Errorf("unknown plugin: %d %s", a.status, a.body)
	}
	var v map[string]any
	_ = json.Unmarshal(ts.do(t, "GET", "/v1/plugins/ref/events", "", "", nil).body, &v)
	assertKeys(t, "guest events", v, "plugin", "events", "next", "lost", "guest_lost")
	ev, _ := v["events"].([]any)
	e0, _ := ev[0].(map[string]any)
	assertKeys(t, "guest event", e0, "seq", "instance", "incarnation", "guest_seq", "topic", "data")
}

// GET /v1/events?plugin=P streams the plugin's guest events, from since on, as they are
// recorded; Last-Event-ID resumes after the last one seen.
func TestGuestEventsSSE(t *testing.T) {
	ts := openServer(t, "plugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	ts.do(t, "POST", "/v1/plugins/ref/call/emit", "", "", []byte("decision\nd0"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a failure limit
	defer cancel()
	open := func(q, lastID string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.base+"/v1/events"+q, nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
			res.Body.Close()
			t.Fatalf("stream %s: %d", q, res.StatusCode)
		}
		return res
	}
	next := func(r *bufio.Reader) (id string, ev guestEvent) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimSpace(line[4:])
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil {
					t.Fatal(err)
				}
				return id, ev
			}
		}
	}
	res := open("?plugin=ref&since=0", "")
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	if id, ev := next(r); id != "0" || ev.Text != "d0" {
		t.Fatalf("first: %s %+v", id, ev)
	}
	ts.do(t, "POST", "/v1/plugins/ref/call/emit", "", "", []byte("decision\nd1"))
	if id, ev := next(r); id != "1" || ev.Text != "d1" || ev.Topic != "decision" {
		t.Fatalf("live: %s %+v", id, ev)
	}
	res2 := open("?plugin=ref", "0")
	defer res2.Body.Close()
	r2 := bufio.NewReader(res2.Body)
	if id, ev := next(r2); id != "1" || ev.Text != "d1" {
		t.Fatalf("resumed: %s %+v", id, ev)
	}
	for _, c := range []struct{ q string }{{"?plugin=nope"}, {"?plugin=ref&topic=t"}, {"?plugin=ref&since=x"}} {
		if a := ts.do(t, "GET", "/v1/events"+c.q, "", "", nil); a.status/100 != 4 {
			t.Errorf("%s: %d %s", c.q, a.status, a.body)
		}
	}
}

// A required plugin that is quarantined makes /readyz 503 naming it failed; once it serves
// again (a restart retries it at once), /readyz is 200.
func TestReadyzFollowsQuarantine(t *testing.T) {
	// The host quarantines the plugin after the second trap's call has returned: wait for
	// its event (logged as "host: quarantined"), not for time.
	quarantined := make(chan struct{})
	var once sync.Once
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "host: quarantined" {
			once.Do(func() { close(quarantined) })
		}
		return nil
	})))
	ts := openServerLog(t, "admin_token: "+testToken+"\nsupervisor: {max_restarts: 1, period: 1h, quarantine_base: 1h, poison_limit: -1}\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true, log)
	readyz := func() (int, readiness) {
		a := ts.do(t, "GET", "/readyz", "", "", nil)
		var rd readiness
		if err := json.Unmarshal(a.body, &rd); err != nil {
			t.Fatalf("readyz: %q", a.body)
		}
		return a.status, rd
	}
	if st, rd := readyz(); st != 200 {
		t.Fatalf("at start: %d %+v", st, rd)
	}
	for range 2 {
		ts.do(t, "POST", "/v1/plugins/ref/call/trap", "", "", nil)
	}
	select {
	case <-quarantined:
	case <-time.After(30 * time.Second): // a failure limit, not a wait
		t.Fatal("the plugin was not quarantined")
	}
	if st, rd := readyz(); st != 503 || rd.Plugins["ref"] != stateFailed || len(rd.NotReady) != 1 {
		t.Fatalf("quarantined: %d %+v", st, rd)
	}
	if a := ts.do(t, "POST", "/v1/plugins/ref/restart", testToken, "", nil); a.status != 200 {
		t.Fatalf("restart: %d %s", a.status, a.body)
	}
	if st, rd := readyz(); st != 200 || rd.Plugins["ref"] != stateUp {
		t.Fatalf("recovered: %d %+v", st, rd)
	}
}

// /metrics passes promtool check metrics (Prometheus's own lint: names, suffixes, help,
// label conventions), with guest counters, gauges and histograms in it.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian: apt-get install prometheus); .ci/run installs it")
	}
	ts := openServer(t, "plugins:\n  - {name: ref, wasm: ref.wasm, instances: 2}\n", true)
	for _, c := range [][2]string{{"count", "3"}, {"gauge", "-2"}, {"observe", "5"}, {"emit", "t\nx"}} {
		ts.do(t, "POST", "/v1/plugins/ref/call/"+c[0], "", "", []byte(c[1]))
	}
	a := ts.do(t, "GET", "/metrics", "", "", nil)
	if a.status != 200 || !bytes.Contains(a.body, []byte("wasmvisor_guest_metric_total")) {
		t.Fatalf("metrics: %d", a.status)
	}
	if bytes.Contains(a.body, []byte(`instance="`)) || bytes.Contains(a.body, []byte(`job="`)) {
		t.Errorf("a series has a label Prometheus sets on scraped targets")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(a.body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

func compact(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}

// The latency histogram counts every call by default; metrics.latency_sampling reaches the
// host and samples.
func TestLatencySamplingConfig(t *testing.T) {
	for _, c := range []struct {
		yaml string
		all  bool
	}{
		{"", true},
		{"metrics: {latency_sampling: 6}\n", false},
	} {
		ts := openServer(t, c.yaml+"plugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
		for range 8 {
			if a := ts.do(t, "POST", "/v1/plugins/ref/call/echo", "", "", []byte("x")); a.status != 200 {
				t.Fatalf("call: %d %s", a.status, a.body)
			}
		}
		body := ts.do(t, "GET", "/metrics", "", "", nil).body
		all := bytes.Contains(body, []byte("\nwasmvisor_call_duration_seconds_count{plugin=\"ref\"} 8\n"))
		if all != c.all || !bytes.Contains(body, []byte("\nwasmvisor_calls_total{plugin=\"ref\"} 8\n")) {
			t.Errorf("%q: every call timed = %v, want %v", c.yaml, all, c.all)
		}
	}
}

package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/config"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/plugins"
)

const testToken = "test-admin-token-0123456789"

// testServer is a Server behind an httptest server whose handler reports each request's end.
type testServer struct {
	*Server
	base string
	dir  string
	// started receives the path of each request whose handler began, ended of each whose
	// handler returned.
	started, ended chan string
}

// openServer parses yaml (ref.wasm is the reference plugin, in the config's directory), opens
// a Server (no plugin loaded) and serves it. load also loads the plugins.
func openServer(t testing.TB, yaml string, load bool) *testServer {
	t.Helper()
	return openServerLog(t, yaml, load, zaptest.NewLogger(t))
}

func openServerLog(t testing.TB, yaml string, load bool, log *zap.Logger) *testServer {
	t.Helper()
	dir := t.TempDir()
	ref, err := os.ReadFile("../../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ref.wasm"), ref, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "wasmvisor.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func() (*config.Config, error) {
		in, err := config.ReadFile(cfgPath)
		if err != nil {
			return nil, err
		}
		in.Env, in.Builtin, in.Builtins = []string{}, plugins.Builtin, plugins.Builtins()
		c, err := config.Parse(in)
		if c != nil {
			c.CacheDir = hosttest.CacheDir() // content-addressed, shared by the test binaries
		}
		return c, err
	}
	c, err := read()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), Options{Config: c, Reread: read, Logger: log,
		Builtin: plugins.Builtin})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, dir: dir, started: make(chan string, 64), ended: make(chan string, 64)}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case ts.started <- r.URL.Path:
		default:
		}
		s.Handler().ServeHTTP(w, r)
		select {
		case ts.ended <- r.URL.Path:
		default:
		}
	}))
	ts.base = hs.URL
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if load {
		if err := s.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return ts
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// seriesCount is the number of series a collector has.
func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) code(t *testing.T) string {
	t.Helper()
	var e struct {
		Error apiError `json:"error"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("not a JSON error (%d): %q", a.status, a.body)
	}
	return e.Error.Code
}

func (ts *testServer) do(t *testing.T, method, path, token, ctype string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, ts.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, res.Header, b}
}

// A call that reaches http.request_timeout gets its failure policy's answer: deny fails
// closed with 504 request_timeout, allow and monitor answer their marked synthetic allow.
// Never an empty 200. (It answered 200 with an empty body: for a call without a body, net/http
// watches the connection for the client going away from the start, and the read deadline the
// handler set for the body then ended the request's context at the request timeout, which was
// taken for a client that went away.)
func TestRequestTimeoutFailsClosed(t *testing.T) {
	ts := openServer(t, `
http: {request_timeout: 300ms}
plugins:
  - {name: deny, wasm: ref.wasm, limits: {call_timeout: none}}
  - {name: allow, wasm: ref.wasm, failure_policy: allow, limits: {call_timeout: none}}
  - {name: monitor, wasm: ref.wasm, failure_policy: monitor, limits: {call_timeout: none}}
`, true)
	for _, c := range []struct {
		name   string
		status int
	}{{"deny", 504}, {"allow", 200}, {"monitor", 200}} {
		a := ts.do(t, "POST", "/v1/plugins/"+c.name+"/call/loop", "", "", nil)
		if a.status != c.status || len(a.body) == 0 || !json.Valid(a.body) {
			t.Fatalf("%s: %d %q, want %d and a JSON body", c.name, a.status, a.body, c.status)
		}
		if c.name == "deny" {
			if code := a.code(t); code != "request_timeout" {
				t.Fatalf("deny: code %q", code)
			}
		} else if a.header.Get(HeaderFailurePolicy) != c.name || !bytes.Contains(a.body, []byte(`"allow":true`)) {
			t.Fatalf("%s: %v %s", c.name, a.header, a.body)
		}
	}
	// With a body too.
	if a := ts.do(t, "POST", "/v1/plugins/deny/call/loop", "", "", []byte("x")); a.status != 504 || a.code(t) != "request_timeout" {
		t.Fatalf("with a body: %d %s", a.status, a.body)
	}
	if n := counterValue(t, ts.m.interrupted.WithLabelValues("deny", "request_timeout")); n != 2 {
		t.Fatalf("request_timeout counted %v times, want 2", n)
	}
	if n := counterValue(t, ts.m.interrupted.WithLabelValues("deny", "client_gone")); n != 0 {
		t.Fatalf("the server's timeout was taken for a client that went away (%v)", n)
	}
}

// A client that goes away mid-call is not a plugin failure: no policy, no failure counted; it
// is counted as client_gone and recorded as 499. The call itself is not canceled (that would
// end the instance): it runs to its deadline, and the instance survives unless that deadline
// ends it.
func TestClientGoneIsNotAFailure(t *testing.T) {
	ts := openServer(t, `
http: {request_timeout: 500ms}
plugins:
  - {name: ref, wasm: ref.wasm, limits: {call_timeout: none}}
`, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel once the server's handler has the request: it is reading the body or calling the
	// plugin. (Canceling at httptrace's WroteRequest lost the request about once in forty
	// runs under -race on a loaded machine: the transport calls it once the request is in its
	// buffer, before the flush, and the cancellation closed the connection first.)
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.base+"/v1/plugins/ref/call/loop", strings.NewReader("x"))
	answered := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			err = fmt.Errorf("the call answered %d", res.StatusCode)
		} else {
			err = nil
		}
		answered <- err
	}()
	select {
	case <-ts.started:
	case <-time.After(15 * time.Second):
		t.Fatal("the request did not reach the handler")
	}
	cancel()
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	select {
	case <-ts.ended:
	case <-time.After(15 * time.Second):
		t.Fatal("the call did not end when its client went away")
	}
	if n := counterValue(t, ts.m.interrupted.WithLabelValues("ref", "client_gone")); n != 1 {
		t.Fatalf("client_gone %v, want 1", n)
	}
	if n := seriesCount(ts.m.failures); n != 0 {
		t.Fatalf("%d failure series: a client that left was counted as the plugin's failure", n)
	}
	if n := counterValue(t, ts.m.requests.WithLabelValues("POST /v1/plugins/{name}/call/{handler}", "499")); n != 1 {
		t.Fatalf("499 recorded %v times", n)
	}
	if n := counterValue(t, ts.m.interrupted.WithLabelValues("ref", "request_timeout")); n != 0 {
		t.Fatalf("request_timeout %v: nobody waited for the answer", n)
	}
}

// A client that goes away does not end the instance serving its call: the call finishes, and
// the same incarnation serves the next one.
func TestClientGoneKeepsTheInstance(t *testing.T) {
	ts := openServer(t, `
http: {request_timeout: 20s}
plugins:
  - {name: authz, wasm: "builtin:authz", limits: {call_timeout: none}}
`, true)
	inc := func() uint64 {
		pi, err := ts.h.Plugin("authz")
		if err != nil {
			t.Fatal(err)
		}
		return pi.Instances[0].Incarnation
	}
	// A request that takes the policy a while (tens of milliseconds: decoding 20,000 roles it
	// does not define), so that the client is gone while it runs.
	var b strings.Builder
	b.WriteString(`{"subject":{"id":"m","roles":["r0"`)
	for i := 1; i < 20_000; i++ {
		fmt.Fprintf(&b, `,"r%d"`, i)
	}
	b.WriteString(`]},"action":"read","resource":{"type":"document","id":"1"}}`)
	before := inc()
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { cancel() }})
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.base+"/v1/plugins/authz/call/evaluate", strings.NewReader(b.String()))
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
		cancel()
	}
	// One instance: this call is served after the others; a killed instance would have been
	// replaced before it.
	if a := ts.do(t, "POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(`{"subject":{"id":"a","roles":["admin"]},"action":"read","resource":{"type":"document"}}`)); a.status != 200 {
		t.Fatalf("evaluate: %d %s", a.status, a.body)
	}
	if after := inc(); after != before {
		t.Fatalf("incarnation %d -> %d: a client going away ended the instance", before, after)
	}
	// The server counts a call whose client left when the call ends, which may be after the
	// call above was answered: wait for the count (a ticker, not a sleep; the bound only
	// catches a count that never comes).
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	hang := time.After(30 * time.Second)
	for counterValue(t, ts.m.interrupted.WithLabelValues("authz", "client_gone")) == 0 {
		select {
		case <-tick.C:
		case <-hang:
			t.Fatal("no call saw its client go")
		}
	}
	if after := inc(); after != before {
		t.Fatalf("incarnation %d -> %d: a client going away ended the instance", before, after)
	}
}

// The API answers while the plugins load: /healthz 200, /readyz 503 naming what is loading,
// calls to those plugins 503 plugin_loading with Retry-After, admin requests 503 loading.
func TestListenFirst(t *testing.T) {
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm}\n  - {name: opt, wasm: ref.wasm, required: false}\n", false)
	if a := ts.do(t, "GET", "/healthz", "", "", nil); a.status != 200 {
		t.Fatalf("healthz %d", a.status)
	}
	a := ts.do(t, "GET", "/readyz", "", "", nil)
	var rd readiness
	if err := json.Unmarshal(a.body, &rd); err != nil || a.status != 503 || rd.Status != "loading" ||
		rd.Plugins["ref"] != stateLoading || len(rd.NotReady) != 1 || rd.NotReady[0] != "ref" || a.header.Get("Retry-After") == "" {
		t.Fatalf("readyz while loading: %d %s", a.status, a.body)
	}
	a = ts.do(t, "POST", "/v1/plugins/ref/call/echo", "", "", []byte("x"))
	if a.status != 503 || a.code(t) != "plugin_loading" || a.header.Get("Retry-After") != "1" {
		t.Fatalf("call while loading: %d %v %s", a.status, a.header, a.body)
	}
	if a := ts.do(t, "POST", "/v1/plugins/nope/call/echo", "", "", nil); a.status != 404 {
		t.Fatalf("unknown plugin while loading: %d", a.status)
	}
	if a := ts.do(t, "DELETE", "/v1/plugins/ref", testToken, "", nil); a.status != 503 || a.code(t) != "loading" {
		t.Fatalf("admin while loading: %d %s", a.status, a.body)
	}
	if err := ts.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := ts.do(t, "GET", "/readyz", "", "", nil); a.status != 200 {
		t.Fatalf("readyz after the load: %d %s", a.status, a.body)
	}
	if a := ts.do(t, "POST", "/v1/plugins/ref/call/echo", "", "", []byte("x")); a.status != 200 || string(a.body) != "x" {
		t.Fatalf("call after the load: %d %s", a.status, a.body)
	}
}

// /readyz follows the state of the required plugins: one that is down names itself in a 503;
// a plugin that is not required does not count.
func TestReadyzFollowsRequiredPlugins(t *testing.T) {
	ts := openServer(t, `
plugins:
  - {name: req, wasm: ref.wasm, restart: temporary}
  - {name: opt, wasm: ref.wasm, restart: temporary, required: false}
`, true)
	readyz := func() (int, readiness) {
		a := ts.do(t, "GET", "/readyz", "", "", nil)
		var rd readiness
		if err := json.Unmarshal(a.body, &rd); err != nil {
			t.Fatalf("readyz: %q", a.body)
		}
		return a.status, rd
	}
	if st, rd := readyz(); st != 200 || rd.Plugins["req"] != stateUp {
		t.Fatalf("at start: %d %+v", st, rd)
	}
	// A temporary plugin's crashed instance is not replaced: the plugin is down.
	ts.do(t, "POST", "/v1/plugins/opt/call/trap", "", "", nil)
	if st, rd := readyz(); st != 200 || rd.Plugins["opt"] != stateDown {
		t.Fatalf("an optional plugin down: %d %+v", st, rd)
	}
	ts.do(t, "POST", "/v1/plugins/req/call/trap", "", "", nil)
	st, rd := readyz()
	if st != 503 || rd.Plugins["req"] != stateDown || len(rd.NotReady) != 1 || rd.NotReady[0] != "req" ||
		rd.Error == nil || rd.Error.Code != "plugins_not_ready" || !strings.Contains(rd.Error.Message, "req") {
		t.Fatalf("a required plugin down: %d %+v", st, rd)
	}
	if a := ts.do(t, "GET", "/v1/plugins/req", "", "", nil); !bytes.Contains(a.body, []byte(`"state": "down"`)) {
		t.Fatalf("plugin view: %s", a.body)
	}
}

// Event streams are capped: one beyond events.max_streams is refused with 503
// too_many_streams and counted; a closed stream frees its place.
func TestEventStreamsCapped(t *testing.T) {
	ts := openServer(t, "events: {max_streams: 2}\nplugins: []\n", true)
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.base+"/v1/events?topic=t", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		return res, cancel
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for range 2 {
		res, cancel := open()
		cancels = append(cancels, cancel)
		defer res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("stream: %d", res.StatusCode)
		}
		// The first line is written once the stream counts.
		if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	a := ts.do(t, "GET", "/v1/events?topic=t", "", "", nil)
	if a.status != 503 || a.code(t) != "too_many_streams" || a.header.Get("Retry-After") == "" {
		t.Fatalf("third stream: %d %s", a.status, a.body)
	}
	<-ts.ended // the refused request
	if n := counterValue(t, ts.m.refused.WithLabelValues("too_many_streams")); n != 1 {
		t.Fatalf("refused %v", n)
	}
	cancels[0]()
	for p := range ts.ended {
		if p == "/v1/events" {
			break
		}
	}
	res, cancel := open()
	cancels = append(cancels, cancel)
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("a stream after one closed: %d", res.StatusCode)
	}
}

// Plugin config values are shown to the admin only; others see the keys.
func TestConfigRedacted(t *testing.T) {
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm, config: {api_key: s3cret}}\n", true)
	for _, path := range []string{"/v1/plugins/ref", "/v1/plugins"} {
		if a := ts.do(t, "GET", path, "", "", nil); bytes.Contains(a.body, []byte("s3cret")) ||
			!bytes.Contains(a.body, []byte(`"api_key": "(redacted)"`)) {
			t.Fatalf("%s without the token: %s", path, a.body)
		}
		if a := ts.do(t, "GET", path, "wrong-token-wrong-token", "", nil); bytes.Contains(a.body, []byte("s3cret")) {
			t.Fatalf("%s with a wrong token: %s", path, a.body)
		}
		if a := ts.do(t, "GET", path, testToken, "", nil); !bytes.Contains(a.body, []byte(`"api_key": "s3cret"`)) {
			t.Fatalf("%s as the admin: %s", path, a.body)
		}
	}
}

// Out-of-range admin input is a 4xx with a clear code, and the plugin keeps serving as it was.
func TestAdminInputRefused(t *testing.T) {
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	ref, _ := os.ReadFile(filepath.Join(ts.dir, "ref.wasm"))
	const js = "application/json"
	for _, c := range []struct {
		what, path, ctype string
		body              []byte
		status            int
		code              string
	}{
		{"negative instances", "/v1/plugins/ref", js, []byte(`{"builtin":"x","instances":-1}`), 400, "invalid_parameter"},
		{"zero instances", "/v1/plugins/ref", js, []byte(`{"instances":0,"wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"absurd instances", "/v1/plugins/ref", js, []byte(`{"instances":1000000000000,"wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"fractional instances", "/v1/plugins/ref", js, []byte(`{"instances":1.5,"wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"huge instances", "/v1/plugins/ref", js, []byte(`{"instances":1e400,"wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"pages above 65536", "/v1/plugins/ref", js, []byte(`{"memory_pages":65537,"wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"negative pages", "/v1/plugins/ref", js, []byte(`{"memory_pages":-1,"wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"negative timeout", "/v1/plugins/ref", js, []byte(`{"call_timeout":"-1s","wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"bad timeout", "/v1/plugins/ref", js, []byte(`{"call_timeout":"soon"}`), 400, "invalid_parameter"},
		{"bad policy", "/v1/plugins/ref", js, []byte(`{"failure_policy":"open"}`), 400, "invalid_parameter"},
		{"unknown field", "/v1/plugins/ref", js, []byte(`{"instance":2}`), 400, "unknown_field"},
		{"wrong type", "/v1/plugins/ref", js, []byte(`{"config":{"k":1}}`), 400, "invalid_parameter"},
		{"both modules", "/v1/plugins/ref", js, []byte(`{"builtin":"x","wasm_base64":"AA=="}`), 400, "invalid_parameter"},
		{"unknown builtin", "/v1/plugins/ref", js, []byte(`{"builtin":"nope"}`), 400, "invalid_parameter"},
		{"trailing data", "/v1/plugins/ref", js, []byte(`{} {}`), 400, "malformed_json"},
		{"not JSON", "/v1/plugins/ref", js, []byte(`{"config":`), 400, "malformed_json"},
		{"instances without module", "/v1/plugins/ref", js, []byte(`{"instances":2}`), 400, "module_required"},
		{"bad name", "/v1/plugins/-x", js, []byte(`{}`), 400, "invalid_parameter"},
		{"query: negative instances", "/v1/plugins/ref?instances=-2", "application/wasm", ref, 400, "invalid_parameter"},
		{"query: pages", "/v1/plugins/ref?memory_pages=70000", "application/wasm", ref, 400, "invalid_parameter"},
		{"query: required", "/v1/plugins/ref?required=maybe", "application/wasm", ref, 400, "invalid_parameter"},
		{"query: unknown", "/v1/plugins/ref?instancs=2", "application/wasm", ref, 400, "unknown_field"},
		{"query: empty config key", "/v1/plugins/ref?config.=v", "application/wasm", ref, 400, "invalid_parameter"},
	} {
		a := ts.do(t, "PUT", c.path, testToken, c.ctype, c.body)
		if a.status != c.status || a.code(t) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.what, a.status, a.body, c.status, c.code)
		}
	}
	if a := ts.do(t, "POST", "/v1/plugins/ref/call/echo", "", "", []byte("still")); a.status != 200 || string(a.body) != "still" {
		t.Fatalf("after the refusals: %d %s", a.status, a.body)
	}
	// A bad config file on reload: 422 naming the file, the key and the problem; never a 500.
	if err := os.WriteFile(filepath.Join(ts.dir, "wasmvisor.yaml"), []byte("plugins:\n  - {name: ref, wasm: ref.wasm, instances: -4}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := ts.do(t, "POST", "/v1/reload", testToken, "", nil)
	var body struct {
		Error    apiError        `json:"error"`
		Problems []configProblem `json:"problems"`
	}
	if err := json.Unmarshal(a.body, &body); err != nil || a.status != 422 || body.Error.Code != "invalid_config" ||
		len(body.Problems) != 1 || !strings.HasSuffix(body.Problems[0].File, "wasmvisor.yaml") ||
		body.Problems[0].Key != "plugins[0](ref).instances" {
		t.Fatalf("bad config on reload: %d %s", a.status, a.body)
	}
	if err := os.WriteFile(filepath.Join(ts.dir, "wasmvisor.yaml"), []byte("plugins: {"), 0o644); err != nil {
		t.Fatal(err)
	}
	if a := ts.do(t, "POST", "/v1/reload", testToken, "", nil); a.status != 422 || a.code(t) != "invalid_config" {
		t.Fatalf("not YAML on reload: %d %s", a.status, a.body)
	}
	if err := os.Remove(filepath.Join(ts.dir, "wasmvisor.yaml")); err != nil {
		t.Fatal(err)
	}
	if a := ts.do(t, "POST", "/v1/reload", testToken, "", nil); a.status != 422 || a.code(t) != "invalid_config" {
		t.Fatalf("missing file on reload: %d %s", a.status, a.body)
	}
}

// Shutdown is bounded by http.shutdown_timeout even when the host does not close (a guest that
// does not stop): it gives up with ErrShutdownTimeout.
func TestShutdownBounded(t *testing.T) {
	ts := openServer(t, "http: {shutdown_timeout: 300ms}\nplugins: []\n", true)
	release := make(chan struct{})
	realClose := ts.closeHost
	ts.closeHost = func(context.Context) error { <-release; return realClose(context.Background()) }
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrShutdownTimeout) {
			t.Fatalf("Shutdown: %v, want ErrShutdownTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown is not bounded")
	}
	close(release) // the host closes now; the cleanup's Shutdown reports its result
	<-ts.hostClosed
}

// The host's refusals map to stable answers: a quarantined plugin is 503 plugin_quarantined
// with the quarantine's Retry-After under deny, and the policy's synthetic allow otherwise; a
// poison input is 422 poison_input under deny.
func TestHostRefusalsMapped(t *testing.T) {
	ts := openServer(t, "plugins: []\n", true)
	quarantined := fmt.Errorf(`plugin "p": call "h": %w`, &host.FailedError{Plugin: "p", State: host.PluginFailed, RetryAfter: 2500 * time.Millisecond})
	poison := fmt.Errorf(`plugin "p": call "h": %w`, &host.PoisonInputError{Plugin: "p", Handler: "h", Ends: 3})
	for _, c := range []struct {
		err    error
		policy string
		status int
		code   string
		retry  string
	}{
		{quarantined, config.FailDeny, 503, "plugin_quarantined", "3"},
		{fmt.Errorf("x: %w", host.ErrPluginFailed), config.FailDeny, 503, "plugin_quarantined", "1"},
		{quarantined, config.FailAllow, 200, "", "3"},
		{poison, config.FailDeny, 422, "poison_input", ""},
		{poison, config.FailMonitor, 200, "", ""},
	} {
		rec := httptest.NewRecorder()
		kind := host.Kind(c.err)
		_, status, _ := ts.failed(rec, &entry{}, "p", "h", c.policy, kind, false, c.err)
		a := answer{rec.Code, rec.Header(), rec.Body.Bytes()}
		if status != rec.Code {
			t.Errorf("%v under %s: failed returned %d, wrote %d", c.err, c.policy, status, rec.Code)
		}
		if a.status != c.status || a.header.Get("Retry-After") != c.retry || a.header.Get(HeaderPluginError) != kind {
			t.Errorf("%v under %s: %d %v %s", c.err, c.policy, a.status, a.header, a.body)
			continue
		}
		if c.code != "" && a.code(t) != c.code {
			t.Errorf("%v under %s: code %q", c.err, c.policy, a.code(t))
		}
	}
}

// A body that never completes is answered 408 body_timeout at the request timeout, and the
// connection closes: a slow client holds nothing longer.
func TestSlowBodyAnswered(t *testing.T) {
	ts := openServer(t, "http: {request_timeout: 300ms}\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // a bug fails the test, not hangs it
	if _, err := fmt.Fprintf(conn, "POST /v1/plugins/ref/call/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 408 || !bytes.Contains(b, []byte(`"body_timeout"`)) {
		t.Fatalf("%d %s", res.StatusCode, b)
	}
}

// on_failure reaches the host: escalate is host.Escalate, quarantine is host.Quarantine.
func TestOnFailureMapped(t *testing.T) {
	if hp := hostPlugin(config.Plugin{Name: "a", OnFailure: config.OnFailureEscalate}); hp.OnFailure != host.Escalate {
		t.Fatalf("escalate: %v", hp.OnFailure)
	}
	if hp := hostPlugin(config.Plugin{Name: "a", OnFailure: config.OnFailureQuarantine}); hp.OnFailure != host.Quarantine {
		t.Fatalf("quarantine: %v", hp.OnFailure)
	}
}

// A PUT of a plugin whose directory grant can no longer be opened (removed since the file was
// read) is refused as a configuration the sandbox cannot honour, 422 invalid_config, never a
// 500; the running version keeps serving.
func TestPutWithAGrantGoneIsInvalidConfig(t *testing.T) {
	grant := filepath.Join(t.TempDir(), "grant")
	if err := os.Mkdir(grant, 0o755); err != nil {
		t.Fatal(err)
	}
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm, capabilities: {dirs: [{host: "+grant+", guest: /data}]}}\n", true)
	if err := os.Remove(grant); err != nil {
		t.Fatal(err)
	}
	ref, _ := os.ReadFile(filepath.Join(ts.dir, "ref.wasm"))
	a := ts.do(t, "PUT", "/v1/plugins/ref?memory_pages=300", testToken, "application/wasm", ref)
	if a.status != 422 || a.code(t) != "invalid_config" {
		t.Fatalf("PUT with a grant gone: %d %s, want 422 invalid_config", a.status, a.body)
	}
	if a := ts.do(t, "POST", "/v1/plugins/ref/call/echo", "", "", []byte("still")); a.status != 200 || string(a.body) != "still" {
		t.Fatalf("after the refusal: %d %s", a.status, a.body)
	}
}

// isolation reaches the host, and a change of it reloads the plugin: after the reload a
// marker set by one call is gone for the next.
func TestIsolationMappedAndReloaded(t *testing.T) {
	if hp := hostPlugin(config.Plugin{Name: "a", Isolation: config.IsolationPerCall}); hp.Isolation != host.InstancePerCall {
		t.Fatalf("per_call: %v", hp.Isolation)
	}
	if hp := hostPlugin(config.Plugin{Name: "a", Isolation: config.IsolationShared}); hp.Isolation != host.SharedInstance {
		t.Fatalf("shared: %v", hp.Isolation)
	}
	if hp := hostPlugin(config.Plugin{Name: "a", NoSnapshot: true}); !hp.NoSnapshot {
		t.Fatal("snapshot: false did not reach the host")
	}
	if hp := hostPlugin(config.Plugin{Name: "a"}); hp.NoSnapshot {
		t.Fatal("a plugin's snapshots are off by default")
	}
	ts := openServer(t, "admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm}\n", true)
	marker := func() string {
		t.Helper()
		if a := ts.do(t, "POST", "/v1/plugins/ref/call/set", "", "", []byte("m")); a.status != 200 {
			t.Fatalf("set: %d %s", a.status, a.body)
		}
		a := ts.do(t, "POST", "/v1/plugins/ref/call/get", "", "", nil)
		if a.status != 200 {
			t.Fatalf("get: %d %s", a.status, a.body)
		}
		return string(a.body)
	}
	if got := marker(); got != "m" {
		t.Fatalf("shared: get = %q", got)
	}
	if err := os.WriteFile(filepath.Join(ts.dir, "wasmvisor.yaml"),
		[]byte("admin_token: "+testToken+"\nplugins:\n  - {name: ref, wasm: ref.wasm, isolation: per_call}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if a := ts.do(t, "POST", "/v1/reload", testToken, "", nil); a.status != 200 {
		t.Fatalf("reload: %d %s", a.status, a.body)
	}
	if got := marker(); got != "" {
		t.Fatalf("per_call: get = %q", got)
	}
	var v struct {
		Isolation string `json:"isolation"`
		Resets    uint64 `json:"resets"`
	}
	if a := ts.do(t, "GET", "/v1/plugins/ref", "", "", nil); a.status != 200 || json.Unmarshal(a.body, &v) != nil ||
		v.Isolation != "per_call" || v.Resets < 1 {
		t.Fatalf("view: %d %s", a.status, a.body)
	}
}

// GET /v1/plugins/{name}, and the list, show what a call can reach: a plugin the host holds but the server
// does not serve (here loaded into the host behind the server's back; in a load, the moment
// between the host's Load and the server's entry) answers 404, as a call to it does, and both
// answer for it once the server serves it.
func TestGetPluginAgreesWithCall(t *testing.T) {
	ts := openServer(t, "plugins: []\n", true)
	ref, err := os.ReadFile(filepath.Join(ts.dir, "ref.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.h.Load(context.Background(), host.Plugin{Name: "hidden", Wasm: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.h.Plugin("hidden"); err != nil {
		t.Fatal(err)
	}
	get := ts.do(t, "GET", "/v1/plugins/hidden", "", "", nil)
	call := ts.do(t, "POST", "/v1/plugins/hidden/call/echo", "", "", []byte("x"))
	if get.status != http.StatusNotFound || call.status != http.StatusNotFound || get.code(t) != "plugin_not_found" {
		t.Fatalf("GET %d %s, call %d %s: want both 404", get.status, get.body, call.status, call.body)
	}
	if a := ts.do(t, "GET", "/v1/plugins/nothing", "", "", nil); a.status != http.StatusNotFound {
		t.Fatalf("GET of a plugin nobody has: %d", a.status)
	}
	if a := ts.do(t, "GET", "/v1/plugins", "", "", nil); a.status != http.StatusOK || bytes.Contains(a.body, []byte(`"hidden"`)) {
		t.Fatalf("the list: %d %s, want it without hidden", a.status, a.body)
	}
}

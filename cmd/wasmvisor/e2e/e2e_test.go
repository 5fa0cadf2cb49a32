package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/internal/testcache"
)

const e2eToken = "e2e-admin-token-0123456789"

// buildBinary returns the real binary, built once per test binary into TestMain's directory,
// with -race when this test binary has it: the packages are then already built (a link, a
// few seconds), where a binary without it compiled every dependency again (67 s from an
// empty build cache on 2 cores, which put this package over 3 minutes cold), and the server
// runs under the race detector while the tests drive it.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := built()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var built = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(testDir, "wasmvisor-e2e") // not "wasmvisor": that is the cache
	// TestMain points XDG_CACHE_HOME at its own directory (for the plugins' compiled code);
	// the go command must use the user's build cache, not an empty one.
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...) // cmd/wasmvisor
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_CACHE_HOME=") {
			build.Env = append(build.Env, kv)
		}
	}
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// compileCache is the cache_dir for a served config: the shared test cache, or dir/cache.
func compileCache(dir string) string {
	if d := testcache.Dir(); d != "" {
		return d
	}
	return filepath.Join(dir, "cache")
}

// proc is a running `wasmvisor serve`.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string
	done chan error

	mu  sync.Mutex
	log bytes.Buffer
}

func startServe(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	bin := buildBinary(t)
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--addr-file", addrFile}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			// The server listens first and answers 503 while it loads: wait for the load.
			if strings.Contains(line, `"msg":"ready"`) {
				once.Do(func() { close(listening) })
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			t.Logf("server log:\n%s", p.logs())
		}
	})
	select {
	case <-listening:
	case err := <-p.done:
		t.Fatalf("serve exited before it was ready: %v\n%s", err, p.logs())
	case <-time.After(readyBound(t)):
		t.Fatalf("serve was not ready within %v\n%s", readyBound(t), p.logs())
	}
	addr, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	p.base = "http://" + string(addr)
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (%d): %q", r.status, r.body)
	}
	return m
}

// errCode is the stable code of a JSON error body.
func (r resp) errCode(t *testing.T) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

var client = &http.Client{Timeout: 20 * time.Second}

func (p *proc) do(method, path, token, ctype string, body []byte) (resp, error) {
	req, err := http.NewRequest(method, p.base+path, bytes.NewReader(body))
	if err != nil {
		return resp{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := client.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}, err
}

func (p *proc) must(method, path, token, ctype string, body []byte, want int) resp {
	p.t.Helper()
	r, err := p.do(method, path, token, ctype, body)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.status != want {
		p.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	if r.status >= 400 && !json.Valid(r.body) {
		p.t.Fatalf("%s %s: error body is not JSON: %q", method, path, r.body)
	}
	return r
}

// eventually polls cond until it holds or the bounded wait ends.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		<-tick.C
	}
}

const (
	adminDelete  = `{"subject":{"id":"root","roles":["admin"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`
	viewerDelete = `{"subject":{"id":"alice","roles":["viewer"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`
	viewerWrite  = `{"subject":{"id":"alice","roles":["viewer"]},"action":"write","resource":{"type":"document","id":"42","owner":"bob"}}`
)

func allowOf(t *testing.T, r resp) bool {
	t.Helper()
	a, ok := r.json(t)["allow"].(bool)
	if !ok {
		t.Fatalf("no allow in %s", r.body)
	}
	return a
}

// TestE2EDefaultConfig runs `wasmvisor serve` with the embedded default configuration.
func TestE2EDefaultConfig(t *testing.T) {
	t.Parallel()
	p := startServe(t, nil)
	p.must("GET", "/readyz", "", "", nil, 200)
	for _, name := range []string{"authz", "validate", "ratelimit"} {
		p.must("GET", "/v1/plugins/"+name, "", "", nil, 200)
	}
	if r := p.must("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(adminDelete), 200); !allowOf(t, r) {
		t.Fatalf("admin may not delete: %s", r.body)
	}
	if r := p.must("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(viewerDelete), 200); allowOf(t, r) {
		t.Fatalf("a viewer who is not the owner may delete: %s", r.body)
	}
	// No admin token in the default configuration: the admin routes are off.
	if r := p.must("DELETE", "/v1/plugins/authz", "", "", nil, 403); r.errCode(t) != "admin_disabled" {
		t.Fatalf("code %q", r.errCode(t))
	}
	if !strings.Contains(p.logs(), `"msg":"decision"`) {
		t.Fatal("no decision log line")
	}
	p.stop()
}

func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("serve exited with %v after SIGTERM", err)
		}
		p.done <- nil
	case <-time.After(20 * time.Second):
		p.t.Fatal("serve did not stop within 20s of SIGTERM")
	}
}

// withSection appends a custom section to a module: the same code, another digest.
func withSection(wasm []byte, tag string) []byte {
	name := "wasmvisor-e2e"
	payload := append([]byte{byte(len(name))}, name...)
	payload = append(payload, tag...)
	out := append(append([]byte(nil), wasm...), 0, byte(len(payload)))
	return append(out, payload...)
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const e2eConfig = `
listen: 127.0.0.1:8080   # the test overrides it with --listen
cache_dir: %s
log: {level: info, format: json}
http: {max_body_bytes: 4096, request_timeout: 5s, shutdown_timeout: 10s}
reload: {watch: true, interval: 50ms}
plugins:
  - name: authz
    wasm: builtin:authz
    config: {default: deny%s}
    instances: 2
  - name: ref
    wasm: ref.wasm
    instances: 1
  - name: refallow
    wasm: ref.wasm
    failure_policy: allow
    config: {limits: {tags: [a, "<b>"], rps: 5}, n: 5}
`

// TestE2EServe exercises every endpoint, hot reload under load, a broken module and a crash.
func TestE2EServe(t *testing.T) {
	t.Parallel()
	refWasm, err := os.ReadFile("../../../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "wasmvisor.yaml")
	refPath := filepath.Join(dir, "ref.wasm")
	writeAtomic(t, refPath, refWasm)
	cache := compileCache(dir)
	writeAtomic(t, cfgPath, fmt.Appendf(nil, e2eConfig, cache, ""))
	p := startServe(t, []string{"WASMVISOR_ADMIN_TOKEN=" + e2eToken}, "--config", cfgPath)

	// Health, readiness, listing.
	p.must("GET", "/healthz", "", "", nil, 200)
	p.must("GET", "/readyz", "", "", nil, 200)
	list := p.must("GET", "/v1/plugins", "", "", nil, 200).json(t)
	if n := len(list["plugins"].([]any)); n != 3 {
		t.Fatalf("%d plugins, want 3", n)
	}
	ref := p.must("GET", "/v1/plugins/ref", "", "", nil, 200).json(t)
	digest0 := ref["digest"].(string)

	// Decisions.
	if r := p.must("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(adminDelete), 200); !allowOf(t, r) {
		t.Fatalf("admin: %s", r.body)
	}
	if r := p.must("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(viewerDelete), 200); allowOf(t, r) {
		t.Fatalf("viewer: %s", r.body)
	}

	// Bad requests: each gets its status and a JSON error with a stable code.
	for _, c := range []struct {
		method, path, token, ctype string
		body                       []byte
		status                     int
		code                       string
	}{
		{"GET", "/v1/plugins/nope", "", "", nil, 404, "plugin_not_found"},
		{"POST", "/v1/plugins/nope/call/evaluate", "", "", []byte("{}"), 404, "plugin_not_found"},
		{"POST", "/v1/plugins/ref/call/nope", "", "", nil, 404, "unknown_handler"},
		{"POST", "/v1/plugins/authz/call/evaluate", "", "", []byte("not json"), 422, "guest_error"},
		{"POST", "/v1/plugins/ref/call/echo", "", "", bytes.Repeat([]byte("x"), 5000), 413, "body_too_large"},
		{"DELETE", "/v1/plugins/ref", "", "", nil, 401, "unauthorized"},
		{"PUT", "/v1/plugins/ref", "wrong-token-wrong-token", "application/wasm", refWasm, 401, "unauthorized"},
		{"POST", "/v1/plugins/ref/restart", "", "", nil, 401, "unauthorized"},
		{"PUT", "/v1/plugins/authz", e2eToken, "application/json", []byte(`{"config": {"default": `), 400, "malformed_json"},
		{"PUT", "/v1/plugins/authz", e2eToken, "application/json", []byte(`{"config": {"default": "x"}}`), 422, "config_rejected"},
		{"PUT", "/v1/plugins/authz", e2eToken, "application/json", []byte(`{"confi": {}}`), 400, "unknown_field"},
		{"GET", "/v1/events", "", "", nil, 400, "missing_topic"},
		{"GET", "/v2/nothing", "", "", nil, 404, "not_found"},
	} {
		r := p.must(c.method, c.path, c.token, c.ctype, c.body, c.status)
		if got := r.errCode(t); got != c.code {
			t.Errorf("%s %s: code %q, want %q (%s)", c.method, c.path, got, c.code, r.body)
		}
	}

	// A config update through the API, then reset back to the declared config.
	p.must("PUT", "/v1/plugins/authz", e2eToken, "application/json", []byte(`{"config":{"default":"allow"}}`), 200)
	if r := p.must("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(viewerDelete), 200); !allowOf(t, r) {
		t.Fatalf("after the override: %s", r.body)
	}
	p.must("POST", "/v1/plugins/authz/reset", e2eToken, "", nil, 200)
	if r := p.must("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(viewerDelete), 200); allowOf(t, r) {
		t.Fatalf("after reset: %s", r.body)
	}
	p.must("POST", "/v1/plugins/authz/restart", e2eToken, "", nil, 200)

	// Events: a plugin publishes on the bus, a client streams it.
	events := p.stream(t, "/v1/events?topic=e2e")
	p.must("POST", "/v1/plugins/ref/call/publish", "", "", []byte("e2e\n{\"n\":1}"), 200)
	select {
	case ev := <-events:
		if !strings.Contains(ev, `"topic":"e2e"`) || !strings.Contains(ev, `"n":1`) || !strings.Contains(ev, `"from":"ref"`) {
			t.Fatalf("event %q", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}

	// A crash: the instance traps, the call fails closed (deny), the instance is replaced.
	inc0 := incarnation(t, p, "ref")
	if r := p.must("POST", "/v1/plugins/ref/call/trap", "", "", nil, 502); r.errCode(t) != "plugin_failed" ||
		r.header.Get("Wasmvisor-Plugin-Error") != "trap" {
		t.Fatalf("trap: %s %v", r.body, r.header)
	}
	if r := p.must("POST", "/v1/plugins/ref/call/echo", "", "", []byte("after"), 200); string(r.body) != "after" {
		t.Fatalf("echo after the crash: %q", r.body)
	}
	if inc := incarnation(t, p, "ref"); inc == inc0 {
		t.Fatalf("incarnation %v: the crashed instance was not replaced", inc)
	}
	if rs := p.must("GET", "/v1/plugins/ref", "", "", nil, 200).json(t)["restarts"].(float64); rs < 1 {
		t.Fatalf("restarts %v", rs)
	}
	// Structured config values arrive as JSON text (CONFIG.md, "Structured config values").
	for k, want := range map[string]string{"limits": `{"rps":5,"tags":["a","\u003cb\u003e"]}`, "n": "5"} {
		if r := p.must("POST", "/v1/plugins/refallow/call/config_get", "", "", []byte(k), 200); string(r.body) != want {
			t.Fatalf("config_get %s: %q, want %q", k, r.body, want)
		}
	}
	// failure_policy allow: a synthetic allow, marked.
	if r := p.must("POST", "/v1/plugins/refallow/call/trap", "", "", nil, 200); r.header.Get("Wasmvisor-Failure-Policy") != "allow" ||
		!allowOf(t, r) {
		t.Fatalf("failure_policy allow: %s %v", r.body, r.header)
	}

	// PUT a new plugin, a broken replacement (the old one keeps serving), DELETE.
	p.must("PUT", "/v1/plugins/ref2?config.k=v", e2eToken, "application/wasm", refWasm, 201)
	if r := p.must("POST", "/v1/plugins/ref2/call/config_get", "", "", []byte("k"), 200); string(r.body) != "v" {
		t.Fatalf("config_get: %q", r.body)
	}
	r := p.must("PUT", "/v1/plugins/ref2", e2eToken, "application/wasm", []byte("\x00asm\x01\x00\x00\x00garbage"), 422)
	if r.errCode(t) != "invalid_module" {
		t.Fatalf("broken module: %s", r.body)
	}
	p.must("POST", "/v1/plugins/ref2/call/echo", "", "", []byte("still"), 200)
	p.must("PUT", "/v1/plugins/ref2", e2eToken, "application/wasm", withSection(refWasm, "v2"), 200)
	p.must("DELETE", "/v1/plugins/ref2", e2eToken, "", nil, 204)
	p.must("POST", "/v1/plugins/ref2/call/echo", "", "", nil, 404)

	// Hot reload under load: calls in flight all along, none may fail.
	ctx, cancel := context.WithCancel(context.Background())
	var calls, failed atomic.Int64
	var firstFail atomic.Value
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path, body := "/v1/plugins/authz/call/evaluate", []byte(adminDelete)
			if i%2 == 1 {
				path, body = "/v1/plugins/ref/call/echo", []byte("ping")
			}
			for ctx.Err() == nil {
				r, err := p.do("POST", path, "", "", body)
				calls.Add(1)
				if err != nil || r.status != 200 {
					failed.Add(1)
					firstFail.CompareAndSwap(nil, fmt.Sprintf("%s: %v %d %s", path, err, r.status, r.body))
				}
			}
		}()
	}
	waitCalls := func(n int64) {
		start := calls.Load()
		eventually(t, 10*time.Second, "calls progress", func() bool { return calls.Load() >= start+n })
	}
	waitCalls(50)
	// 1. A config change: authz gets a role, pushed into the running instances.
	writeAtomic(t, cfgPath, fmt.Appendf(nil, e2eConfig, cache, `, "role.viewer": "read,write"`))
	eventually(t, 15*time.Second, "config reload", func() bool {
		r, _ := p.do("POST", "/v1/plugins/authz/call/evaluate", "", "", []byte(viewerWrite))
		return r.status == 200 && bytes.Contains(r.body, []byte(`"allow":true`))
	})
	waitCalls(50)
	// 2. A module change: ref.wasm is replaced make-before-break.
	writeAtomic(t, refPath, withSection(refWasm, "v2"))
	eventually(t, 15*time.Second, "module reload", func() bool {
		return p.must("GET", "/v1/plugins/ref", "", "", nil, 200).json(t)["digest"] != digest0
	})
	digest1 := p.must("GET", "/v1/plugins/ref", "", "", nil, 200).json(t)["digest"]
	waitCalls(50)
	// 3. A broken module: the reload fails, the running version stays and says why.
	writeAtomic(t, refPath, []byte("not wasm at all"))
	eventually(t, 15*time.Second, "failed reload reported", func() bool {
		st := p.must("GET", "/v1/status", "", "", nil, 200).json(t)
		lr, _ := st["last_reload"].(map[string]any)
		return lr != nil && lr["ok"] == false && lr["error"] != ""
	})
	waitCalls(50)
	if d := p.must("GET", "/v1/plugins/ref", "", "", nil, 200).json(t)["digest"]; d != digest1 {
		t.Fatalf("digest %v after a broken module, want %v", d, digest1)
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed during reloads; first: %v", failed.Load(), calls.Load(), firstFail.Load())
	}
	t.Logf("%d calls during three reloads, none failed", calls.Load())
	if !strings.Contains(p.logs(), "reload failed") {
		t.Fatal("no log line for the failed reload")
	}

	// Metrics: the host's and the server's, in one registry.
	m := string(p.must("GET", "/metrics", "", "", nil, 200).body)
	for _, name := range []string{"wasmvisor_http_requests_total", "wasmvisor_decisions_total", "wasmvisor_reloads_total",
		"wasmvisor_failure_policy_total"} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	p.stop()
	if !strings.Contains(p.logs(), `"msg":"stopped"`) {
		t.Fatal("no clean stop")
	}
}

func incarnation(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	inst := p.must("GET", "/v1/plugins/"+name, "", "", nil, 200).json(t)["instances"].([]any)
	return inst[0].(map[string]any)["incarnation"].(float64)
}

// stream opens a server-sent event stream and returns its events' data lines.
func (p *proc) stream(t *testing.T, path string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.base+path, nil)
	res, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed at cleanup, after the stream
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				select {
				case out <- d:
				default:
				}
			}
		}
	}()
	// The server subscribes before it sends the response's headers: from here on, messages
	// published on the topic reach this stream.
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
		<-done
	})
	return out
}

// readyBound is how long a served binary may take to load its plugins: the test binary's own
// deadline (go test -timeout), less a margin to report, not a fixed limit. From an empty
// compilation cache a race-built server compiles each Go plugin for tens of seconds while
// other packages' tests compile the same plugins beside it; a fixed 45 s failed exactly that
// first run.
func readyBound(t *testing.T) time.Duration {
	if d, ok := t.Deadline(); ok {
		return max(time.Until(d)-30*time.Second, time.Minute)
	}
	return 10 * time.Minute
}

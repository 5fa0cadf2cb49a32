package uitest

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "ui-test-admin-token-0123456789"

// Environment variables of the test.
const (
	envArtifacts  = "WASMVISOR_ARTIFACTS"       // the screenshots' directory (default: a temp dir)
	envRequire    = "WASMVISOR_REQUIRE_BROWSER" // 1: no browser is a failure, not a skip (CI)
	envScreenshot = "WASMVISOR_DOCS_SCREENSHOT" // a path: write the README's screenshot there
)

// browser finds Chromium, or skips (fails under WASMVISOR_REQUIRE_BROWSER=1).
func browser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium on PATH (Debian: apt-get install -y chromium): the dashboard's browser test cannot run"
	if os.Getenv(envRequire) == "1" {
		t.Fatal(msg + " and " + envRequire + "=1")
	}
	t.Skip(msg)
	return ""
}

// artifacts is the directory the screenshots go to: $WASMVISOR_ARTIFACTS, or a new temporary
// directory that outlives the test.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envArtifacts)
	if dir == "" { // kept after the test (t.TempDir would remove it): the log names it
		d, err := os.MkdirTemp("", "wasmvisor-ui-")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serve builds cmd/wasmvisor and runs `wasmvisor serve` on cfg, returning its base URL once
// it logged that it is ready. The cleanup stops it with SIGTERM, as an operator would.
func serve(t *testing.T, cfg string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "wasmvisor")
	build := exec.Command("go", "build", "-o", bin, "./cmd/wasmvisor")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfgPath, addrFile := filepath.Join(dir, "wasmvisor.yaml"), filepath.Join(dir, "addr")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--listen", "127.0.0.1:0", "--addr-file", addrFile)
	// The server refuses a WASMVISOR_ variable it does not know: this test's own (artifacts,
	// require browser) are not passed on.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WASMVISOR_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "WASMVISOR_ADMIN_TOKEN="+token, "WASMVISOR_CACHE_DIR="+filepath.Join(dir, "cache"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var once sync.Once
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), `"msg":"ready"`) {
				once.Do(func() { close(ready) })
			}
		}
		done <- cmd.Wait()
	}()
	log := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve exited: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Error("serve did not stop within 30 s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", log())
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve exited before it was ready: %v\n%s", err, log())
	case <-time.After(60 * time.Second):
		t.Fatalf("serve not ready within 60 s\n%s", log())
	}
	addr, err := os.ReadFile(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + string(addr)
}

// post makes an API call and returns its status once the answer has been read.
func post(t *testing.T, method, url, tok, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// waitFor waits, at most within, until the page's expression is true: the browser re-evaluates
// it on each change of the page (a MutationObserver), the test does not poll.
func waitFor(ctx context.Context, within time.Duration, expr string) error {
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(within)))
	return err
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// runs numbers the screenshots of each run (go test -count=N).
var runs atomic.Int32

func screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// The dashboard against a real `wasmvisor serve`: the tree is drawn; a trap shows on screen
// (the slot's restarts and end reason) within a second of the trapping call's answer; a
// plugin in a crash loop shows quarantined; the admin controls are absent without the token,
// and with it a slot's restart button gives the slot a new incarnation.
func TestDashboard(t *testing.T) {
	chrome := browser(t)
	ref, err := filepath.Abs("../plugins/reference/reference.wasm")
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, fmt.Sprintf(`log: {level: info, format: json}
supervisor: {max_restarts: 3, period: 5s, quarantine_base: 1h, poison_limit: -1}
plugins:
  - {name: ref, wasm: %[1]s, instances: 2, failure_policy: deny}
  - {name: crashy, wasm: %[1]s, failure_policy: deny, restart_policy: {max_restarts: 1, period: 1h}}
`, ref))
	out := artifacts(t)
	run := runs.Add(1)
	shot := func(name string) string { return filepath.Join(out, fmt.Sprintf("dashboard-%d-%s.png", run, name)) }

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome),
		chromedp.WindowSize(1280, 1000), chromedp.Flag("disable-gpu", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // root in a container: Chromium's sandbox needs user namespaces
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute) // the whole test's bound
	defer cancel()

	// Read-only: the tree, no admin control.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`.slot[data-plugin="ref"][data-slot="1"]`))); err != nil {
		t.Fatalf("the tree: %v", err)
	}
	if err := waitFor(ctx, 10*time.Second, `document.querySelectorAll('.slot[data-state="running"]').length === 3 && `+
		`document.body.dataset.admin === "no"`); err != nil {
		t.Fatalf("three running slots: %v", err)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('button.admin').length`); n != 0 {
		t.Fatalf("%d admin buttons without the token", n)
	}
	screenshot(t, ctx, shot("readonly"))

	// A trap: on screen within a second of the call's answer.
	restarts := `[...document.querySelectorAll('.slot[data-plugin="ref"]')].reduce((n, s) => n + Number(s.dataset.restarts), 0)`
	if n := eval[int](t, ctx, restarts); n != 0 {
		t.Fatalf("restarts before the trap: %d", n)
	}
	if code := post(t, "POST", base+"/v1/plugins/ref/call/trap", "", ""); code < 500 {
		t.Fatalf("trap answered %d", code)
	}
	returned := time.Now()
	if err := waitFor(ctx, time.Second, restarts+` === 1 && document.querySelector('.slot[data-plugin="ref"] .reason[data-kind="trap"]') !== null`); err != nil {
		t.Fatalf("the trap not on screen within 1 s of the call's answer: %v", err)
	}
	t.Logf("the trap was on screen %v after the call returned", time.Since(returned).Round(time.Millisecond))
	screenshot(t, ctx, shot("trap"))

	// A crash loop past crashy's intensity (1 restart an hour): quarantined.
	for i := range 2 {
		post(t, "POST", base+"/v1/plugins/crashy/call/trap", "", fmt.Sprint(i))
	}
	if err := waitFor(ctx, 5*time.Second, `document.querySelector('.plugin[data-plugin="crashy"][data-state="quarantined"]') !== null && `+
		`document.querySelector('.slot[data-plugin="crashy"][data-slot="0"]').dataset.state === "quarantined"`); err != nil {
		t.Fatalf("crashy not shown quarantined: %v", err)
	}

	// A wrong token: still no admin control.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token-0123456789"),
		chromedp.Click(chromedp.CSS("#token-use"))); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 5*time.Second, `document.getElementById('auth-state').textContent.startsWith('token refused')`); err != nil {
		t.Fatalf("a wrong token not refused: %v", err)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('button.admin').length`); n != 0 {
		t.Fatalf("%d admin buttons with a wrong token", n)
	}

	// The token: admin controls, and a slot's restart gives it a new incarnation.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#token-use"))); err != nil {
		t.Fatal(err)
	}
	slot0 := `.slot[data-plugin="ref"][data-slot="0"]`
	if err := waitFor(ctx, 5*time.Second, `document.querySelector('`+slot0+` button.admin') !== null`); err != nil {
		t.Fatalf("no admin controls with the token: %v", err)
	}
	if eval[string](t, ctx, `sessionStorage.getItem("wasmvisor.admin_token")`) != token ||
		strings.Contains(eval[string](t, ctx, `document.documentElement.outerHTML`), token) {
		t.Fatal("the token is not in sessionStorage only")
	}
	inc := eval[string](t, ctx, `document.querySelector('`+slot0+`').dataset.incarnation`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(slot0+` button.admin[data-action="restart"]`))); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 5*time.Second, `document.querySelector('`+slot0+`').dataset.incarnation !== "`+inc+`" && `+
		`document.querySelector('`+slot0+`').dataset.state === "running"`); err != nil {
		t.Fatalf("the restart click did not change slot 0's incarnation (%s): %v", inc, err)
	}
	screenshot(t, ctx, shot("admin"))

	if path := os.Getenv(envScreenshot); path != "" {
		docsScreenshot(t, ctx, base, path)
	}
}

// docsScreenshot fills the plots with a few seconds of calls, then writes the README's
// screenshot (read-only, as most will see it).
func docsScreenshot(t *testing.T, ctx context.Context, base, path string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#token-forget"))); err != nil {
		t.Fatal(err)
	}
	for i := range 8 { // one batch per stats frame: wait for the next frame, not a clock
		for range 20 + 10*i {
			post(t, "POST", base+"/v1/plugins/ref/call/echo", "", "hello")
		}
		post(t, "POST", base+"/v1/plugins/ref/call/count", "", fmt.Sprint(i+1))
		post(t, "POST", base+"/v1/plugins/ref/call/gauge", "", fmt.Sprint(3*i))
		post(t, "POST", base+"/v1/plugins/ref/call/observe", "", fmt.Sprint(i*i*17))
		post(t, "POST", base+"/v1/plugins/ref/call/emit", "", fmt.Sprintf("orders\n{\"n\":%d}", i))
		before := eval[string](t, ctx, `document.getElementById('stats-time').textContent`)
		if err := waitFor(ctx, 5*time.Second, `document.getElementById('stats-time').textContent !== `+fmt.Sprintf("%q", before)); err != nil {
			t.Fatal(err)
		}
	}
	screenshot(t, ctx, path)
}

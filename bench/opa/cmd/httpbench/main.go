// Command httpbench compares `wasmvisor serve` with `opa run --server` over HTTP on the same
// policy: the built-in authz plugin (or, with -policy rego, authz.rego itself compiled by
// `opa build -t wasm` and run by wasmvisor's OPA format) against authz.rego, its port to Rego
// (package opa checks that all decide alike), each a process of its own on loopback, driven by the same load
// generator with the same request body (OPA's wrapped in {"input": …}), for 1 and 8 kept-alive
// connections. The sides alternate within each round and their order flips from one round to
// the next, so that a machine's drift falls on both; the report gives per-side medians of the
// rounds and the median of the per-round ratios, with their spread.
//
// Both servers run as configured for production minus logging: wasmvisor with log.decisions
// off and log.level warn (its default logs one info line per decision), OPA with its default
// (no decision logs) and --log-level error. Every request must answer 200, or the run fails.
//
//	cd bench/opa && go run ./cmd/httpbench -rounds 5 -d 5s
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	opa "github.com/wasmvisor/wasmvisor/bench/opa"
)

// defaultInput is authz's first case (plugins/authz/cases.yaml): a viewer reading a document.
const defaultInput = `{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`

func main() {
	rounds := flag.Int("rounds", 5, "rounds; each runs every side at every connection count once")
	dur := flag.Duration("d", 5*time.Second, "measured duration of one side at one connection count")
	warm := flag.Duration("warmup", time.Second, "unmeasured warm-up before each measurement")
	connList := flag.String("conns", "1,8", "connection counts, comma-separated")
	wvBin := flag.String("wasmvisor", "", "wasmvisor binary (default: built from the repository)")
	opaBin := flag.String("opa", "", "opa binary (default: built from this module's OPA, v1.22.4)")
	input := flag.String("input", defaultInput, "the request body (wasmvisor's; OPA gets {\"input\": body})")
	client := flag.String("client", "go", "load generator: go (this program's, Go's HTTP client) or wrk (the wrk binary, on PATH)")
	policy := flag.String("policy", "go", "wasmvisor's side: go (the built-in authz plugin) or rego (authz.rego compiled by opa build -t wasm, plugins/rego/authz, run by the OPA format)")
	flag.Parse()
	switch *policy {
	case "go":
	case "rego":
		useRego = true
	default:
		fmt.Fprintf(os.Stderr, "httpbench: -policy %q: want go or rego\n", *policy)
		os.Exit(2)
	}
	switch *client {
	case "go":
	case "wrk":
		if _, err := exec.LookPath("wrk"); err != nil {
			fmt.Fprintln(os.Stderr, "httpbench: -client wrk: wrk is not on PATH (Debian: apt-get install wrk)")
			os.Exit(1)
		}
		useWrk = true
	default:
		fmt.Fprintf(os.Stderr, "httpbench: -client %q: want go or wrk\n", *client)
		os.Exit(2)
	}
	if err := run(*rounds, *dur, *warm, *connList, *wvBin, *opaBin, *input); err != nil {
		fmt.Fprintln(os.Stderr, "httpbench:", err)
		os.Exit(1)
	}
}

// side is one server under test.
type side struct {
	name string
	url  string
	body []byte
}

// result is one measurement.
type result struct {
	rps      float64
	p50, p99 time.Duration
	n        int
}

func run(rounds int, dur, warm time.Duration, connList, wvBin, opaBin, input string) error {
	if !json.Valid([]byte(input)) {
		return errors.New("-input is not JSON")
	}
	var conns []int
	for c := range strings.SplitSeq(connList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return fmt.Errorf("-conns: %q", c)
		}
		conns = append(conns, n)
	}
	tmp, err := os.MkdirTemp("", "httpbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	if wvBin == "" {
		wvBin = filepath.Join(tmp, "wasmvisor")
		if err := goBuild(root, wvBin, "./cmd/wasmvisor"); err != nil {
			return err
		}
	}
	if opaBin == "" {
		opaBin = filepath.Join(tmp, "opa")
		if err := goBuild(".", opaBin, "github.com/open-policy-agent/opa"); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// OPA's data: the authz config compiled into data.config.
	data, err := json.Marshal(opa.RegoData(map[string]string{"default": "deny"}))
	if err != nil {
		return err
	}
	// wasmvisor: the default config's authz, without the per-decision log line; or, with
	// -policy rego, the same Rego policy OPA runs, compiled to Wasm, with the same data.
	plugin := `    wasm: builtin:authz
    config: {default: deny}`
	handler := "evaluate"
	if useRego {
		plugin = fmt.Sprintf("    wasm: %q\n    config: {data: '%s'}", filepath.Join(root, "plugins/rego/authz/policy.wasm"), data)
		handler = "authz%2Fdecision"
	}
	cfg := filepath.Join(tmp, "wasmvisor.yaml")
	if err := os.WriteFile(cfg, []byte(`listen: 127.0.0.1:0
log: {level: warn, decisions: false}
plugins:
  - name: authz
`+plugin+`
    limits: {memory_pages: 256, call_timeout: 100ms}
    instances: 4
`), 0o644); err != nil {
		return err
	}
	addrFile := filepath.Join(tmp, "wasmvisor.addr")
	wv := exec.CommandContext(ctx, wvBin, "serve", "--config", cfg, "--addr-file", addrFile)
	wv.Stderr = os.Stderr
	if err := wv.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = wv.Wait() }()

	// OPA: the same policy and config.
	dataFile := filepath.Join(tmp, "data.json")
	if err := os.WriteFile(dataFile, data, 0o644); err != nil {
		return err
	}
	opaAddr, err := freeAddr()
	if err != nil {
		return err
	}
	op := exec.CommandContext(ctx, opaBin, "run", "--server", "--addr", opaAddr, "--log-level", "error",
		filepath.Join("..", "..", "plugins", "rego", "authz", "authz.rego"), dataFile)
	op.Stderr = os.Stderr
	if err := op.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = op.Wait() }()

	wvAddr, err := waitFile(addrFile, time.Minute)
	if err != nil {
		return err
	}
	sides := []side{
		{"wasmvisor", "http://" + wvAddr + "/v1/plugins/authz/call/" + handler, []byte(input)},
		{"opa", "http://" + opaAddr + "/v1/data/authz/decision", []byte(`{"input":` + input + `}`)},
	}
	if err := waitReady("http://"+wvAddr+"/readyz", time.Minute); err != nil {
		return err
	}
	if err := waitReady("http://"+opaAddr+"/health", time.Minute); err != nil {
		return err
	}
	if err := sameDecision(sides); err != nil {
		return err
	}

	res := map[string]map[int][]result{}
	for _, s := range sides {
		res[s.name] = map[int][]result{}
	}
	for r := range rounds {
		for _, c := range conns {
			order := sides
			if r%2 == 1 {
				order = []side{sides[1], sides[0]}
			}
			for _, s := range order {
				if _, err := load(s, c, warm); err != nil {
					return fmt.Errorf("%s warm-up: %w", s.name, err)
				}
				m, err := load(s, c, dur)
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				res[s.name][c] = append(res[s.name][c], m)
				fmt.Fprintf(os.Stderr, "round %d, %d conns, %s: %.0f req/s, p50 %v, p99 %v (%d requests)\n",
					r+1, c, s.name, m.rps, m.p50, m.p99, m.n)
			}
		}
	}
	report(res, conns, rounds)
	return nil
}

// goBuild builds pkg into out, in dir.
func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return nil
}

// sameDecision checks that both servers give the same decision for the body.
func sameDecision(sides []side) error {
	var got [2]any
	for i, s := range sides {
		res, err := http.Post(s.url, "application/json", bytes.NewReader(s.body))
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			return fmt.Errorf("%s: status %d %s %v", s.name, res.StatusCode, b, err)
		}
		if err := json.Unmarshal(b, &got[i]); err != nil {
			return fmt.Errorf("%s: %q: %w", s.name, b, err)
		}
	}
	wrapped, ok := got[1].(map[string]any)
	if !ok {
		return fmt.Errorf("opa answered %v", got[1])
	}
	if useRego { // the OPA format answers the result set: [{"result": …}]
		set, ok := got[0].([]any)
		if !ok || len(set) != 1 {
			return fmt.Errorf("wasmvisor answered %v, want one result", got[0])
		}
		if got[0] = set[0].(map[string]any)["result"]; got[0] == nil {
			return fmt.Errorf("wasmvisor answered %v", set)
		}
	}
	a, _ := json.Marshal(got[0])
	b, _ := json.Marshal(wrapped["result"])
	if !bytes.Equal(a, b) {
		return fmt.Errorf("the decisions differ: wasmvisor %s, opa %s", a, b)
	}
	fmt.Fprintf(os.Stderr, "both decide %s\n", a)
	return nil
}

// useWrk makes load drive the servers with wrk instead of Go's client.
var useWrk bool

// useRego serves, on wasmvisor's side, the Rego policy OPA serves, compiled to Wasm.
var useRego bool

// load runs c workers, each with a kept-alive connection, POSTing s.body for d.
func load(s side, c int, d time.Duration) (result, error) {
	if useWrk {
		return loadWrk(s, c, d)
	}
	tr := &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range c {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1<<16)
			for ctx.Err() == nil {
				t0 := time.Now()
				res, err := client.Post(s.url, "application/json", bytes.NewReader(s.body))
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return result{}, firstErr
	}
	slices.Sort(all)
	if len(all) == 0 {
		return result{}, errors.New("no request completed")
	}
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(float64(len(all))*p))] }
	return result{rps: float64(len(all)) / elapsed.Seconds(), p50: pct(0.5), p99: pct(0.99), n: len(all)}, nil
}

// report prints, per connection count, each side's median requests per second and p99, and
// the median of the per-round ratios with their spread.
func report(res map[string]map[int][]result, conns []int, rounds int) {
	fmt.Printf("| connections | side | req/s median (min–max) | p50 median | p99 median (min–max) |\n|---:|---|---|---:|---|\n")
	for _, c := range conns {
		for _, name := range []string{"wasmvisor", "opa"} {
			rs := res[name][c]
			rps := pick(rs, func(r result) float64 { return r.rps })
			p50 := pick(rs, func(r result) float64 { return float64(r.p50) })
			p99 := pick(rs, func(r result) float64 { return float64(r.p99) })
			fmt.Printf("| %d | %s | %.0f (%.0f–%.0f) | %v | %v (%v–%v) |\n", c, name, med(rps), rps[0], rps[len(rps)-1],
				time.Duration(med(p50)).Round(time.Microsecond), time.Duration(med(p99)).Round(time.Microsecond),
				time.Duration(p99[0]).Round(time.Microsecond), time.Duration(p99[len(p99)-1]).Round(time.Microsecond))
		}
	}
	fmt.Printf("\n| connections | wasmvisor/opa req/s, median of %d rounds (min–max) | opa/wasmvisor p99 (min–max) |\n|---:|---|---|\n", rounds)
	for _, c := range conns {
		var thr, tail []float64
		for i := range res["wasmvisor"][c] {
			w, o := res["wasmvisor"][c][i], res["opa"][c][i]
			thr = append(thr, w.rps/o.rps)
			tail = append(tail, float64(o.p99)/float64(w.p99))
		}
		slices.Sort(thr)
		slices.Sort(tail)
		fmt.Printf("| %d | %.2f× (%.2f–%.2f) | %.2f× (%.2f–%.2f) |\n", c, med(thr), thr[0], thr[len(thr)-1], med(tail), tail[0], tail[len(tail)-1])
	}
}

func pick(rs []result, f func(result) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	slices.Sort(out)
	return out
}

func med(s []float64) float64 {
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// freeAddr returns a loopback address with a port free at the time of asking.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitFile waits for path to hold something, every 50 ms, at most limit.
func waitFile(path string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("%s not written after %v", path, limit)
}

// waitReady polls url every 50 ms until it answers 200, at most limit.
func waitReady(url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		res, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v: %w", url, limit, last)
}

// loadWrk runs wrk with c connections on one thread (the other CPU is the server's, on a
// two-CPU machine) for d, POSTing s.body, and
// reads its requests per second and latency percentiles. A non-2xx answer or a socket error
// fails the run.
func loadWrk(s side, c int, d time.Duration) (result, error) {
	script, err := os.CreateTemp("", "httpbench-*.lua")
	if err != nil {
		return result{}, err
	}
	defer os.Remove(script.Name())
	fmt.Fprintf(script, "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[%s]==]\n", s.body)
	if err := script.Close(); err != nil {
		return result{}, err
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	out, err := exec.Command("wrk", "-t", "1", "-c", strconv.Itoa(c), "-d", strconv.Itoa(secs)+"s",
		"--latency", "-s", script.Name(), s.url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	text := string(out)
	if strings.Contains(text, "Non-2xx") || strings.Contains(text, "Socket errors") {
		return result{}, fmt.Errorf("wrk reported failures:\n%s", text)
	}
	var r result
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, err = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50, err = wrkDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99, err = wrkDuration(f[1])
		case len(f) >= 2 && f[1] == "requests":
			r.n, err = strconv.Atoi(f[0])
		}
		if err != nil {
			return result{}, fmt.Errorf("wrk output %q: %w", line, err)
		}
	}
	if r.rps == 0 || r.p99 == 0 {
		return result{}, fmt.Errorf("wrk output not understood:\n%s", text)
	}
	return r, nil
}

// wrkDuration reads a wrk latency: 123.45us, 1.20ms, 2.00s.
func wrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return time.Duration(f * float64(u.unit)), err
		}
	}
	return 0, fmt.Errorf("unknown unit in %q", s)
}

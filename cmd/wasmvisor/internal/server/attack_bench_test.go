package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkAuthzUnderAttack measures a healthy plugin's latency over HTTP (one client, one
// kept-alive connection, the built-in authz policy) without and with a concurrent attack on
// the same server: two clients flooding a plugin that traps on every call, one calling a
// plugin that loops until its 50 ms deadline, one sending 100k-role requests to authz itself,
// and one that disconnects mid-call, again and again. The sub-benchmarks alternate within one
// run (-count N gives N of each), and report the latency percentiles as metrics, and how many
// answers were not the right decision ("failed").
//
//	go test -run '^$' -bench AuthzUnderAttack -benchtime 500x -count 5 ./cmd/wasmvisor/internal/server/
func BenchmarkAuthzUnderAttack(b *testing.B) {
	faults, err := filepath.Abs("../../../../internal/faults/testdata")
	if err != nil {
		b.Fatal(err)
	}
	ts := openServerLog(b, fmt.Sprintf(`
http: {request_timeout: 5s}
plugins:
  - {name: authz, wasm: "builtin:authz", instances: 2, limits: {memory_pages: 256, call_timeout: 500ms}}
  - {name: trap, wasm: %q, instances: 2}
  - {name: loop, wasm: %q, limits: {call_timeout: 50ms}}
`, filepath.Join(faults, "server_trap.wasm"), filepath.Join(faults, "server_loop.wasm")), true, zap.NewNop())
	body := []byte(`{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
	call := func() error {
		res, err := client.Post(ts.base+"/v1/plugins/authz/call/evaluate", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !bytes.Contains(out, []byte(`"allow":true`)) {
			return fmt.Errorf("%d %s", res.StatusCode, out)
		}
		return nil
	}
	var roles strings.Builder
	roles.WriteString(`{"subject":{"id":"m","roles":["r0"`)
	for i := 1; i < 100_000; i++ {
		fmt.Fprintf(&roles, `,"r%d"`, i)
	}
	roles.WriteString(`]},"action":"read","resource":{"type":"document","id":"1"}}`)
	huge := []byte(roles.String())

	attack := func(ctx context.Context) (wait func()) {
		var wg sync.WaitGroup
		tr := &http.Transport{MaxIdleConnsPerHost: 8, MaxConnsPerHost: 8, DisableCompression: true}
		hostile := &http.Client{Transport: tr}
		loop := func(f func()) {
			wg.Go(func() {
				for i := 0; i < 10_000_000 && ctx.Err() == nil; i++ { // the context ends it
					f()
				}
			})
		}
		send := func(rctx context.Context, path string, in []byte) {
			req, _ := http.NewRequestWithContext(rctx, "POST", ts.base+path, bytes.NewReader(in))
			if res, err := hostile.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}
		for range 2 {
			loop(func() { send(ctx, "/v1/plugins/trap/call/call", nil) })
		}
		loop(func() { send(ctx, "/v1/plugins/loop/call/call", nil) })
		loop(func() { send(ctx, "/v1/plugins/authz/call/evaluate", huge) })
		loop(func() {
			rctx, cancel := context.WithCancel(ctx)
			rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { cancel() }})
			send(rctx, "/v1/plugins/loop/call/call", nil)
			cancel()
		})
		return func() {
			wg.Wait()
			tr.CloseIdleConnections()
		}
	}
	for _, mode := range []string{"quiet", "attack"} {
		b.Run(mode, func(b *testing.B) {
			for range 50 { // warm the connection and the instances
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
			ctx, stop := context.WithCancel(context.Background())
			wait := func() {}
			if mode == "attack" {
				wait = attack(ctx)
			}
			lat := make([]time.Duration, 0, 4096)
			failed := 0
			for b.Loop() {
				t0 := time.Now()
				if err := call(); err != nil {
					failed++ // an answer that is not the right decision: reported, not fatal
					if failed == 1 {
						b.Log(err)
					}
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			stop()
			wait()
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds())
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(pct(1), "max-µs")
			b.ReportMetric(float64(failed), "failed")
		})
	}
}

package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkDecisionLogThroughput measures the HTTP throughput of the built-in authz policy
// (two instances, 8 concurrent clients on kept-alive connections) with no decision log sink
// ("off"), with the file sink ("file"), and with the file sink keeping input and result
// ("file_io"). The three servers run side by side in one process, and each round (one b.N)
// sends a burst of 200 calls to each, in an order that rotates from round to round: a noisy
// machine (this one is shared) weighs on the three alike. It reports each mode's calls/s over
// all rounds, and the median over the rounds of each file mode's throughput relative to off's
// in the same round. The process logger is a no-op in all
// three.
//
//	go test -run '^$' -bench DecisionLogThroughput -benchtime 100x -count 3 ./cmd/wasmvisor/internal/server/
func BenchmarkDecisionLogThroughput(b *testing.B) {
	const plugin = `
plugins:
  - {name: authz, wasm: "builtin:authz", instances: 2}
`
	modes := []struct{ name, yaml string }{
		{"off", ""},
		{"file", "decision_log: {file: {path: decisions.log}}\n"},
		{"file_io", "decision_log: {input: true, result: true, file: {path: decisions.log}}\n"},
	}
	const burst, clients = 200, 8
	body := []byte(`{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`)
	calls := make([]func() error, len(modes))
	for i, m := range modes {
		ts := openServerLog(b, m.yaml+plugin, true, zap.NewNop())
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}}
		b.Cleanup(client.CloseIdleConnections)
		calls[i] = func() error {
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
	}
	run := func(call func() error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		t0 := time.Now()
		for range clients {
			wg.Go(func() {
				for range burst / clients {
					if err := call(); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return time.Since(t0), <-errs
	}
	for _, call := range calls { // warm the connections and the instances
		if _, err := run(call); err != nil {
			b.Fatal(err)
		}
	}
	total := make([]time.Duration, len(modes))
	ratios := make([][]float64, len(modes)) // per round: off's time / this mode's
	round := 0
	for b.Loop() {
		var d [3]time.Duration
		for k := range modes {
			i := (round + k) % len(modes)
			var err error
			if d[i], err = run(calls[i]); err != nil {
				b.Fatal(err)
			}
			total[i] += d[i]
		}
		for i := range modes {
			ratios[i] = append(ratios[i], d[0].Seconds()/d[i].Seconds())
		}
		round++
	}
	for i, m := range modes {
		b.ReportMetric(float64(round*burst)/total[i].Seconds(), m.name+"-calls/s")
		if i > 0 { // the median round: a burst of noise in one round does not move it
			slices.Sort(ratios[i])
			b.ReportMetric(ratios[i][len(ratios[i])/2], m.name+"/off")
		}
	}
}

package sandbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// BenchmarkRewind: one call and the Rewind after it, the work of an instance-per-call
// reset done in place (host.InstancePerCall), for the marker call of every language and
// a standard-Go authz decision; "call" is the call alone on a warm instance, for the
// difference, and "call-after-rewind" the call alone on a rewound instance: what a caller
// waits for when the resets keep up. Its ns/op is the calls' own time, each timed alone,
// and not the benchmark's timer stopped around the Rewind: B.StopTimer and B.StartTimer
// read the memory statistics, which stops the world before every timed call.
func BenchmarkRewind(b *testing.B) {
	e := newEngine(b)
	decision := []byte(`{"subject":{"id":"a","roles":["admin"]},"action":"read","resource":{"type":"document"}}`)
	cases := []struct {
		name, path, handler string
		input               []byte
	}{{"authz", "../plugins/authz/authz.wasm", "evaluate", decision}}
	for _, l := range snapshotLanguages {
		cases = append(cases, struct {
			name, path, handler string
			input               []byte
		}{l.name, l.path, "set", []byte("marker")})
	}
	ctx := context.Background()
	for _, c := range cases {
		for _, mode := range []string{"call", "call+rewind", "call-after-rewind"} {
			b.Run(c.name+"/"+mode, func(b *testing.B) {
				i := instantiate(b, compile(b, e, c.path, sandbox.Config{}), nil)
				if err := i.Checkpoint(); err != nil {
					b.Fatal(err)
				}
				var dst []byte
				var err error
				var spent time.Duration // call-after-rewind: the calls alone
				for b.Loop() {
					var t0 time.Time
					if mode == "call-after-rewind" {
						t0 = time.Now()
					}
					if dst, err = i.CallAppend(ctx, c.handler, c.input, dst[:0]); err != nil {
						b.Fatal(err)
					}
					if mode == "call-after-rewind" {
						spent += time.Since(t0)
					}
					if mode != "call" {
						if err := i.Rewind(); err != nil {
							b.Fatal(err)
						}
					}
				}
				if mode == "call-after-rewind" {
					b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ns/op")
				}
			})
		}
	}
}

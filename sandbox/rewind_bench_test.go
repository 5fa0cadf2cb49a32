package sandbox_test

import (
	"context"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// BenchmarkRewind: one call and the Rewind after it, the work of an instance-per-call
// reset done in place (host.InstancePerCall), for the marker call of every language and
// a standard-Go authz decision; "call" is the call alone on a warm instance, for the
// difference, and "call-after-rewind" the call alone on a rewound instance (the timer
// stopped for the Rewind: what a caller waits for when the resets keep up).
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
				for b.Loop() {
					if dst, err = i.CallAppend(ctx, c.handler, c.input, dst[:0]); err != nil {
						b.Fatal(err)
					}
					switch mode {
					case "call+rewind":
						if err := i.Rewind(); err != nil {
							b.Fatal(err)
						}
					case "call-after-rewind":
						b.StopTimer()
						if err := i.Rewind(); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
				}
			})
		}
	}
}

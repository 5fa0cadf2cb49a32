package decisionlog

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkLog is the call path's cost of one decision record: Log with no sink (the record
// prepared for the process log line), with the file sink, and with the file sink keeping input
// and result (one mask), against an authz-sized input. The file is written by the sink's
// goroutine, whose cost is not on the caller's path but is on the machine's; the ns/op covers
// the caller only.
//
//	go test -run '^$' -bench BenchmarkLog -benchmem ./cmd/wasmvisor/internal/decisionlog/
func BenchmarkLog(b *testing.B) {
	in := json.RawMessage(`{"subject":{"id":"alice","roles":["viewer"],"token":"x"},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`)
	out := json.RawMessage(`{"allow":true,"reasons":["role viewer may read document"]}`)
	mask, _ := ParseMask("/input/subject/token")
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"none", Options{}},
		{"file", Options{File: &FileOptions{}}},
		{"file_io_mask", Options{Input: true, Result: true, Masks: []Mask{mask}, File: &FileOptions{}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.o.File != nil {
				tc.o.File.Path = filepath.Join(b.TempDir(), "d.log")
				tc.o.File.Queue = 1 << 20 // measure the encoding, not drops
			}
			l, err := New(tc.o)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = l.Close(ctx)
			}()
			now := time.Now()
			for b.Loop() {
				l.Log(&Record{DecisionID: NewID(), Timestamp: now, Path: "authz/evaluate", Plugin: "authz",
					Digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Handler: "evaluate",
					Input: in, Result: out, Outcome: "allow", FailurePolicy: "deny", Status: 200, Metrics: Metrics{TimerServerHandlerNs: 41250}})
			}
		})
	}
}

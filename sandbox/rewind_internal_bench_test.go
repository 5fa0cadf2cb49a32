package sandbox

import (
	"context"
	"os"
	"testing"
	"time"
)

// BenchmarkCallAfter takes apart what a standard-Go authz decision on a rewound instance pays
// beyond one on a warm instance (BenchmarkRewind's call-after-rewind against call): between
// two calls it does nothing (warm), a Rewind (rewind), only the Rewind's page-map read, the
// state left as the call left it (pagemap), one cheap system call (syscall), or only the
// Rewind's copying back, of the pages the page map named once, with no system call
// (restore). call-ns is the call alone, timed around it, so that what runs between calls is
// never in it and the timer is never stopped (StopTimer reads the memory statistics,
// stopping the world).
func BenchmarkCallAfter(b *testing.B) {
	ctx := context.Background()
	e, err := NewEngine(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(ctx)
	wasm, err := os.ReadFile("../plugins/authz/authz.wasm")
	if err != nil {
		b.Fatal(err)
	}
	m, err := e.Compile(ctx, wasm, Config{})
	if err != nil {
		b.Fatal(err)
	}
	decision := []byte(`{"subject":{"id":"a","roles":["admin"]},"action":"read","resource":{"type":"document"}}`)
	for _, between := range []string{"warm", "rewind", "pagemap", "syscall", "restore"} {
		b.Run(between, func(b *testing.B) {
			i, err := m.Instantiate(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer i.Close(ctx)
			if err := i.Checkpoint(); err != nil {
				b.Fatal(err)
			}
			dst, err := i.CallAppend(ctx, "evaluate", decision, nil)
			if err != nil {
				b.Fatal(err)
			}
			var pm []byte
			var ok bool
			if pm, ok = writtenPages(e.pagemap, i.lm.buf, pm); !ok && between != "warm" && between != "syscall" {
				b.Skip("no page map here")
			}
			var written []int // the pages a decision writes, as the page map named them once
			for k := range len(i.lm.buf) / rewindPage {
				if pageWritten(pm, k) {
					written = append(written, k)
				}
			}
			if err := i.Rewind(); err != nil {
				b.Fatal(err)
			}
			var spent time.Duration
			for b.Loop() {
				t0 := time.Now()
				if dst, err = i.CallAppend(ctx, "evaluate", decision, dst[:0]); err != nil {
					b.Fatal(err)
				}
				spent += time.Since(t0)
				switch between {
				case "rewind":
					err = i.Rewind()
				case "pagemap":
					pm, _ = writtenPages(e.pagemap, i.lm.buf, pm)
				case "syscall":
					_, err = os.Stat("/")
				case "restore":
					for _, k := range written {
						rewindSpan(i.lm.buf, i.cp.mem, k*rewindPage, (k+1)*rewindPage)
					}
					for k, g := range i.cp.globals {
						g.Set(i.cp.values[k])
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "call-ns")
		})
	}
}

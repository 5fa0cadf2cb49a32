package faults_test

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// Memory accounting (RATIONALE.md, "Memory accounting"): an instance holds no more host
// memory than its linear-memory limit plus a small memOverhead, however it grows, and gives it
// back when it ends.
const (
	hogPages    = 1024           // the hostile plugin's limit: 64 MiB
	hogLimit    = hogPages << 16 // in bytes
	memOverhead = 16 << 20       // the test's own share: host, healthy plugin, race detector, Go heap slack
	hogName     = "hog"          // memory_hog.wat
	tblName     = "tables"       // memory_table.wat
	// tableMemBudget: the clamped table (2^18 elements, 8 bytes each in wazero: 2 MiB) and the
	// garbage its growth by copying leaves, under the race detector too. An unclamped table
	// grows to wazero's own ceiling, 2^27 elements: 1 GiB.
	tableMemBudget = 64 << 20
)

// loadHog loads memory_hog.wasm, one instance, limited to limit pages.
func loadHog(t *testing.T, h *host.Host, limit uint32) {
	t.Helper()
	hosttest.LoadPlugin(t, h, host.Plugin{Name: hogName, Wasm: hostile(t, "memory_hog"),
		Limits: sandbox.Limits{MemoryPages: limit, CallTimeout: 20 * time.Second}})
}

// hogClean checks that the hog's current instance starts clean: one page, and nothing written
// past its static data (a recycled memory must be zero).
func hogClean(t *testing.T, h *host.Host) {
	t.Helper()
	out, err := h.Call(ctxT(t), hogName, "dirty", nil)
	if err != nil {
		t.Fatalf("successor: %v", err)
	}
	if len(out) != 8 {
		t.Fatalf("successor answered %x", out)
	}
	if pages, dirty := binary.LittleEndian.Uint32(out), binary.LittleEndian.Uint32(out[4:]); pages != 1 || dirty != 0 {
		t.Fatalf("successor: %d pages, %d words not zero; want 1 page, 0", pages, dirty)
	}
}

func pagesIn(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }

// TestMemoryFillToTheLimit: the guest grows its memory 16 pages at a time up to its limit,
// touching every page, then traps. Resident memory stays within the limit plus the memOverhead,
// the error is ErrMemoryLimit, and closing the instance gives the memory back.
func TestMemoryFillToTheLimit(t *testing.T) {
	h := newHost(t, crashy()...)
	loadHog(t, h, hogPages)
	base := rss(t)
	withinMemory(t, hogLimit+memOverhead, func() {
		whileHealthy(t, h, func() {
			for range 3 {
				if _, err := h.Call(ctxT(t), hogName, "fill", nil); !errors.Is(err, sandbox.ErrMemoryLimit) {
					t.Fatalf("fill: %v, want ErrMemoryLimit", err)
				}
				hogClean(t, h) // also waits for the successor, so the failed instance was closed
			}
		})
	})
	checkHealthy(t, h)
	if grew := rss(t) - base; grew > memOverhead {
		t.Fatalf("after the instance ended, resident memory is still %d MiB above where it was", grew>>20)
	}
}

// TestMemoryGrowTrapRestart: a hundred successors in a row grow by different amounts, touch
// what they got and trap (every tenth runs into its limit instead): the memories recycled
// between them never add up, and every successor starts clean.
func TestMemoryGrowTrapRestart(t *testing.T) {
	const limit = 128 // pages: 8 MiB, so that a hundred successors fault in little
	h := newHost(t, crashy()...)
	loadHog(t, h, limit)
	withinMemory(t, limit<<16+memOverhead, func() {
		whileHealthy(t, h, func() {
			for n := range 100 {
				handler, want, in := "trap", sandbox.ErrTrap, pagesIn(uint32(16+n*97%(limit-16)))
				if n%10 == 9 {
					handler, want, in = "fill", sandbox.ErrMemoryLimit, nil
				}
				if _, err := h.Call(ctxT(t), hogName, handler, in); !errors.Is(err, want) {
					t.Fatalf("%s %d: %v, want %v", handler, n, err, want)
				}
				hogClean(t, h)
			}
		})
	})
	checkHealthy(t, h)
}

// TestMemoryTableGrowBomb: the guest grows its table by 10,000 elements at a time until
// table.grow fails, then traps. Its tables are clamped at load, so it gets at most 2^18
// elements; a module that asks for 10^8 at start is refused at load with ErrMemoryLimit.
func TestMemoryTableGrowBomb(t *testing.T) {
	h := newHost(t, crashy()...)
	hosttest.LoadPlugin(t, h, host.Plugin{Name: tblName, Wasm: hostile(t, "memory_table")})
	withinMemory(t, tableMemBudget, func() {
		whileHealthy(t, h, func() {
			for range 10 {
				if _, err := h.Call(ctxT(t), tblName, "bomb", nil); !errors.Is(err, sandbox.ErrTrap) {
					t.Fatalf("bomb: %v, want ErrTrap", err)
				}
				out, err := h.Call(ctxT(t), tblName, "size", nil)
				if err != nil || len(out) != 4 || binary.LittleEndian.Uint32(out) != 1 {
					t.Fatalf("successor's table: %x, %v; want 1 element", out, err)
				}
			}
			err := h.Load(ctxT(t), host.Plugin{Name: "tables-min", Wasm: hostile(t, "memory_table_min")})
			if !errors.Is(err, sandbox.ErrMemoryLimit) {
				t.Fatalf("a table of 10^8 elements at start: %v, want ErrMemoryLimit", err)
			}
		})
	})
	checkHealthy(t, h)
}

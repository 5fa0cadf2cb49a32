package guestio

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func benchWriter(l Limits) *LineWriter {
	s := NewScope(ScopeConfig{})
	return NewLineWriter(zap.New(zapcore.NewNopCore()), s.Meter("stdout", l), nil)
}

// BenchmarkWriteDropped is one write past the budget: what each write of a flood costs.
func BenchmarkWriteDropped(b *testing.B) {
	w := benchWriter(Limits{})
	line := []byte("a line of output\n")
	for b.Loop() {
		_, _ = w.Write(line)
	}
}

// BenchmarkWriteLine is one short line kept (to a no-op core).
func BenchmarkWriteLine(b *testing.B) {
	w := benchWriter(unlimited)
	line := []byte("a line of output\n")
	for b.Loop() {
		_, _ = w.Write(line)
	}
}

// BenchmarkWrite32MiB is the reported case: one 32 MiB write without a newline, under the
// default limits, in a fresh operation each time.
func BenchmarkWrite32MiB(b *testing.B) {
	var op uint64
	s := NewScope(ScopeConfig{Op: func() uint64 { return op }})
	w := NewLineWriter(zap.New(zapcore.NewNopCore()), s.Meter("stdout", Limits{OpBytes: 64 << 10, OpRecords: 256,
		WindowBytes: Unlimited, WindowRecords: Unlimited}), nil)
	big := make([]byte, 32<<20)
	b.SetBytes(int64(len(big)))
	for b.Loop() {
		op++
		_, _ = w.Write(big)
		w.Flush()
	}
}

// BenchmarkTake is one log message or publish admitted or refused by its meter.
func BenchmarkTake(b *testing.B) {
	m := NewScope(ScopeConfig{}).Meter("log", Limits{})
	for b.Loop() {
		m.Take(17, 17)
	}
}

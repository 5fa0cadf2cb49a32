package guestio

import (
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestTrap(t *testing.T) {
	first, kind, stack := Trap("wasm error: unreachable\nwasm stack trace:\n\t.$3(i32) i32\n\t.$1()\n\nextra")
	if first != "wasm error: unreachable" || kind != "unreachable" || !reflect.DeepEqual(stack, []string{".$3(i32) i32", ".$1()"}) {
		t.Errorf("Trap = %q, %q, %q", first, kind, stack)
	}
	if _, kind, stack := Trap("panic: boom (recovered by wazero)"); kind != "" || stack != nil {
		t.Errorf("a non-trap message gave kind %q, stack %q", kind, stack)
	}
}

var unlimited = Limits{OpBytes: Unlimited, OpRecords: Unlimited, WindowBytes: Unlimited, WindowRecords: Unlimited}

// env is a scope with a fake clock, an operation counter and a record of the reports.
type env struct {
	now     time.Duration
	op      uint64
	stopped bool
	reports []Drop
	s       *Scope
}

func newEnv() *env {
	e := &env{}
	e.s = NewScope(ScopeConfig{
		Now:     func() time.Duration { return e.now },
		Op:      func() uint64 { return e.op },
		Stopped: func() bool { return e.stopped },
		Report:  func(d Drop) { e.reports = append(e.reports, d) },
	})
	return e
}

// end ends the operation as its owner does.
func (e *env) end() {
	if e.s.Pending() {
		e.s.End()
	}
	e.op++
}

// reported sums the reports of stream.
func (e *env) reported(stream string) (bytes, records uint64, n int) {
	for _, d := range e.reports {
		if d.Stream == stream {
			bytes += d.Bytes
			records += d.Records
			n++
		}
	}
	return bytes, records, n
}

func lines(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, e.ContextMap()["line"].(string))
	}
	return out
}

func TestLineWriter(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var cut atomic.Uint64
	e := newEnv()
	w := NewLineWriter(zap.New(core), e.s.Meter("stdout", unlimited), &cut)
	_, _ = w.Write([]byte("one\ntw"))
	_, _ = w.Write([]byte("o\n" + strings.Repeat("x", MaxLine+10)))
	_, _ = w.Write([]byte("\n" + strings.Repeat("y", MaxLine) + "\n"))
	w.Flush()
	got := lines(logs)
	if len(got) != 5 || got[0] != "one" || got[1] != "two" || len(got[2]) != MaxLine || len(got[3]) != 10 || len(got[4]) != MaxLine {
		t.Errorf("lines = %d: %.20q", len(got), got)
	}
	if cut.Load() != 1 {
		t.Errorf("truncated = %d, want 1 (a line of exactly MaxLine is not cut)", cut.Load())
	}
	if b, r := w.m.Dropped(); b != 0 || r != 0 || len(e.reports) != 0 {
		t.Errorf("dropped %d bytes %d records, reports %v; want none", b, r, e.reports)
	}
}

// TestLineWriterLinear writes 32 MiB without a newline, in one write and in small ones: the
// writer copies each byte at most once into its buffer and logs it once. Before the fix the
// writer re-appended the rest of a long line after every piece: n²/2/MaxLine bytes copied.
func TestLineWriterLinear(t *testing.T) {
	const n = 32 << 20
	big := []byte(strings.Repeat("z", n))
	for _, chunk := range []int{n, 1000, MaxLine + 1} {
		n := int64(n)
		if chunk != int(n) {
			n = 4 << 20 // the same bound, in less time under -race
		}
		big := big[:n]
		var entries, logged atomic.Int64
		core := countingCore{entries: &entries, bytes: &logged}
		e := newEnv()
		w := NewLineWriter(zap.New(core), e.s.Meter("stdout", unlimited), nil)
		for b := big; len(b) > 0; {
			k := min(chunk, len(b))
			if m, err := w.Write(b[:k]); m != k || err != nil {
				t.Fatalf("Write = %d, %v", m, err)
			}
			b = b[k:]
		}
		w.Flush()
		if w.copied > n {
			t.Errorf("chunk %d: %d bytes copied into the buffer for %d written: not linear", chunk, w.copied, n)
		}
		if entries.Load() != n/MaxLine || logged.Load() != n {
			t.Errorf("chunk %d: %d lines, %d bytes logged; want %d, %d", chunk, entries.Load(), logged.Load(), n/MaxLine, n)
		}
	}
}

// TestLineWriterBudgetBig is the reported case: one 32 MiB write without a newline, under the
// default budget. It keeps the first 64 KiB (16 pieces), drops the rest without touching it,
// and reports it once when the operation ends.
func TestLineWriterBudgetBig(t *testing.T) {
	const n = 32 << 20
	var entries, logged atomic.Int64
	e := newEnv()
	w := NewLineWriter(zap.New(countingCore{entries: &entries, bytes: &logged}),
		e.s.Meter("stdout", Limits{OpBytes: 64 << 10, OpRecords: 256, WindowBytes: 1 << 20, WindowRecords: 1000}), nil)
	if m, err := w.Write(make([]byte, n)); m != n || err != nil {
		t.Fatalf("Write = %d, %v", m, err)
	}
	e.end()
	if entries.Load() != 16 || logged.Load() != 64<<10 {
		t.Errorf("%d lines, %d bytes logged; want 16, 64 KiB", entries.Load(), logged.Load())
	}
	if w.copied > 64<<10 {
		t.Errorf("%d bytes copied: the dropped part was touched", w.copied)
	}
	b, r := w.m.Dropped()
	if b != n-64<<10 || r != 1 {
		t.Errorf("dropped %d bytes %d records, want %d, 1", b, r, n-64<<10)
	}
	if rb, rr, k := e.reported("stdout"); k != 1 || rb != b || rr != r || !e.reports[0].Op {
		t.Errorf("reports %+v: want one, of the operation's limit, with the totals", e.reports)
	}
}

func TestLineWriterOpBudget(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv()
	w := NewLineWriter(zap.New(core), e.s.Meter("stderr", Limits{OpBytes: 10, OpRecords: 2, WindowBytes: Unlimited, WindowRecords: Unlimited}), nil)
	_, _ = w.Write([]byte("abc\ndef\nghi\n")) // three lines, two allowed: "ghi\n" dropped
	_, _ = w.Write([]byte("x\n"))             // nothing left in the operation
	e.end()
	_, _ = w.Write([]byte("0123456789abc\n")) // a fresh operation: 10 bytes, no newline within them
	_, _ = w.Write([]byte("more\n"))
	e.end()
	got := lines(logs)
	if !reflect.DeepEqual(got, []string{"abc", "def", "0123456789"}) {
		t.Errorf("lines %q", got)
	}
	b, r := w.m.Dropped()
	if b != 4+2+4+5 || r != 4 { // every write lost bytes
		t.Errorf("dropped %d bytes %d records, want 15, 4", b, r)
	}
	// One report per stream per Window: the first operation's drops now, the second's at
	// the end of an operation a Window later.
	if rb, _, k := e.reported("stderr"); k != 1 || rb != 6 {
		t.Fatalf("reports %+v", e.reports)
	}
	e.now += Window
	e.end()
	if rb, rr, k := e.reported("stderr"); k != 2 || rb != b || rr != r {
		t.Fatalf("reports %+v, want two with the totals", e.reports)
	}
}

func TestLineWriterWindowBudget(t *testing.T) {
	var entries, logged atomic.Int64
	e := newEnv()
	w := NewLineWriter(zap.New(countingCore{entries: &entries, bytes: &logged}),
		e.s.Meter("stdout", Limits{OpBytes: Unlimited, OpRecords: Unlimited, WindowBytes: 1000, WindowRecords: 10}), nil)
	line := []byte("0123456789\n")
	// 1,000 operations of one line each over 10 windows: 10 lines kept per window.
	for i := range 1000 {
		e.now = time.Duration(i) * Window / 100
		_, _ = w.Write(line)
		e.end()
	}
	if entries.Load() != 100 {
		t.Errorf("%d lines logged, want 10 per window, 100", entries.Load())
	}
	b, r := w.m.Dropped()
	if r != 900 || b != 900*uint64(len(line)) {
		t.Errorf("dropped %d bytes %d records", b, r)
	}
	e.s.Flush()
	rb, rr, k := e.reported("stdout")
	if rb != b || rr != r {
		t.Errorf("reported %d bytes %d records, counted %d %d", rb, rr, b, r)
	}
	if k > 11 { // one per window at most, and the last at Flush
		t.Errorf("%d reports for 10 windows", k)
	}
	for _, d := range e.reports {
		if !d.Window || d.Op {
			t.Errorf("report %+v: the window's limit", d)
		}
	}
	// Byte limit of the window: a fresh window, 1,000 bytes.
	e.now += Window
	entries.Store(0)
	logged.Store(0)
	_, _ = w.Write([]byte(strings.Repeat("a", 999) + "\n" + strings.Repeat("b", 999) + "\n"))
	if entries.Load() != 1 || logged.Load() != 999 {
		// The first line and its newline are the window's 1,000 bytes; the second is dropped.
		t.Errorf("%d lines, %d bytes", entries.Load(), logged.Load())
	}
}

// TestReportsOncePerWindow: a flood of drops within one long operation is reported once per
// Window, and once in all, whatever the number of writes.
func TestReportsOncePerWindow(t *testing.T) {
	e := newEnv()
	m := e.s.Meter("log", Limits{OpBytes: Unlimited, OpRecords: 1, WindowBytes: Unlimited, WindowRecords: Unlimited})
	if !m.Take(5, 5) {
		t.Fatal("the first record was refused")
	}
	for range 100_000 {
		if m.Take(5, 7) {
			t.Fatal("a record past the limit was taken")
		}
	}
	if len(e.reports) != 0 {
		t.Fatalf("reported during the first Window: %+v", e.reports)
	}
	e.now += Window
	m.Take(5, 7) // still the same operation, dropping for a Window: reported now
	if len(e.reports) != 1 || e.reports[0].Records != 100_001 || e.reports[0].Bytes != 700_007 {
		t.Fatalf("reports %+v", e.reports)
	}
	for range 10 {
		m.Take(5, 7)
	}
	e.end() // reported less than a Window ago: kept for later
	if len(e.reports) != 1 || !e.s.Pending() {
		t.Fatalf("reports %+v, pending %v", e.reports, e.s.Pending())
	}
	e.s.Flush()
	if len(e.reports) != 2 || e.reports[1].Records != 10 || e.s.Pending() {
		t.Fatalf("reports %+v, pending %v", e.reports, e.s.Pending())
	}
	e.s.Flush() // nothing left
	if b, r := m.Dropped(); len(e.reports) != 2 || b != 700_077 || r != 100_011 {
		t.Fatalf("reports %+v, dropped %d %d", e.reports, b, r)
	}
}

func TestStopped(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv()
	w := NewLineWriter(zap.New(core), e.s.Meter("stdout", unlimited), nil)
	e.stopped = true
	if n, err := w.Write([]byte("late\n")); n != 0 || !errors.Is(err, ErrStopped) {
		t.Errorf("Write = %d, %v; want 0, ErrStopped", n, err)
	}
	m := e.s.Meter("log", unlimited)
	if m.Take(1, 1) {
		t.Error("Take succeeded in a stopped operation")
	}
	e.end()
	if logs.Len() != 0 || len(e.reports) != 2 || !e.reports[0].Stopped || !e.reports[1].Stopped {
		t.Errorf("logged %d, reports %+v", logs.Len(), e.reports)
	}
}

func TestFlushWithinBudget(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv()
	w := NewLineWriter(zap.New(core), e.s.Meter("stdout", Limits{OpBytes: Unlimited, OpRecords: 1, WindowBytes: Unlimited, WindowRecords: Unlimited}), nil)
	_, _ = w.Write([]byte("a\npartial"))
	w.Flush() // the operation's one line is spent: the partial line is dropped
	if logs.Len() != 1 {
		t.Errorf("%d lines", logs.Len())
	}
	if b, r := w.m.Dropped(); b != 7+0 || r != 1 {
		t.Errorf("dropped %d bytes %d records", b, r)
	}
	e.end()
	_, _ = w.Write([]byte("last"))
	w.Flush()
	if got := lines(logs); len(got) != 2 || got[1] != "last" {
		t.Errorf("lines %q", got)
	}
}

// countingCore counts entries and the bytes of their "line" fields, and keeps nothing.
type countingCore struct{ entries, bytes *atomic.Int64 }

func (c countingCore) Enabled(zapcore.Level) bool        { return true }
func (c countingCore) With([]zapcore.Field) zapcore.Core { return c }
func (c countingCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, c)
}
func (c countingCore) Write(_ zapcore.Entry, fs []zapcore.Field) error {
	c.entries.Add(1)
	for _, f := range fs {
		if f.Key == "line" {
			c.bytes.Add(int64(len(f.String)))
		}
	}
	return nil
}
func (c countingCore) Sync() error { return nil }

package sandbox_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// reports collects an instance's drop reports.
type reports struct {
	mu sync.Mutex
	rs []sandbox.DropReport
}

func (r *reports) add(d sandbox.DropReport) {
	r.mu.Lock()
	r.rs = append(r.rs, d)
	r.mu.Unlock()
}

func (r *reports) of(stream string) (bytes, records uint64, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.rs {
		if d.Stream == stream {
			bytes, records, n = bytes+d.Bytes, records+d.Records, n+1
		}
	}
	return bytes, records, n
}

// TestOutputLimitsPerCall: stdout and log within the per-call limits; the excess dropped,
// counted in Stats, and reported once at the end of the call that dropped it.
func TestOutputLimitsPerCall(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := newEngine(t, sandbox.WithLogger(zap.New(core)))
	var r reports
	m := compile(t, e, referencePath, sandbox.Config{OnDrop: r.add, Limits: sandbox.Limits{
		Output: sandbox.OutputLimits{CallBytes: 100, CallLines: 3, SecondBytes: sandbox.Unlimited, SecondLines: sandbox.Unlimited}}})
	i := instantiate(t, m, nil)

	mustCall(t, i, "stdout", "a\nb\nc\nd\ne\n") // three lines kept, "d\ne\n" dropped
	if n := logs.FilterMessage("guest output").Len(); n != 3 {
		t.Errorf("%d lines logged, want 3", n)
	}
	st := i.Stats()
	if st.Stdout != (sandbox.StreamStats{DroppedBytes: 4, DroppedRecords: 1}) {
		t.Errorf("stdout stats %+v", st.Stdout)
	}
	if b, rec, n := r.of(sandbox.StreamStdout); n != 1 || b != 4 || rec != 1 || !r.rs[0].CallLimit {
		t.Errorf("reports %+v: want one at the end of the call", r.rs)
	}

	big := strings.Repeat("x", 1<<20) // no newline: 100 bytes kept (cut into a line), the rest dropped
	mustCall(t, i, "stdout", big)
	if st := i.Stats(); st.Stdout.DroppedBytes != 4+(1<<20)-100 || st.Stdout.DroppedRecords != 2 {
		t.Errorf("stdout stats %+v", st.Stdout)
	}
	lines := logs.FilterMessage("guest output").All()
	if last := lines[len(lines)-1].ContextMap()["line"].(string); last != big[:100] {
		t.Errorf("last line %d bytes, want the first 100 of the write", len(last))
	}

	// A log message longer than the call's bytes is refused whole.
	mustCall(t, i, "log", strings.Repeat("y", 200))
	mustCall(t, i, "log", "fits")
	if st := i.Stats(); st.Log != (sandbox.StreamStats{DroppedBytes: 200, DroppedRecords: 1}) {
		t.Errorf("log stats %+v", st.Log)
	}
	if logs.FilterMessage("guest log").Len() != 1 {
		t.Errorf("log lines %v", logs.FilterMessage("guest log").All())
	}
	if err := i.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Every dropped byte is in exactly one report.
	for _, s := range []struct {
		name string
		st   sandbox.StreamStats
	}{{sandbox.StreamStdout, i.Stats().Stdout}, {sandbox.StreamLog, i.Stats().Log}} {
		if b, rec, _ := r.of(s.name); b != s.st.DroppedBytes || rec != s.st.DroppedRecords {
			t.Errorf("%s: reported %d bytes %d records, counted %+v", s.name, b, rec, s.st)
		}
	}
}

// TestOutputDropsAreLoggedOnce: with no OnDrop, a report is one warning on the module's
// logger, however many writes were dropped.
func TestOutputDropsAreLoggedOnce(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := newEngine(t, sandbox.WithLogger(zap.New(core)))
	m := compile(t, e, referencePath, sandbox.Config{Limits: sandbox.Limits{Output: sandbox.OutputLimits{CallLines: 1}}})
	i := instantiate(t, m, nil)
	mustCall(t, i, "stdout", strings.Repeat("line\n", 1000))
	if err := i.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := logs.FilterMessage("guest output dropped").All()
	if len(w) != 1 || w[0].ContextMap()["bytes"] != uint64(999*5) || w[0].ContextMap()["stream"] != "stdout" {
		t.Fatalf("warnings %v", w)
	}
	if n := logs.FilterMessage("guest output").Len(); n != 1 {
		t.Errorf("%d lines logged, want 1", n)
	}
}

// TestPublishLimits: publishes past the per-second limit are refused with PublishDropped,
// counted and reported; the data of a refused publish never reaches OnPublish.
func TestPublishLimits(t *testing.T) {
	e := newEngine(t)
	var r reports
	var mu sync.Mutex
	var got []string
	m := compile(t, e, referencePath, sandbox.Config{OnDrop: r.add,
		Limits: sandbox.Limits{Publish: sandbox.PublishLimits{SecondMessages: 2}},
		OnPublish: func(topic string, data []byte) bool {
			mu.Lock()
			got = append(got, string(data))
			mu.Unlock()
			return true
		}})
	i := instantiate(t, m, nil)
	t0 := time.Now()
	var accepted int
	for range 5 {
		switch out := mustCall(t, i, "publish", "t\npayload"); out {
		case "0":
			accepted++
		case "1":
		default:
			t.Fatalf("publish returned %q", out)
		}
	}
	windows := 1 + int(time.Since(t0)/time.Second)
	if accepted > 2*windows || len(got) != accepted {
		t.Fatalf("%d publishes accepted (%d delivered) in %d windows of 2", accepted, len(got), windows)
	}
	if err := i.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := i.Stats()
	refused := uint64(5 - accepted)
	if st.Publish.DroppedRecords != refused || st.PublishDropped != refused || st.Publish.DroppedBytes != refused*uint64(len("t")+len("payload")) {
		t.Fatalf("stats %+v, want %d refused", st, refused)
	}
	if b, rec, _ := r.of(sandbox.StreamPublish); b != st.Publish.DroppedBytes || rec != refused {
		t.Fatalf("reported %d bytes %d records", b, rec)
	}
}

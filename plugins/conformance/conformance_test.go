// Package conformance runs one table of ABI behaviours against the conformance plugin built
// in every guest language, each case in a fresh sandbox, with identical expected results.
package conformance_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/testcache"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// cacheDir holds compiled code shared by every package's tests (internal/testcache), so that
// each build compiles once per wazero version and machine; a directory of this binary's own
// when no shared one can be keyed safely.
var cacheDir string

func TestMain(m *testing.M) {
	cacheDir = testcache.Dir()
	if cacheDir == "" {
		dir, err := os.MkdirTemp("", "wasmvisor-conformance-")
		if err != nil {
			panic(err)
		}
		cacheDir = dir
		defer os.RemoveAll(dir)
	}
	goleak.VerifyTestMain(m)
}

// languages maps each guest language to its conformance build. Every one must be present.
var languages = []struct{ name, path string }{
	{"wat", "../reference/reference.wasm"},
	{"go", "go/conformance.wasm"},
	{"rust", "rust/conformance.wasm"},
	{"c", "c/conformance.wasm"},
	{"assemblyscript", "assemblyscript/conformance.wasm"},
}

// want is the expected outcome of one step.
type want struct {
	out    string
	status abi.Status // a GuestError with this status and msg, when non-zero
	msg    string
	fatal  error // sandbox.ErrTrap, ErrDeadline, ErrMemoryLimit or ErrExit
	code   uint32
}

type step struct {
	op      string // "call" (default), "configure", "deliver"
	handler string
	input   string
	config  map[string]string
	want    want
}

type check func(t *testing.T, inst *sandbox.Instance, published []string)

type tcase struct {
	name   string
	limits sandbox.Limits // zero fields: 256 pages, 5s per call
	config map[string]string
	steps  []step
	after  check
}

func call(h, in string, w want) step { return step{handler: h, input: in, want: w} }

func ok(out string) want { return want{out: out} }

func guest(s abi.Status, msg string) want { return want{status: s, msg: msg} }

func configure(c map[string]string, w want) step { return step{op: "configure", config: c, want: w} }

func events(wantLog ...string) check {
	return func(t *testing.T, inst *sandbox.Instance, _ []string) {
		t.Helper()
		log, err := inst.Events(0)
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		var got []string
		for _, e := range log.Events {
			got = append(got, e.Topic+"|"+string(e.Data))
		}
		if !reflect.DeepEqual(got, wantLog) && !(len(got) == 0 && len(wantLog) == 0) {
			t.Errorf("events = %q, want %q", got, wantLog)
		}
	}
}

func metric(name string, value float64) check {
	return func(t *testing.T, inst *sandbox.Instance, _ []string) {
		t.Helper()
		ms, err := inst.Telemetry()
		if err != nil {
			t.Fatalf("Telemetry: %v", err)
		}
		for _, m := range ms {
			if m.Name == name {
				if m.Value != value {
					t.Errorf("metric %s = %v, want %v", name, m.Value, value)
				}
				return
			}
		}
		t.Errorf("no metric %q in %+v", name, ms)
	}
}

func all(cs ...check) check {
	return func(t *testing.T, inst *sandbox.Instance, p []string) {
		t.Helper()
		for _, c := range cs {
			c(t, inst, p)
		}
	}
}

var table = []tcase{
	{name: "echo", steps: []step{call("echo", "hello, world", ok("hello, world")), call("echo", "", ok(""))}},
	{name: "echo large input grows the buffer", steps: []step{call("echo", strings.Repeat("x", 300_000), ok(strings.Repeat("x", 300_000)))}},
	{name: "config pushed at start", config: map[string]string{"greeting": "hi", "mode": "strict"}, steps: []step{
		call("config_get", "greeting", ok("hi")),
		call("config_get", "mode", ok("strict")),
		call("config_get", "absent", guest(abi.StatusError, "missing key")),
		call("config_changes", "", ok("1")),
	}},
	{name: "empty config at start is no change", steps: []step{
		call("config_changes", "", ok("0")),
		call("config_get", "x", guest(abi.StatusError, "missing key")),
	}},
	{name: "config change callbacks", config: map[string]string{"a": "1"}, steps: []step{
		configure(map[string]string{"a": "1"}, ok("")),
		call("config_changes", "", ok("1")),
		configure(map[string]string{"a": "2"}, ok("")),
		call("config_get", "a", ok("2")),
		call("config_changes", "", ok("2")),
		configure(map[string]string{}, ok("")),
		call("config_changes", "", ok("3")),
		call("config_get", "a", guest(abi.StatusError, "missing key")),
	}},
	{name: "config rejected keeps the old one", config: map[string]string{"a": "1"}, steps: []step{
		configure(map[string]string{"a": "2", "reject": "yes"}, guest(abi.StatusConfigRejected, "rejected by plugin")),
		call("config_get", "a", ok("1")),
		call("config_changes", "", ok("1")),
	}, after: func(t *testing.T, inst *sandbox.Instance, _ []string) {
		got, err := inst.AppliedConfig()
		if err != nil || !reflect.DeepEqual(got, map[string]string{"a": "1"}) {
			t.Errorf("AppliedConfig = %v, %v; want map[a:1]", got, err)
		}
	}},
	{name: "events", steps: []step{
		call("emit", "orders\ncreated 42", ok("")),
		call("emit", "audit", ok("")),
		call("emit", "multi\nline\npayload", ok("")),
	}, after: events("orders|created 42", "audit|", "multi|line\npayload")},
	{name: "deliveries are recorded", steps: []step{
		{op: "deliver", input: "news", config: nil, want: ok("")},
	}, after: events("news|payload of news")},
	{name: "publish", steps: []step{
		call("publish", "bus\nhello", ok("0")),
		call("publish", "refused\nx", ok("1")),
	}, after: func(t *testing.T, _ *sandbox.Instance, published []string) {
		if want := []string{"bus|hello", "refused|x"}; !reflect.DeepEqual(published, want) {
			t.Errorf("published = %q, want %q", published, want)
		}
	}},
	{name: "counter", steps: []step{
		call("count", "", ok("")), call("count", "41", ok("")),
		call("count", "x1", guest(abi.StatusInvalidInput, "bad number")),
	}, after: metric("requests_total", 42)},
	{name: "gauge", steps: []step{
		call("gauge", "7", ok("")), call("gauge", "-12", ok("")),
		call("gauge", "1.5", guest(abi.StatusInvalidInput, "bad number")),
	}, after: metric("level", -12)},
	{name: "histogram", steps: []step{
		call("observe", "0", ok("")), call("observe", "1", ok("")), call("observe", "10", ok("")),
		call("observe", "11", ok("")), call("observe", "5000", ok("")),
		call("observe", "", guest(abi.StatusInvalidInput, "bad number")),
	}, after: func(t *testing.T, inst *sandbox.Instance, _ []string) {
		ms, err := inst.Telemetry()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range ms {
			names = append(names, m.Name+":"+m.Kind.String())
			if m.Name != "size" {
				continue
			}
			if !reflect.DeepEqual(m.Bounds, []float64{1, 10, 100, 1000}) || !reflect.DeepEqual(m.Buckets, []uint64{2, 1, 1, 0, 1}) ||
				m.Count != 5 || m.Sum != 5022 {
				t.Errorf("histogram = %+v", m)
			}
		}
		if want := []string{"requests_total:counter", "level:gauge", "size:histogram"}; !reflect.DeepEqual(names, want) {
			t.Errorf("metrics = %v, want %v", names, want)
		}
	}},
	{name: "handler error", steps: []step{
		call("fail", "nope", guest(abi.StatusError, "nope")),
		call("fail", "", guest(abi.StatusError, "failed")),
		call("echo", "still serving", ok("still serving")),
	}},
	{name: "marker", steps: []step{
		call("get", "", ok("")), call("set", "marker-1", ok("")), call("get", "", ok("marker-1")),
		call("set", strings.Repeat("m", 257), guest(abi.StatusInvalidInput, "too long")),
		call("get", "", ok("marker-1")),
	}},
	{name: "log and stdout", steps: []step{call("log", "a log line", ok("")), call("stdout", "to stdout\n", ok(""))}},
	{name: "trap", steps: []step{call("trap", "", want{fatal: sandbox.ErrTrap}), call("echo", "x", want{fatal: sandbox.ErrTrap})}},
	{name: "deadline", limits: sandbox.Limits{CallTimeout: 100 * time.Millisecond}, steps: []step{call("loop", "", want{fatal: sandbox.ErrDeadline}), call("echo", "x", want{fatal: sandbox.ErrDeadline})}},
	{name: "memory limit", steps: []step{call("grow", "", want{fatal: sandbox.ErrMemoryLimit})}},
	{name: "exit code", steps: []step{call("exit", "3", want{fatal: sandbox.ErrExit, code: 3})}},
	{name: "exit zero still ends the instance", steps: []step{call("exit", "0", want{fatal: sandbox.ErrExit, code: 0})}},
	{name: "host functions", steps: []step{
		call("host_call", "kv.get\nalice", ok("v:alice")),
		call("host_call", "kv.get", ok("v:")),
		call("host_call", "secret\nx", guest(abi.StatusError, "denied: secret")),
		call("host_call", "nope\nx", guest(abi.StatusError, "denied: nope")),
		call("host_call", "fails\nx", guest(abi.StatusError, "failed: no such key")),
		call("host_call", "big\n", ok(strings.Repeat("b", 300_000))),
		call("echo", "still serving", ok("still serving")),
	}},
	{name: "stores readable after a trap", steps: []step{
		call("emit", "before\ncrash", ok("")), call("count", "3", ok("")), call("trap", "", want{fatal: sandbox.ErrTrap}),
	}, after: all(events("before|crash"), metric("requests_total", 3))},
}

// hostFuncs are offered to every case's instance; all but "secret" are granted.
var hostFuncs = []sandbox.HostFunc{
	{Name: "kv.get", Func: func(_ context.Context, in []byte) ([]byte, error) { return append([]byte("v:"), in...), nil }},
	{Name: "fails", Func: func(context.Context, []byte) ([]byte, error) { return nil, errors.New("no such key") }},
	{Name: "big", Func: func(context.Context, []byte) ([]byte, error) { return []byte(strings.Repeat("b", 300_000)), nil }},
	{Name: "secret", Func: func(context.Context, []byte) ([]byte, error) { return []byte("leaked"), nil }},
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for _, lang := range languages {
		t.Run(lang.name, func(t *testing.T) {
			wasm, err := os.ReadFile(filepath.FromSlash(lang.path))
			if err != nil {
				t.Fatalf("the %s conformance plugin is missing: %v", lang.name, err)
			}
			eng, err := sandbox.NewEngine(ctx, sandbox.WithCacheDir(cacheDir))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = eng.Close(ctx) })
			// One module per set of limits; every case instantiates afresh.
			p := &plugin{eng: eng, wasm: wasm, mods: map[sandbox.Limits]*sandbox.Module{}}
			for _, tc := range table {
				t.Run(tc.name, func(t *testing.T) { runCase(t, p, tc) })
			}
		})
	}
}

// plugin compiles one language's build once per set of limits. Its publish hook records into
// the running case's list.
type plugin struct {
	eng  *sandbox.Engine
	wasm []byte
	mods map[sandbox.Limits]*sandbox.Module

	mu        sync.Mutex
	published []string
}

func (p *plugin) module(t *testing.T, limits sandbox.Limits) *sandbox.Module {
	if m, ok := p.mods[limits]; ok {
		return m
	}
	m, err := p.eng.Compile(context.Background(), p.wasm, sandbox.Config{
		Limits:       limits,
		HostFuncs:    hostFuncs,
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"kv.get", "fails", "big"}},
		OnPublish: func(topic string, data []byte) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.published = append(p.published, topic+"|"+string(data))
			return topic != "refused"
		},
	})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	p.mods[limits] = m
	return m
}

func runCase(t *testing.T, p *plugin, tc tcase) {
	ctx := context.Background()
	limits := tc.limits
	if limits.MemoryPages == 0 {
		limits.MemoryPages = 256
	}
	p.mu.Lock()
	p.published = nil
	p.mu.Unlock()
	inst, err := p.module(t, limits).Instantiate(ctx, tc.config)
	if err != nil {
		t.Fatalf("Instantiate: %v", err)
	}
	t.Cleanup(func() { _ = inst.Close(ctx) })
	if got := inst.Handlers(); strings.Join(got, " ") != "echo config_get config_changes emit publish count gauge observe fail trap loop grow set get exit log stdout host_call" {
		t.Fatalf("handlers = %v", got)
	}
	for n, s := range tc.steps {
		var out []byte
		var err error
		switch s.op {
		case "configure":
			err = inst.Configure(ctx, s.config)
		case "deliver":
			err = inst.Deliver(ctx, s.input, []byte("payload of "+s.input))
		default:
			out, err = inst.Call(ctx, s.handler, []byte(s.input))
		}
		checkStep(t, n, s, out, err)
	}
	if tc.after != nil {
		p.mu.Lock()
		published := append([]string(nil), p.published...)
		p.mu.Unlock()
		tc.after(t, inst, published)
	}
}

func checkStep(t *testing.T, n int, s step, out []byte, err error) {
	t.Helper()
	w := s.want
	label := s.handler
	if s.op != "" {
		label = s.op
	}
	switch {
	case w.fatal != nil:
		if !errors.Is(err, w.fatal) {
			t.Fatalf("step %d %s: err = %v, want %v", n, label, err, w.fatal)
		}
		if !sandbox.Fatal(err) {
			t.Errorf("step %d %s: %v is not fatal", n, label, err)
		}
		if errors.Is(w.fatal, sandbox.ErrExit) {
			var ee *sandbox.ExitError
			if !errors.As(err, &ee) || ee.Code != w.code {
				t.Errorf("step %d %s: err = %v, want exit code %d", n, label, err, w.code)
			}
		}
	case w.status != abi.StatusOK:
		var ge *sandbox.GuestError
		if !errors.As(err, &ge) || ge.Status != w.status || ge.Message != w.msg {
			t.Fatalf("step %d %s(%.40q): err = %v, want guest %s %q", n, label, s.input, err, w.status, w.msg)
		}
	default:
		if err != nil {
			t.Fatalf("step %d %s(%.40q): %v", n, label, s.input, err)
		}
		if string(out) != w.out {
			t.Fatalf("step %d %s(%.40q) = %.60q, want %.60q", n, label, s.input, out, w.out)
		}
	}
}

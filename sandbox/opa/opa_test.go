package opa_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/opa"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// policy reads the corpus policy name (plugins/rego/<name>/policy.wasm).
func policy(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "plugins", "rego", name, "policy.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compile(t testing.TB, name string, limits sandbox.Limits) *opa.Module {
	t.Helper()
	m, err := opa.Compile(context.Background(), policy(t, name), sandbox.Config{Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func instance(t testing.TB, m *opa.Module, config map[string]string) *opa.Instance {
	t.Helper()
	i, err := m.Instantiate(context.Background(), config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = i.Close(context.Background()) })
	return i
}

const exampleData = `{"roles":{"alice":["reader"],"bob":["writer","reader"]},"grants":{"reader":["read"],"writer":["write"]}}`

func TestDetect(t *testing.T) {
	for _, name := range []string{"authz", "example", "strings", "spin", "httpsend"} {
		if !opa.IsPolicy(policy(t, name)) {
			t.Errorf("%s: not detected", name)
		}
	}
	native, err := os.ReadFile(filepath.Join("..", "..", "plugins", "authz", "authz.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"native": native, "empty": nil, "garbage": []byte("\x00asm\x01\x00\x00\x00\x02\xff")} {
		if opa.IsPolicy(b) {
			t.Errorf("%s: detected as a policy", name)
		}
	}
}

func TestEvaluate(t *testing.T) {
	m := compile(t, "example", sandbox.Limits{})
	if got, want := m.Handlers(), []string{"default", "example/allow", "example/reasons"}; !equal(got, want) {
		t.Fatalf("handlers %q, want %q", got, want)
	}
	for _, path := range []string{"opa_eval", "eval context"} {
		t.Run(path, func(t *testing.T) {
			i := instance(t, m, map[string]string{opa.ConfigData: exampleData})
			if path == "eval context" {
				if err := i.UseEvalContext(); err != nil {
					t.Fatal(err)
				}
			}
			evaluate(t, i)
		})
	}
}

func evaluate(t *testing.T, i *opa.Instance) {
	t.Helper()
	for _, c := range []struct{ handler, input, want string }{
		{"example/allow", `{"user":"alice","action":"read"}`, `[{"result":true}]`},
		{"example/allow", `{"user":"alice","action":"write"}`, `[{"result":false}]`},
		{"example/allow", `{"user":"bob","action":"write"}`, `[{"result":true}]`},
		{"example/allow", `{"user":"root","action":"anything"}`, `[{"result":true}]`},
		{"example/reasons", `{"user":"carol"}`, `[{"result":["user carol has no role"]}]`},
		{"example/reasons", `{"user":"alice"}`, `[{"result":[]}]`},
		{"default", `{"user":"alice","action":"write"}`, `[{"result":false}]`}, // entrypoint 0, the first -e: example/allow
		{"default", `{"user":"alice","action":"read"}`, `[{"result":true}]`},
	} {
		for range 3 { // the heap is reset between evaluations: same answer each time
			out, err := i.Call(context.Background(), c.handler, []byte(c.input))
			if err != nil {
				t.Fatalf("%s %s: %v", c.handler, c.input, err)
			}
			if string(out) != c.want {
				t.Fatalf("%s %s: %s, want %s", c.handler, c.input, out, c.want)
			}
		}
	}
	if _, err := i.Call(context.Background(), "example/nope", []byte(`{}`)); !errors.Is(err, sandbox.ErrUnknownHandler) {
		t.Fatalf("unknown handler: %v", err)
	}
	var ge *sandbox.GuestError
	if _, err := i.Call(context.Background(), "example/allow", []byte(`{"user":`)); !errors.As(err, &ge) {
		t.Fatalf("bad input: %v", err)
	}
	if i.Err() != nil {
		t.Fatalf("instance ended: %v", i.Err())
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if a[k] != b[k] {
			return false
		}
	}
	return true
}

func TestHeapDoesNotGrow(t *testing.T) {
	i := instance(t, compile(t, "example", sandbox.Limits{}), map[string]string{opa.ConfigData: exampleData})
	call := func() {
		if _, err := i.Call(context.Background(), "example/reasons", []byte(`{"user":"carol"}`)); err != nil {
			t.Fatal(err)
		}
	}
	call()
	pages := i.MemoryPages()
	for range 2000 {
		call()
	}
	if got := i.MemoryPages(); got != pages {
		t.Fatalf("memory grew from %d to %d pages over 2000 calls: the heap is not reset", pages, got)
	}
}

func TestConfigureData(t *testing.T) {
	i := instance(t, compile(t, "example", sandbox.Limits{}), map[string]string{opa.ConfigData: exampleData})
	allow := func() string {
		t.Helper()
		out, err := i.Call(context.Background(), "example/allow", []byte(`{"user":"carol","action":"read"}`))
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if got := allow(); got != `[{"result":false}]` {
		t.Fatalf("before: %s", got)
	}
	if err := i.Configure(context.Background(), map[string]string{opa.ConfigData: `{"roles":{"carol":["reader"]},"grants":{"reader":["read"]}}`}); err != nil {
		t.Fatal(err)
	}
	if got := allow(); got != `[{"result":true}]` {
		t.Fatalf("after: %s", got)
	}
	err := i.Configure(context.Background(), map[string]string{opa.ConfigData: `{"roles":`})
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) || ge.Status != abi.StatusConfigRejected || sandbox.Fatal(err) {
		t.Fatalf("bad data: %v", err)
	}
	if got := allow(); got != `[{"result":true}]` {
		t.Fatalf("after a refused document: %s, the last good one should stay", got)
	}
	if _, err := compile(t, "example", sandbox.Limits{}).Instantiate(context.Background(), map[string]string{opa.ConfigData: "nope"}); !errors.Is(err, sandbox.ErrInvalidConfig) {
		t.Fatalf("bad data at start: %v", err)
	}
}

func TestBuiltinRefused(t *testing.T) {
	_, err := opa.Compile(context.Background(), policy(t, "httpsend"), sandbox.Config{})
	var be *opa.BuiltinError
	if !errors.As(err, &be) || !errors.Is(err, opa.ErrBuiltin) || !errors.Is(err, sandbox.ErrInvalidModule) {
		t.Fatalf("got %v, want a *BuiltinError", err)
	}
	if !equal(be.Names, []string{"http.send"}) || !equal(be.Needs, []string{"http.send"}) {
		t.Fatalf("names %q, needs %q", be.Names, be.Needs)
	}
}

// http.send is refused unless granted, like every capability: a host function named
// http.send, offered by the embedder (Config.HostFuncs) and granted to the plugin
// (Capabilities.HostFunctions), serves the builtin. It gets the operands as a JSON array and
// answers the result; its error makes the expression undefined (an empty result set).
func TestBuiltinGranted(t *testing.T) {
	ctx := context.Background()
	var got []string
	send := sandbox.HostFunc{Name: "http.send", Func: func(ctx context.Context, in []byte) ([]byte, error) {
		got = append(got, string(in))
		var ops []map[string]any
		if err := json.Unmarshal(in, &ops); err != nil || len(ops) != 1 {
			return nil, fmt.Errorf("operands %s", in)
		}
		if ops[0]["url"] == "http://fail" {
			return nil, errors.New("unreachable")
		}
		return []byte(`{"status_code":204,"body":null}`), nil
	}}
	// Offered but not granted: still refused.
	if _, err := opa.Compile(ctx, policy(t, "httpsend"), sandbox.Config{HostFuncs: []sandbox.HostFunc{send}}); !errors.Is(err, opa.ErrBuiltin) {
		t.Fatalf("offered, not granted: %v, want a *BuiltinError", err)
	}
	m, err := opa.Compile(ctx, policy(t, "httpsend"), sandbox.Config{HostFuncs: []sandbox.HostFunc{send},
		Capabilities: sandbox.Capabilities{HostFunctions: []string{"http.send"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(ctx) })
	i := instance(t, m, nil)
	out, err := i.Call(ctx, "httpsend/status", []byte(`{"url":"http://example.internal/x"}`))
	if err != nil || string(out) != `[{"result":204}]` {
		t.Fatalf("granted: %s, %v", out, err)
	}
	var ops []map[string]string
	if len(got) != 1 || json.Unmarshal([]byte(got[0]), &ops) != nil || len(ops) != 1 ||
		ops[0]["method"] != "GET" || ops[0]["url"] != "http://example.internal/x" || len(ops[0]) != 2 {
		t.Fatalf("the function got %q", got)
	}
	if out, err := i.Call(ctx, "httpsend/status", []byte(`{"url":"http://fail"}`)); err != nil || string(out) != `[]` {
		t.Fatalf("a failing function: %s, %v; want an undefined result", out, err)
	}
}

// TestBuiltinsListed: a compiled policy lists the builtins it needs from the host, all
// provided; one that needs none lists none.
func TestBuiltinsListed(t *testing.T) {
	got := compile(t, "hostbuiltins", sandbox.Limits{}).Builtins()
	if len(got) != 20 || !slices.IsSorted(got) {
		t.Fatalf("builtins %q: want the 20 that hostbuiltins.rego calls, sorted", got)
	}
	provided := opa.Provided()
	for _, n := range got {
		if _, ok := slices.BinarySearch(provided, n); !ok {
			t.Errorf("%s needed and not in Provided", n)
		}
	}
	if got := compile(t, "authz", sandbox.Limits{}).Builtins(); !slices.Contains(got, "sprintf") {
		t.Fatalf("authz: %q, want sprintf among them (served by this package, not sandbox/opa/builtins)", got)
	}
	if got := compile(t, "example", sandbox.Limits{}).Builtins(); len(got) != 0 {
		t.Fatalf("example: %q", got)
	}
}

func TestDeadline(t *testing.T) {
	i := instance(t, compile(t, "spin", sandbox.Limits{CallTimeout: 50 * time.Millisecond}), nil)
	t0 := time.Now()
	_, err := i.Call(context.Background(), "spin/never", []byte(`{}`))
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) || de.Caller {
		t.Fatalf("got %v, want the call's deadline", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("stopped after %v", d)
	}
	if !sandbox.Fatal(err) || i.Err() == nil {
		t.Fatalf("the instance should have ended: %v", i.Err())
	}
}

func TestCallerContext(t *testing.T) {
	i := instance(t, compile(t, "spin", sandbox.Limits{CallTimeout: sandbox.NoTimeout}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := i.Call(ctx, "spin/never", []byte(`{}`))
	var de *sandbox.DeadlineError
	if !errors.As(err, &de) || !de.Caller {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
}

func TestMemoryLimit(t *testing.T) {
	m := compile(t, "spin", sandbox.Limits{MemoryPages: 64})
	i := instance(t, m, nil)
	_, err := i.Call(context.Background(), "spin/big", []byte(`{}`))
	var me *sandbox.MemoryLimitError
	if !errors.As(err, &me) || me.LimitPages != 64 {
		t.Fatalf("got %v, want a *MemoryLimitError", err)
	}
	if i.MemoryPages() > 64 {
		t.Fatalf("memory at %d pages", i.MemoryPages())
	}
	// An input that does not fit is the same error.
	j := instance(t, m, nil)
	big := make([]byte, 0, 5<<20)
	big = append(big, '"')
	for len(big) < 5<<20 {
		big = append(big, 'x')
	}
	big = append(big, '"')
	if _, err := j.Call(context.Background(), "spin/never", big); !errors.As(err, &me) {
		t.Fatalf("big input: %v", err)
	}
}

func TestEngineLoad(t *testing.T) {
	e, err := sandbox.NewEngine(context.Background(), sandbox.WithFormats(opa.Format()))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	c, err := e.Load(context.Background(), policy(t, "example"), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if c.Format() != opa.Name {
		t.Fatalf("format %q", c.Format())
	}
	r, err := c.Instantiate(context.Background(), map[string]string{opa.ConfigData: exampleData})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	out, err := r.CallAppend(context.Background(), "example/allow", []byte(`{"user":"bob","action":"write"}`), nil)
	if err != nil || string(out) != `[{"result":true}]` {
		t.Fatalf("%s %v", out, err)
	}
}

func TestAbort(t *testing.T) {
	i := instance(t, compile(t, "spin", sandbox.Limits{}), nil)
	if out, err := i.Call(context.Background(), "spin/conflict", []byte(`{"a":true}`)); err != nil || string(out) != `[{"result":1}]` {
		t.Fatalf("no conflict: %s %v", out, err)
	}
	_, err := i.Call(context.Background(), "spin/conflict", []byte(`{"a":true,"b":true}`))
	var te *sandbox.TrapError
	if !errors.As(err, &te) || !strings.Contains(te.Message, "opa_abort") {
		t.Fatalf("got %v, want a trap from opa_abort", err)
	}
	t.Log(err)
	if !sandbox.Fatal(err) || !errors.Is(i.Err(), sandbox.ErrTrap) {
		t.Fatalf("the instance should have ended: %v", i.Err())
	}
}

func TestPrintMetered(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	var drops []sandbox.DropReport
	m, err := opa.Compile(context.Background(), policy(t, "print"), sandbox.Config{
		Logger: zap.New(core),
		Limits: sandbox.Limits{Output: sandbox.OutputLimits{CallLines: 10}},
		OnDrop: func(d sandbox.DropReport) { drops = append(drops, d) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	i := instance(t, m, nil)
	out, err := i.Call(context.Background(), "print/loud", []byte(`{"lines":100}`))
	if err != nil || string(out) != `[]` {
		t.Fatalf("%s %v", out, err)
	}
	if n := logs.FilterMessage("guest log").Len(); n != 10 {
		t.Fatalf("%d lines logged, want 10 (CallLines)", n)
	}
	if got := logs.FilterMessage("guest log").All()[0].ContextMap()["message"]; got != "line 1" {
		t.Fatalf("first line %q", got)
	}
	if st := i.Stats(); st.Log.DroppedRecords != 90 {
		t.Fatalf("stats %+v, want 90 of the 100 lines dropped", st)
	}
	if len(drops) != 1 || drops[0].Records != 90 || !drops[0].CallLimit {
		t.Fatalf("drop reports %+v", drops)
	}
}

// time.now_ns answers the evaluation's instant, the same for every call in one evaluation:
// under the default deterministic clock the fixed instant where wazero's fake wall clock
// starts (2022-01-01T00:00:00Z), so that a policy's tests are reproducible; with ClockReal
// the host's time when the call started.
func TestClock(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		clock sandbox.Clock
	}{{"deterministic", sandbox.ClockDeterministic}, {"real", sandbox.ClockReal}} {
		t.Run(c.name, func(t *testing.T) {
			m, err := opa.Compile(ctx, policy(t, "clock"), sandbox.Config{Capabilities: sandbox.Capabilities{Clock: c.clock}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Close(ctx) })
			i := instance(t, m, nil)
			before := time.Now()
			out, err := i.Call(ctx, "clock/result", []byte(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			var rs []struct {
				Result struct {
					Now  int64 `json:"now"`
					Same bool  `json:"same"`
				} `json:"result"`
			}
			if err := json.Unmarshal(out, &rs); err != nil || len(rs) != 1 {
				t.Fatalf("result %s: %v", out, err)
			}
			r := rs[0].Result
			if !r.Same {
				t.Errorf("two time.now_ns of one evaluation differ: %s", out)
			}
			switch c.clock {
			case sandbox.ClockDeterministic:
				if want := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(); r.Now != want {
					t.Errorf("now %d, want the fixed %d", r.Now, want)
				}
			case sandbox.ClockReal:
				if now := time.Unix(0, r.Now); now.Before(before.Add(-time.Second)) || now.After(time.Now()) {
					t.Errorf("now %v, want the call's time (%v)", now, before)
				}
			}
		})
	}
}

package casetest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/casetest"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

const referenceWasm = "../plugins/reference/reference.wasm"

func parse(t *testing.T, src string) *casetest.File {
	t.Helper()
	f, err := casetest.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readWasm(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(referenceWasm)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every step kind, passing, against the reference plugin.
const passing = `
config: {k: v}
cases:
  - {name: call, handler: echo, input: hi, output: hi}
  - {name: config at start, handler: config_get, input: k, output: v}
  - name: configure applied and rejected
    steps:
      - {configure: {k: w}}
      - {handler: config_get, input: k, output: w}
      - {configure: {reject: x}, error: {kind: guest, status: config_rejected, message: rejected}}
      - {handler: config_get, input: k, output: w}
  - name: config rejected at start
    config: {reject: x}
    handler: echo
    error: {kind: guest, status: config_rejected}
  - name: deliver accepted
    steps:
      - {deliver: {topic: in, data: payload}}
      - {deliver: {topic: in, data_json: {a: 1}}}
  - name: published
    steps:
      - {handler: publish, input: "out\n{\"b\": 2}", output: "0", published: [{topic: out, data_json: {b: 2}}]}
      - {handler: publish, input: "other\nx", output: "0", published: []}
      - {handler: publish, input: "out\ny", output: "0", published: [{topic: out, data: y}]}
  - {name: deadline, handler: loop, limits: {timeout: 50ms}, error: deadline}
  - {name: memory limit, handler: grow, limits: {memory_pages: 32}, error: memory_limit}
  - {name: start timeout is a limit, handler: echo, limits: {start_timeout: 5s}, output: ""}
  - {name: capabilities, handler: echo, capabilities: {clock: real, random: crypto, env: {A: b}}, input: x, output: x}
  - {name: exit, handler: exit, input: "3", error: {kind: exit, code: 3}}
`

func TestRunPasses(t *testing.T) {
	casetest.Run(t, readWasm(t), parse(t, passing), casetest.Options{})
}

func TestExecute(t *testing.T) {
	f := parse(t, passing)
	rep, err := casetest.Execute(context.Background(), readWasm(t), f, casetest.Options{
		Filter: func(name string) bool { return strings.HasPrefix(name, "config") },
	})
	if err != nil {
		t.Fatal(err)
	}
	if p, fl := rep.Counts(); p != 3 || fl != 0 {
		t.Fatalf("passed %d, failed %d: %+v", p, fl, rep)
	}
	if _, err := casetest.Execute(context.Background(), []byte("junk"), f, casetest.Options{}); err == nil || !strings.Contains(err.Error(), "invalid module") {
		t.Fatalf("junk module: %v", err)
	}
}

// fakeTB records failures instead of failing the test.
type fakeTB struct {
	testing.TB
	errs []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func TestRunFails(t *testing.T) {
	f := parse(t, `
cases:
  - {name: wrong output, handler: echo, input: a, output: b}
  - name: wrong steps
    steps:
      - {configure: {reject: x}}
      - {configure: {k: v}, error: guest}
      - {deliver: {topic: in, data: x}, error: trap}
      - {handler: publish, input: "out\nx", output: "0", published: [{topic: out, data: y}]}
      - {handler: fail, input: boom, error: {kind: guest, message: bang}}
`)
	ft := &fakeTB{TB: t}
	casetest.Run(ft, readWasm(t), f, casetest.Options{})
	got := strings.Join(ft.errs, "\n")
	for _, want := range []string{
		"case \"wrong output\":\n\toutput: got `a`, want `b`",
		"step 1: configure: got error (guest) configure: guest error (config rejected): rejected by plugin, want the config applied",
		"step 2: error: configure succeeded, want error guest",
		"step 3: error: deliver succeeded, want error trap",
		"step 4: published: got [out `x`], want [out `y`]",
		`step 5: error: message "boom" does not contain "bang"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("failures lack %q:\n%s", want, got)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"cases:\n  - {name: a, steps: [{configure: {k: v}, handler: h}]}", `step 1: field "handler": a configure step has configure, error, published, events, metrics, applied_config only`},
		{"cases:\n  - {name: a, steps: [{deliver: {data: x}}]}", `field "deliver": topic: missing`},
		{"cases:\n  - {name: a, handler: h, output: x, published: [{topic: t, data: x, data_json: 1}]}", `field "published": message 1: give data or data_json, not both`},
		{"cases:\n  - {name: a, handler: h, output: x, capabilities: {clock: fast}}", `field "capabilities": clock: "fast": want deterministic or real`},
		{"cases:\n  - {name: a, handler: h, output: x, limits: {start_timeout: 0s}}", `start_timeout "0s": want a positive duration`},
		{"cases:\n  - {name: a, handler: h, input: {repeat: x}, output: x}", `field "input": want a string, or {repeat: TEXT, count: N}`},
		{"cases:\n  - {name: a, handler: h, input: {repeat: xx, count: 40000000}, output: x}", `field "input": repeat: 40000000 × 2 bytes is over 67108864`},
		{"cases:\n  - {name: a, handler: h, output: {repeat: x, count: -1}}", `field "output": count "-1": want a non-negative integer`},
		{"cases:\n  - {name: a, handler: h, output: x, refuse_publish: [t]}", `field "refuse_publish": goes with instance: true`},
		{"instance: yes\ncases:\n  - {name: a, handler: h, output: x}", `line 1: field "instance": want true or false`},
		{"cases:\n  - {name: a, handler: h, output: x, metrics: [{name: m, kind: timer}]}", `field "metrics": metric 1: kind: "timer": want counter, gauge or histogram`},
		{"cases:\n  - {name: a, handler: h, output: x, metrics: [{name: m, kind: histogram, value: 1}]}", `metric 1: value: a histogram has bounds`},
		{"cases:\n  - {name: a, handler: h, output: x, metrics: [{name: m, kind: counter, count: 1}]}", `metric 1: bounds, buckets, count and sum go with kind histogram`},
		{"cases:\n  - {name: a, handler: h, output: x, metrics: [{kind: counter}]}", `metric 1: name: missing`},
		{"cases:\n  - {name: a, handler: h, output: x, metrics: [{name: m, kind: gauge, value: high}]}", `metric 1: value: want a number`},
		{"cases:\n  - {name: a, handler: h, error: {kind: guest, message: a, message_exact: a}}", `give message or message_exact, not both`},
		{"cases:\n  - {name: a, handler: h, error: {kind: trap, message_exact: a}}", `status, message and message_exact go with kind guest, not trap`},
		{"cases:\n  - {name: a, steps: [{deliver: {topic: t, data: x}, events: {topic: t}}]}", `step 1: field "events": want a list of messages`},
		{"cases:\n  - {name: a, handler: h, output: x, applied_config: [a]}", `field "applied_config": want a mapping`},
	} {
		_, err := casetest.Parse(strings.NewReader(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\ngot %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

// The instance mode, the store expectations, repeated texts, exact messages and host
// functions, against the reference plugin.
const stores = `
capabilities: {host_functions: [kv.get, big]}
cases:
  - name: a trap ends the instance for good
    instance: true
    steps:
      - {handler: emit, input: "before\ncrash", output: ""}
      - {handler: count, input: "2", output: ""}
      - {handler: trap, error: trap}
      - handler: echo
        input: x
        error: trap
        events: [{topic: before, data: crash}]
        metrics:
          - {name: requests_total, kind: counter, value: 2}
          - {name: level, kind: gauge, value: 0}
          - {name: size, kind: histogram, bounds: [1, 10, 100, 1000], buckets: [0, 0, 0, 0, 0], count: 0, sum: 0}
  - name: a host restarts it
    steps:
      - {handler: trap, error: trap}
      - {handler: echo, input: x, output: x, events: [], applied_config: {}}
  - name: stores through the host
    config: {a: "1"}
    steps:
      - {handler: emit, input: "t\nd", output: "", events: [{topic: t, data: d}]}
      - {handler: observe, input: "10", output: ""}
      - handler: observe
        input: "5000"
        output: ""
        metrics:
          - {name: requests_total, kind: counter}
          - {name: level, kind: gauge}
          - {name: size, kind: histogram, buckets: [0, 1, 0, 0, 1], count: 2, sum: 5010}
      - {configure: {a: "2", reject: x}, error: {kind: guest, status: config_rejected, message_exact: rejected by plugin}, applied_config: {a: "1"}}
  - name: refused publishes
    instance: true
    refuse_publish: [no]
    steps:
      - {handler: publish, input: "yes\nx", output: "0", published: [{topic: yes, data: x}]}
      - {handler: publish, input: "no\ny", output: "1", published: [{topic: no, data: y}]}
  - name: deliveries into an instance
    instance: true
    steps:
      - deliver: {topic: news, data: {repeat: ab, count: 3}}
        events: [{topic: news, data: ababab}]
  - name: large texts
    steps:
      - {handler: echo, input: {repeat: xyz, count: 100000}, output: {repeat: xyz, count: 100000}}
      - {handler: host_call, input: "big\n", output: {repeat: b, count: 1000}}
      - {handler: host_call, input: "kv.get\nk", output: "v:k"}
      - {handler: host_call, input: "fails\nx", error: {kind: guest, status: error, message_exact: "denied: fails"}}
  - name: exit zero
    instance: true
    steps:
      - {handler: exit, input: "0", error: {kind: exit, code: 0}}
      - {handler: echo, error: {kind: exit, code: 0}}
`

var testHostFuncs = []sandbox.HostFunc{
	{Name: "kv.get", Func: func(_ context.Context, in []byte) ([]byte, error) { return append([]byte("v:"), in...), nil }},
	{Name: "big", Func: func(context.Context, []byte) ([]byte, error) { return []byte(strings.Repeat("b", 1000)), nil }},
	{Name: "fails", Func: func(context.Context, []byte) ([]byte, error) { return nil, errors.New("never called: not granted") }},
}

func TestStoresAndInstances(t *testing.T) {
	casetest.Run(t, readWasm(t), parse(t, stores), casetest.Options{HostFuncs: testHostFuncs})
}

func TestStoresFail(t *testing.T) {
	f := parse(t, `
instance: true
cases:
  - name: wrong stores
    steps:
      - {handler: emit, input: "t\nd", output: "", events: [{topic: t, data: e}]}
      - handler: count
        input: "1"
        output: ""
        metrics: [{name: requests_total, kind: counter, value: 2}, {name: level, kind: gauge}, {name: size, kind: histogram}]
      - {handler: count, input: "1", output: "", metrics: [{name: requests_total, kind: counter}]}
      - {handler: fail, input: boom, error: {kind: guest, message_exact: boo}}
      - {handler: echo, output: "", applied_config: {a: "1"}}
      - {handler: trap, error: trap}
      - {handler: echo, output: ""}
`)
	ft := &fakeTB{TB: t}
	casetest.Run(ft, readWasm(t), f, casetest.Options{})
	got := strings.Join(ft.errs, "\n")
	for _, want := range []string{
		"step 1: events: got [t `d`], want [t `e`]",
		"step 2: metrics: requests_total: value 1, want 2",
		"step 3: metrics: got [requests_total (counter), level (gauge), size (histogram)], want [requests_total (counter)]",
		"step 4: error: message `boom`, want `boo`",
		"step 5: applied_config: got map[], want map[a:1]",
		"step 7: output: got error (trap)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("failures lack %q:\n%s", want, got)
		}
	}
}

// TestMain checks that every case's host ended its goroutines.
func TestMain(m *testing.M) { hosttest.VerifyTestMain(m) }

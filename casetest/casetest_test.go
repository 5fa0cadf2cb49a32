package casetest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/casetest"
	"github.com/wasmvisor/wasmvisor/host/hosttest"
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
		{"cases:\n  - {name: a, steps: [{configure: {k: v}, handler: h}]}", `step 1: field "handler": a configure step has configure, error and published only`},
		{"cases:\n  - {name: a, steps: [{deliver: {data: x}}]}", `field "deliver": topic: missing`},
		{"cases:\n  - {name: a, handler: h, output: x, published: [{topic: t, data: x, data_json: 1}]}", `field "published": message 1: give data or data_json, not both`},
		{"cases:\n  - {name: a, handler: h, output: x, capabilities: {clock: fast}}", `field "capabilities": clock: "fast": want deterministic or real`},
		{"cases:\n  - {name: a, handler: h, output: x, limits: {start_timeout: 0s}}", `start_timeout "0s": want a positive duration`},
	} {
		_, err := casetest.Parse(strings.NewReader(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\ngot %v\nwant %q", tc.yaml, err, tc.want)
		}
	}
}

// TestMain checks that every case's host ended its goroutines.
func TestMain(m *testing.M) { hosttest.VerifyTestMain(m) }

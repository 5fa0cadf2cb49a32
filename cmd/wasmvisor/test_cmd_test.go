package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runTestCmd runs `wasmvisor test` with args and returns the exit code the CLI would give,
// stdout and stderr. It mirrors run() until main.go registers the command.
func runTestCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newTestCmd(&out, &errOut)
	cmd.SetArgs(args) // the cache is in TestMain's XDG_CACHE_HOME
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	code := exitOK
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		errOut.WriteString("wasmvisor: " + oneLine(err.Error()) + "\n")
		code = exitCode(err)
	}
	return code, out.String(), errOut.String()
}

func writeCases(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cases.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	authzWasm     = "../../plugins/authz/authz.wasm"
	referenceWasm = "../../plugins/reference/reference.wasm"
	miniWasm      = "../../sandbox/testdata/mini.wasm"
)

// TestExamplePolicyCases runs the cases file of every example policy: they must all pass.
func TestExamplePolicyCases(t *testing.T) {
	for _, name := range []string{"authz", "validate", "ratelimit"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "..", "plugins", name)
			code, out, errOut := runTestCmd(t, filepath.Join(dir, name+".wasm"), filepath.Join(dir, "cases.yaml"))
			if code != exitOK || !strings.Contains(out, " passed, 0 failed\n") {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
		})
	}
}

// TestTestInstanceCases runs instance cases through the command: a trap is not restarted,
// and the instance's stores are checked.
func TestTestInstanceCases(t *testing.T) {
	cases := writeCases(t, `
instance: true
cases:
  - name: no restart
    steps:
      - {handler: emit, input: "t\nd", output: ""}
      - {handler: trap, error: trap}
      - {handler: echo, input: x, error: trap, events: [{topic: t, data: d}]}
  - name: large echo
    handler: echo
    input: {repeat: ab, count: 100000}
    output: {repeat: ab, count: 99999}
`)
	code, out, errOut := runTestCmd(t, referenceWasm, cases)
	if code != exitFailure || !strings.Contains(out, "1 passed, 1 failed") || !strings.Contains(out, "FAIL large echo: output: got `abab") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestTestPassingAndVerbose(t *testing.T) {
	cases := writeCases(t, `
handler: evaluate
cases:
  - name: admin deletes
    input_json: {subject: {id: root, roles: [admin]}, action: delete, resource: {type: document}}
    output_json: {reasons: ['role "admin" grants "delete" on "document"'], allow: true}
  - name: viewer may not delete
    input: '{"subject":{"id":"a","roles":["viewer"]},"action":"delete","resource":{"type":"document"}}'
    output_contains: '"allow":false'
`)
	code, out, _ := runTestCmd(t, authzWasm, cases)
	if code != 0 || out != "wasmvisor test: 2 passed, 0 failed\n" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	code, out, _ = runTestCmd(t, authzWasm, cases, "-v", "--run", "^viewer")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ok   viewer may not delete (") || lines[1] != "wasmvisor test: 1 passed, 0 failed" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
}

func TestTestFailing(t *testing.T) {
	cases := writeCases(t, `
handler: evaluate
cases:
  - name: passes
    input_json: {subject: {id: root, roles: [admin]}, action: delete, resource: {type: document}}
    output_contains: '"allow":true'
  - name: wrong decision
    input_json: {subject: {id: a, roles: [viewer]}, action: delete, resource: {type: document}}
    output_json: {allow: true, reasons: [x], extra: 1}
  - name: wrong exact output
    input_json: {subject: {id: root, roles: [admin]}, action: read, resource: {type: document}}
    output: 'nope'
  - name: error expected but output
    input_json: {subject: {id: root, roles: [admin]}, action: read, resource: {type: document}}
    error: trap
  - name: wrong status
    input: '{'
    error: {kind: guest, status: error}
  - name: output expected but error
    input: '{'
    output_contains: allow
`)
	code, out, _ := runTestCmd(t, authzWasm, cases)
	if code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	for _, want := range []string{
		"FAIL wrong decision: output_json: $.allow: got false, want true, $.extra: missing, want 1, " +
			`$.reasons[0]: got "no role of subject \"a\" grants \"delete\" on \"document\"", want "x"` + "\n",
		"FAIL wrong exact output: output: got `{\"allow\":true,",
		"FAIL error expected but output: error: got output `{\"allow\":true",
		"want error trap\n",
		"FAIL wrong status: error: got status invalid_input: guest error (invalid input): malformed request: json: unexpected end of input, want a key at offset 1, want status error\n",
		"FAIL output expected but error: output_contains: got error (guest) call: guest error (invalid input)",
		"wasmvisor test: 1 passed, 5 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "FAIL passes") {
		t.Errorf("a passing case reported:\n%s", out)
	}
}

func TestTestErrorKinds(t *testing.T) {
	cases := writeCases(t, `
cases:
  - {name: guest error, handler: fail, input: boom, error: {kind: guest, status: error, message: boom}}
  - {name: guest matches any status, handler: fail, error: guest}
  - {name: trap, handler: trap, error: trap}
  - {name: deadline, handler: loop, limits: {timeout: 50ms}, error: deadline}
  - {name: memory limit, handler: grow, limits: {memory_pages: 32}, error: memory_limit}
  - {name: exit, handler: exit, input: "3", error: {kind: exit, code: 3}}
  - {name: exit wrong code, handler: exit, input: "3", error: {kind: exit, code: 4}}
  - {name: unknown handler, handler: nope, error: unknown_handler}
  - {name: unknown handler as guest status, handler: nope, error: {kind: guest, status: unknown_handler}}
  - {name: trap is not deadline, handler: trap, error: deadline}
  - name: steps share one instance
    steps:
      - {handler: set, input: v1, output: ""}
      - {handler: get, output: v1}
  - name: a fresh instance per case
    handler: get
    output: ""
`)
	code, out, errOut := runTestCmd(t, referenceWasm, cases)
	t.Log(out)
	for _, want := range []string{
		"FAIL exit wrong code: error: got guest exited with code 3, want exit code 4\n",
		"FAIL trap is not deadline: error: got trap: ",
		"wasmvisor test: 10 passed, 2 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s%s", want, out, errOut)
		}
	}
	if code != exitFailure {
		t.Errorf("exit %d", code)
	}
	// The ABI violation kind, from a plugin that breaks the ABI.
	cases = writeCases(t, `
cases:
  - {name: bad output, handler: badout, error: abi_violation}
  - {name: bad status, handler: badstatus, error: abi_violation}
`)
	if code, out, errOut := runTestCmd(t, miniWasm, cases); code != 0 {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
}

func TestTestInvalidFile(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`cases: [`, "not valid YAML"},
		{`- a`, `want a mapping with a "cases" list`},
		{`handler: x`, `field "cases": missing or empty`},
		{`cases: [{handler: x, output: ""}]`, `case #1 (line 1): field "name": missing`},
		{"cases:\n  - {name: a, handler: x}", `case "a" (#1, line 2): field "output": missing expectation`},
		{"cases:\n  - {name: a, output: x}", `case "a" (#1, line 2): field "handler": missing`},
		{"cases:\n  - {name: a, handler: h, output: x, output_json: {}}", `case "a" (#1, line 2): field "output_json": one expectation per call: output is given too`},
		{"cases:\n  - {name: a, handler: h, input: x, input_json: {}, output: x}", `field "input_json": give input or input_json, not both`},
		{"cases:\n  - {name: a, handler: h, error: crash}", `case "a" (#1, line 2): field "error": kind "crash": want one of guest, trap`},
		{"cases:\n  - {name: a, handler: h, error: {kind: guest, status: bad}}", `field "error": status "bad"`},
		{"cases:\n  - {name: a, handler: h, error: {kind: trap, code: 1}}", `field "error": code goes with kind exit`},
		{"cases:\n  - {name: a, handler: h, output: x, limits: {timeout: soon}}", `case "a" (#1, line 2): field "limits": timeout "soon"`},
		{"cases:\n  - {name: a, handler: h, output: x, config: {k: [1]}}", `field "config": key "k": want a string value`},
		{"cases:\n  - {name: a, handler: h, output: x, expect: y}", `case "a" (#1, line 2): field "expect": unknown field`},
		{"cases:\n  - {name: a, handler: h, output: x}\n  - {name: a, handler: h, output: x}", `case "a" (#2, line 3): field "name": the name of case #1 too`},
		{"cases:\n  - {name: a, handler: h, steps: [{output: x}]}", `field "handler": give steps or a call, not both`},
		{"cases:\n  - {name: a, steps: [{handler: h}]}", `case "a" (#1, line 2): step 1: field "output": missing expectation`},
		{"cases:\n  - {name: a, handler: h, input_json: {1: x}, output: x}", `field "input_json": mapping key 1: want a string`},
	} {
		code, out, errOut := runTestCmd(t, authzWasm, writeCases(t, tc.yaml))
		if code != exitUsage || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 || out != "" {
			t.Errorf("%s:\nexit %d, stderr %q, stdout %q\nwant exit 2 and one line containing %q", tc.yaml, code, errOut, out, tc.want)
		}
	}
	// Usage errors: arguments, --run, a missing file.
	for _, a := range [][]string{{authzWasm}, {authzWasm, "x.yaml", "--run", "("}, {authzWasm, "/nonexistent.yaml"}} {
		if code, _, errOut := runTestCmd(t, a...); code != exitUsage {
			t.Errorf("%v: exit %d (%s)", a, code, errOut)
		}
	}
	// A plugin that is not a module is a failure, not a usage error.
	notWasm := writeCases(t, "cases: [{name: a, handler: h, output: x}]")
	if code, _, errOut := runTestCmd(t, notWasm, notWasm); code != exitFailure || !strings.Contains(errOut, "invalid module") {
		t.Errorf("not a module: exit %d (%s)", code, errOut)
	}
}

// TestTestThroughRun checks the command as the root registers it, with run's exit codes.
func TestTestThroughRun(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"test", authzWasm, "../../plugins/authz/cases.yaml"}, strings.NewReader(""), &out, &errOut)
	if code != exitOK || !strings.HasSuffix(out.String(), " passed, 0 failed\n") {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	bad := writeCases(t, "cases:\n  - {name: a, handler: h}")
	if code := run(context.Background(), []string{"test", authzWasm, bad}, strings.NewReader(""), &out, &errOut); code != exitUsage ||
		!strings.Contains(errOut.String(), `case "a" (#1, line 2): field "output"`) {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

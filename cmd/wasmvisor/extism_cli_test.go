package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox/extism/extismtest"
)

// Real Extism plugins from the Extism Go SDK's module (Rust, C, TinyGo, Haskell, Go), read
// from the module cache.
func TestExtismCall(t *testing.T) {
	p := func(name string) string { return extismtest.Path(t, name) }
	for _, c := range []struct {
		name       string
		args       []string
		code       int
		out, inErr string
	}{
		{"rust", []string{"call", p("count_vowels.wasm"), "count_vowels", "--input", "hello world"}, 0, `{"count":3,"total":3,"vowels":"aeiouAEIOU"}`, ""},
		{"haskell with config", []string{"call", p("hello_haskell.wasm"), "testing", "--input", "John", "--config", "greeting=Howdy"}, 0, "Howdy, John", ""},
		{"tinygo config", []string{"call", p("config.wasm"), "run_test", "--config", "thing=a=b"}, 0, `{"config": "a=b"}`, ""},
		{"c", []string{"call", p("hello.wasm"), "run_test"}, 0, "Hello, world!", ""},
		{"go command, exit 0", []string{"call", p("std_command.wasm"), "_start", "--input", "ben"}, 0, "hello ben", ""},
		{"guest error", []string{"call", p("fail.wasm"), "run_test"}, 3, "", "guest error (error): Some error message"},
		{"exit code", []string{"call", p("exit.wasm"), "_start", "--config", "code=500"}, 4, "", "guest exited with code 500"},
		{"deadline", []string{"call", p("sleep.wasm"), "run_test", "--config", "duration=3", "--real-clock", "--timeout", "30ms"}, 4, "", "call deadline exceeded (30ms)"},
		{"memory limit", []string{"call", p("hello_haskell.wasm"), "testing", "--memory-pages", "100"}, 4, "", "memory limit reached (100 pages)"},
		{"initial memory above the limit", []string{"call", p("count_vowels.wasm"), "count_vowels", "--memory-pages", "10"}, 4, "", "memory limit reached (10 pages)"},
		{"unknown handler", []string{"call", p("count_vowels.wasm"), "nope"}, 1, "", "unknown handler"},
		{"numeric host function", []string{"call", p("host.wasm"), "run_test"}, 1, "", `host functions must be functions of type (i64) -> i64 (bytes in, bytes out): "extism:host/user"."mult"`},
		{"host functions not offered", []string{"call", p("host_multiple.wasm"), "say_green"}, 1, "", `"extism:host/user"."hostGreenMessage", "extism:host/user"."hostPurpleMessage": host functions not granted`},
		{"bad config flag", []string{"call", p("config.wasm"), "run_test", "--config", "novalue"}, 2, "", "want KEY=VALUE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := cli(t, "", c.args...)
			if code != c.code || out != c.out || !strings.Contains(errOut, c.inErr) {
				t.Fatalf("code %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errOut, c.code, c.out, c.inErr)
			}
		})
	}
}

func TestExtismInspect(t *testing.T) {
	code, out, errOut := cli(t, "", "inspect", extismtest.Path(t, "count_vowels.wasm"))
	if code != 0 {
		t.Fatalf("code %d: %s%s", code, out, errOut)
	}
	for _, want := range []string{"abi:       extism", "handlers:  count_vowels", "extism:host/env.input_length function", "problems:  none", "17 pages at least"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	code, out, _ = cli(t, "", "inspect", "--json", extismtest.Path(t, "hello_haskell.wasm"))
	var r report
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.ABI != "extism" || strings.Join(r.Handlers, ",") != "testing" || len(r.Problems) != 0 {
		t.Fatalf("haskell: code %d, %+v", code, r)
	}
	// A plugin that needs host functions (here of a type Extism's bytes-in/bytes-out
	// convention does not have) is reported, with exit code 1.
	code, out, _ = cli(t, "", "inspect", extismtest.Path(t, "host.wasm"))
	if code != 1 || !strings.Contains(out, "host functions must be functions of type (i64) -> i64") || !strings.Contains(out, "abi:       extism") {
		t.Fatalf("host.wasm: code %d:\n%s", code, out)
	}
}

// TestExtismTest runs a cases file against an Extism plugin: the host's format, not the
// command's.
func TestExtismTest(t *testing.T) {
	cases := writeCases(t, `
cases:
  - {name: vowels, handler: count_vowels, input: hello world, output_json: {count: 3, total: 3, vowels: aeiouAEIOU}}
  - {name: fails, handler: nope, error: trap}
  - name: deliveries are refused
    steps:
      - {deliver: {topic: t, data: x}, error: {kind: guest, message: cannot subscribe}}
      - {deliver: {topic: t, data: x}}
`)
	code, out, errOut := runTestCmd(t, extismtest.Path(t, "count_vowels.wasm"), cases)
	if code != exitFailure || !strings.Contains(out, "wasmvisor test: 1 passed, 2 failed\n") || !strings.Contains(out, "FAIL fails: error: got ") ||
		!strings.Contains(out, "FAIL deliveries are refused: step 2: deliver: got error (unknown_handler) guest error (unknown handler): an Extism plugin cannot subscribe, want the message accepted\n") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

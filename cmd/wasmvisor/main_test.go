package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/wasmvisor/wasmvisor/internal/testcache"
)

func TestMain(m *testing.M) {
	// Keep the tests' compiled code out of the user's cache: the commands' default cache,
	// $XDG_CACHE_HOME/wasmvisor, is the cache every package's tests share (internal/testcache),
	// or a directory of this binary's own when no shared one can be keyed safely.
	dir, err := testcache.CacheHome("wasmvisor-cli-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func cli(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

const (
	authz     = "../../plugins/authz/authz.wasm"
	reference = "../../plugins/reference/reference.wasm"
	goPlugin  = "../../plugins/conformance/go/conformance.wasm"
)

func TestCall(t *testing.T) {
	viewer := `{"subject":{"id":"alice","roles":["viewer"]},"action":"read","resource":{"type":"document","id":"42","owner":"bob"}}`
	admin := `{"subject":{"id":"root","roles":["admin"]},"action":"delete","resource":{"type":"document","id":"42","owner":"bob"}}`
	writer := `{"subject":{"id":"alice","roles":["viewer"]},"action":"write","resource":{"type":"document","id":"42","owner":"bob"}}`
	inputFile := filepath.Join(t.TempDir(), "in.json")
	if err := os.WriteFile(inputFile, []byte(admin), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		stdin      string
		args       []string
		code       int
		out, inErr string
	}{
		{"authz viewer reads", "", []string{"call", authz, "evaluate", "--input", viewer}, 0, `"allow":true`, ""},
		{"authz admin deletes from a file", "", []string{"call", authz, "evaluate", "--input-file", inputFile}, 0, `"allow":true`, ""},
		{"authz viewer may not write", "", []string{"call", authz, "evaluate", "--input", writer}, 0, `"allow":false`, ""},
		{"authz config from flags", "", []string{"call", authz, "evaluate", "--input", writer, "--config", "role.viewer=read,write"}, 0, `"allow":true`, ""},
		{"input from stdin", "from stdin", []string{"call", reference, "echo", "--input-file", "-"}, 0, "from stdin", ""},
		{"config", "", []string{"call", reference, "config_get", "--input", "k", "--config", "k=v=w"}, 0, "v=w", ""},
		{"guest error", "", []string{"call", reference, "fail", "--input", "boom"}, 3, "", "guest error (error): boom"},
		{"unknown handler", "", []string{"call", reference, "nope"}, 1, "", `unknown handler`},
		{"trap", "", []string{"call", goPlugin, "trap"}, 4, "", "guest trapped (abort): panic: trap"},
		{"deadline", "", []string{"call", reference, "loop", "--timeout", "30ms"}, 4, "", "deadline exceeded (30ms)"},
		{"memory limit", "", []string{"call", reference, "grow", "--memory-pages", "32"}, 4, "", "memory limit reached (32 pages)"},
		{"exit code", "", []string{"call", reference, "exit", "--input", "9"}, 4, "", "exited with code 9"},
		{"missing file", "", []string{"call", "nope.wasm", "x"}, 1, "", "no such file"},
		{"not wasm", "", []string{"call", "main.go", "x"}, 1, "", "invalid module"},
		{"bad config flag", "", []string{"call", reference, "echo", "--config", "novalue"}, 2, "", "want KEY=VALUE"},
		{"two inputs", "", []string{"call", reference, "echo", "--input", "a", "--input-file", "b"}, 2, "", "give one"},
		{"no args", "", []string{"call"}, 2, "", "accepts 2 arg(s)"},
		{"unknown flag", "", []string{"call", reference, "echo", "--bogus"}, 2, "", "unknown flag"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := cli(t, c.stdin, c.args...)
			if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errOut, c.inErr) {
				t.Fatalf("code %d, stdout %q, stderr %q; want %d, %q, %q", code, out, errOut, c.code, c.out, c.inErr)
			}
			if code != 0 && strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", errOut)
			}
			if strings.Contains(errOut, "goroutine ") || strings.Contains(errOut, "panic(") {
				t.Errorf("stderr has a Go stack: %q", errOut)
			}
		})
	}
}

// call -v prints the events the guest recorded, after the call, on stderr; without -v, none.
func TestCallVerboseEvents(t *testing.T) {
	code, out, errOut := cli(t, "", "call", reference, "emit", "--input", "decision\n{\"allow\":true}", "-v")
	if code != 0 || out != "" || !strings.Contains(errOut, `event seq=0 topic="decision" data="{\"allow\":true}"`) {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, _, errOut := cli(t, "", "call", reference, "emit", "--input", "decision\nx"); strings.Contains(errOut, "event") {
		t.Fatalf("without -v: %q", errOut)
	}
}

func TestInspect(t *testing.T) {
	code, out, errOut := cli(t, "", "inspect", reference)
	if code != 0 || !strings.Contains(out, "abi:       wasmvisor v1") || !strings.Contains(out, "handlers:  echo, config_get") ||
		!strings.Contains(out, "problems:  none") {
		t.Fatalf("code %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = cli(t, "", "inspect", "../../sandbox/testdata/noabi.wasm", "--json")
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if code != 1 || len(r.Problems) != 10 || r.ABI != "none" {
		t.Fatalf("code %d, report %+v", code, r)
	}
	// A module whose control block is wrong passes the static check and fails at start.
	code, out, _ = cli(t, "", "inspect", "../../sandbox/testdata/hang.wasm")
	if code != 1 || !strings.Contains(out, "start:") {
		t.Fatalf("code %d\n%s", code, out)
	}
	if code, _, errOut := cli(t, "", "inspect", "main.go"); code != 1 || !strings.Contains(errOut, "invalid module") {
		t.Fatalf("code %d, %s", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := cli(t, "", "version")
	if code != 0 || !strings.Contains(out, "abi v1") || !strings.Contains(out, "wazero v1.12.0") {
		t.Fatalf("code %d: %s", code, out)
	}
}

// inspect --json is in the API's JSON style: snake_case keys, [] for an empty list, the
// digest with its algorithm.
func TestInspectJSONStyle(t *testing.T) {
	for _, path := range []string{reference, "../../sandbox/testdata/noabi.wasm"} {
		_, out, _ := cli(t, "", "inspect", "--json", path)
		if strings.Contains(out, "null") {
			t.Errorf("%s: null in %s", path, out)
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%s: %v: %s", path, err, out)
		}
		for _, k := range []string{"file", "digest", "size", "abi", "handlers", "memory_min_pages", "exports", "imports", "problems"} {
			if _, ok := r[k]; !ok {
				t.Errorf("%s: no %q in %s", path, k, out)
			}
		}
		for k := range r {
			if k != strings.ToLower(k) {
				t.Errorf("%s: key %q is not snake_case", path, k)
			}
		}
		if d, _ := r["digest"].(string); !strings.HasPrefix(d, "sha256:") {
			t.Errorf("%s: digest %q lacks its algorithm", path, d)
		}
		for _, list := range []string{"exports", "imports"} {
			syms, _ := r[list].([]any)
			for _, s := range syms {
				for k := range s.(map[string]any) {
					if !slices.Contains([]string{"module", "name", "kind", "type"}, k) {
						t.Errorf("%s: %s key %q", path, list, k)
					}
				}
			}
		}
	}
	_, out, _ := cli(t, "", "inspect", "--json", reference)
	var r struct {
		Exports []map[string]string `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.Exports) == 0 || r.Exports[0]["name"] == "" {
		t.Errorf("exports: %v %s", err, out)
	}
}

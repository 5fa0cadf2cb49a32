package host_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// extismPackage reports whether an import path belongs to the Extism format: the SDK (and
// anything else of github.com/extism) or the format package.
func extismPackage(path string) bool {
	return strings.HasPrefix(path, "github.com/extism/") || path == "github.com/wasmvisor/wasmvisor/sandbox/extism"
}

// deps lists the packages a program links (go list -deps).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs go list")
	}
	// go test puts its own GOROOT/bin first on the test's PATH.
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// The Extism format is opt-in: a program that embeds a host without importing
// sandbox/extism links no Extism package, and the CLI, which registers it, does.
func TestExtismIsOptIn(t *testing.T) {
	t.Parallel()
	embed := deps(t, "../examples/embed")
	if !slices.Contains(embed, "github.com/wasmvisor/wasmvisor/host") {
		t.Fatalf("examples/embed does not embed a host: %q", embed)
	}
	for _, p := range embed {
		if extismPackage(p) {
			t.Errorf("examples/embed links %s", p)
		}
	}
	// casetest runs cases against hosts and leaves the formats to its caller.
	for _, p := range deps(t, "../casetest") {
		if extismPackage(p) {
			t.Errorf("casetest links %s", p)
		}
	}
	if !slices.ContainsFunc(deps(t, "../cmd/wasmvisor"), extismPackage) {
		t.Error("cmd/wasmvisor does not link the Extism format")
	}
}

// NATS is the CLI's: the library (host, and a program embedding it) links no NATS package;
// `wasmvisor serve` does, for its cluster section (cmd/wasmvisor/internal/cluster).
func TestNATSIsCLIOnly(t *testing.T) {
	t.Parallel()
	nats := func(p string) bool { return strings.HasPrefix(p, "github.com/nats-io/") }
	for _, pkg := range []string{".", "../sandbox", "../examples/embed"} {
		if i := slices.IndexFunc(deps(t, pkg), nats); i >= 0 {
			t.Errorf("%s links %s", pkg, deps(t, pkg)[i])
		}
	}
	if !slices.ContainsFunc(deps(t, "../cmd/wasmvisor"), nats) {
		t.Error("cmd/wasmvisor does not link NATS")
	}
}

// The OPA format is opt-in too: neither host nor a program embedding it links sandbox/opa;
// the CLI, which registers it, does; and nothing links OPA itself.
func TestOPAIsOptIn(t *testing.T) {
	t.Parallel()
	const format = "github.com/wasmvisor/wasmvisor/sandbox/opa"
	for _, pkg := range []string{".", "../examples/embed", "../casetest", "../cmd/wasmvisor"} {
		linked := false
		for _, p := range deps(t, pkg) {
			linked = linked || p == format
			if strings.HasPrefix(p, "github.com/open-policy-agent/") {
				t.Errorf("%s links %s", pkg, p)
			}
		}
		if want := pkg == "../cmd/wasmvisor"; linked != want {
			t.Errorf("%s links %s: %v, want %v", pkg, format, linked, want)
		}
	}
}

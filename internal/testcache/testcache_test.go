package testcache

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseWazeroVersion(t *testing.T) {
	for _, c := range []struct {
		name, gomod, want string
	}{
		{"block", "module x\n\nrequire (\n\tgithub.com/tetratelabs/wazero v1.12.0\n\tgo.uber.org/zap v1.28.0\n)\n", "v1.12.0"},
		{"indirect", "module x\nrequire (\n\tgithub.com/tetratelabs/wazero v1.9.0 // indirect\n)\n", "v1.9.0"},
		{"single line", "module x\nrequire github.com/tetratelabs/wazero v1.11.0\n", "v1.11.0"},
		{"replaced by a version", "module x\nrequire github.com/tetratelabs/wazero v1.11.0\nreplace github.com/tetratelabs/wazero => github.com/fork/wazero v1.11.1-fork\n", "v1.11.1-fork"},
		{"replaced in a block", "module x\nrequire github.com/tetratelabs/wazero v1.11.0\nreplace (\n\tgithub.com/tetratelabs/wazero v1.11.0 => github.com/fork/wazero v1.11.2\n)\n", "v1.11.2"},
		{"replaced by a directory", "module x\nrequire github.com/tetratelabs/wazero v1.11.0\nreplace github.com/tetratelabs/wazero => ../wazero\n", ""},
		{"not required", "module x\nrequire go.uber.org/zap v1.28.0\n", ""},
		{"a longer path is another module", "module x\nrequire github.com/tetratelabs/wazero-extra v1.0.0\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseWazeroVersion(bufio.NewScanner(strings.NewReader(c.gomod)))
			if c.want == "" {
				if !errors.Is(err, ErrUnknownVersion) {
					t.Fatalf("got %q, %v; want ErrUnknownVersion", got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// The module's own go.mod names the wazero the tests build with.
func TestWazeroVersionOfThisModule(t *testing.T) {
	t.Setenv("GOWORK", "off")
	v, err := WazeroVersion(".")
	if err != nil || !strings.HasPrefix(v, "v1.") {
		t.Fatalf("WazeroVersion = %q, %v", v, err)
	}
}

func TestGoWorkMakesTheVersionUnknown(t *testing.T) {
	t.Setenv("GOWORK", "")
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\nrequire github.com/tetratelabs/wazero v1.12.0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "pkg")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if v, err := WazeroVersion(sub); err != nil || v != "v1.12.0" {
		t.Fatalf("without go.work: %q, %v", v, err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\nuse .\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WazeroVersion(sub); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("with go.work: %v, want ErrUnknownVersion", err)
	}
}

func TestPruneRemovesOnlyOldEntries(t *testing.T) {
	d := t.TempDir()
	now := time.Now()
	sub := filepath.Join(d, "wazero-dev-amd64-linux")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	old, fresh := filepath.Join(sub, "old"), filepath.Join(sub, "fresh")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(old, now.Add(-maxAge-time.Hour), now.Add(-maxAge-time.Hour)); err != nil {
		t.Fatal(err)
	}
	prune(d, now)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old entry kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh entry removed: %v", err)
	}
	// Within pruneEvery of the last prune, nothing is walked.
	if err := os.WriteFile(old, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(old, now.Add(-maxAge-time.Hour), now.Add(-maxAge-time.Hour)); err != nil {
		t.Fatal(err)
	}
	prune(d, now.Add(pruneEvery/2))
	if _, err := os.Stat(old); err != nil {
		t.Errorf("pruned again within %v: %v", pruneEvery, err)
	}
}

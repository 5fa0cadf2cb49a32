package testrules_test

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// escape marks a line (or the line below it) whose wait on the wall clock is meant: a deadline
// that must fire in real time. A reason must follow.
const escape = "// wallclock:"

// check reports, as "file:line: what", each call to time.Sleep and each runtime.Gosched
// inside a loop in f that is not marked by escape on its line or the line above.
func check(fset *token.FileSet, f *ast.File) []string {
	marked := map[int]bool{}
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			if reason, ok := strings.CutPrefix(c.Text, escape); ok && strings.TrimSpace(reason) != "" {
				marked[fset.Position(c.Slash).Line] = true
			}
		}
	}
	// The names under which the file imports time and runtime.
	names := map[string]string{}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if path != "time" && path != "runtime" {
			continue
		}
		name := path
		if imp.Name != nil {
			name = imp.Name.Name
		}
		names[name] = path
	}
	var found []string
	report := func(n ast.Node, what string) {
		p := fset.Position(n.Pos())
		if !marked[p.Line] && !marked[p.Line-1] {
			found = append(found, fmt.Sprintf("%s:%d: %s", p.Filename, p.Line, what))
		}
	}
	var walk func(n ast.Node, inLoop bool)
	walk = func(n ast.Node, inLoop bool) {
		ast.Inspect(n, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncLit: // a function literal runs on its own: a loop around it does not spin it
				walk(n.Body, false)
				return false
			case *ast.ForStmt:
				for _, c := range []ast.Node{n.Init, n.Cond, n.Post} {
					if c != nil {
						walk(c, inLoop)
					}
				}
				walk(n.Body, true)
				return false
			case *ast.RangeStmt:
				walk(n.X, inLoop)
				walk(n.Body, true)
				return false
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				x, ok := sel.X.(*ast.Ident)
				if !ok {
					return true
				}
				switch fn := names[x.Name] + "." + sel.Sel.Name; {
				case fn == "time.Sleep":
					report(n, "time.Sleep: wait on an event, synctest or a fake clock instead")
				case fn == "runtime.Gosched" && inLoop:
					report(n, "runtime.Gosched in a loop (a busy wait): wait on an event instead")
				}
			}
			return true
		})
	}
	walk(f, false)
	return found
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       int // findings
	}{
		{"sleep", `time.Sleep(time.Millisecond)`, 1},
		{"sleep in a loop", `for { time.Sleep(1) }`, 1},
		{"sleep in a goroutine", `go func() { time.Sleep(1) }()`, 1},
		{"aliased import", `t2.Sleep(1)`, 1},
		{"gosched in a for loop", `for !done() { runtime.Gosched() }`, 1},
		{"gosched in a range loop", `for range 10 { if done() { break }; runtime.Gosched() }`, 1},
		{"gosched in a nested block", `for { if !done() { runtime.Gosched(); continue }; break }`, 1},
		{"gosched outside a loop", `runtime.Gosched()`, 0},
		{"gosched in a function literal in a loop", `for range 3 { go func() { runtime.Gosched() }() }`, 0},
		{"gosched in a loop in a function literal", `go func() { for { runtime.Gosched() } }()`, 1},
		{"marked on the line", `time.Sleep(1) // wallclock: the guest must really sleep`, 0},
		{"marked above", "// wallclock: a deadline must fire in real time\ntime.Sleep(1)", 0},
		{"marked gosched", "for !done() {\n// wallclock: no event exists\nruntime.Gosched() }", 0},
		{"marked without a reason", "// wallclock:\ntime.Sleep(1)", 1},
		{"marked two lines above", "// wallclock: too far\n\ntime.Sleep(1)", 1},
		{"another package's Sleep", `other.Sleep(1); var time struct{ Sleep func(int) }; _ = time`, 0},
		{"both", "time.Sleep(1)\nfor { runtime.Gosched() }", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := "package p\n\nimport (\n\t\"runtime\"\n\t\"time\"\n\tt2 \"time\"\n\t\"example.com/other\"\n)\n\n" +
				"var _, _, _, _ = runtime.GOOS, time.Now, t2.Now, other.X\n\nfunc done() bool { return true }\n\nfunc f() {\n" + c.body + "\n}\n"
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "x_test.go", src, parser.ParseComments)
			if err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
			if got := check(fset, f); len(got) != c.want {
				t.Errorf("%d findings %q, want %d", len(got), got, c.want)
			}
		})
	}
}

// moduleRoot is the nearest directory at or above the working directory with a go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// TestNoWallClockWaits: no test in the repository sleeps, or spins on runtime.Gosched, to
// wait for a state; see RATIONALE.md, "Tests wait on events, not on the clock".
func TestNoWallClockWaits(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", "bin", "vendor":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, rel, src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		for _, msg := range check(fset, f) {
			t.Errorf("%s (or mark it %q with a reason)", msg, escape)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("only %d test files under %s: the walk missed the repository", files, root)
	}
}

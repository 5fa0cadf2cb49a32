package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/opa"
)

// inspectStartTimeout bounds the one start inspect makes.
const inspectStartTimeout = 2 * time.Second

// report is what inspect prints; its JSON follows the API's style (API.md, "JSON"):
// snake_case keys, [] for an empty list, the digest with its algorithm.
type report struct {
	File           string           `json:"file"`
	Digest         string           `json:"digest"`
	Size           int              `json:"size"`
	ABI            string           `json:"abi"`
	Handlers       []string         `json:"handlers"`
	MemoryMinPages uint64           `json:"memory_min_pages"`
	MemoryMaxPages uint64           `json:"memory_max_pages,omitempty"`
	PagesAfterInit uint32           `json:"pages_after_start,omitempty"`
	Exports        []sandbox.Symbol `json:"exports"`
	Imports        []sandbox.Symbol `json:"imports"`
	Problems       []string         `json:"problems"`
	// Builtins are the builtins an OPA policy needs from the host, sorted, each with whether
	// the host provides it (opa.Provided); absent for a policy that needs none, and for
	// another format.
	Builtins []builtinReport `json:"builtins,omitempty"`
	// Bundle describes an OPA bundle (bundle.tar.gz): the module reported is its
	// /policy.wasm; File, Digest and Size are the bundle's.
	Bundle *bundleReport `json:"bundle,omitempty"`
}

// builtinReport is one builtin an OPA policy needs from the host.
type builtinReport struct {
	Name     string `json:"name"`
	Provided bool   `json:"provided"`
}

// builtinsOf reports names against opa.Provided.
func builtinsOf(names []string) []builtinReport {
	provided := opa.Provided()
	out := make([]builtinReport, len(names))
	for k, n := range names {
		_, ok := slices.BinarySearch(provided, n)
		out[k] = builtinReport{Name: n, Provided: ok}
	}
	return out
}

// bundleReport is what an OPA bundle adds to the module it holds.
type bundleReport struct {
	Module    string `json:"module"`     // the entry the module is read from
	DataBytes int    `json:"data_bytes"` // the size of its data document as the policy gets it (0: none)
}

func newInspectCmd(stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect <plugin.wasm|bundle.tar.gz>",
		Short: "Print a module's ABI version, handlers, imports, exports, memory and every problem",
		Long: `Print what a module is: its ABI version, handlers, imports, exports, memory
requirements and every way it breaks the wasmvisor ABI. It reads any module, valid or
not; a valid plugin is also started once in a sandbox to list its handlers.
A plugin built with an Extism PDK (it imports "extism:host/env") is reported as "abi: extism",
checked against what wasmvisor's Extism support runs, and started once. A Rego policy
compiled by opa build -t wasm is reported as "abi: opa", with its entrypoints (and default)
as handlers and the builtins it needs from the host, each marked provided or not; one that
needs a builtin the host does not provide is reported with a problem naming it. The
bundle.tar.gz opa build writes is read as is: the module reported is its /policy.wasm, the
file, digest and size are the bundle's.

Exits 1 when the module has problems, so that it can gate a build.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			wasm, err := os.ReadFile(a[0])
			if err != nil {
				return err
			}
			r, err := inspect(cmd, a[0], wasm)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false) // "() -> i32", not "() -\u003e i32": the output is no HTML
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printReport(stdout, r)
			}
			if len(r.Problems) > 0 {
				return fmt.Errorf("%s: %d problem(s)", a[0], len(r.Problems))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func inspect(cmd *cobra.Command, path string, wasm []byte) (*report, error) {
	mod := wasm
	var br *bundleReport
	if opa.IsBundle(wasm) {
		w, data, err := opa.ReadBundle(wasm)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		mod, br = w, &bundleReport{Module: "/policy.wasm", DataBytes: len(data)}
	}
	info, err := sandbox.Inspect(mod)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r := &report{File: path, Digest: "sha256:" + sandbox.Digest(wasm), Size: len(wasm), Bundle: br,
		Exports: nonNil(info.Exports), Imports: nonNil(info.Imports),
		MemoryMinPages: info.MemoryMinPages, MemoryMaxPages: info.MemoryMaxPages, ABI: "none", Handlers: []string{}, Problems: []string{}}
	ctx := cmd.Context()
	eng, err := newEngine(ctx, zap.NewNop(), cacheDir(callFlags{}))
	if err != nil {
		return nil, err
	}
	defer eng.Close(ctx)
	f := eng.Detect(wasm)
	if f != nil {
		// Another format's plugin: the wasmvisor ABI's problems do not apply; what does is
		// whether the format compiles and starts it (an Extism plugin's host functions, which the command does not offer, are refused).
		r.ABI = f.Name()
	} else {
		for _, ex := range info.Exports {
			if ex.Name == abi.ExportInit {
				r.ABI = fmt.Sprintf("wasmvisor v%d (claimed)", abi.Version)
			}
		}
		for _, p := range info.Problems {
			r.Problems = append(r.Problems, p.String())
		}
		if len(info.Problems) > 0 {
			return r, nil
		}
	}
	// Statically valid: start it once (a native module's handlers are read from its control
	// block at start).
	code, err := eng.Load(ctx, wasm, sandbox.Config{Limits: sandbox.Limits{StartTimeout: inspectStartTimeout}})
	if err != nil {
		if be := (*opa.BuiltinError)(nil); errors.As(err, &be) {
			r.Builtins = builtinsOf(be.Needs)
		}
		r.Problems = append(r.Problems, "compile: "+oneLine(err.Error()))
		return r, nil
	}
	defer code.Close(ctx)
	if b, ok := code.(interface{ Builtins() []string }); ok { // an OPA policy's
		r.Builtins = builtinsOf(b.Builtins())
	}
	r.Handlers = nonNil(code.Handlers())
	inst, err := code.Instantiate(ctx, nil)
	if err != nil {
		var ae *sandbox.ABIError
		if errors.As(err, &ae) {
			for _, p := range ae.Problems {
				r.Problems = append(r.Problems, p.String())
			}
		} else {
			r.Problems = append(r.Problems, "start: "+oneLine(err.Error()))
		}
		return r, nil
	}
	defer inst.Close(ctx)
	if f == nil {
		r.ABI = fmt.Sprintf("wasmvisor v%d", abi.Version)
	}
	r.Handlers = nonNil(code.Handlers())
	r.PagesAfterInit = inst.MemoryPages()
	return r, nil
}

func printReport(w io.Writer, r *report) {
	fmt.Fprintf(w, "file:      %s\n", r.File)
	fmt.Fprintf(w, "digest:    %s\n", r.Digest)
	fmt.Fprintf(w, "size:      %d bytes\n", r.Size)
	fmt.Fprintf(w, "abi:       %s\n", r.ABI)
	if r.Bundle != nil {
		fmt.Fprintf(w, "bundle:    module %s, data document %d bytes\n", r.Bundle.Module, r.Bundle.DataBytes)
	}
	mem := fmt.Sprintf("%d pages at least", r.MemoryMinPages)
	if r.MemoryMaxPages > 0 {
		mem += fmt.Sprintf(", %d at most", r.MemoryMaxPages)
	}
	if r.PagesAfterInit > 0 {
		mem += fmt.Sprintf(", %d after start", r.PagesAfterInit)
	}
	fmt.Fprintf(w, "memory:    %s (64 KiB pages)\n", mem)
	fmt.Fprintf(w, "handlers:  %s\n", orNone(strings.Join(r.Handlers, ", ")))
	switch {
	case len(r.Builtins) > 0:
		fmt.Fprintf(w, "builtins:\n")
		for _, b := range r.Builtins {
			p := "provided by the host"
			if !b.Provided {
				p = "NOT provided by the host"
			}
			fmt.Fprintf(w, "  %s %s\n", b.Name, p)
		}
	case r.ABI == opa.Name:
		fmt.Fprintf(w, "builtins:  none\n")
	}
	fmt.Fprintf(w, "imports:\n")
	for _, s := range r.Imports {
		fmt.Fprintf(w, "  %s.%s %s %s\n", s.Module, s.Name, s.Kind, s.Type)
	}
	fmt.Fprintf(w, "exports:\n")
	for _, s := range r.Exports {
		fmt.Fprintf(w, "  %s %s %s\n", s.Name, s.Kind, s.Type)
	}
	if len(r.Problems) == 0 {
		fmt.Fprintf(w, "problems:  none\n")
		return
	}
	fmt.Fprintf(w, "problems:\n")
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// nonNil is s, or an empty slice for nil: JSON lists are [], never null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of wasmvisor, its ABI and wazero",
		Args:  args(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			version, wazero := "(devel)", "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				if bi.Main.Version != "" {
					version = bi.Main.Version
				}
				for _, d := range bi.Deps {
					if d.Path == "github.com/tetratelabs/wazero" {
						wazero = d.Version
					}
				}
			}
			_, err := fmt.Fprintf(stdout, "wasmvisor %s\nabi v%d\nwazero %s\n", version, abi.Version, wazero)
			return err
		},
	}
}

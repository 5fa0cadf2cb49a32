package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/casetest"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// This file is `wasmvisor test`: it runs a cases file against a plugin with package casetest
// (each case in a fresh host) and reports like `opa test`. The format is CASES.md.

// testFailed is the error of a run with failing cases: exit code 1, the summary already said it.
type testFailed struct{ failed int }

func (e testFailed) Error() string { return fmt.Sprintf("test: %d failed", e.failed) }

type testFlags struct {
	run      string
	verbose  bool
	cacheDir string
	noCache  bool
}

// newTestCmd returns the `test` command.
func newTestCmd(stdout, stderr io.Writer) *cobra.Command {
	var f testFlags
	cmd := &cobra.Command{
		Use:   "test <plugin.wasm> <cases.yaml>",
		Short: "Run a plugin's cases file, each case in a fresh host",
		Long: `Run the cases of a cases file against a plugin, each case in a fresh host (the plugin
compiled once), and compare each step's output or error with its expectation. A case
marked "instance: true" runs against one sandbox instance instead: a trap is not
restarted (wasmvisor-ABI plugins only).

One line per failing case, then the summary "wasmvisor test: N passed, N failed".
Extism plugins run too, as with call (the CLI's formats). The cases file format is CASES.md at the root of the
repository (https://github.com/wasmvisor/wasmvisor/blob/main/CASES.md).

Exit codes: 0 all passed, 1 a case failed (or the plugin could not be loaded),
2 usage or an invalid cases file.`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runTest(cmd.Context(), a[0], a[1], f, stdout, stderr)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	fl := cmd.Flags()
	fl.StringVar(&f.run, "run", "", "run only the cases whose name matches this regular expression")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "list every case with its duration")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "compilation cache directory (default: the user cache directory)")
	fl.BoolVar(&f.noCache, "no-cache", false, "compile without the on-disk cache")
	return cmd
}

func runTest(ctx context.Context, pluginPath, casesPath string, f testFlags, stdout, _ io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var filter *regexp.Regexp
	if f.run != "" {
		re, err := regexp.Compile(f.run)
		if err != nil {
			return usageError{fmt.Errorf("--run: %w", err)}
		}
		filter = re
	}
	src, err := os.Open(casesPath)
	if err != nil {
		return usageError{err}
	}
	file, err := casetest.Parse(src)
	_ = src.Close()
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", casesPath, err)}
	}
	wasm, err := os.ReadFile(pluginPath)
	if err != nil {
		return err
	}
	// The CLI's formats (Extism), the same as call's; each case's host loads through them.
	// One engine for every case's host, holding the plugin's code for the run: each case
	// instantiates it instead of decoding and compiling the module again.
	e, err := newEngine(ctx, zap.NewNop(), cacheDir(callFlags{cacheDir: f.cacheDir, noCache: f.noCache}))
	if err != nil {
		return err
	}
	defer e.Close(context.WithoutCancel(ctx))
	if release, err := e.Keep(ctx, wasm, sandbox.Config{}); err == nil { // else the cases report it
		defer release()
	}
	// Instance cases (instance: true) compile on the same engine.
	opts := casetest.Options{HostOptions: []host.Option{host.WithEngine(e)}, Engine: e}
	if filter != nil {
		opts.Filter = filter.MatchString
	}
	rep, runErr := casetest.Execute(ctx, wasm, file, opts)
	for _, c := range rep.Results {
		switch {
		case c.Passed() && f.verbose:
			fmt.Fprintf(stdout, "ok   %s (%s)\n", c.Name, fmtDuration(c.Duration))
		case c.Passed():
		case f.verbose:
			fmt.Fprintf(stdout, "FAIL %s (%s): %s\n", c.Name, fmtDuration(c.Duration), strings.Join(c.Problems, "; "))
		default:
			fmt.Fprintf(stdout, "FAIL %s: %s\n", c.Name, strings.Join(c.Problems, "; "))
		}
	}
	if runErr != nil { // the plugin itself: it cannot be loaded
		return fmt.Errorf("%s: %w", pluginPath, runErr)
	}
	passed, failed := rep.Counts()
	fmt.Fprintf(stdout, "wasmvisor test: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return testFailed{failed}
	}
	return nil
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}

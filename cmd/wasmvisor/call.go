package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	extismsdk "github.com/extism/go-sdk"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/extism"
	"github.com/wasmvisor/wasmvisor/sandbox/opa"
)

type callFlags struct {
	input      string
	inputFile  string
	config     []string
	pages      uint32
	timeout    time.Duration
	cacheDir   string
	noCache    bool
	verbose    bool
	realClock  bool
	env        []string
	dirs       []string
	startLimit time.Duration
}

func newCallCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var f callFlags
	cmd := &cobra.Command{
		Use:   "call <plugin.wasm|bundle.tar.gz> <handler>",
		Short: "Run one handler in a fresh sandbox and write its raw output to stdout",
		Long: `Run one handler of a plugin in a fresh sandbox and write its raw output to stdout.

The input is --input, or the contents of --input-file ("-" reads stdin), or empty.
The plugin gets no capabilities unless granted (--env, --dir, --real-clock).
Guest logs and output go to stderr with --verbose, and nowhere otherwise; so do the events the
guest recorded (the ABI's event import), one line each after the call, as
"event seq=N topic=\"T\" data=\"D\"", and a line counting those its ring lost or refused.

A plugin built with an Extism PDK (one that imports "extism:host/env") is run through the
Extism Go SDK under the same limits: --config fills Extism's config map, and a command-style
Extism plugin is called with the handler _start.
A Rego policy compiled by opa build -t wasm is run by wasmvisor's OPA format: the handler is
an entrypoint (example/allow), or default for entrypoint 0 (the first -e); the input is the
Rego input (JSON), --config data=JSON the data document, and the output the result set. The bundle.tar.gz of opa build -t wasm is taken as
is: its /policy.wasm is run, its data.json is the data document unless --config gives one.

Exit codes: 0 ok, 1 failure, 2 usage, 3 the guest returned an error,
4 the instance ended (trap, deadline, memory limit, exit, ABI violation).`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			return runCall(cmd, a[0], a[1], f, stdin, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.input, "input", "", "the input, as a string")
	fl.StringVar(&f.inputFile, "input-file", "", `read the input from a file ("-" for stdin)`)
	fl.StringArrayVar(&f.config, "config", nil, "a config entry KEY=VALUE (repeatable)")
	fl.Uint32Var(&f.pages, "memory-pages", 0, fmt.Sprintf("memory limit in 64 KiB pages (default %d)", sandbox.DefaultMemoryPages))
	fl.DurationVar(&f.timeout, "timeout", 0, fmt.Sprintf("call deadline (default %v; -1ns for none)", sandbox.DefaultCallTimeout))
	fl.DurationVar(&f.startLimit, "start-timeout", 0, fmt.Sprintf("start deadline (default %v)", sandbox.DefaultStartTimeout))
	fl.StringVar(&f.cacheDir, "cache-dir", "", "compilation cache directory (default: the user cache directory)")
	fl.BoolVar(&f.noCache, "no-cache", false, "compile without the on-disk cache")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log guest output and logs to stderr")
	fl.BoolVar(&f.realClock, "real-clock", false, "give the guest the real clocks (default: deterministic)")
	fl.StringArrayVar(&f.env, "env", nil, "set a guest environment variable NAME=VALUE (repeatable)")
	fl.StringArrayVar(&f.dirs, "dir", nil, "mount a host directory read-only, HOST:GUEST (repeatable)")
	return cmd
}

func runCall(cmd *cobra.Command, path, handler string, f callFlags, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx := cmd.Context()
	if cmd.Flags().Changed("input") && cmd.Flags().Changed("input-file") {
		return usageError{fmt.Errorf("--input and --input-file: give one")}
	}
	config, err := parsePairs(f.config, "=", "--config")
	if err != nil {
		return err
	}
	env, err := parsePairs(f.env, "=", "--env")
	if err != nil {
		return err
	}
	var dirs []sandbox.Dir
	for _, d := range f.dirs {
		host, guest, ok := strings.Cut(d, ":")
		if !ok || host == "" || guest == "" {
			return usageError{fmt.Errorf("--dir %q: want HOST:GUEST", d)}
		}
		dirs = append(dirs, sandbox.Dir{Host: host, Guest: guest})
	}
	input := []byte(f.input)
	switch f.inputFile {
	case "":
	case "-":
		if input, err = io.ReadAll(stdin); err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
	default:
		if input, err = os.ReadFile(f.inputFile); err != nil {
			return err
		}
	}
	wasm, err := os.ReadFile(path)
	if err != nil {
		return err
	}

	logger := zap.NewNop()
	if f.verbose {
		enc := zap.NewDevelopmentEncoderConfig()
		logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(stderr), zap.DebugLevel))
	}
	caps := sandbox.Capabilities{Env: env, Dirs: dirs}
	if f.realClock {
		caps.Clock, caps.Random = sandbox.ClockReal, sandbox.RandomCrypto
	}
	cfg := sandbox.Config{
		Limits:       sandbox.Limits{MemoryPages: f.pages, CallTimeout: f.timeout, StartTimeout: f.startLimit},
		Capabilities: caps,
	}
	if f.verbose {
		extismsdk.SetLogLevel(extismsdk.LogLevelTrace) // process-wide in the SDK: this process is ours
	}
	eng, err := newEngine(ctx, logger, cacheDir(f))
	if err != nil {
		return err
	}
	defer eng.Close(ctx)
	code, err := eng.Load(ctx, wasm, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer code.Close(ctx)
	inst, err := code.Instantiate(ctx, config)
	if err != nil {
		return fmt.Errorf("%s: start: %w", path, err)
	}
	defer inst.Close(ctx)
	out, err := inst.CallAppend(ctx, handler, input, nil)
	if f.verbose {
		printEvents(stderr, inst)
	}
	if err != nil {
		return fmt.Errorf("%s: call %q: %w", path, handler, err)
	}
	_, err = stdout.Write(out)
	return err
}

// formats are the plugin formats the command ships besides the native ABI.
// printEvents writes the events inst's guest recorded, within the default budget of one
// read (sandbox.Budget), one line each. A failed instance is read post mortem.
func printEvents(w io.Writer, inst sandbox.Runner) {
	log, err := inst.EventsWithin(0, nil)
	if err != nil {
		_, _ = fmt.Fprintf(w, "events: %v\n", err)
		return
	}
	for _, e := range log.Events {
		_, _ = fmt.Fprintf(w, "event seq=%d topic=%q data=%q\n", e.Seq, e.Topic, e.Data)
	}
	if log.Lost+log.Dropped+log.Remaining > 0 {
		_, _ = fmt.Fprintf(w, "events: %d lost, %d refused by the guest, %d not read (budget)\n", log.Lost, log.Dropped, log.Remaining)
	}
}

// formats are the plugin formats besides the native ABI that the command loads: Extism's and
// OPA's (Rego policies compiled by opa build -t wasm).
func formats() []sandbox.Format { return []sandbox.Format{extism.Format(), opa.Format()} }

// newEngine is the engine of a one-shot command (call, inspect): every format the command
// ships, compiling with the cache in dir ("" for none).
func newEngine(ctx context.Context, logger *zap.Logger, dir string) (*sandbox.Engine, error) {
	opts := []sandbox.Option{sandbox.WithLogger(logger), sandbox.WithFormats(formats()...)}
	if dir != "" {
		opts = append(opts, sandbox.WithCacheDir(dir))
	}
	return sandbox.NewEngine(ctx, opts...)
}

func cacheDir(f callFlags) string {
	if f.noCache {
		return ""
	}
	if f.cacheDir != "" {
		return f.cacheDir
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "wasmvisor")
	}
	return ""
}

func parsePairs(items []string, sep, flag string) (map[string]string, error) {
	m := map[string]string{}
	for _, it := range items {
		k, v, ok := strings.Cut(it, sep)
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("%s %q: want KEY%sVALUE", flag, it, sep)}
		}
		m[k] = v
	}
	return m, nil
}

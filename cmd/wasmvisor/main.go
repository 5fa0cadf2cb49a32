// Command wasmvisor runs and inspects wasmvisor plugins.
//
//	wasmvisor serve [--config FILE] [--listen ADDR]
//	wasmvisor call <plugin.wasm> <handler> [--input STRING | --input-file PATH] [--config KEY=VALUE]...
//	wasmvisor inspect <plugin.wasm>
//	wasmvisor test <plugin.wasm> <cases.yaml>
//	wasmvisor bundle keygen|build|sign|verify
//	wasmvisor push <plugin.wasm> --name NAME [--server URL] [--config KEY=VALUE]...
//	wasmvisor version
//
// Every failure exits non-zero with a one-line error on stderr; see exitCode for the codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/server"
	"github.com/wasmvisor/wasmvisor/host"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1 // anything else: I/O, a module that is not valid, inspect's problems
	exitUsage    = 2 // bad flags or arguments
	exitGuest    = 3 // the guest returned an error status
	exitInstance = 4 // the instance ended: trap, deadline, memory limit, exit, ABI violation
	// exitShutdown: serve's shutdown was incomplete: it timed out (http.shutdown_timeout; calls
	// cut off, or a guest that would not stop abandoned) or instances leaked (host.ErrLeak).
	exitShutdown = 5
)

// usageError marks errors in the command line.
type usageError struct{ error }

// run executes the command line args and returns the process exit code. It never panics
// through to the caller: a bug becomes a one-line error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "wasmvisor: internal error: %v\n", r)
			code = exitFailure
		}
	}()
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "wasmvisor: %s\n", oneLine(err.Error()))
	return exitCode(err)
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, server.ErrShutdownTimeout), errors.Is(err, host.ErrLeak):
		return exitShutdown
	case sandbox.Fatal(err):
		return exitInstance
	case errors.Is(err, sandbox.ErrGuest):
		return exitGuest
	}
	return exitFailure
}

// oneLine folds a multi-line error (wazero appends stack traces) onto one line.
func oneLine(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\n':
			out = append(out, ' ', '|', ' ')
		case '\t', '\r':
			out = append(out, ' ')
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "wasmvisor",
		Short:         "wasmvisor runs WebAssembly plugins in supervised sandboxes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCmd(stderr), newCallCmd(stdin, stdout, stderr), newInspectCmd(stdout),
		newTestCmd(stdout, stderr), newVersionCmd(stdout), newBundleCmd(stdout), newPushCmd(stdout))
	return root
}

// args wraps a cobra argument check so that its error is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

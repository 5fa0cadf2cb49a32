package extism

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero/sys"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// UserModule is the import module of Extism host functions: a sandbox.HostFunc named N is
// served to the import UserModule.N, of type (i64) -> i64.
const UserModule = "extism:host/user"

// hostFuncType is the type of a bytes-in/bytes-out Extism host function: the offset of the
// input in the kernel's memory in, the offset of the output out.
const hostFuncType = "(i64) -> i64"

// HostFuncError ends a call in which a host function failed: it returned an error, panicked,
// or returned more than its MaxOutput. Extism host functions have no error channel to the
// guest, so the guest cannot be told and go on: it is unwound from inside the host function,
// mid-execution, and its memory may be in any state. The instance has ended (sandbox.Fatal
// reports true: the error matches sandbox.ErrTrap), and Err is the cause.
type HostFuncError struct {
	Name string // the host function
	Err  error  // the function's error, its panic (ErrHostFuncPanic) or the size of its output
}

func (e *HostFuncError) Error() string {
	return fmt.Sprintf("extism: host function %q: %v (the guest was unwound)", e.Name, e.Err)
}

// Unwrap gives sandbox.ErrTrap (the guest was stopped mid-execution) and the cause.
func (e *HostFuncError) Unwrap() []error { return []error{sandbox.ErrTrap, e.Err} }

// ErrHostFuncPanic is the cause of a HostFuncError whose function panicked.
var ErrHostFuncPanic = errors.New("panicked")

// hostState is an instance's side of its host functions.
type hostState struct {
	failed atomic.Pointer[HostFuncError] // the failure that ends the call in progress
	panics atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelCauseFunc // ends the context of the host function in progress
}

// errStopped is the cause of a host function's context that its call's stop ended.
var errStopped = errors.New("extism: the call was stopped")

// checkImports refuses, each named, the imports this package cannot serve: from a module
// other than the kernel, WASI and UserModule (a *sandbox.ModuleError), from UserModule with
// a type other than hostFuncType (a *sandbox.ModuleError, naming the type), and from
// UserModule with a name that granted lacks (sandbox.ErrInvalidConfig: the module is fine,
// the grant is missing). A static import is refused at load, not when the guest calls it.
func checkImports(imports []sandbox.Symbol, granted []sandbox.HostFunc) error {
	names := make(map[string]bool, len(granted))
	for _, f := range granted {
		names[f.Name] = true
	}
	var other, typed, denied []string
	for _, s := range imports {
		switch {
		case s.Module == KernelModule || s.Module == wasiModule:
		case s.Module != UserModule:
			other = append(other, fmt.Sprintf("%q.%q", s.Module, s.Name))
		case s.Kind != "function" || s.Type != hostFuncType:
			typed = append(typed, fmt.Sprintf("%q.%q (%s %s)", s.Module, s.Name, s.Kind, s.Type))
		case !names[s.Name]:
			denied = append(denied, fmt.Sprintf("%q.%q", s.Module, s.Name))
		}
	}
	switch {
	case len(other) > 0:
		return &sandbox.ModuleError{Reason: "imports from modules other than " + UserModule + ", the Extism kernel and WASI are not supported: " + strings.Join(other, ", ")}
	case len(typed) > 0:
		return &sandbox.ModuleError{Reason: "host functions must be functions of type " + hostFuncType + " (bytes in, bytes out): " + strings.Join(typed, ", ")}
	case len(denied) > 0:
		return fmt.Errorf("extism: imports %s: host functions not granted (Capabilities.HostFunctions): %w", strings.Join(denied, ", "), sandbox.ErrInvalidConfig)
	}
	return nil
}

// hostFunctions makes the SDK's host functions that serve granted.
func (m *Module) hostFunctions(granted []sandbox.HostFunc) []sdk.HostFunction {
	fns := kernelFunctions()
	for _, f := range granted {
		fns = append(fns, sdk.NewHostFunctionWithStack(f.Name, m.serve(f),
			[]sdk.ValueType{sdk.ValueTypePTR}, []sdk.ValueType{sdk.ValueTypePTR}))
	}
	return fns
}

// serve is f as an SDK host function. It runs on the call's goroutine, inside the guest's
// call: its context is the caller's, ended also when the call is stopped (its deadline, the
// caller's context, Kill: see Instance.stop), after which the guest is unwound. The input is a copy of the kernel's memory block the guest named, refused
// above f.MaxInput before it is copied. A failure
// records a HostFuncError on the instance and unwinds the guest with a panic, which wazero
// turns into the call's error and classify into that HostFuncError.
func (m *Module) serve(f sandbox.HostFunc) sdk.HostFunctionStackCallback {
	return func(ctx context.Context, cp *sdk.CurrentPlugin, stack []uint64) {
		p, _ := ctx.Value(sdk.PluginCtxKey("plugin")).(*sdk.Plugin)
		v, ok := m.plugins.Load(p)
		if !ok {
			panic(fmt.Sprintf("extism: host function %q called outside an instance", f.Name))
		}
		i := v.(*Instance)
		in, err := readBlock(ctx, cp, stack[0], f.MaxInput)
		if err != nil {
			i.hostFail(ctx, &HostFuncError{Name: f.Name, Err: fmt.Errorf("reading the input: %w", err)})
		}
		out, err := i.runHostFunc(ctx, f, in)
		switch {
		case err != nil:
			i.hostFail(ctx, &HostFuncError{Name: f.Name, Err: err})
		case len(out) > f.MaxOutput:
			i.hostFail(ctx, &HostFuncError{Name: f.Name, Err: fmt.Errorf("output of %d bytes, above its %d", len(out), f.MaxOutput)})
		}
		i.unwindIfStopped(ctx)
		if len(out) == 0 {
			stack[0] = 0 // the kernel's empty block
			return
		}
		off, err := cp.AllocWithContext(ctx, uint64(len(out)))
		if err == nil && (off == 0 || !cp.Memory().Write(uint32(off), out)) {
			err = fmt.Errorf("the kernel could not hold %d bytes", len(out))
		}
		if err != nil {
			i.hostFail(ctx, &HostFuncError{Name: f.Name, Err: fmt.Errorf("writing the output: %w", err)})
		}
		stack[0] = off
	}
}

// readBlock copies the kernel's memory block at off, unless it is longer than limit.
func readBlock(ctx context.Context, cp *sdk.CurrentPlugin, off uint64, limit int) ([]byte, error) {
	n, err := cp.LengthWithContext(ctx, off)
	if err != nil {
		return nil, err
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("input of %d bytes, above its %d", n, limit)
	}
	b, ok := cp.Memory().Read(uint32(off), uint32(n))
	if !ok {
		return nil, fmt.Errorf("block %#x+%d out of the kernel's memory", off, n)
	}
	return append([]byte(nil), b...), nil
}

// runHostFunc calls f, recovering, logging and counting a panic, as the sandbox does.
func (i *Instance) runHostFunc(ctx context.Context, f sandbox.HostFunc, in []byte) (out []byte, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	i.host.mu.Lock()
	i.host.cancel = cancel
	i.host.mu.Unlock()
	defer func() {
		i.host.mu.Lock()
		i.host.cancel = nil
		i.host.mu.Unlock()
	}()
	if i.callStopped() { // a stop that came before cancel was set
		cancel(errStopped)
	}
	defer func() {
		if r := recover(); r != nil {
			// Logged at the 1st, 2nd, 4th… panic of the instance, as the sandbox does.
			if n := i.host.panics.Add(1); n&(n-1) == 0 {
				i.mod.logger.Error("host function panicked", zap.String("function", f.Name),
					zap.Uint64("panics", n), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			}
			out, err = nil, ErrHostFuncPanic
		}
	}()
	return f.Func(ctx, in)
}

// cancelHostFunc ends the context of a host function in progress, if any; stop calls it.
func (i *Instance) cancelHostFunc() {
	i.host.mu.Lock()
	c := i.host.cancel
	i.host.mu.Unlock()
	if c != nil {
		c(errStopped)
	}
}

// hostFail ends the call with e, unless the call was stopped meanwhile: then it ends as
// stopped (the function's error is most likely the context's).
func (i *Instance) hostFail(ctx context.Context, e *HostFuncError) {
	i.unwindIfStopped(ctx)
	i.host.failed.CompareAndSwap(nil, e)
	panic(e)
}

// unwindIfStopped unwinds the guest when the call has been stopped, or the caller's context
// ctx has ended (which stops it): classify then reports the stop (the deadline, the
// caller's end or Kill), whatever the SDK returns.
func (i *Instance) unwindIfStopped(ctx context.Context) {
	if ctx.Err() != nil {
		i.stopFromContext(ctx)
	}
	if i.callStopped() {
		panic(sys.NewExitError(sys.ExitCodeContextCanceled))
	}
}

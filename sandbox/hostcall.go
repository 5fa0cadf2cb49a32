package sandbox

import (
	"context"
	"fmt"
	"regexp"
	"runtime/debug"

	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/abi"
)

// HostFunc is a function of the embedding program that a plugin may call by name, when its
// Capabilities.HostFunctions grant it: a capability of the embedder's own (a key-value
// lookup, a directory of users, a clock). Input and output are bytes, as for handlers.
//
// The function runs on the calling operation's goroutine, inside the guest's call: ctx is
// that operation's, and ends when the operation is stopped (its call deadline, the caller's
// context, Kill), so a function that honours ctx returns promptly; once it returns, the
// stopped operation ends with its usual error. in is the host's own copy of the guest's
// bytes. An error is returned to the guest as abi.StatusError with the error's text; a panic
// is recovered, counted (Stats.HostFuncPanics), logged with its stack (the instance's 1st,
// 2nd, 4th, 8th… panic, so a guest cannot flood the log) and returned to the
// guest as an error: it never ends the process, nor the instance. Input longer than MaxInput
// is refused before it is copied or the function runs, and output longer than MaxOutput
// after it ran, both returned to the guest as an error, never cut.
//
// Extism plugins (package sandbox/extism) get the same functions as imports of
// "extism:host/user"; Extism has no way to return an error to the guest, so there an error,
// a panic or an output above MaxOutput ends the call and the instance.
type HostFunc struct {
	// Name is how guests and grants name the function: 1 to 64 bytes of [A-Za-z0-9_.-], as
	// handler names (Extism plugins import names such as hostGreenMessage).
	Name string
	// Func is the function.
	Func func(ctx context.Context, in []byte) ([]byte, error)
	// MaxInput bounds the input. Zero means DefaultHostFuncInput.
	MaxInput int
	// MaxOutput bounds the output. Zero means DefaultHostFuncOutput.
	MaxOutput int
}

// DefaultHostFuncInput is a host function's input limit unless HostFunc.MaxInput says: without
// one a guest could have the host copy all its linear memory (up to 4 GiB) at every call.
const DefaultHostFuncInput = 1 << 20

// DefaultHostFuncOutput is a host function's output limit unless HostFunc.MaxOutput says.
const DefaultHostFuncOutput = 1 << 20

var hostFuncName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// GrantedHostFuncs returns the functions of c.HostFuncs that c.Capabilities.HostFunctions
// grants, in the grant's order, with MaxOutput's default filled in, validated as Compile
// does: a grant of a function that is not offered, a duplicate or a malformed function is
// ErrInvalidConfig. It is for a Format's Compile, which serves host functions its own way.
func (c Config) GrantedHostFuncs() ([]HostFunc, error) {
	return resolveHostFuncs(c.HostFuncs, c.Capabilities.HostFunctions)
}

// resolveHostFuncs returns the functions of all that grants names, in the grant's order: an
// instance's handles index this list. A grant of a function that all lacks, a duplicate
// grant or a malformed function is ErrInvalidConfig.
func resolveHostFuncs(all []HostFunc, grants []string) ([]HostFunc, error) {
	if len(grants) == 0 {
		return nil, nil
	}
	by := make(map[string]HostFunc, len(all))
	for _, f := range all {
		if !hostFuncName.MatchString(f.Name) {
			return nil, fmt.Errorf("sandbox: host function %q: the name must match %s: %w", f.Name, hostFuncName, ErrInvalidConfig)
		}
		if f.Func == nil {
			return nil, fmt.Errorf("sandbox: host function %q: no Func: %w", f.Name, ErrInvalidConfig)
		}
		if f.MaxInput < 0 || f.MaxOutput < 0 {
			return nil, fmt.Errorf("sandbox: host function %q: negative MaxInput or MaxOutput: %w", f.Name, ErrInvalidConfig)
		}
		if f.MaxInput == 0 {
			f.MaxInput = DefaultHostFuncInput
		}
		if f.MaxOutput == 0 {
			f.MaxOutput = DefaultHostFuncOutput
		}
		if _, dup := by[f.Name]; dup {
			return nil, fmt.Errorf("sandbox: host function %q given twice: %w", f.Name, ErrInvalidConfig)
		}
		by[f.Name] = f
	}
	out := make([]HostFunc, 0, len(grants))
	seen := make(map[string]bool, len(grants))
	for _, g := range grants {
		f, ok := by[g]
		if !ok {
			return nil, fmt.Errorf("sandbox: host function %q granted but not provided: %w", g, ErrInvalidConfig)
		}
		if seen[g] {
			return nil, fmt.Errorf("sandbox: host function %q granted twice: %w", g, ErrInvalidConfig)
		}
		seen[g] = true
		out = append(out, f)
	}
	return out, nil
}

// hostFn resolves a name to a handle: the index of a granted function, or HostFnDenied.
func hostFn(i *Instance, m api.Module, stack []uint64) {
	name := guestBytes(m, stack[0], stack[1], "host function name")
	stack[0] = api.EncodeI32(abi.HostFnDenied)
	for h, f := range i.mod.hostFns {
		if f.Name == string(name) {
			stack[0] = api.EncodeI32(int32(h))
			return
		}
	}
}

// hostCallFn runs a granted function on the guest's input and keeps its output (or error
// message) pending for host_result.
func hostCallFn(i *Instance, m api.Module, stack []uint64) {
	h := int32(uint32(stack[0]))
	in := guestBytes(m, stack[1], stack[2], "host call input")
	i.hostOut = i.hostOut[:0]
	if h < 0 || int(h) >= len(i.mod.hostFns) {
		i.hostOut = append(i.hostOut, fmt.Sprintf("no host function with handle %d", h)...)
		stack[0] = uint64(abi.StatusUnknownHandler)<<32 | uint64(len(i.hostOut))
		return
	}
	f := i.mod.hostFns[h]
	if len(in) > f.MaxInput { // checked in range by guestBytes, refused before any copy
		i.hostOut = fmt.Appendf(i.hostOut, "host function %q: input of %d bytes, above its %d", f.Name, len(in), f.MaxInput)
		stack[0] = uint64(abi.StatusError)<<32 | uint64(len(i.hostOut))
		return
	}
	out, err := i.runHostFunc(f, append([]byte(nil), in...))
	i.checkStopped() // stopped while the function ran: the operation ends now
	status := abi.StatusOK
	switch {
	case err != nil:
		status, out = abi.StatusError, []byte(err.Error())
		if len(out) > maxLogLine {
			out = out[:maxLogLine]
		}
	case len(out) > f.MaxOutput:
		status, out = abi.StatusError, fmt.Appendf(nil, "host function %q: output of %d bytes, above its %d", f.Name, len(out), f.MaxOutput)
	}
	i.hostOut = append(i.hostOut, out...)
	stack[0] = uint64(status)<<32 | uint64(len(i.hostOut))
}

// runHostFunc calls f with a context that ends when the operation is stopped, recovering a
// panic.
func (i *Instance) runHostFunc(f HostFunc, in []byte) (out []byte, err error) {
	base := i.opCtx
	if base == nil {
		base = context.Background()
	}
	ctx, cancel := context.WithCancelCause(base)
	defer cancel(nil)
	i.hostMu.Lock()
	i.hostCancel = cancel
	i.hostMu.Unlock()
	defer func() {
		i.hostMu.Lock()
		i.hostCancel = nil
		i.hostMu.Unlock()
	}()
	if i.stopped() { // a stop that came before hostCancel was set
		cancel(errStopped)
	}
	defer func() {
		if r := recover(); r != nil {
			// Logged with its stack at the 1st, 2nd, 4th, 8th… panic of the instance, so
			// that a guest calling a broken function in a loop cannot flood the log; the
			// count is exact (Stats.HostFuncPanics).
			if n := i.hostFuncPanics.Add(1); n&(n-1) == 0 {
				i.logger.base.Error("host function panicked", zap.String("function", f.Name),
					zap.Uint64("panics", n), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			}
			out, err = nil, fmt.Errorf("host function %q panicked", f.Name)
		}
	}()
	return f.Func(ctx, in)
}

// cancelHostFunc ends the context of a host function in progress, if any; stop calls it.
func (i *Instance) cancelHostFunc() {
	i.hostMu.Lock()
	c := i.hostCancel
	i.hostMu.Unlock()
	if c != nil {
		c(errStopped)
	}
}

// hostResult copies the pending output into the guest's buffer.
func hostResult(i *Instance, m api.Module, stack []uint64) {
	n := uint64(len(i.hostOut))
	if uint64(uint32(stack[1])) < n {
		stack[0] = api.EncodeI32(abi.HostResultTooSmall)
		return
	}
	if n > 0 {
		dst := guestBytes(m, stack[0], n, "host result buffer")
		copy(dst, i.hostOut)
	}
	i.hostOut = i.hostOut[:0]
	stack[0] = api.EncodeI32(int32(n))
}

// Package guard runs a third-party step that bad input may crash (wazero's compiler, the
// Extism SDK's) behind a recover, so that the input gets an error and the process keeps
// serving. The sandbox's own reader refuses every module known to crash wazero 1.12 before
// wazero sees it (RATIONALE.md, "Constant globals folded at instrument time": typed
// references, indices past the module's); this is the net under that, for the next one.
//
// It works because the step runs on the calling goroutine: wazero compiles on it unless
// experimental.WithCompilationWorkers asks for more, which the sandbox never does. A panic
// on another goroutine cannot be recovered anywhere.
package guard

import (
	"fmt"
	"runtime/debug"
)

// PanicError is a panic recovered from a guarded step.
type PanicError struct {
	Value any    // what the step panicked with
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Run calls f and returns its error, or a *PanicError if it panicked. A panic whose value is
// an error is wrapped (errors.Is and As reach it through Unwrap).
func Run(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return f()
}

// Unwrap returns the panic's value when it is an error.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

package sdk

import (
	"errors"

	"github.com/wasmvisor/wasmvisor/abi"
)

// ErrDropped is returned by Publish when the host dropped the event (its bus was full or the
// topic had no room); the host counts it.
var ErrDropped = errors.New("sdk: publish: event dropped by the host")

// ErrHostFuncDenied is returned by HostCall for a host function the plugin was not granted
// (or the host does not offer: the plugin cannot tell the two apart).
var ErrHostFuncDenied = errors.New("sdk: host function not granted")

// HostFuncError is a host function's failure, as the host reported it: its status (usually
// abi.StatusError) and message (the Go error's text, or why the output was refused).
type HostFuncError struct {
	Name    string
	Status  abi.Status
	Message string
}

func (e *HostFuncError) Error() string {
	return "sdk: host function " + e.Name + ": " + e.Message
}

// InvalidInput wraps err so that, returned by a handler, it maps to STATUS_INVALID_INPUT with
// err's text as the message, instead of STATUS_ERROR. Use it when the input cannot be decoded.
// InvalidInput(nil) returns nil.
func InvalidInput(err error) error {
	if err == nil {
		return nil
	}
	return &invalidInputError{err: err}
}

type invalidInputError struct{ err error }

func (e *invalidInputError) Error() string { return e.err.Error() }
func (e *invalidInputError) Unwrap() error { return e.err }

// statusOf maps a non-nil handler or callback error to its status and message.
func statusOf(err error) (abi.Status, string) {
	var ii *invalidInputError
	if errors.As(err, &ii) {
		return abi.StatusInvalidInput, err.Error()
	}
	return abi.StatusError, err.Error()
}

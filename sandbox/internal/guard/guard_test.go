package guard

import (
	"errors"
	"testing"
)

func TestRun(t *testing.T) {
	errBoom := errors.New("boom")
	if err := Run(func() error { return nil }); err != nil {
		t.Fatalf("no panic, no error: %v", err)
	}
	if err := Run(func() error { return errBoom }); err != errBoom { //nolint:errorlint // the same value, passed through
		t.Fatalf("the step's error: %v", err)
	}
	var pe *PanicError
	err := Run(func() error { panic("index out of range") })
	if !errors.As(err, &pe) || pe.Value != "index out of range" || len(pe.Stack) == 0 || err.Error() != "panic: index out of range" {
		t.Fatalf("a panic: %#v", err)
	}
	if err := Run(func() error { panic(errBoom) }); !errors.Is(err, errBoom) || !errors.As(err, &pe) {
		t.Fatalf("a panic with an error: %v", err)
	}
}

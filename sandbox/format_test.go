package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// fakeFormat claims the bytes that start with its marker and compiles them to a fakeCode.
type fakeFormat struct {
	name     string
	marker   []byte
	compiled int
}

func (f *fakeFormat) Name() string { return f.name }

func (f *fakeFormat) Detect(wasm []byte) bool { return bytes.HasPrefix(wasm, f.marker) }

func (f *fakeFormat) Compile(_ context.Context, e *sandbox.Engine, wasm []byte, _ sandbox.Config) (sandbox.Code, error) {
	if e == nil {
		return nil, errors.New("no engine")
	}
	f.compiled++
	return fakeCode{digest: sandbox.Digest(wasm), format: f.name}, nil
}

type fakeCode struct{ digest, format string }

func (c fakeCode) Digest() string     { return c.digest }
func (c fakeCode) Format() string     { return c.format }
func (c fakeCode) Handlers() []string { return []string{"fake"} }
func (c fakeCode) Instantiate(context.Context, map[string]string) (sandbox.Runner, error) {
	return nil, errors.New("fake")
}
func (c fakeCode) Close(context.Context) error { return nil }

// Load gives the bytes to the first format that claims them, the engine's before the
// caller's, and compiles the rest as native modules, whose errors stay the sandbox's.
func TestLoadDispatchesToFormats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := &fakeFormat{name: "a", marker: []byte("A")}
	ab := &fakeFormat{name: "ab", marker: []byte("AB")}
	b := &fakeFormat{name: "b", marker: []byte("B")}
	e := newEngine(t, sandbox.WithFormats(a), sandbox.WithFormats(ab))

	for _, tc := range []struct {
		wasm  string
		extra []sandbox.Format
		want  string
	}{
		{"AB", nil, "a"},                     // the first registered that claims them
		{"B", []sandbox.Format{b}, "b"},      // the caller's, when the engine's do not
		{"AB", []sandbox.Format{b}, "a"},     // the engine's first
		{"BA", []sandbox.Format{ab, b}, "b"}, // no format before b claims "BA"
	} {
		extra := tc.extra
		c, err := e.Load(ctx, []byte(tc.wasm), sandbox.Config{}, extra...)
		if err != nil {
			t.Fatalf("Load %q: %v", tc.wasm, err)
		}
		if c.Format() != tc.want || c.Digest() != sandbox.Digest([]byte(tc.wasm)) {
			t.Errorf("Load %q: format %q digest %s, want %q", tc.wasm, c.Format(), c.Digest(), tc.want)
		}
		if got := e.Detect([]byte(tc.wasm), extra...); got == nil || got.Name() != tc.want {
			t.Errorf("Detect %q = %v, want %q", tc.wasm, got, tc.want)
		}
	}
	if ab.compiled != 0 {
		t.Errorf("a format registered after one that claims the bytes compiled them")
	}

	// Bytes no format claims are native modules: an instance is a *sandbox.Instance, and the
	// code's handlers are the last started instance's.
	c, err := e.Load(ctx, read(t, referencePath), sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(ctx) })
	if c.Format() != sandbox.NativeFormat || c.Handlers() != nil {
		t.Fatalf("native: format %q handlers %q before a start", c.Format(), c.Handlers())
	}
	r, err := c.Instantiate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	i, ok := r.(*sandbox.Instance)
	if !ok {
		t.Fatalf("native runner is a %T", r)
	}
	if !slices.Equal(c.Handlers(), i.Handlers()) || len(c.Handlers()) == 0 {
		t.Fatalf("handlers %q, instance's %q", c.Handlers(), i.Handlers())
	}
	out, err := r.CallAppend(ctx, "echo", []byte("hi"), nil)
	if err != nil || string(out) != "hi" {
		t.Fatalf("echo = %q, %v", out, err)
	}

	_, err = e.Load(ctx, read(t, "testdata/noabi.wasm"), sandbox.Config{})
	var abiErr *sandbox.ABIError
	if !errors.As(err, &abiErr) {
		t.Fatalf("noabi.wasm: %v, want *ABIError", err)
	}
	if e.Detect(read(t, referencePath)) != nil {
		t.Fatal("a format claims a native module")
	}
}

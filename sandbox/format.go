package sandbox

import (
	"context"
	"slices"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
)

// NativeFormat is the name of the format the sandbox itself runs: the wasmvisor ABI (package
// abi). Engine.Load compiles with it the bytes no registered Format claims.
const NativeFormat = "wasmvisor"

// Format is a kind of plugin an Engine can load besides the native ABI, such as Extism's
// (package sandbox/extism). A Format is registered on an engine with WithFormats; Engine.Load
// asks each registered format in order whether it claims the bytes, and the first that does
// compiles them. A Format is safe for concurrent use.
type Format interface {
	// Name is the format's name, as Code.Format reports it (e.g. "extism").
	Name() string
	// Detect reports whether wasm is a module of this format. It must be cheap (a scan of the
	// import and export sections), never panic, and return false for bytes it cannot parse.
	Detect(wasm []byte) bool
	// Compile compiles wasm for e, under cfg's limits and capabilities (the zero Limits mean
	// the sandbox's defaults). Errors are the sandbox's: *ModuleError, *MemoryLimitError,
	// ErrInvalidConfig wrapped.
	Compile(ctx context.Context, e *Engine, wasm []byte, cfg Config) (Code, error)
}

// Code is a compiled plugin of any format: Engine.Load returns one. It is safe for concurrent
// use. Close releases it; instances already made keep running until they are closed.
type Code interface {
	// Digest is the hex SHA-256 of the bytes the code was compiled from (see Digest).
	Digest() string
	// Format is the name of the format that compiled the code (NativeFormat for the native
	// ABI).
	Format() string
	// Handlers lists the handlers a caller may name, or nil while they are not known: a
	// native module declares its handlers when an instance starts, so its Code reports those
	// of the last instance started.
	Handlers() []string
	// Instantiate starts a fresh instance with config.
	Instantiate(ctx context.Context, config map[string]string) (Runner, error)
	// Close releases the code. It is idempotent.
	Close(ctx context.Context) error
}

// Runner is one instance of a Code: what a pool holds. *Instance is one. A Runner serves one
// operation at a time and answers ErrBusy at once when entered while busy; after a fatal
// error it is never entered again (Err reports why). Stats, MemoryPages, Calls, Err, Retire
// and Kill may be called from any goroutine at any time; Close once its last operation has
// returned.
type Runner interface {
	CallAppend(ctx context.Context, handler string, input, dst []byte) ([]byte, error)
	Configure(ctx context.Context, config map[string]string) error
	Deliver(ctx context.Context, topic string, payload []byte) error
	EventsWithin(since uint64, b *Budget) (EventLog, error)
	TelemetryWithin(b *Budget) ([]Metric, error)
	AppliedConfigWithin(b *Budget) (map[string]string, error)
	Stats() Stats
	MemoryPages() uint32
	Calls() uint64
	Err() error
	Retire() bool
	Kill()
	Close(ctx context.Context) error
}

var _ Runner = (*Instance)(nil)

// WithFormats registers formats besides the native ABI, in the order Engine.Load asks them.
// Default: none (the engine loads native modules only).
func WithFormats(fs ...Format) Option {
	return optionFunc(func(c *engineConfig) { c.formats = append(c.formats, fs...) })
}

// Load compiles wasm with the first of the engine's formats (WithFormats), then of extra,
// whose Detect claims it, or else as a native module (Compile, whose errors it returns
// unchanged: an *ABIError for bytes that break the ABI).
func (e *Engine) Load(ctx context.Context, wasm []byte, cfg Config, extra ...Format) (Code, error) {
	if f := e.Detect(wasm, extra...); f != nil {
		return f.Compile(ctx, e, wasm, cfg)
	}
	m, err := e.Compile(ctx, wasm, cfg)
	if err != nil {
		return nil, err
	}
	return &nativeCode{m: m}, nil
}

// Detect returns the first of the engine's formats, then of extra, that claims wasm, or nil
// if none does (the bytes are for the native ABI, or for nothing).
func (e *Engine) Detect(wasm []byte, extra ...Format) Format {
	for _, fs := range [][]Format{e.formats, extra} {
		for _, f := range fs {
			if f.Detect(wasm) {
				return f
			}
		}
	}
	return nil
}

// CompilationCache returns the compilation cache the engine compiles with (WithCacheDir,
// WithCompilationCache), or nil. A Format may compile with it too; the engine closes the one
// it opened.
func (e *Engine) CompilationCache() wazero.CompilationCache { return e.cache }

// nativeCode is a native Module as a Code. Its handlers are declared by each instance at
// start (the guest's handler list), so it keeps the last started instance's.
type nativeCode struct {
	m     *Module
	names atomic.Pointer[[]string]
}

func (c *nativeCode) Digest() string { return c.m.Digest() }

func (c *nativeCode) Format() string { return NativeFormat }

func (c *nativeCode) Handlers() []string {
	if hs := c.names.Load(); hs != nil {
		return slices.Clone(*hs)
	}
	return nil
}

func (c *nativeCode) Instantiate(ctx context.Context, config map[string]string) (Runner, error) {
	i, err := c.m.Instantiate(ctx, config)
	if err != nil {
		return nil, err
	}
	if hs := c.names.Load(); hs == nil || !slices.Equal(*hs, i.handlers) { // the same list: no copy
		hs := i.Handlers()
		c.names.Store(&hs)
	}
	return i, nil
}

func (c *nativeCode) Close(ctx context.Context) error { return c.m.Close(ctx) }

// Snapshots is Module.Snapshots.
func (c *nativeCode) Snapshots() (on bool, why string) { return c.m.Snapshots() }

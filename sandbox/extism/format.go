package extism

import (
	"context"
	"maps"
	"sync"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// Name is the format's name: sandbox.Code.Format of an Extism plugin, and the host's
// PluginInfo.Format.
const Name = "extism"

// Format returns the Extism format, to register on an engine (sandbox.WithFormats) or a host
// (host.WithFormats): it claims the modules that import from the Extism kernel (IsPlugin) and
// compiles them with Compile. Its options are Compile's; without a cache option it compiles
// with the engine's compilation cache (sandbox.Engine.CompilationCache), if any.
func Format(opts ...Option) sandbox.Format { return format{opts: opts} }

type format struct{ opts []Option }

func (format) Name() string { return Name }

func (format) Detect(wasm []byte) bool { return IsPlugin(wasm) }

func (f format) Compile(ctx context.Context, e *sandbox.Engine, wasm []byte, cfg sandbox.Config) (sandbox.Code, error) {
	var o options
	for _, opt := range f.opts {
		opt.apply(&o)
	}
	opts := append(f.opts[:len(f.opts):len(f.opts)], withWatchdog(watchdog.OfEngine(e)))
	if c := e.CompilationCache(); c != nil && o.cache == nil && o.cacheDir == "" {
		opts = append(opts, WithCompilationCache(c))
	}
	m, err := Compile(ctx, wasm, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return code{m}, nil
}

// code is a Module as a sandbox.Code.
type code struct{ *Module }

func (code) Format() string { return Name }

func (c code) Instantiate(ctx context.Context, config map[string]string) (sandbox.Runner, error) {
	i, err := c.Module.Instantiate(ctx, config)
	if err != nil {
		return nil, err
	}
	return &runner{Instance: i, config: maps.Clone(config)}, nil
}

// runner gives an Instance the parts of sandbox.Runner that Extism has no equivalent for: it
// keeps no events or telemetry in memory and cannot subscribe, and its applied config is the
// map it was last given (Extism has no way to refuse one).
type runner struct {
	*Instance

	mu     sync.Mutex
	config map[string]string
}

func (r *runner) Configure(ctx context.Context, config map[string]string) error {
	if err := r.Instance.Configure(ctx, config); err != nil {
		return err
	}
	r.mu.Lock()
	r.config = maps.Clone(config)
	r.mu.Unlock()
	return nil
}

func (r *runner) Deliver(context.Context, string, []byte) error {
	return &sandbox.GuestError{Status: abi.StatusUnknownHandler, Message: "an Extism plugin cannot subscribe"}
}

func (r *runner) EventsWithin(uint64, *sandbox.Budget) (sandbox.EventLog, error) {
	return sandbox.EventLog{}, nil
}

func (r *runner) TelemetryWithin(*sandbox.Budget) ([]sandbox.Metric, error) { return nil, nil }

// AppliedConfigWithin returns the runner's own copy of the config: nothing is read from the
// guest, so the budget does not apply.
func (r *runner) AppliedConfigWithin(*sandbox.Budget) (map[string]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.config == nil {
		return map[string]string{}, nil
	}
	return maps.Clone(r.config), nil
}

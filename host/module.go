package host

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/extism"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// module is a compiled plugin that makes instances for a pool: a wasmvisor-ABI plugin
// (package sandbox) or an Extism-PDK plugin (package extism), told apart by its imports.
type module interface {
	Digest() string
	instantiate(ctx context.Context, config map[string]string) (instance, error)
	Close(ctx context.Context) error
	format() Format
	// handlers lists the handler names a caller may use, or nil if not known yet.
	handlers() []string
}

// Format is the ABI a plugin speaks, as reported in PluginInfo.Format.
type Format string

// The plugin formats a host loads, told apart by the module's imports.
const (
	// FormatWasmvisor is the native ABI (package sandbox, the wasmvisor SDKs).
	FormatWasmvisor Format = "wasmvisor"
	// FormatExtism is an Extism-PDK plugin (package extism).
	FormatExtism Format = "extism"
)

// sandboxModule is a wasmvisor-ABI module. Its handlers are declared by each instance at
// start (the guest's handler list), so the module keeps the last started instance's.
type sandboxModule struct {
	*sandbox.Module
	names atomic.Pointer[[]string]
}

func (m *sandboxModule) instantiate(ctx context.Context, config map[string]string) (instance, error) {
	i, err := m.Instantiate(ctx, config)
	if err != nil {
		return nil, err
	}
	hs := i.Handlers()
	m.names.Store(&hs)
	return i, nil
}

func (m *sandboxModule) format() Format { return FormatWasmvisor }

func (m *sandboxModule) handlers() []string {
	if hs := m.names.Load(); hs != nil {
		return slices.Clone(*hs)
	}
	return nil
}

func (h *Host) compile(ctx context.Context, wasm []byte, cfg sandbox.Config) (module, error) {
	if extism.IsPlugin(wasm) {
		var opts []extism.Option
		if h.opts.cacheDir != "" {
			opts = append(opts, extism.WithCacheDir(h.opts.cacheDir))
		} else if h.opts.cache != nil {
			opts = append(opts, extism.WithCompilationCache(h.opts.cache))
		}
		m, err := extism.Compile(ctx, wasm, cfg, opts...)
		if err != nil {
			return nil, err
		}
		return extismModule{m}, nil
	}
	m, err := h.engine.Compile(ctx, wasm, cfg)
	if err != nil {
		return nil, err
	}
	return &sandboxModule{Module: m}, nil
}

type extismModule struct{ *extism.Module }

func (m extismModule) format() Format { return FormatExtism }

// handlers are the module's callable exports, known from compilation.
func (m extismModule) handlers() []string { return m.Handlers() }

func (m extismModule) instantiate(ctx context.Context, config map[string]string) (instance, error) {
	i, err := m.Instantiate(ctx, config)
	if err != nil {
		return nil, err
	}
	return &extismInstance{Instance: i, config: maps.Clone(config)}, nil
}

// extismInstance gives an Extism plugin the parts of the instance interface that Extism has
// no equivalent for: it keeps no events or telemetry in memory and cannot subscribe, and its
// applied config is the map it was last given (Extism has no way to refuse one).
type extismInstance struct {
	*extism.Instance

	mu     sync.Mutex
	config map[string]string
}

func (i *extismInstance) Configure(ctx context.Context, config map[string]string) error {
	if err := i.Instance.Configure(ctx, config); err != nil {
		return err
	}
	i.mu.Lock()
	i.config = maps.Clone(config)
	i.mu.Unlock()
	return nil
}

func (i *extismInstance) Deliver(context.Context, string, []byte) error {
	return &sandbox.GuestError{Status: abi.StatusUnknownHandler, Message: "an Extism plugin cannot subscribe"}
}

func (i *extismInstance) EventsWithin(uint64, *sandbox.Budget) (sandbox.EventLog, error) {
	return sandbox.EventLog{}, nil
}

func (i *extismInstance) TelemetryWithin(*sandbox.Budget) ([]sandbox.Metric, error) { return nil, nil }

// AppliedConfigWithin returns the host's own copy of the config: nothing is read from the
// guest, so the budget does not apply.
func (i *extismInstance) AppliedConfigWithin(*sandbox.Budget) (map[string]string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.config == nil {
		return map[string]string{}, nil
	}
	return maps.Clone(i.config), nil
}

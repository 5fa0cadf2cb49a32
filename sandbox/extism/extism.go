// Package extism is the Extism format of package sandbox: register Format on an engine
// (sandbox.WithFormats) or a host (host.WithFormats) and it loads the plugins built with any
// Extism PDK (Rust, C, TinyGo, Haskell, …); only programs that import this package link the
// Extism SDK. It runs them under the same contract as package sandbox: one compiled Module,
// any number of fresh Instances, one call at a time per instance, typed errors, and an
// instance that is never entered again after a fatal error. It uses the Extism Go SDK (github.com/extism/go-sdk) for the Extism
// ABI: the SDK's kernel holds input, output, vars and the error string, and the SDK's host
// module "extism:host/env" serves the guest's imports. The imports that only call the kernel
// are redirected at Compile to a module of this package that calls the same kernel
// functions without looking them up again on every call (kernel.go; RATIONALE.md, "Extism
// kernel calls without a new function per call").
//
// # Mapping of the sandbox's contract
//
//   - Limits.MemoryPages caps each linear memory of an instance (the plugin's and the Extism
//     kernel's, as the SDK's manifest Memory.MaxPages does). It is enforced by a wazero memory
//     allocator per instance instead of the runtime-wide WithMemoryLimitPages, so that a
//     refused growth is seen: a guest that then traps or exits fails with a
//     *sandbox.MemoryLimitError wrapping that trap or exit.
//   - Limits.CallTimeout bounds each call: past it the guest is stopped and the call returns
//     a *sandbox.DeadlineError. Kill and the caller's context stop a call the same way. As
//     in the sandbox, no timer, goroutine or context is made per call: the guest is
//     instrumented with the sandbox's fuel checks (wasmbin.Instrument), the engine's one
//     watchdog (or, for a module compiled without an engine, the module's own) records a
//     stop, and the guest's next safe point, watched by a wazero function listener, traps.
//     So a call ends within about its timeout plus two deadline resolutions plus the time the
//     guest takes for wasmbin.Fuel units of work; a real-clock sleep is cut short. The SDK's
//     runtime does not watch contexts (no WithCloseOnContextDone): closing a module under a
//     running call races with its WASI functions (RATIONALE.md, "Extism deadlines").
//   - Limits.StartTimeout bounds Instantiate. The guest language's own initialisation
//     (Haskell's hs_init, a WASI reactor's _initialize, __wasm_call_ctors) is run by the SDK
//     lazily inside the first call, so it counts against that call's timeout.
//   - Limits.Output bounds stdout, stderr and the Extism log calls per call and per second,
//     as in the sandbox: the excess is dropped, counted (Instance.Stats) and reported
//     through Config.OnDrop. Limits.Publish does not apply: Extism plugins cannot publish.
//   - Capabilities map to WASI as in the sandbox: Env, InheritEnv, Dirs (read-only mounts),
//     Clock and Random. Extism's allowed_paths (read-write mounts) and allowed_hosts are not
//     offered: HTTP from the guest (Extism's http_request) is always denied.
//   - The config map of Instantiate and Configure is Extism's config (config_get). Extism has
//     no change callbacks: Configure only replaces the map that later calls read.
//   - Vars (var_get/var_set) live and die with the instance: a new instance starts with none.
//   - Logger receives the guest's stdout and stderr lines ("guest output") and its Extism log
//     calls ("guest log"). Extism filters log calls by the SDK's process-wide level
//     (extism.SetLogLevel in the SDK), which is off unless the program sets it; this package
//     never changes it. The SDK's EXTISM_ENABLE_WASI_OUTPUT environment variable, when set,
//     sends guest stdout and stderr to the process's own streams instead.
//
// # Errors
//
// The SDK reports an exit, a trap and a guest error all as a plain error; this package tells
// them apart so that sandbox.Fatal gives the right answer:
//
//   - A guest error (the PDK's error_set, e.g. Rust's Err or TinyGo's pdk.SetError) is a
//     *sandbox.GuestError with Status abi.StatusError and the guest's message, exactly the
//     string the SDK returns. It is recognised by reading the kernel's error slot after the
//     call: the SDK's error is a guest error when it is that string. The instance keeps
//     serving. A handler that returns a non-zero code without setting an error (the SDK
//     returns no error then) is also a *sandbox.GuestError, with the message "returned N".
//   - A WASI proc_exit is seen through a wazero close notifier: a non-zero code is a
//     *sandbox.ExitError{Code}. Exit code 0 (a command-style plugin whose _start returns
//     through exit(0)) is what the SDK treats as success: the call returns its output and no
//     error, but the module is closed, so the instance has ended: Err reports
//     *sandbox.ExitError{Code: 0} and every later call returns it.
//   - Any other error from the guest's code is a *sandbox.TrapError.
//   - A call or Configure whose context had ended before it entered the instance is a
//     *sandbox.NotEnteredError (sandbox.ErrNotEntered, and the context's error): nothing
//     ran and the instance keeps serving. The caller's context ending a call or the start
//     while it runs is a *sandbox.DeadlineError with Caller set, or sandbox.ErrCanceled
//     wrapping context.Canceled, as in the sandbox (see sandbox.CallerEnded).
//   - Limits or capabilities that cannot be honoured (a memory limit above 65,536 pages, a
//     relative guest path, a host directory that cannot be opened, an unknown clock or
//     random source, an unusable cache directory) wrap sandbox.ErrInvalidConfig.
//
// # Host functions
//
// The host functions of sandbox.Config.HostFuncs that Capabilities.HostFunctions grants are
// served through Extism's own mechanism, the SDK's host functions: a sandbox.HostFunc named N
// is the import "extism:host/user" N (UserModule), of Extism's bytes-in/bytes-out type
// (i64) -> i64, which takes the kernel offset of the input block and returns the kernel
// offset of the output block (what a PDK's host_fn macro or pdk.Memory offset is). Grants and
// offers are the sandbox's: host.WithHostFunctions and Plugin.Capabilities serve Extism
// plugins as they serve native ones, and a grant of a function that is not offered is
// sandbox.ErrInvalidConfig. Since an Extism import is static, Compile checks every import
// and refuses, each one named:
//
//   - an import of "extism:host/user" that is not granted: sandbox.ErrInvalidConfig (the
//     module is fine, the grant is missing). A native guest asks for a function at run time
//     and is told "denied"; an Extism guest would only fail on its first call, so a load-time
//     error is the useful one;
//   - an import of "extism:host/user" of another type, such as the SDK's numeric
//     mult (i64, i64) -> i64: a *sandbox.ModuleError naming it and its type. Numbers in and
//     out are not the sandbox's bytes in, bytes out, and no config can serve them;
//   - an import from any other module, such as "host"."to_upper" (the SDK lets a host
//     function take any namespace): a *sandbox.ModuleError. Mapping "host"."to_upper" to a
//     HostFunc named "host.to_upper" would make the names ambiguous ("kv.get" in
//     "extism:host/user" or "get" in "kv"), for plugins that the PDKs do not produce by
//     default.
//
// A host function runs as in the sandbox (see sandbox.HostFunc): on the call's goroutine,
// with a context that the call's deadline, the caller's context and Kill end, after which the
// call ends with its usual error (*sandbox.DeadlineError, sandbox.ErrCanceled). Its input is
// a copy of the kernel block the guest named, so it is bounded by Limits.MemoryPages (the
// kernel's memory is capped like the plugin's); its output is written into a new kernel
// block and bounded by MaxOutput. What differs is failure: an Extism host function has no
// error channel, so an error, a panic or an output above MaxOutput cannot be handed to the
// guest. The guest is unwound from inside the host function, mid-execution, with its memory
// in whatever state it was, so the call ends with a *HostFuncError naming the function and
// the instance has ended (sandbox.Fatal: it matches sandbox.ErrTrap). A panic is recovered,
// logged with its stack ("host function panicked") and counted in Stats.HostFuncPanics, as
// in the sandbox.
//
// Not supported: imports other than "extism:host/env", WASI preview 1 and the granted host
// functions, linking several modules (the manifest's list of wasm), HTTP, read-write
// directory mounts, and the Observe SDK adapter.
package extism

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	sdk "github.com/extism/go-sdk"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/guard"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// KernelModule is the import module of the Extism kernel; a module that imports from it is an
// Extism plugin.
const KernelModule = "extism:host/env"

const wasiModule = "wasi_snapshot_preview1"

// Option configures Compile.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	cacheDir string
	cache    wazero.CompilationCache
	wd       *watchdog.Watchdog // the engine's, from Format; else the module starts its own
}

// withWatchdog watches the module's instances with wd, an engine's watchdog.
func withWatchdog(wd *watchdog.Watchdog) Option {
	return optionFunc(func(o *options) { o.wd = wd })
}

// WithCacheDir keeps compiled code in dir (a wazero file cache, like sandbox.WithCacheDir), so
// that compiling the same plugin again, in this process or another, is quick. The Module
// closes the cache it opens.
func WithCacheDir(dir string) Option { return optionFunc(func(o *options) { o.cacheDir = dir }) }

// WithCompilationCache shares a wazero compilation cache between modules. The caller closes
// it after every Module using it is closed.
func WithCompilationCache(c wazero.CompilationCache) Option {
	return optionFunc(func(o *options) { o.cache = c })
}

// Module is a compiled Extism plugin. It is safe for concurrent use.
type Module struct {
	cp       *sdk.CompiledPlugin
	cache    wazero.CompilationCache // closed with the module when it opened it
	digest   string
	cfg      sandbox.Config
	logger   *zap.Logger
	base     wazero.ModuleConfig
	handlers []string
	callable map[string]bool
	wd       *watchdog.Watchdog // watches the calls of the module's instances
	ownWD    bool               // wd is the module's own, closed with the SDK's runtime
	plugins  sync.Map           // *sdk.Plugin -> *Instance, for safePoints

	mu     sync.Mutex
	refs   int // open instances
	closed bool
	done   bool // the SDK's runtime is closed
}

// Compile compiles an Extism plugin once; Instantiate then makes fresh instances of it. The
// zero Limits mean sandbox's defaults. Bytes that are not a module give a *sandbox.ModuleError;
// a module whose initial memory is above the limit gives a *sandbox.MemoryLimitError.
func Compile(ctx context.Context, wasm []byte, cfg sandbox.Config, opts ...Option) (*Module, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Capabilities.Validate(); err != nil {
		return nil, err
	}
	info, err := sandbox.Inspect(wasm)
	if err != nil {
		return nil, err
	}
	granted, err := cfg.GrantedHostFuncs()
	if err != nil {
		return nil, err
	}
	if err := checkImports(info.Imports, granted); err != nil {
		return nil, err
	}
	if info.MemoryMinPages > uint64(cfg.Limits.MemoryPages) {
		return nil, &sandbox.MemoryLimitError{LimitPages: cfg.Limits.MemoryPages,
			Cause: fmt.Errorf("initial memory of %d pages", info.MemoryMinPages)}
	}
	m := &Module{digest: info.Digest, cfg: cfg, logger: cfg.Logger, callable: map[string]bool{}}
	if m.logger == nil {
		m.logger = zap.NewNop()
	}
	for _, s := range info.Exports {
		if s.Kind != "function" || (s.Type != "() -> i32" && s.Type != "() -> ()") {
			continue
		}
		m.callable[s.Name] = true
		if !internal(s.Name) {
			m.handlers = append(m.handlers, s.Name)
		}
	}
	sort.Strings(m.handlers)

	// The guest is instrumented as the sandbox's (fuel checks at loop heads and function
	// entries, chunked bulk memory and table instructions), so that the watchdog can stop
	// it at a safe point: see safePoints. The memory is not clamped here: the allocator
	// enforces Limits.MemoryPages. The runtime is the SDK's default, without
	// WithCloseOnContextDone: no goroutine per call and no check of its own in the code.
	bin, err := instrument(wasm)
	if err != nil {
		return nil, err
	}
	rc := wazero.NewRuntimeConfig()
	switch {
	case o.cache != nil:
		rc = rc.WithCompilationCache(o.cache)
	case o.cacheDir != "":
		if m.cache, err = wazero.NewCompilationCacheWithDir(o.cacheDir); err != nil {
			return nil, fmt.Errorf("extism: cache dir: %w: %w", sandbox.ErrInvalidConfig, err)
		}
		rc = rc.WithCompilationCache(m.cache)
	}
	manifest := sdk.Manifest{Wasm: []sdk.Wasm{sdk.WasmData{Data: bin, Name: "main"}}}
	lctx := experimental.WithFunctionListenerFactory(ctx, safePoints{m})
	err = guard.Run(func() (err error) {
		m.cp, err = sdk.NewCompiledPlugin(lctx, manifest, sdk.PluginConfig{RuntimeConfig: rc, EnableWasi: true}, m.hostFunctions(granted))
		return err
	})
	if err != nil {
		if m.cache != nil {
			_ = m.cache.Close(ctx)
		}
		return nil, &sandbox.ModuleError{Reason: err.Error(), Err: err}
	}
	m.base = cfg.Capabilities.ModuleConfig()
	if m.wd = o.wd; m.wd == nil {
		m.wd, m.ownWD = watchdog.New(sandbox.DefaultDeadlineResolution, nil), true
	}
	return m, nil
}

// internal reports exports that are callable but not handlers: WASI and language-runtime
// entry points, and the asyncify helpers TinyGo adds.
func internal(name string) bool {
	switch name {
	case "_start", "_initialize", "hs_init", "hs_exit":
		return true
	}
	return strings.HasPrefix(name, "__") || strings.HasPrefix(name, "asyncify_")
}

// Digest is the hex SHA-256 of the module's bytes, as sandbox.Digest.
func (m *Module) Digest() string { return m.digest }

// Handlers lists the exports a caller may name: functions of type () -> i32 or () -> (),
// without _start, _initialize, language-runtime entry points and TinyGo's asyncify helpers.
// Call still accepts _start, for command-style plugins.
func (m *Module) Handlers() []string { return append([]string(nil), m.handlers...) }

// Config returns the module's config with the defaults filled in.
func (m *Module) Config() sandbox.Config { return m.cfg }

// Close releases the module. Instances already made keep running until closed; the compiled
// code is freed with the last of them. Close is idempotent.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return m.release(ctx)
}

// release closes the SDK's runtime once the module is closed and no instance is open; m.mu
// is held.
func (m *Module) release(ctx context.Context) error {
	if !m.closed || m.refs > 0 || m.done {
		return nil
	}
	m.done = true
	err := m.cp.Close(ctx)
	if m.ownWD {
		m.wd.Close()
	}
	if m.cache != nil {
		err = errors.Join(err, m.cache.Close(ctx))
	}
	return err
}

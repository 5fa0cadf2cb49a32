// Package sandbox runs WebAssembly plugins in isolated, limited instances: one compiled
// module, any number of fresh instances, each with its own linear memory and stores.
//
// It knows wazero and the wasmvisor ABI (package abi), and nothing about names, supervision or
// restarts: that is the host's job. The pieces:
//
//   - Engine: one wazero runtime, one deadline watchdog, a compiled-module cache keyed by
//     digest and memory limit, and an optional on-disk compilation cache.
//   - Module: a compiled, ABI-checked plugin with its limits and capabilities.
//   - Instance: one sandbox. It serves one call at a time (a second caller gets ErrBusy at
//     once, so the instance's own lock can serve as a pool's); an instance that trapped,
//     exited, hit its memory limit, ran past its deadline or broke the ABI is never entered
//     again, and Retire drains one gracefully. Closed instances' memories are recycled,
//     zeroed (or reverted to the snapshot's image), for the next instance of the module;
//     what a guest grew into is given back to the operating system when the instance
//     closes.
//
// Snapshots (on by default; WithSnapshots, Config.NoSnapshot): a module's first Instantiate
// runs the start sequence (data segments, _initialize, wasmvisor_init) in an instance of its
// own and keeps the state it leaves — the linear memory, the mutable globals, the control
// block and the handler list; every instance is then restored from that snapshot and only
// gets its config. On Linux (amd64, arm64) the memory image is a memory file mapped into each
// instance copy-on-write, so an instance holds only the pages it writes, and recycling its
// memory reverts them. A snapshot belongs to one Module and freezes what init computed,
// including what it read from the environment, the clock and the random source; a module
// whose code can change a table is not snapshottable and starts the normal way
// (Module.Snapshots says why). RATIONALE.md, "Snapshots".
//
// Limits are per plugin even though the runtime is shared: the memory limit is written into
// the module (its maximum is clamped at load), and deadlines are enforced by instrumentation
// and a shared watchdog rather than by wazero's goroutine per call. RATIONALE.md explains both.
//
// A deadline holds for every instruction. The guest pays fuel for its work, bulk memory and
// table instructions and memory.grow by their length (done in 64 KiB chunks), and the host
// functions the sandbox provides check the interrupt at entry and every 64 KiB of work. So an
// operation ends within its timeout plus two deadline resolutions, plus the time the guest
// takes for wasmbin.Fuel units of work (about 2^18 instructions) and one region or chunk, plus
// one piece of host work, plus the unwinding: a few milliseconds of CPU in practice, about
// 30 ms in the worst case an instruction mix can force (RATIONALE.md, "Deadlines that hold for
// every instruction", states the bound and what it leaves out: a file read from a granted
// directory is bounded by its length, not cut).
package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/sandbox/internal/guard"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// Defaults of the Engine options.
const (
	// DefaultDeadlineResolution is how often the watchdog checks calls in flight: a call is
	// stopped at most about two resolutions after its deadline.
	DefaultDeadlineResolution = time.Millisecond
)

// Option configures an Engine.
type Option interface{ apply(*engineConfig) }

type optionFunc func(*engineConfig)

func (f optionFunc) apply(c *engineConfig) { f(c) }

type engineConfig struct {
	cacheDir   string
	cache      wazero.CompilationCache
	logger     *zap.Logger
	resolution time.Duration
	formats    []Format
	noSnaps    bool
	noRecycle  bool
	copyImages bool   // tests only: snapshots are copied, never mapped, as where mapping fails
	mapImages  bool   // tests only: snapshots are mapped whatever their size (see copyImagesUpTo)
	onPark     func() // tests only: see watchdog.New
}

// WithCacheDir keeps compiled code in dir, so that a later Engine (another process, another
// test) compiles the same module in milliseconds. The cache is content-addressed and safe to
// share.
func WithCacheDir(dir string) Option {
	return optionFunc(func(c *engineConfig) { c.cacheDir = dir })
}

// WithCompilationCache shares an in-memory or on-disk wazero compilation cache between
// engines. The caller closes it after every engine using it is closed.
func WithCompilationCache(cache wazero.CompilationCache) Option {
	return optionFunc(func(c *engineConfig) { c.cache = cache })
}

// WithLogger sets the logger for the engine and the default logger of plugins (guest logs,
// stdout and stderr). Default: no-op.
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(c *engineConfig) { c.logger = l })
}

// WithDeadlineResolution sets how often the watchdog checks calls in flight. Default 1ms.
func WithDeadlineResolution(d time.Duration) Option {
	return optionFunc(func(c *engineConfig) { c.resolution = d })
}

// WithSnapshots turns snapshots on or off for every module of the engine: with them, a
// module's first instance runs the start sequence and the next ones start from a copy of the
// state it left (RATIONALE.md, "Snapshots"; Config.NoSnapshot turns them off for one module).
// Default on.
func WithSnapshots(on bool) Option {
	return optionFunc(func(c *engineConfig) { c.noSnaps = !on })
}

// WithRecycling turns the recycling of closed instances on or off (default on). With it, a
// closed instance of a module with snapshots gives its wazero module instance back to the
// Module, its memory set back to the snapshot's image, and a later Instantiate of that Module
// adopts it rather than having wazero make a new one: the guest cannot tell the difference,
// and a fresh instance costs a fraction (RATIONALE.md, "Recycled instances").
func WithRecycling(on bool) Option {
	return optionFunc(func(c *engineConfig) { c.noRecycle = !on })
}

// Engine compiles and runs plugins. It is safe for concurrent use. Close it when done: it
// closes every module and instance it made.
type Engine struct {
	rt       wazero.Runtime
	ownCache wazero.CompilationCache // closed with the engine when it made it
	logger   *zap.Logger
	wd       *watchdog.Watchdog
	cache    wazero.CompilationCache // the one it compiles with, or nil
	formats  []Format
	// snapshots: modules start their instances from snapshots, unless they say otherwise.
	snapshots  bool
	copyImages bool     // see engineConfig
	mapImages  bool     // see engineConfig
	noRecycle  bool     // see engineConfig
	pagemap    *os.File // the kernel's page map of this process, for Rewind and recycling; nil where there is none

	mu       sync.Mutex
	compiled map[compileKey]*compiled
	kept     map[compileKey]*kept // see Keep
	closed   bool
}

// kept is code that Keep holds for its n callers that have not released it.
type kept struct {
	code Code
	n    int
}

func (e *Engine) register(i *Instance) {
	e.wd.Add(&i.wde, (*watched)(i))
}

func (e *Engine) unregister(i *Instance) {
	e.wd.Remove(&i.wde)
}

type compileKey struct {
	digest   [sha256.Size]byte
	maxPages uint32
}

// compiled is code shared by the Modules of one digest and memory limit.
type compiled struct {
	key   compileKey
	info  *Info // of the bytes as loaded
	snap  wasmbin.Snapshot
	code  wazero.CompiledModule
	refs  int           // guarded by Engine.mu
	ready chan struct{} // closed when code or err is set
	err   error
}

// NewEngine makes an Engine.
func NewEngine(ctx context.Context, opts ...Option) (*Engine, error) {
	cfg := engineConfig{resolution: DefaultDeadlineResolution}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.resolution <= 0 {
		return nil, fmt.Errorf("sandbox: deadline resolution %v: must be positive: %w", cfg.resolution, ErrInvalidConfig)
	}
	if cfg.logger == nil {
		cfg.logger = zap.NewNop()
	}
	e := &Engine{logger: cfg.logger, compiled: make(map[compileKey]*compiled), formats: cfg.formats, snapshots: !cfg.noSnaps,
		copyImages: cfg.copyImages, mapImages: cfg.mapImages, noRecycle: cfg.noRecycle}
	rc := wazero.NewRuntimeConfigCompiler().
		WithCloseOnContextDone(false). // deadlines are ours: see RATIONALE.md
		WithMemoryLimitPages(65536)    // per plugin limits are clamped into each module
	cache := cfg.cache
	if cache == nil && cfg.cacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("sandbox: compilation cache %q: %w: %w", cfg.cacheDir, ErrInvalidConfig, err)
		}
		cache, e.ownCache = c, c
	}
	if cache != nil {
		e.cache = cache
		rc = rc.WithCompilationCache(cache)
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, e.rt); err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("sandbox: WASI: %w", err)
	}
	if err := e.instantiateHostModule(ctx); err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("sandbox: host module: %w", err)
	}
	e.wd = watchdog.New(cfg.resolution, cfg.onPark)
	e.pagemap = openPagemap()
	return e, nil
}

// Close closes every instance and module of the engine, and the engine. It is idempotent.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	ks := e.kept
	e.kept = nil
	e.mu.Unlock()
	for _, k := range ks { // another format's code may hold a runtime of its own
		_ = k.code.Close(ctx)
	}
	e.wd.Close()
	err := e.rt.Close(ctx)
	if e.pagemap != nil {
		_ = e.pagemap.Close() // an instance closed later compares every page instead
	}
	if e.ownCache != nil {
		if cerr := e.ownCache.Close(ctx); err == nil {
			err = cerr
		}
	}
	return err
}

// Digest returns the hex SHA-256 of wasm: the identity under which an engine compiles it.
func Digest(wasm []byte) string {
	d := sha256.Sum256(wasm)
	return hex.EncodeToString(d[:])
}

// Keep loads wasm as Load does and keeps the code in the engine until every Keep of the same
// bytes and memory limit has been released, or the engine is closed. Code is shared by the
// Modules of those bytes and limit on the engine (Compile) only while one of them is open: a
// program that makes and closes hosts one after another on one engine (host.WithEngine),
// such as a test binary with a host per test or a case runner with a host per case, would
// compile a plugin again for each. With the code kept, each compiles nothing.
//
// Keep does not keep bytes that fail to load: it returns Load's error. Another format's code
// (WithFormats) is kept too, but only formats that share code between Loads gain from it, and
// the native one does. release is idempotent.
func (e *Engine) Keep(ctx context.Context, wasm []byte, cfg Config) (release func(), err error) {
	key := compileKey{digest: sha256.Sum256(wasm), maxPages: cfg.Limits.withDefaults().MemoryPages}
	if k, ok := e.keepHit(key); ok {
		return e.releaser(key, k), nil
	} else if e.isClosed() {
		return nil, fmt.Errorf("sandbox: engine: %w", ErrClosed)
	}
	code, err := e.Load(ctx, wasm, cfg)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = code.Close(ctx)
		return nil, fmt.Errorf("sandbox: engine: %w", ErrClosed)
	}
	k, ok := e.kept[key]
	if ok { // kept meanwhile by another caller: theirs serves
		k.n++
	} else {
		if e.kept == nil {
			e.kept = make(map[compileKey]*kept)
		}
		k = &kept{code: code, n: 1}
		e.kept[key] = k
	}
	e.mu.Unlock()
	if ok {
		_ = code.Close(ctx)
	}
	return e.releaser(key, k), nil
}

func (e *Engine) keepHit(key compileKey) (*kept, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k, ok := e.kept[key]
	if ok && !e.closed {
		k.n++
		return k, true
	}
	return nil, false
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// releaser is one Keep's release of k.
func (e *Engine) releaser(key compileKey, k *kept) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			k.n--
			last := k.n == 0 && e.kept[key] == k
			if last {
				delete(e.kept, key)
			}
			e.mu.Unlock()
			if last {
				_ = k.code.Close(context.Background())
			}
		})
	}
}

// acquire returns the compiled code for key, compiling with build on a miss. Concurrent
// acquirers of one key wait for one compilation; other keys compile in parallel.
func (e *Engine) acquire(ctx context.Context, key compileKey, build func() (*Info, wasmbin.Snapshot, []byte, error)) (*compiled, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("sandbox: engine: %w", ErrClosed)
	}
	if c, ok := e.compiled[key]; ok {
		c.refs++
		e.mu.Unlock()
		<-c.ready
		if c.err != nil {
			return nil, c.err
		}
		return c, nil
	}
	c := &compiled{key: key, refs: 1, ready: make(chan struct{})}
	e.compiled[key] = c
	e.mu.Unlock()

	info, snap, bin, err := build()
	c.snap = snap
	if err == nil {
		c.info = info
		err = guard.Run(func() (err error) {
			c.code, err = e.rt.CompileModule(ctx, bin)
			return err
		})
		if err != nil {
			err = &ModuleError{Reason: err.Error(), Err: err}
		}
	}
	c.err = err
	close(c.ready)
	if err != nil {
		e.mu.Lock()
		delete(e.compiled, key)
		e.mu.Unlock()
		return nil, err
	}
	return c, nil
}

func (e *Engine) release(ctx context.Context, c *compiled) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c.refs--
	if c.refs == 0 && !e.closed && e.compiled[c.key] == c {
		delete(e.compiled, c.key)
		_ = c.code.Close(ctx)
	}
}

// watched is an Instance as the watchdog sees it, so that Instance exports no Watch method.
type watched Instance

func (w *watched) Watch(now time.Duration) bool { return (*Instance)(w).watch(now) }

func init() {
	watchdog.OfEngine = func(e any) *watchdog.Watchdog { return e.(*Engine).wd }
}

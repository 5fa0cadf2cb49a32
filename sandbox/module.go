package sandbox

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/guestio"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
)

// Defaults of Limits; each applies where the field is zero.
const (
	// DefaultMemoryPages is 256 MiB of linear memory (64 KiB pages).
	DefaultMemoryPages = 4096
	// DefaultCallTimeout bounds one call.
	DefaultCallTimeout = 5 * time.Second
	// DefaultStartTimeout bounds the start of an instance: _initialize, wasmvisor_init and
	// the first configure, together.
	DefaultStartTimeout = 10 * time.Second
)

// NoTimeout, as a timeout, turns the deadline off.
const NoTimeout time.Duration = -1

// Limits bound what one instance of a plugin may use.
type Limits struct {
	// MemoryPages caps the linear memory, in 64 KiB pages. 0 means DefaultMemoryPages; at
	// most 65536. A module whose initial memory is above the cap is refused at Compile.
	MemoryPages uint32
	// CallTimeout bounds each call (and each configure and delivery). 0 means
	// DefaultCallTimeout; NoTimeout turns it off (the caller's context still applies).
	CallTimeout time.Duration
	// StartTimeout bounds the start of an instance. 0 means DefaultStartTimeout; NoTimeout
	// turns it off.
	StartTimeout time.Duration
	// Output bounds what each instance writes to stdout, stderr and the log import, per
	// operation and per second. The zero value takes the defaults (64 KiB and 256 lines per
	// operation, 1 MiB and 1,000 lines per second, per stream).
	Output OutputLimits
	// Publish bounds what each instance publishes, per operation and per second. The zero
	// value takes the defaults (64 messages and 64 KiB per operation, 1,000 messages and
	// 1 MiB per second).
	Publish PublishLimits
}

func (l Limits) withDefaults() Limits {
	if l.MemoryPages == 0 {
		l.MemoryPages = DefaultMemoryPages
	}
	if l.CallTimeout == 0 {
		l.CallTimeout = DefaultCallTimeout
	}
	if l.StartTimeout == 0 {
		l.StartTimeout = DefaultStartTimeout
	}
	l.Output = l.Output.withDefaults()
	l.Publish = l.Publish.withDefaults()
	return l
}

// WithDefaults returns l with every zero field set to its default (and every negative bound of
// Output and Publish to Unlimited): the limits an instance gets. It is for formats outside
// this package (package sandbox/extism).
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

// Config is what a plugin gets besides its code. The zero value is a plugin with default
// limits, no capabilities and no logger.
type Config struct {
	// Limits bound each instance.
	Limits Limits
	// Capabilities grants access beyond the sandbox; the zero value grants nothing.
	Capabilities Capabilities
	// Logger receives the guest's log lines, stdout and stderr. Default: the engine's.
	Logger *zap.Logger
	// OnPublish receives what the guest publishes (the bytes are the host's own copies). It
	// returns false to drop the event: the guest is told, and Instance.Stats counts it. With
	// no OnPublish every publish is dropped and counted.
	OnPublish func(topic string, data []byte) bool
	// OnDrop, if set, receives the reports of what an instance's output and publishes dropped
	// under Limits.Output and Limits.Publish: at most one per stream per second per
	// instance, plus one at Close for what is left, on the goroutine of the operation that
	// dropped (or of Close). It must be quick and must not call into the instance. With no
	// OnDrop each report is one warning on Logger ("guest output dropped").
	OnDrop func(DropReport)
	// HostFuncs are the host functions the embedding program offers; the guest may call
	// those Capabilities.HostFunctions grants, and no other.
	HostFuncs []HostFunc
	// OnCall, if set, receives the duration of sampled calls (Call and CallAppend, whatever
	// their outcome), on the caller's goroutine after the call: one call in 2^CallSampling,
	// chosen by the instance's operation count, so that no clock is read for the others
	// (reading it twice costs about as much as a small call).
	OnCall func(d time.Duration)
	// CallSampling is the log2 of how many calls one OnCall sample stands for (at most 31);
	// 0 times every call.
	CallSampling uint
	// NoSnapshot turns snapshots off for this module: every instance runs the start sequence
	// itself (RATIONALE.md, "Snapshots"). Default: snapshots, unless the engine has them off
	// (WithSnapshots). A snapshot freezes everything the first instance's start sequence
	// computed, including what it read from the environment, the clock and the random
	// source (with ClockReal or RandomCrypto granted, every instance starts with the values
	// the first one saw); turn them off when a plugin needs its own at each start.
	NoSnapshot bool
}

// Module is a compiled plugin that passed the ABI check. It is safe for concurrent use.
type Module struct {
	eng    *Engine
	code   *compiled
	digest string
	cfg    Config
	info   *Info
	logger *zap.Logger
	base   wazero.ModuleConfig // the instances' shared wazero config
	wasi   wasiUse             // what of it each instance gets its own of
	drops  func(guestio.Drop)  // cfg.DropReporter(logger), made once for every instance
	names  metricNames         // the metric names its instances report, interned

	hasInitialize bool
	hostFns       []HostFunc // granted, in grant order: a guest's handles index it
	sampleMask    uint64     // of Config.OnCall
	mems          memPool    // recycled linear memories: see linearMemory

	snapOff     string   // why instances do not start from a snapshot; "" when they do
	globalNames []string // the exports of the mutable globals, for snapshots
	snap        atomic.Pointer[snapshot]
	spares      []*spare // recycled module instances, under mu: see recycle

	mu        sync.Mutex
	closed    bool
	capturing bool // an instance is taking the snapshot: under mu
}

// Compile checks wasm against the ABI, limits it and compiles it. Code is shared: compiling
// the same bytes with the same memory limit again, on the same engine, does no work.
func (e *Engine) Compile(ctx context.Context, wasm []byte, cfg Config) (*Module, error) {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Limits.MemoryPages > 65536 {
		return nil, fmt.Errorf("sandbox: memory limit %d pages: at most 65536: %w", cfg.Limits.MemoryPages, ErrInvalidConfig)
	}
	if err := cfg.Capabilities.validate(); err != nil {
		return nil, err
	}
	hostFns, err := resolveHostFuncs(cfg.HostFuncs, cfg.Capabilities.HostFunctions)
	if err != nil {
		return nil, err
	}
	// The bytes are inspected and instrumented only when no Module of this engine holds their
	// code: a hit costs a hash (a Go plugin's inspection costs tens of milliseconds under the
	// race detector, paid by every test that loads it otherwise).
	key := compileKey{digest: sha256.Sum256(wasm), maxPages: cfg.Limits.MemoryPages}
	// One variant serves both ways of starting an instance (snapshots on and off): see
	// RATIONALE.md, "Snapshots".
	code, err := e.acquire(ctx, key, func() (*Info, wasmbin.Snapshot, []byte, error) {
		var none wasmbin.Snapshot
		info, parsed, err := inspect(wasm)
		if err != nil {
			return nil, none, nil, err
		}
		if len(info.Problems) > 0 {
			return nil, none, nil, &ABIError{Problems: info.Problems}
		}
		if err := wasmbin.CheckTables(parsed); err != nil {
			return nil, none, nil, &MemoryLimitError{LimitPages: cfg.Limits.MemoryPages, Cause: err}
		}
		bin, snap, err := wasmbin.InstrumentSnapshot(parsed, cfg.Limits.MemoryPages)
		if errors.Is(err, wasmbin.ErrMinAboveLimit) {
			return nil, none, nil, &MemoryLimitError{LimitPages: cfg.Limits.MemoryPages, Cause: err}
		}
		if err != nil {
			return nil, none, nil, &ModuleError{Reason: err.Error(), Err: err}
		}
		return info, snap, bin, nil
	})
	if err != nil {
		return nil, err
	}
	info := code.info
	logger := cfg.Logger
	if logger == nil {
		logger = e.logger
	}
	m := &Module{eng: e, code: code, hostFns: hostFns, digest: info.Digest, cfg: cfg, info: info, logger: logger,
		sampleMask: 1<<min(cfg.CallSampling, 31) - 1}
	m.wasi = wasiUseOf(info.Imports)
	m.base = cfg.Capabilities.baseConfig(m.wasi)
	m.drops = cfg.DropReporter(logger)
	plan := planSnapshots(e, cfg, code.snap)
	m.snapOff, m.globalNames = plan.off, plan.names
	for _, ex := range info.Exports {
		if ex.Name == abi.ExportInitialize {
			m.hasInitialize = true
		}
	}
	return m, nil
}

// Digest is the hex SHA-256 of the module's bytes as loaded.
func (m *Module) Digest() string { return m.digest }

// Info describes the module's exports, imports and memory, as found by Inspect. Modules of
// the same bytes share it: it must not be modified.
func (m *Module) Info() *Info { return m.info }

// Config returns the module's config with the defaults filled in.
func (m *Module) Config() Config { return m.cfg }

// Close releases the module's code once no other Module uses it, and the memories it kept
// for its next instances. Instances already made keep running until closed (their memories
// are then freed, not kept). Close is idempotent.
func (m *Module) Close(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.closeSpares() // before the code they run is released
	m.eng.release(ctx, m.code)
	m.mems.close()
	if s := m.snap.Load(); s != nil {
		s.close()
	}
	return nil
}

// Info is what Inspect learns about a module without running it.
type Info struct {
	Digest  string
	Size    int
	Exports []Symbol
	Imports []Symbol
	// MemoryMinPages and MemoryMaxPages are the declared limits of the module's memory
	// (MemoryMaxPages is 0 when undeclared).
	MemoryMinPages, MemoryMaxPages uint64
	// Problems lists every way the module breaks ABI v1; empty for a valid plugin.
	Problems []Problem
}

// Symbol is one export or import.
type Symbol struct {
	Module string `json:"module,omitempty"` // imports only
	Name   string `json:"name"`
	Kind   string `json:"kind"` // "function", "memory", "global", "table", "tag"
	Type   string `json:"type"` // function signature, e.g. "(i32) -> i32"
}

// Inspect reads wasm without compiling or running it: its exports, imports and memory, and
// every ABI problem. It returns an error only when the bytes are not a module at all.
func Inspect(wasm []byte) (*Info, error) {
	info, _, err := inspect(wasm)
	return info, err
}

func inspect(wasm []byte) (*Info, *wasmbin.Module, error) {
	m, err := wasmbin.Parse(wasm)
	if err != nil {
		return nil, nil, &ModuleError{Reason: err.Error(), Err: err}
	}
	info := &Info{Digest: Digest(wasm), Size: len(wasm)}
	sig := func(ft wasmbin.FuncType) abi.Signature {
		s := abi.Signature{}
		for _, p := range ft.Params {
			s.Params = append(s.Params, abi.ValType(p))
		}
		for _, r := range ft.Results {
			s.Results = append(s.Results, abi.ValType(r))
		}
		return s
	}
	problem := func(k ProblemKind, what, name, detail string) {
		info.Problems = append(info.Problems, Problem{Kind: k, What: what, Name: name, Detail: detail})
	}

	// Imports.
	hostImports := abi.Imports()
	var funcIdx uint32
	for _, im := range m.Imports {
		s := Symbol{Module: im.Module, Name: im.Name, Kind: wasmbin.KindName(im.Kind)}
		var fs abi.Signature
		if im.Kind == wasmbin.KindFunc {
			if ft, ok := m.FuncType(funcIdx); ok {
				fs = sig(ft)
				s.Type = fs.String()
			}
			funcIdx++
		}
		info.Imports = append(info.Imports, s)
		full := im.Module + "." + im.Name
		switch {
		case im.Kind == wasmbin.KindMemory:
			problem(Unexpected, "import", full, "the memory must be defined and exported by the module, not imported")
		case im.Module == abi.ImportModule:
			want, ok := hostImports[im.Name]
			switch {
			case !ok:
				problem(Unexpected, "import", full, "the host provides no such function")
			case im.Kind != wasmbin.KindFunc:
				problem(Malformed, "import", full, "must be a function")
			case !fs.Equal(want):
				problem(Malformed, "import", full, fmt.Sprintf("type %s, want %s", fs, want))
			}
		case im.Module == abi.WASIModule:
			if im.Kind != wasmbin.KindFunc || !wasiFunctions[im.Name] {
				problem(Unexpected, "import", full, "not a WASI preview 1 function")
			}
		default:
			problem(Unexpected, "import", full, fmt.Sprintf("only modules %q and %q are provided", abi.ImportModule, abi.WASIModule))
		}
	}

	// Memory.
	if len(m.Memories) > 0 {
		info.MemoryMinPages = m.Memories[0].Min
		if m.Memories[0].HasMax {
			info.MemoryMaxPages = m.Memories[0].Max
		}
	}
	if len(m.Memories) > 1 {
		problem(Unexpected, "section", "memory", fmt.Sprintf("%d memories; the ABI has exactly one", len(m.Memories)))
	}
	if len(m.Memories) > 0 && m.Memories[0].Shared {
		problem(Unexpected, "section", "memory", "shared memory is not supported")
	}
	if m.HasStart {
		problem(Unexpected, "section", "start", "a start function cannot be bounded by the start deadline: use _initialize")
	}

	// Exports.
	specs := abi.Exports()
	byName := make(map[string]wasmbin.Export, len(m.Exports))
	for _, ex := range m.Exports {
		byName[ex.Name] = ex
		s := Symbol{Name: ex.Name, Kind: wasmbin.KindName(ex.Kind)}
		if ex.Kind == wasmbin.KindFunc {
			if ft, ok := m.FuncType(ex.Index); ok {
				s.Type = sig(ft).String()
			}
		}
		info.Exports = append(info.Exports, s)
	}
	if ex, ok := byName[abi.ExportMemory]; !ok {
		problem(Missing, "export", abi.ExportMemory, "")
	} else if ex.Kind != wasmbin.KindMemory {
		problem(Malformed, "export", abi.ExportMemory, "must be a memory, is a "+wasmbin.KindName(ex.Kind))
	}
	known := map[string]bool{}
	for _, sp := range specs {
		known[sp.Name] = true
		ex, ok := byName[sp.Name]
		if !ok {
			if sp.Required {
				problem(Missing, "export", sp.Name, "want function "+sp.Signature.String())
			}
			continue
		}
		if ex.Kind != wasmbin.KindFunc {
			problem(Malformed, "export", sp.Name, "must be a function, is a "+wasmbin.KindName(ex.Kind))
			continue
		}
		ft, ok := m.FuncType(ex.Index)
		if !ok {
			problem(Malformed, "export", sp.Name, "names no function")
			continue
		}
		if got := sig(ft); !got.Equal(sp.Signature) {
			problem(Malformed, "export", sp.Name, fmt.Sprintf("type %s, want %s", got, sp.Signature))
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		switch {
		case n == abi.ExportStart:
			problem(Unexpected, "export", n, "plugins are reactors: build with -buildmode=c-shared (Go) or -mexec-model=reactor (C)")
		case strings.HasPrefix(n, wasmbin.ReservedPrefix):
			problem(Unexpected, "export", n, "the name is reserved for the host")
		case strings.HasPrefix(n, abi.ExportPrefix) && !known[n]:
			problem(Unexpected, "export", n, "not an export of ABI v1")
		}
	}
	return info, m, nil
}

// wasiFunctions are the functions of WASI preview 1.
var wasiFunctions = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range strings.Fields(`args_get args_sizes_get environ_get environ_sizes_get
		clock_res_get clock_time_get fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get
		fd_fdstat_set_flags fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size
		fd_filestat_set_times fd_pread fd_prestat_get fd_prestat_dir_name fd_pwrite fd_read
		fd_readdir fd_renumber fd_seek fd_sync fd_tell fd_write path_create_directory
		path_filestat_get path_filestat_set_times path_link path_open path_readlink
		path_remove_directory path_rename path_symlink path_unlink_file poll_oneoff proc_exit
		proc_raise random_get sched_yield sock_accept sock_recv sock_send sock_shutdown`) {
		m[n] = true
	}
	return m
}()

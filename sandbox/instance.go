package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/lifecycle"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/wasmbin"
	"github.com/wasmvisor/wasmvisor/sandbox/internal/watchdog"
)

// Instance states, in the low bits of Instance.state; while busy, the bits above hold the
// kind and the id of the operation in progress (and, in the other states, the id of the
// last one). The layout is package lifecycle's, shared with the Extism format.
const (
	stIdle   = lifecycle.Idle
	stBusy   = lifecycle.Busy   // serving an operation: a call, a configure, a delivery or a store read
	stFailed = lifecycle.Failed // ended by a fatal error; memory still readable until Close
	stClosed = lifecycle.Closed

	stMask    = lifecycle.Mask
	kindShift = lifecycle.KindShift // the operation's kind, 3 bits: see busyWord
	kindMask  = lifecycle.KindMask
	idShift   = lifecycle.IDShift
)

// Instance is one sandbox: a fresh module instance with its own linear memory, control block
// and stores.
//
// Concurrency: an Instance serves one operation at a time. Call, CallAppend, Configure,
// Deliver, Events, Telemetry and AppliedConfig may be called from any goroutine, but one
// entered while another runs returns ErrBusy at once: a pool of instances gives concurrency.
// Kill, Retire and Close may be called from any goroutine at any time. After a fatal error
// (see Fatal) every call returns that error again, wrapped in an *UnavailableError (the call
// did not run); Events, Telemetry and AppliedConfig still read the memory the instance died
// with, until Close. A store read never ends the instance: a malformed store is reported as a
// *ViolationError by that read and every later one (see Budget and stores.go). Close recycles
// the memory for the module's next instance, zeroed.
type Instance struct {
	mod     *Module
	wm      api.Module
	mem     api.Memory
	lm      *linearMemory // holds mem's buffer, for the call path; see span
	io      *instanceIO   // what wazero calls for WASI: this instance's streams, random source, clocks
	roots   []*os.Root    // the granted directories, closed with the instance
	logger  *output       // the logger; stdout, stderr, log and publish, metered
	callCtx callContext   // every call's context: the host functions find the instance in it

	fns     [numFns]api.Function // looked up on first use: each costs wazero a 10 KiB stack
	intrG   api.MutableGlobal
	growG   api.MutableGlobal
	ctrl    uint32
	stack   [2]uint64
	lastH   string // the handler name of the last call, and its index: a one-entry cache
	lastIdx uint32

	handlers   []string
	handlerIdx map[string]uint32
	taken      *snapshot // the snapshot this instance took, until Module.capture has it

	rand io.Reader // the random source: crypto/rand's, or &chacha
	// chacha is RandomDeterministic's source, made with the instance (one allocation less).
	chacha mathrand.ChaCha8
	clock  fakeClock   // the clocks under ClockDeterministic
	cp     *checkpoint // what Rewind returns to: see Checkpoint

	state atomic.Uint64
	wd    *watchdog.Watchdog
	wde   watchdog.Entry // the instance's place in wd's lists

	op watchdog.Op // the operation's published context and the watchdog's notes: see watch

	// The cancellable context of the operation in progress, if any: the owner's own copy
	// of what op holds, read without its lock.
	opCtx context.Context

	intrMu     sync.Mutex      // serialises stop and clearInterrupt: the writers of the interrupt global
	flags      atomic.Uint32   // flagKilled, flagRetired, flagIntr
	readers    atomic.Int32    // post-mortem reads in progress: see read and Close
	others     atomic.Uint64   // operations other than calls: see Calls
	stopHook   func()          // tests only: runs in stop between its check and its write
	hook       func(hookPoint) // tests only, while flagHook is raised: see hookPoint
	stoppedID  atomic.Uint64   // the id of the operation that was stopped
	stopReason atomic.Uint32
	wake       chan struct{} // cuts a real sleep short; nil under the other clocks, which never sleep

	hostOut        []byte // the pending output of the last host_call, for host_result
	hostMu         sync.Mutex
	hostCancel     context.CancelCauseFunc // of the host function in progress, under hostMu
	hostFuncPanics atomic.Uint64
	failure        atomic.Pointer[failure]

	publishDropped atomic.Uint64
	logTruncated   atomic.Uint64

	storeErr [numStores]atomic.Pointer[ViolationError] // a store found malformed: see readStore
}

// Instance flags.
const (
	flagKilled  uint32 = 1 << iota // Kill was called
	flagRetired                    // Retire was called
	flagIntr                       // a stop may have left the interrupt global set; see enter
	flagHook                       // tests only: call hook at each hookPoint
)

// hookPoint is where an operation calls Instance.hook, for tests that wait on an event
// rather than poll: the flag keeps the hook off the path of every other operation.
type hookPoint uint8

const (
	hookEnter  hookPoint = iota // enter published the operation, before it clears a stale interrupt
	hookInvoke                  // invoke is about to run the guest
)

// Functions looked up lazily.
const (
	fnCall = iota
	fnReserve
	fnConfigure
	fnDeliver
	numFns
)

var fnNames = [numFns]string{abi.ExportCall, abi.ExportReserve, abi.ExportConfigure, abi.ExportDeliver}

func (i *Instance) fn(n int) api.Function {
	f := i.fns[n]
	if f == nil {
		f = i.wm.ExportedFunction(fnNames[n])
		i.fns[n] = f
	}
	return f
}

type failure struct{ err error }

// Instantiate starts a fresh instance: it runs _initialize and wasmvisor_init, checks the
// control block and pushes config (unless it is empty), all within the start deadline. With
// snapshots (see Module.Snapshots), the module's first Instantiate runs that start sequence
// in an instance of its own, takes the snapshot and closes it; every instance it returns,
// the first included, starts from the snapshot and only gets its config.
func (m *Module) Instantiate(ctx context.Context, config map[string]string) (*Instance, error) {
	snap, capture := m.snapshotFor()
	if capture {
		s, err := m.capture(ctx)
		if err != nil {
			return nil, err
		}
		snap = s
	}
	return m.instantiate(ctx, config, snap, false)
}

// capture takes the module's snapshot in an instance of its own.
func (m *Module) capture(ctx context.Context) (s *snapshot, err error) {
	defer func() { m.captured(s) }()
	i, err := m.instantiate(ctx, nil, nil, true)
	if err != nil {
		return nil, err
	}
	s = i.taken
	i.taken = nil
	_ = i.Close(context.WithoutCancel(ctx))
	return s, nil
}

// instantiate makes an instance: restored from snap, or, if snap is nil, initialized by its
// own start sequence (and, with capture, snapshotted after it).
func (m *Module) instantiate(ctx context.Context, config map[string]string, snap *snapshot, capture bool) (*Instance, error) {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("sandbox: module: %w", ErrClosed)
	}
	i := &Instance{mod: m, wd: m.eng.wd}
	i.callCtx.i = i
	i.logger = i.newOutput(m.cfg.Limits, m.logger)
	caps := m.cfg.Capabilities
	if caps.Clock == ClockReal {
		i.wake = make(chan struct{}, 1) // only a real clock sleeps (withInstance)
	}
	i.rand = caps.instanceRand(&i.chacha)
	i.clock.reset()
	if sp := m.takeSpare(snap); sp != nil {
		return i.adopt(ctx, sp, config, snap)
	}
	i.lm = &linearMemory{pool: &m.mems, want: snap}
	i.io = &instanceIO{i: i}
	var err error
	if i.roots, err = caps.openDirs(); err != nil {
		return nil, err
	}
	mc := caps.withInstance(m.base, m.wasi, ioStdout{i.io}, ioStderr{i.io}, ioRand{i.io}, i.io.sleep, i.roots, i.io)
	wm, err := m.eng.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, i.lm), m.code.code, mc)
	if err != nil {
		closeRoots(i.roots)
		i.lm.release()
		return nil, classifyInstantiate(err, m.cfg.Limits.MemoryPages)
	}
	i.wm = wm
	i.mem = wm.Memory()
	i.intrG = wm.ExportedGlobal(wasmbin.ExportInterrupt).(api.MutableGlobal)
	i.growG = wm.ExportedGlobal(wasmbin.ExportGrowFailed).(api.MutableGlobal)
	m.eng.register(i)

	if snap != nil {
		if err := i.restore(snap); err != nil {
			i.fail(err)
			_ = i.Close(context.Background())
			return nil, err
		}
	}
	if err := i.start(ctx, config, snap != nil, capture); err != nil {
		if i.taken != nil {
			i.taken.close()
		}
		i.fail(err)
		_ = i.Close(context.Background())
		return nil, err
	}
	return i, nil
}

// snapshotFor returns the snapshot a new instance starts from, or nil; capture is true when
// the caller is to take it (the first to find none, while none is being taken: the others
// meanwhile run the start sequence themselves).
func (m *Module) snapshotFor() (snap *snapshot, capture bool) {
	if m.snapOff != "" {
		return nil, false
	}
	if s := m.snap.Load(); s != nil {
		return s, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.snap.Load(); s != nil {
		return s, false
	}
	if m.capturing || m.closed {
		return nil, false
	}
	m.capturing = true
	return nil, true
}

// captured ends a capture: s is the snapshot, or nil when none was taken (the start failed:
// a later instance tries again).
func (m *Module) captured(s *snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.capturing = false
	if s == nil {
		return
	}
	if m.closed {
		s.close()
		return
	}
	m.snap.Store(s)
}

func classifyInstantiate(err error, pages uint32) error {
	msg := err.Error()
	if strings.Contains(msg, "memory") && (strings.Contains(msg, "limit") || strings.Contains(msg, "max")) {
		return &MemoryLimitError{LimitPages: pages, Cause: err}
	}
	return &ModuleError{Reason: "instantiate: " + msg, Err: err}
}

// start runs the start sequence as one operation under the start deadline.
// An instance restored from a snapshot skips all but the config. With capture, the instance
// takes the module's snapshot once its start sequence succeeded, before any config.
func (i *Instance) start(ctx context.Context, config map[string]string, restored, capture bool) error {
	id, err := i.enter(ctx, opStart)
	if err != nil {
		return err
	}
	defer i.leave(id)
	if !restored {
		if err := i.initialize(id); err != nil {
			return err
		}
		if capture {
			if i.taken, err = takeSnapshot(i); err != nil {
				return err
			}
		}
	}
	if len(config) > 0 {
		if err := i.configure(id, config); err != nil {
			return err
		}
	}
	return nil
}

// initialize runs the start sequence: the data segments and the start function (which
// instantiation left to the sandbox: see wasmbin.InstrumentSnapshot), _initialize and
// wasmvisor_init, then reads the control block.
func (i *Instance) initialize(id uint64) error {
	ws := &i.mod.code.snap
	for _, f := range [...]struct {
		run  bool
		name string
	}{{ws.InitData, wasmbin.ExportInitData}, {ws.Start, wasmbin.ExportStart}, {i.mod.hasInitialize, abi.ExportInitialize}} {
		if !f.run {
			continue
		}
		if _, err := i.invoke(id, i.wm.ExportedFunction(f.name)); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	st, err := i.invoke(id, i.wm.ExportedFunction(abi.ExportInit))
	if err != nil {
		return fmt.Errorf("%s: %w", abi.ExportInit, err)
	}
	i.ctrl = uint32(st)
	if err := i.readHandlers(); err != nil {
		i.fail(err)
		return err
	}
	return nil
}

func (i *Instance) readHandlers() error {
	bad := func(detail string) error {
		return &ABIError{Problems: []Problem{{Kind: Malformed, What: "control block", Name: "wasmvisor_init", Detail: detail}}}
	}
	if i.ctrl == 0 || i.ctrl%8 != 0 {
		return bad(fmt.Sprintf("address %#x is not 8-aligned and non-zero", i.ctrl))
	}
	blk, ok := i.mem.Read(i.ctrl, abi.CtrlSize)
	if !ok {
		return bad(fmt.Sprintf("address %#x out of memory", i.ctrl))
	}
	if got := binary.LittleEndian.Uint32(blk[abi.CtrlMagic:]); got != abi.Magic {
		return bad(fmt.Sprintf("magic %#x, want %#x", got, abi.Magic))
	}
	if v := binary.LittleEndian.Uint32(blk[abi.CtrlVersion:]); v != abi.Version {
		return &ABIError{Problems: []Problem{{Kind: Malformed, What: "control block", Name: "version",
			Detail: fmt.Sprintf("the plugin speaks ABI version %d, this host speaks %d", v, abi.Version)}}}
	}
	names, err := i.view(binary.LittleEndian.Uint32(blk[abi.CtrlHandlersPtr:]), binary.LittleEndian.Uint32(blk[abi.CtrlHandlersLen:]), "handler list")
	if err != nil {
		return bad(err.Error())
	}
	i.handlerIdx = make(map[string]uint32)
	if len(names) > 0 {
		for n, h := range strings.Split(string(names), "\n") {
			if !abi.ValidHandlerName(h) {
				return bad(fmt.Sprintf("handler %d: invalid name %q", n, h))
			}
			if _, dup := i.handlerIdx[h]; dup {
				return bad(fmt.Sprintf("handler %q listed twice", h))
			}
			if n >= abi.MaxHandlers {
				return bad("too many handlers")
			}
			i.handlerIdx[h] = uint32(n)
			i.handlers = append(i.handlers, h)
		}
	}
	return nil
}

// Handlers lists the plugin's handler names, in the guest's order.
func (i *Instance) Handlers() []string { return append([]string(nil), i.handlers...) }

// Module returns the module the instance was made from.
func (i *Instance) Module() *Module { return i.mod }

// fail records the fatal error that ends the instance. The first one wins.
func (i *Instance) fail(err error) {
	i.failure.CompareAndSwap(nil, &failure{err: err})
	for {
		s := i.state.Load()
		if st := s & stMask; st == stFailed || st == stClosed || i.state.CompareAndSwap(s, s&^stMask|stFailed) {
			return
		}
	}
}

// Kill stops the instance from any goroutine: an operation in progress is interrupted and
// returns an error matching ErrCanceled, and the instance is never entered again. Close it
// afterwards to free its memory.
func (i *Instance) Kill() {
	if i.flags.Or(flagKilled)&flagKilled != 0 {
		return
	}
	i.failure.CompareAndSwap(nil, &failure{err: errInstanceKilled})
	for {
		s := i.state.Load()
		switch s & stMask {
		case stIdle:
			if !i.state.CompareAndSwap(s, s&^stMask|stFailed) {
				continue
			}
		case stBusy:
			// Kill raised flagKilled before it read the state; the operation stored its state
			// before it reads the flag: either it does not enter the guest, or this stops it.
			i.stop(s>>idShift, stopKilled)
		}
		return
	}
}

// Err returns the fatal error that ended the instance, ErrClosed after Close, or nil while it
// is usable.
func (i *Instance) Err() error {
	switch i.state.Load() & stMask {
	case stFailed:
		return i.failure.Load().err
	case stClosed:
		return fmt.Errorf("sandbox: instance: %w", ErrClosed)
	}
	return nil
}

// MemoryPages is the instance's current memory size in 64 KiB pages.
func (i *Instance) MemoryPages() uint32 { return i.mem.Size() / 65536 }

// Stats counts what the instance dropped.
type Stats struct {
	// PublishDropped counts the publishes answered abi.PublishDropped, for any reason: the
	// publish limits (counted again in Publish), the host refused, or no receiver.
	PublishDropped uint64
	// LogTruncated counts lines of output and log messages cut at 4 KiB.
	LogTruncated uint64
	// What Limits.Output and Limits.Publish dropped, per stream.
	Stdout, Stderr, Log, Publish StreamStats
	// HostFuncPanics counts host functions that panicked (see HostFunc).
	HostFuncPanics uint64
}

// Stats returns the instance's counters. It may be called from any goroutine, also after
// Close.
func (i *Instance) Stats() Stats {
	return Stats{PublishDropped: i.publishDropped.Load(), LogTruncated: i.logTruncated.Load(),
		Stdout: streamStats(i.logger.stdout), Stderr: streamStats(i.logger.stderr),
		Log: streamStats(i.logger.log), Publish: streamStats(i.logger.publish),
		HostFuncPanics: i.hostFuncPanics.Load()}
}

// Close frees the instance. An operation in progress is interrupted first and Close waits,
// within ctx, for it to unwind (a guest blocked in a host function that never returns, such
// as an OnPublish hook that blocks, keeps it busy: Close then returns ctx's error and may be
// called again). Close is idempotent.
func (i *Instance) Close(ctx context.Context) error {
	i.Kill()
	var poll *time.Ticker
	for {
		s := i.state.Load()
		st := s & stMask
		if st == stClosed {
			return nil
		}
		if st != stBusy && i.state.CompareAndSwap(s, s&^stMask|stClosed) {
			// A post-mortem read that began before the close finishes first: the memory is
			// about to be recycled (see linearMemory). Reads are short and never block.
			for i.readers.Load() != 0 {
				runtime.Gosched()
			}
			break
		}
		if poll == nil {
			poll = time.NewTicker(100 * time.Microsecond)
			defer poll.Stop()
		}
		select { // the interrupted call unwinds at its next safe point
		case <-ctx.Done():
			return fmt.Errorf("sandbox: close: the operation in progress did not unwind: %w", ctx.Err())
		case <-poll.C:
		}
	}
	i.mod.eng.unregister(i)
	i.logger.flush()
	if i.recycle() {
		return nil
	}
	err := i.wm.Close(context.Background())
	i.lm.release()
	closeRoots(i.roots)
	return err
}

// errInstanceKilled is the fatal error of an instance ended by Kill: one value, made once,
// since a restart kills an instance on its way.
var errInstanceKilled = fmt.Errorf("sandbox: instance killed: %w", ErrCanceled)

// errKilledBeforeEntry marks an operation that Kill prevented from entering the guest.
var errKilledBeforeEntry = errors.New("killed before entry")

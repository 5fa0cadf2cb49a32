package host

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/sandbox"
	"github.com/wasmvisor/wasmvisor/supervisor"
)

// Option configures a Host. Options are applied in order by New; none can fail.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	log         *zap.Logger
	clock       supervisor.Clock
	cacheDir    string
	cache       wazero.CompilationCache
	engine      *sandbox.Engine
	formats     []sandbox.Format
	hostFuncs   []sandbox.HostFunc
	strategy    supervisor.Config // Intensity, Period, MinUptime of each plugin's supervisor
	root        supervisor.Config // Intensity, Period, MinUptime of the host's root
	busBuffer   int
	eventHook   func(Event)
	resolution  time.Duration
	sampleShift uint
	quarantine  quarantineOptions
	poison      poisonOptions
	readBudget  sandbox.Budget                    // of one scrape or listing: see WithReadBudget
	series      seriesLimits                      // see WithGuestSeriesLimits
	stopHook    func(plugin string, instance int) // tests only: see member.requestEnd
	resetHook   func(ctx context.Context)         // tests only: see plugin.resetInstance
	resetDone   func()                            // tests only: see plugin.resetInstance
}

type quarantineOptions struct {
	base, max time.Duration
	jitter    float64
}

type poisonOptions struct {
	limit    int // 0: disabled
	window   time.Duration
	capacity int
}

// Quarantine and poison-input defaults.
const (
	// DefaultQuarantineBase is the delay before a quarantined plugin's first probe.
	DefaultQuarantineBase = time.Second
	// DefaultQuarantineMax caps the delay between probes; a plugin that stays up that long
	// after recovering starts again from the base delay.
	DefaultQuarantineMax = 2 * time.Minute
	// DefaultPoisonLimit is how many instance ends within the window make an input poison.
	DefaultPoisonLimit = 3
	// DefaultPoisonWindow is the poison window.
	DefaultPoisonWindow = time.Minute
	// DefaultPoisonCapacity caps the inputs the poison table tracks, per host.
	DefaultPoisonCapacity = 4096
)

// DefaultBusBuffer is the number of messages each subscription buffers while its subscriber
// cannot take them (a Go subscriber that is slow, a plugin that is restarting or busy).
const DefaultBusBuffer = 256

func defaultOptions() options {
	return options{log: zap.NewNop(), busBuffer: DefaultBusBuffer, sampleShift: DefaultLatencySampling,
		quarantine: quarantineOptions{base: DefaultQuarantineBase, max: DefaultQuarantineMax},
		poison:     poisonOptions{limit: DefaultPoisonLimit, window: DefaultPoisonWindow, capacity: DefaultPoisonCapacity},
		readBudget: sandbox.Budget{Bytes: DefaultReadBudgetBytes, Records: DefaultReadBudgetRecords},
		series:     seriesLimits{perInstance: DefaultGuestSeriesPerInstance, perPlugin: DefaultGuestSeriesPerPlugin}}
}

// WithLogger sets the logger for host events, supervisor events and the guests' log lines.
// Default: no-op.
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.log = l
		}
	})
}

// WithClock sets the clock of the host's supervisors (restart intensity windows, uptimes,
// backoffs). Default: real time.
func WithClock(c supervisor.Clock) Option {
	return optionFunc(func(o *options) { o.clock = c })
}

// WithCacheDir keeps compiled code in dir, shared with every other host (or process) using
// the same dir. A compilation cache is content-addressed: sharing it shares no state.
func WithCacheDir(dir string) Option {
	return optionFunc(func(o *options) { o.cacheDir = dir })
}

// WithCompilationCache shares a wazero compilation cache between hosts. The caller closes it
// after every host using it is closed.
func WithCompilationCache(c wazero.CompilationCache) Option {
	return optionFunc(func(o *options) { o.cache = c })
}

// WithEngine makes the host compile and run its wasmvisor-ABI plugins on e, which the caller
// made and closes after every host using it is closed. Hosts that share an engine share
// compiled code (the same bytes with the same memory limit are checked and compiled once, for
// as long as any of them has them loaded) and the engine's deadline watchdog; nothing else:
// each host still has its own instances, memories, supervisors, bus, metrics and registry.
// This is what makes a few hundred hosts in one process cheap (package hosttest gives every
// test's host one engine). The engine's compilation cache and deadline resolution apply:
// combined with WithCompilationCache or WithDeadlineResolution, New fails with
// sandbox.ErrInvalidConfig; WithCacheDir is then ignored (every format compiles with the
// engine's cache). The engine's formats (sandbox.WithFormats) are asked first, then the
// host's (WithFormats). WithEngine(nil) restores the default: an engine of the host's own,
// closed by Close.
func WithEngine(e *sandbox.Engine) Option {
	return optionFunc(func(o *options) { o.engine = e })
}

// WithFormats lets the host load plugins of fs besides the native ABI (for example
// sandbox/extism's Format): a plugin's bytes are compiled by the first format whose Detect
// claims them, else as a native module, and PluginInfo.Format is that format's name. Without
// WithEngine they are the formats of the host's own engine; with it they are asked after the
// engine's own. Repeated options add to the list. Default: none.
func WithFormats(fs ...sandbox.Format) Option {
	return optionFunc(func(o *options) { o.formats = append(o.formats, fs...) })
}

// WithHostFunctions offers fns to the host's plugins: a plugin may call those its
// Plugin.Capabilities.HostFunctions grants (none by default), and a grant of a name not
// offered fails its Load with sandbox.ErrInvalidConfig. See sandbox.HostFunc for how they run
// (inside the guest's call, under its deadline) and fail (typed, to the guest; a panic is
// recovered and counted). Repeated options add to the set.
func WithHostFunctions(fns ...sandbox.HostFunc) Option {
	return optionFunc(func(o *options) { o.hostFuncs = append(o.hostFuncs, fns...) })
}

// WithRestartIntensity sets how many restarts of a plugin's instances are allowed within
// period before the plugin's supervisor gives up. The plugin is then quarantined (the
// default, Plugin.OnFailure Quarantine), or, under Escalate, restarted as a whole (with its
// dependents) by the host's root supervisor, which gives up itself, closing the host, after
// as many such restarts within the same period. Zero values mean the supervisor's defaults
// (3 in 5 s). minUptime is supervisor.Config.MinUptime (zero: period; negative: disabled).
// Instances ended by their caller (see Plugin.OnFailure) are replaced without counting.
// Plugin.RestartPolicy overrides it for one plugin's instances (not for the root).
func WithRestartIntensity(intensity int, period, minUptime time.Duration) Option {
	return optionFunc(func(o *options) {
		o.strategy.Intensity, o.strategy.Period, o.strategy.MinUptime = intensity, period, minUptime
		o.root.Intensity, o.root.Period, o.root.MinUptime = intensity, period, minUptime
	})
}

// WithBusBuffer sets the number of messages each subscription buffers. Default
// DefaultBusBuffer. A message that does not fit is dropped, counted on the subscription and
// in the host's metrics, and reported in an EventDropped (one per subscription per second at
// most, with the count).
func WithBusBuffer(n int) Option {
	return optionFunc(func(o *options) {
		if n > 0 {
			o.busBuffer = n
		}
	})
}

// WithEventHook receives every host Event, synchronously, on the goroutine where it happened
// (a caller of Call, a supervisor, the bus). It must be quick and must not call back into the
// host. Default: events go to the logger only.
func WithEventHook(f func(Event)) Option {
	return optionFunc(func(o *options) { o.eventHook = f })
}

// WithDeadlineResolution sets how often the engine's watchdog checks calls in flight; see
// sandbox.WithDeadlineResolution.
func WithDeadlineResolution(d time.Duration) Option {
	return optionFunc(func(o *options) { o.resolution = d })
}

// DefaultLatencySampling times one call in 64 for the latency histogram: an embedder's
// Host.Call of a small plugin costs about what the call itself does, and two clock reads
// would double it. `wasmvisor serve` times every call (its metrics.latency_sampling
// defaults to 0), where a request's own cost dwarfs the clock's.
const DefaultLatencySampling = 6

// WithLatencySampling times one call in 2^shift for the call latency histogram (the call
// and error counters count every call). Default DefaultLatencySampling. 0 times every call,
// so that the histogram's count is wasmvisor_calls_total's; timing a call reads the clock
// twice, about 110 ns per call on the benchmark machine's virtual clock (BENCHMARKS.md,
// Call64/host-every-call-timed against Call64/host), as much as a small call itself. Sampled,
// the histogram's count is about wasmvisor_calls_total / 2^shift.
func WithLatencySampling(shift uint) Option {
	return optionFunc(func(o *options) {
		if shift < 32 {
			o.sampleShift = shift
		}
	})
}

// WithQuarantineBackoff sets the delays between the probes of a quarantined plugin: base
// before the first, doubled after each failed probe (and each quarantine that follows a
// recovery within maxDelay), capped at maxDelay, each stretched by a random factor in [1, 1+jitter).
// A plugin that stays up for maxDelay after recovering starts again from base. Defaults
// DefaultQuarantineBase, DefaultQuarantineMax, no jitter. Non-positive durations keep the
// defaults; maxDelay below base is raised to base; jitter is clamped to [0, 1].
func WithQuarantineBackoff(base, maxDelay time.Duration, jitter float64) Option {
	return optionFunc(func(o *options) {
		if base > 0 {
			o.quarantine.base = base
		}
		if maxDelay > 0 {
			o.quarantine.max = maxDelay
		}
		o.quarantine.max = max(o.quarantine.max, o.quarantine.base)
		switch {
		case jitter > 1:
			o.quarantine.jitter = 1
		case jitter > 0:
			o.quarantine.jitter = jitter
		default:
			o.quarantine.jitter = 0
		}
	})
}

// WithReadBudget bounds what one scrape of Metrics, and one listing (Plugins, Plugin), copies
// out of guest memory across all the instances it reads: bytes (each record counting
// sandbox.ReadRecordOverhead more) and records (events, metrics, config entries). Each
// instance gets a fair part of what is left when its turn comes, and one instance never more
// than sandbox.DefaultReadBytes and sandbox.DefaultReadRecords. What does not fit is left
// out, counted (wasmvisor_store_records_skipped_total) and reported (EventTelemetryDropped,
// once each time a plugin starts losing records). Defaults DefaultReadBudgetBytes and
// DefaultReadBudgetRecords; values below 1 keep the default.
func WithReadBudget(bytes, records int) Option {
	return optionFunc(func(o *options) {
		if bytes > 0 {
			o.readBudget.Bytes = bytes
		}
		if records > 0 {
			o.readBudget.Records = records
		}
	})
}

// WithPoisonInput sets the poison-input defence: an input (a plugin, a handler and the
// input's bytes, keyed by a seeded 64-bit hash) that has ended instances limit times within
// window is refused, without entering an instance, with a *PoisonInputError (ErrPoisonInput)
// until window has passed since the first of those ends. Calls ended by their caller never
// count. The host tracks at most capacity inputs (memory: about 100 + 8·limit bytes each);
// past it the entry whose last end is oldest is evicted, and counted
// (wasmvisor_poison_evictions_total). Zero values keep the defaults (DefaultPoisonLimit,
// DefaultPoisonWindow, DefaultPoisonCapacity); a negative limit disables the defence.
func WithPoisonInput(limit int, window time.Duration, capacity int) Option {
	return optionFunc(func(o *options) {
		switch {
		case limit < 0:
			o.poison.limit = 0
		case limit > 0:
			o.poison.limit = min(limit, maxPoisonLimit)
		}
		if window > 0 {
			o.poison.window = window
		}
		if capacity > 0 {
			o.poison.capacity = capacity
		}
	})
}

// maxPoisonLimit bounds the per-entry memory of the poison table.
const maxPoisonLimit = 1000

// WithGuestSeriesLimits caps the Prometheus series a plugin's guest metrics add to the
// host's registry: perInstance per pool slot and perPlugin over all its slots. A counter or
// gauge is one series, a histogram its bucket count plus 3. A series, once exposed, keeps its
// place for the life of the plugin (until Unload); one that would exceed a cap is left out of
// every scrape, counted (wasmvisor_guest_series_dropped_total) and reported
// (EventTelemetryDropped, once each time the plugin starts dropping), so that a guest that
// renames its metrics cannot grow the series without bound. Defaults
// DefaultGuestSeriesPerInstance and DefaultGuestSeriesPerPlugin; values below 1 keep the
// default.
func WithGuestSeriesLimits(perInstance, perPlugin int) Option {
	return optionFunc(func(o *options) {
		if perInstance > 0 {
			o.series.perInstance = perInstance
		}
		if perPlugin > 0 {
			o.series.perPlugin = perPlugin
		}
	})
}

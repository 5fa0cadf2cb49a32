package host

import (
	"time"

	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"

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
	strategy    supervisor.Config // Intensity, Period, MinUptime of each plugin's supervisor
	root        supervisor.Config // Intensity, Period, MinUptime of the host's root
	busBuffer   int
	eventHook   func(Event)
	resolution  time.Duration
	sampleShift uint
}

// DefaultBusBuffer is the number of messages each subscription buffers while its subscriber
// cannot take them (a Go subscriber that is slow, a plugin that is restarting or busy).
const DefaultBusBuffer = 256

func defaultOptions() options {
	return options{log: zap.NewNop(), busBuffer: DefaultBusBuffer, sampleShift: DefaultLatencySampling}
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

// WithRestartIntensity sets how many restarts of a plugin's instances are allowed within
// period before the plugin's supervisor gives up; the host's root supervisor then restarts
// the whole plugin (and its dependents), and gives up itself, closing the host, after as many
// plugin restarts within the same period. Zero values mean the supervisor's defaults (3 in
// 5 s). minUptime is supervisor.Config.MinUptime (zero: period; negative: disabled).
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

// DefaultLatencySampling times one call in 64 for the latency histogram.
const DefaultLatencySampling = 6

// WithLatencySampling times one call in 2^shift for the call latency histogram (the call
// and error counters count every call). Default DefaultLatencySampling; 0 times every call.
// Timing a call reads the clock twice, which costs about as much as a small call itself
// (measured in BENCHMARKS.md), so the default samples.
func WithLatencySampling(shift uint) Option {
	return optionFunc(func(o *options) {
		if shift < 32 {
			o.sampleShift = shift
		}
	})
}

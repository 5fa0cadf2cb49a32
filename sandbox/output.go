package sandbox

import (
	"errors"

	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/internal/guestio"
)

// Unlimited, as a field of OutputLimits or PublishLimits, turns that bound off (any negative
// value does).
const Unlimited = -1

// Defaults of OutputLimits, per instance and per stream; see RATIONALE.md, "Bounded guest
// output", for why.
const (
	DefaultOutputCallBytes   = 64 << 10
	DefaultOutputCallLines   = 256
	DefaultOutputSecondBytes = 1 << 20
	DefaultOutputSecondLines = 1000
)

// Defaults of PublishLimits, per instance.
const (
	DefaultPublishCallMessages   = 64
	DefaultPublishCallBytes      = 64 << 10
	DefaultPublishSecondMessages = 1000
	DefaultPublishSecondBytes    = 1 << 20
)

// OutputLimits bound what an instance writes to each of its output streams: stdout, stderr
// and the log import, each on a budget of its own (a flood on one never silences another).
// A line longer than 4 KiB counts as one line per 4 KiB piece; a log call is one line.
//
// What a limit refuses is dropped: the guest's write still succeeds (a runtime that saw a
// short write would retry it), the excess costs the host O(1) per write whatever its size,
// Instance.Stats counts it, and it is reported through Config.OnDrop at most once per second
// per stream. Excess output is not an error: the operation's result stands.
//
// Zero fields take the defaults; Unlimited turns a bound off.
type OutputLimits struct {
	// CallBytes bounds the bytes one operation (a call, a configure, a delivery, the start)
	// may write to one stream. Default DefaultOutputCallBytes (64 KiB).
	CallBytes int64
	// CallLines bounds its lines. Default DefaultOutputCallLines (256).
	CallLines int64
	// SecondBytes bounds the bytes one stream of one instance may write per second, across
	// operations. Default DefaultOutputSecondBytes (1 MiB).
	SecondBytes int64
	// SecondLines bounds its lines per second. Default DefaultOutputSecondLines (1,000).
	SecondLines int64
}

func (l OutputLimits) withDefaults() OutputLimits {
	return OutputLimits{
		CallBytes:   limitOr(l.CallBytes, DefaultOutputCallBytes),
		CallLines:   limitOr(l.CallLines, DefaultOutputCallLines),
		SecondBytes: limitOr(l.SecondBytes, DefaultOutputSecondBytes),
		SecondLines: limitOr(l.SecondLines, DefaultOutputSecondLines),
	}
}

func (l OutputLimits) budget() guestio.Limits {
	return guestio.Limits{OpBytes: l.CallBytes, OpRecords: l.CallLines, WindowBytes: l.SecondBytes, WindowRecords: l.SecondLines}
}

// PublishLimits bound what an instance publishes on the bus. A publish past a limit is
// refused: the guest gets abi.PublishDropped, and it is counted (Stats.PublishDropped and
// Stats.Publish) and reported as for OutputLimits. The bytes of a publish are its topic's and
// its data's. Zero fields take the defaults; Unlimited turns a bound off.
type PublishLimits struct {
	// CallMessages bounds the publishes of one operation. Default DefaultPublishCallMessages
	// (64).
	CallMessages int64
	// CallBytes bounds their bytes, and so the size of one message. Default
	// DefaultPublishCallBytes (64 KiB).
	CallBytes int64
	// SecondMessages bounds the publishes of one instance per second. Default
	// DefaultPublishSecondMessages (1,000).
	SecondMessages int64
	// SecondBytes bounds their bytes per second. Default DefaultPublishSecondBytes (1 MiB).
	SecondBytes int64
}

func (l PublishLimits) withDefaults() PublishLimits {
	return PublishLimits{
		CallMessages:   limitOr(l.CallMessages, DefaultPublishCallMessages),
		CallBytes:      limitOr(l.CallBytes, DefaultPublishCallBytes),
		SecondMessages: limitOr(l.SecondMessages, DefaultPublishSecondMessages),
		SecondBytes:    limitOr(l.SecondBytes, DefaultPublishSecondBytes),
	}
}

func (l PublishLimits) budget() guestio.Limits {
	return guestio.Limits{OpBytes: l.CallBytes, OpRecords: l.CallMessages, WindowBytes: l.SecondBytes, WindowRecords: l.SecondMessages}
}

func limitOr(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return Unlimited
	}
	return v
}

// The streams of DropReport and StreamStats.
const (
	StreamStdout  = "stdout"
	StreamStderr  = "stderr"
	StreamLog     = "log"
	StreamPublish = "publish"
)

// DropReport tells what one stream of one instance dropped since the stream's previous
// report. Each dropped byte is in exactly one report.
type DropReport struct {
	// Stream is StreamStdout, StreamStderr, StreamLog or StreamPublish.
	Stream string
	// Bytes dropped. Records: log messages or publishes refused and, for stdout and stderr,
	// writes that lost bytes (the dropped part of a write is never read, so its lines are
	// not counted).
	Bytes, Records uint64
	// CallLimit and SecondLimit tell which limits refused them; Stopped, that the operation
	// had been stopped (its deadline, a cancel or a kill) when the guest wrote.
	CallLimit, SecondLimit, Stopped bool
}

// StreamStats counts what one stream dropped: see DropReport for Bytes and Records.
type StreamStats struct {
	DroppedBytes, DroppedRecords uint64
}

// output is an instance's metered streams.
type output struct {
	base                         *zap.Logger // the module's logger
	scope                        *guestio.Scope
	stdout, stderr, log, publish *guestio.Meter
	stdoutW, stderrW             *guestio.LineWriter

	// What the fields above point to, made with the output in one allocation: an instance's
	// start makes no other for its streams.
	scopeV   guestio.Scope
	meters   [4]guestio.Meter
	writersV [2]guestio.LineWriter
}

// stoppingWriter is what the guest's WASI stdout or stderr writes to: a LineWriter that, once
// the operation has been stopped, unwinds the guest out of fd_write at once, as every host
// function does (one fd_write may hold millions of iovecs, each a Write).
type stoppingWriter struct{ w *guestio.LineWriter }

func (s stoppingWriter) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	if errors.Is(err, guestio.ErrStopped) {
		panic(errStopped)
	}
	return n, err
}

func (i *Instance) newOutput(l Limits, logger *zap.Logger) *output {
	o := &output{base: logger}
	o.scope = &o.scopeV
	o.scope.Init(guestio.ScopeConfig{
		Op:      func() uint64 { return i.state.Load() >> idShift },
		Stopped: i.stopped,
		Report:  i.mod.drops,
	})
	o.stdout, o.stderr, o.log, o.publish = &o.meters[0], &o.meters[1], &o.meters[2], &o.meters[3]
	o.scope.InitMeter(o.stdout, StreamStdout, l.Output.budget())
	o.scope.InitMeter(o.stderr, StreamStderr, l.Output.budget())
	o.scope.InitMeter(o.log, StreamLog, l.Output.budget())
	o.scope.InitMeter(o.publish, StreamPublish, l.Publish.budget())
	o.stdoutW, o.stderrW = &o.writersV[0], &o.writersV[1]
	o.stdoutW.Init(logger, o.stdout, &i.logTruncated)
	o.stderrW.Init(logger, o.stderr, &i.logTruncated)
	return o
}

// flush logs the last partial lines and reports every drop not yet reported: at Close.
func (o *output) flush() {
	o.stdoutW.Flush()
	o.stderrW.Flush()
	o.scope.Flush()
}

func streamStats(m *guestio.Meter) StreamStats {
	b, r := m.Dropped()
	return StreamStats{DroppedBytes: b, DroppedRecords: r}
}

func dropReport(d guestio.Drop) DropReport {
	return DropReport{Stream: d.Stream, Bytes: d.Bytes, Records: d.Records, CallLimit: d.Op, SecondLimit: d.Window, Stopped: d.Stopped}
}

// logDrop is the report of a module without Config.OnDrop: one warning on its logger.
func logDrop(l *zap.Logger, d DropReport) {
	l.Warn("guest output dropped", zap.String("stream", d.Stream), zap.Uint64("bytes", d.Bytes),
		zap.Uint64("records", d.Records), zap.Bool("call_limit", d.CallLimit),
		zap.Bool("second_limit", d.SecondLimit), zap.Bool("stopped", d.Stopped))
}

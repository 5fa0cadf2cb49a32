package extism

import (
	"sync/atomic"

	"github.com/wasmvisor/wasmvisor/internal/guestio"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// output is an instance's metered streams: stdout, stderr and Extism's log calls, within
// Limits.Output as in the sandbox (Extism plugins cannot publish).
type output struct {
	scope            *guestio.Scope
	stdout, stderr   *guestio.Meter
	log              *guestio.Meter
	stdoutW, stderrW *guestio.LineWriter
	truncated        atomic.Uint64
}

func (i *Instance) newOutput() *output {
	m := i.mod
	o := &output{scope: guestio.NewScope(guestio.ScopeConfig{
		Op:      i.calls.Load,
		Stopped: i.stopped,
		Report:  m.cfg.DropReporter(m.logger),
	})}
	ol := m.cfg.Limits.Output
	l := ol.Budget()
	o.stdout = o.scope.Meter(sandbox.StreamStdout, l)
	o.stderr = o.scope.Meter(sandbox.StreamStderr, l)
	o.log = o.scope.Meter(sandbox.StreamLog, l)
	o.stdoutW = guestio.NewLineWriter(m.logger, o.stdout, &o.truncated)
	o.stderrW = guestio.NewLineWriter(m.logger, o.stderr, &o.truncated)
	return o
}

// endCall logs the call's last partial lines and reports what it dropped.
func (o *output) endCall() {
	o.stdoutW.Flush()
	o.stderrW.Flush()
	if o.scope.Pending() {
		o.scope.End()
	}
}

// stopped reports whether the call in progress has been stopped (by the watchdog or Kill).
func (i *Instance) stopped() bool {
	return i.stops.Running(i.state.Load())
}

// Stats returns what the instance dropped under Limits.Output and how many of its host
// functions panicked, as sandbox.Instance.Stats (Extism plugins cannot publish). It may be called from any goroutine, also after Close.
func (i *Instance) Stats() sandbox.Stats {
	st := func(m *guestio.Meter) sandbox.StreamStats {
		b, r := m.Dropped()
		return sandbox.StreamStats{DroppedBytes: b, DroppedRecords: r}
	}
	return sandbox.Stats{LogTruncated: i.out.truncated.Load(), Stdout: st(i.out.stdout),
		Stderr: st(i.out.stderr), Log: st(i.out.log), HostFuncPanics: i.host.panics.Load()}
}

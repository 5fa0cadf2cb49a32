package opa

import (
	"bytes"
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"

	"github.com/wasmvisor/wasmvisor/internal/guestio"
	"github.com/wasmvisor/wasmvisor/sandbox"
)

// output meters an instance's opa_println lines (Rego's print, in a module built with it)
// as the sandbox's log stream: within Limits.Output, the excess dropped, counted in Stats and
// reported through Config.OnDrop; each line cut at maxMessage bytes.
type output struct {
	scope     *guestio.Scope
	log       *guestio.Meter
	truncated atomic.Uint64
}

func (i *Instance) newOutput() *output {
	m := i.mod
	o := &output{scope: guestio.NewScope(guestio.ScopeConfig{
		Op:      i.calls.Load,
		Stopped: func() bool { return i.stops.Running(i.state.Load()) },
		Report:  m.cfg.DropReporter(m.logger),
	})}
	ol := m.cfg.Limits.Output
	o.log = o.scope.Meter(sandbox.StreamLog, ol.Budget())
	return o
}

// endCall reports what the call dropped.
func (o *output) endCall() {
	if o.scope.Pending() {
		o.scope.End()
	}
}

// println serves opa_println: the guest's NUL-terminated line at addr.
func (i *Instance) println(g api.Module, addr uint32) {
	mem := g.Memory()
	if mem == nil || addr >= mem.Size() {
		return
	}
	b, _ := mem.Read(addr, mem.Size()-addr) // bounded by the memory limit
	if n := bytes.IndexByte(b, 0); n >= 0 {
		b = b[:n]
	}
	i.logLine(string(b[:min(len(b), maxMessage)]), len(b))
}

// logLine logs a line of the guest's (opa_println, print) within Limits.Output, cut at
// maxMessage bytes; size is its length before any cut.
func (i *Instance) logLine(line string, size ...int) {
	n := len(line)
	if len(size) > 0 {
		n = size[0]
	}
	keep := min(len(line), maxMessage)
	if !i.out.log.Take(int64(keep), int64(n)) {
		return
	}
	if keep < n {
		i.out.truncated.Add(1)
	}
	i.mod.logger.Info("guest log", zap.String("message", line[:keep]))
}

// Stats returns what Limits.Output dropped of the instance's opa_println lines, and how many
// were cut at 4 KiB. It may be called from any goroutine, also after Close.
func (i *Instance) Stats() sandbox.Stats {
	d, r := i.out.log.Dropped()
	return sandbox.Stats{LogTruncated: i.out.truncated.Load(), Log: sandbox.StreamStats{DroppedBytes: d, DroppedRecords: r}}
}

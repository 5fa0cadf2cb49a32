package sandbox

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/guestio"
)

// maxLogLine bounds one guest log line; longer ones are cut and counted.
const maxLogLine = guestio.MaxLine

// instantiateHostModule defines the "wasmvisor" import module. Each function finds its
// Instance by the calling module.
func (e *Engine) instantiateHostModule(ctx context.Context) error {
	i32 := api.ValueTypeI32
	fn := func(f func(*Instance, api.Module, []uint64)) api.GoModuleFunc {
		return func(_ context.Context, m api.Module, stack []uint64) {
			v, ok := e.insts.Load(m)
			if !ok {
				panic(&ViolationError{Reason: "host function called by a module that is not a wasmvisor instance"})
			}
			v.(*Instance).checkStopped() // a stopped operation goes no further: see checkStopped
			f(v.(*Instance), m, stack)
		}
	}
	_, err := e.rt.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostLog), []api.ValueType{i32, i32, i32}, nil).Export(abi.ImportLog).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostPublish), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).Export(abi.ImportPublish).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostAbort), []api.ValueType{i32, i32}, nil).Export(abi.ImportAbort).
		Instantiate(ctx)
	return err
}

// guestBytes returns guest memory or panics with a ViolationError, which ends the call.
func guestBytes(m api.Module, ptr, n uint64, what string) []byte {
	if n == 0 {
		return nil
	}
	b, ok := m.Memory().Read(uint32(ptr), uint32(n))
	if !ok {
		panic(&ViolationError{Reason: fmt.Sprintf("%s %#x+%d out of memory", what, uint32(ptr), uint32(n))})
	}
	return b
}

func hostLog(i *Instance, m api.Module, stack []uint64) {
	msg := guestBytes(m, stack[1], stack[2], "log message")
	lvl := zapcore.InfoLevel
	switch uint32(stack[0]) {
	case abi.LogDebug:
		lvl = zapcore.DebugLevel
	case abi.LogWarn:
		lvl = zapcore.WarnLevel
	case abi.LogError:
		lvl = zapcore.ErrorLevel
	}
	if ce := i.logger.base.Check(lvl, "guest log"); ce != nil {
		if len(msg) > maxLogLine {
			msg = msg[:maxLogLine]
			i.logTruncated.Add(1)
		}
		ce.Write(zap.String("message", string(msg))) // a copy: msg is guest memory
	}
}

func hostPublish(i *Instance, m api.Module, stack []uint64) {
	topic := guestBytes(m, stack[0], stack[1], "publish topic")
	data := guestBytes(m, stack[2], stack[3], "publish data")
	ok := false
	if f := i.mod.cfg.OnPublish; f != nil {
		ok = f(string(topic), append([]byte(nil), data...))
	}
	if ok {
		stack[0] = abi.PublishAccepted
		return
	}
	i.publishDropped.Add(1)
	stack[0] = abi.PublishDropped
}

func hostAbort(_ *Instance, m api.Module, stack []uint64) {
	msg := guestBytes(m, stack[0], stack[1], "abort message")
	if len(msg) > maxLogLine {
		msg = msg[:maxLogLine]
	}
	panic(&TrapError{Kind: TrapAbort, Message: string(msg)})
}

// lineLoggerPair holds an instance's logger and its stdout and stderr writers.
type lineLoggerPair struct {
	base           *zap.Logger
	stdout, stderr *guestio.LineWriter
}

func newLineLoggerPair(l *zap.Logger, truncated *atomic.Uint64) *lineLoggerPair {
	return &lineLoggerPair{
		base:   l,
		stdout: guestio.NewLineWriter(l, "stdout", truncated),
		stderr: guestio.NewLineWriter(l, "stderr", truncated),
	}
}

func (p *lineLoggerPair) flush() {
	p.stdout.Flush()
	p.stderr.Flush()
}

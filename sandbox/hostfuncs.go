package sandbox

import (
	"context"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wasmvisor/wasmvisor/abi"
	"github.com/wasmvisor/wasmvisor/internal/guestio"
)

// maxLogLine bounds one guest log line; longer ones are cut and counted.
const maxLogLine = guestio.MaxLine

// instantiateHostModule defines the "wasmvisor" import module. Each function finds its
// Instance in the context of the call (see callContext).
func (e *Engine) instantiateHostModule(ctx context.Context) error {
	i32 := api.ValueTypeI32
	fn := func(f func(*Instance, api.Module, []uint64)) api.GoModuleFunc {
		return func(ctx context.Context, m api.Module, stack []uint64) {
			i, ok := ctx.Value(callContextKey{}).(*Instance)
			if !ok || i.wm != m {
				panic(&ViolationError{Reason: "host function called outside a call of the instance that imports it"})
			}
			i.checkStopped() // a stopped operation goes no further: see checkStopped
			f(i, m, stack)
		}
	}
	_, err := e.rt.NewHostModuleBuilder(abi.ImportModule).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostLog), []api.ValueType{i32, i32, i32}, nil).Export(abi.ImportLog).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostPublish), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).Export(abi.ImportPublish).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostAbort), []api.ValueType{i32, i32}, nil).Export(abi.ImportAbort).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostFn), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportHostFn).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostCallFn), []api.ValueType{i32, i32, i32}, []api.ValueType{api.ValueTypeI64}).Export(abi.ImportHostCall).
		NewFunctionBuilder().WithGoModuleFunction(fn(hostResult), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(abi.ImportHostResult).
		Instantiate(ctx)
	return err
}

// callContext is the context of every call into an instance's module: the host functions
// find their Instance in it. It is a field of the Instance, so a call allocates nothing for
// it. The rejected alternative, an engine-wide map from wazero module to Instance
// (sync.Map), cost every start a store and every close a delete, about a microsecond a
// start with ten thousand instances alive (BenchmarkLiveInstances), and every host call a
// lookup.
type callContext struct{ i *Instance }

type callContextKey struct{}

func (callContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (callContext) Done() <-chan struct{}       { return nil }
func (callContext) Err() error                  { return nil }

func (c *callContext) Value(key any) any {
	if key == (callContextKey{}) {
		return c.i
	}
	return nil
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

// hostLog logs one guest message at its level, within Limits.Output (the "log" stream): a
// message the limits refuse is dropped, counted and reported, at O(1) cost. A message longer
// than maxLogLine is cut (and counted in Stats.LogTruncated); a level the logger does not
// enable costs nothing and is not charged.
func hostLog(i *Instance, m api.Module, stack []uint64) {
	msg := guestBytes(m, stack[1], stack[2], "log message") // checks the range; copies nothing
	lvl := zapcore.InfoLevel
	switch uint32(stack[0]) {
	case abi.LogDebug:
		lvl = zapcore.DebugLevel
	case abi.LogWarn:
		lvl = zapcore.WarnLevel
	case abi.LogError:
		lvl = zapcore.ErrorLevel
	}
	if !i.logger.base.Core().Enabled(lvl) {
		return
	}
	keep := min(len(msg), maxLogLine)
	if !i.logger.log.Take(int64(keep), int64(len(msg))) {
		return // before Check, which reads the clock and takes an entry from a pool
	}
	if keep < len(msg) {
		i.logTruncated.Add(1)
	}
	if ce := i.logger.base.Check(lvl, "guest log"); ce != nil {
		ce.Write(zap.String("message", string(msg[:keep]))) // a copy: msg is guest memory
	}
}

// hostPublish hands a publish to Config.OnPublish, within Limits.Publish: one the limits
// refuse is answered PublishDropped, counted and reported, and its data is not copied.
func hostPublish(i *Instance, m api.Module, stack []uint64) {
	topic := guestBytes(m, stack[0], stack[1], "publish topic")
	data := guestBytes(m, stack[2], stack[3], "publish data")
	ok := false
	if f := i.mod.cfg.OnPublish; f != nil {
		if size := int64(len(topic)) + int64(len(data)); i.logger.publish.Take(size, size) {
			ok = f(string(topic), append([]byte(nil), data...))
		}
	}
	if ok {
		stack[0] = abi.PublishAccepted
		return
	}
	i.publishDropped.Add(1)
	stack[0] = abi.PublishDropped
}

// hostAbort ends the call with a TrapAbort carrying the guest's message, cut at maxLogLine.
func hostAbort(_ *Instance, m api.Module, stack []uint64) {
	msg := guestBytes(m, stack[0], stack[1], "abort message")
	if len(msg) > maxLogLine {
		msg = msg[:maxLogLine]
	}
	panic(&TrapError{Kind: TrapAbort, Message: string(msg)})
}

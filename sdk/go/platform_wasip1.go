//go:build wasip1

package sdk

import (
	"runtime"
	"unsafe"
)

// The ABI exports. Each forwards to std; see guest.go.

//go:wasmexport wasmvisor_init
func exportInit() uint32 { return std.init() }

//go:wasmexport wasmvisor_reserve
func exportReserve(size uint32) uint32 { return uint32(std.reserve(size)) }

//go:wasmexport wasmvisor_call
func exportCall(handler, inLen uint32) uint32 { return uint32(std.call(handler, inLen)) }

//go:wasmexport wasmvisor_configure
func exportConfigure(inLen uint32) uint32 { return uint32(std.configure(inLen)) }

//go:wasmexport wasmvisor_deliver
func exportDeliver(inLen uint32) uint32 { return uint32(std.deliver(inLen)) }

// The wasmvisor imports.

//go:wasmimport wasmvisor log
func hostLog(level int32, ptr unsafe.Pointer, n uint32)

//go:wasmimport wasmvisor publish
func hostPublish(topicPtr unsafe.Pointer, topicLen uint32, dataPtr unsafe.Pointer, dataLen uint32) uint32

//go:wasmimport wasmvisor abort
func hostAbort(ptr unsafe.Pointer, n uint32)

//go:wasmimport wasmvisor host_fn
func importHostFn(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport wasmvisor host_call
func importHostCall(h int32, ptr unsafe.Pointer, n uint32) uint64

//go:wasmimport wasmvisor host_result
func importHostResult(ptr unsafe.Pointer, n uint32) int32

// wasmPlatform is linear memory itself: a Go pointer is a guest address.
type wasmPlatform struct{}

func newPlatform() platform { return wasmPlatform{} }

func (wasmPlatform) addr(b []byte) uint32 {
	if cap(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

func (wasmPlatform) log(level Level, msg string) {
	hostLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
	runtime.KeepAlive(msg)
}

func (wasmPlatform) publish(topic string, data []byte) uint32 {
	r := hostPublish(unsafe.Pointer(unsafe.StringData(topic)), uint32(len(topic)),
		unsafe.Pointer(unsafe.SliceData(data)), uint32(len(data)))
	runtime.KeepAlive(topic)
	runtime.KeepAlive(data)
	return r
}

func (wasmPlatform) abort(msg string) {
	hostAbort(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
	runtime.KeepAlive(msg)
}

func (wasmPlatform) hostFn(name string) int32 {
	r := importHostFn(unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)))
	runtime.KeepAlive(name)
	return r
}

func (wasmPlatform) hostCall(h int32, in []byte) uint64 {
	r := importHostCall(h, unsafe.Pointer(unsafe.SliceData(in)), uint32(len(in)))
	runtime.KeepAlive(in)
	return r
}

func (wasmPlatform) hostResult(dst []byte) int32 {
	r := importHostResult(unsafe.Pointer(unsafe.SliceData(dst)), uint32(len(dst)))
	runtime.KeepAlive(dst)
	return r
}

package sdk

import (
	"fmt"

	"github.com/wasmvisor/wasmvisor/abi"
)

// std is the instance's SDK state. A Wasm instance is one guest, so the state is per process
// by nature; it lives in a package-level variable so that everything the host can address
// stays referenced.
var std = newGuest(newPlatform())

// Handle registers handler h under name. The handler list the host sees is the registration
// order. Call Handle from init(): wasmvisor_init fixes the list, and in c-shared mode main.main
// never runs. It panics if name does not match [A-Za-z0-9_.-]{1,64}, is already registered, or
// if the list is already fixed.
//
// The input slice is the SDK's input buffer: it is valid only until h returns, and h must copy
// what it keeps. The returned slice is handed to the host as is and must not be modified
// before h's next call, by which time the host has copied it: a handler may build every output
// in one buffer of its own, reused from call to call (the guest runs one call at a time). An
// error maps to STATUS_ERROR with its text, or STATUS_INVALID_INPUT when made
// with InvalidInput. A panic aborts the instance.
func Handle(name string, h func(input []byte) ([]byte, error)) { std.handle(name, h) }

// Config returns the applied config: empty until the host's first wasmvisor_configure.
func Config() ConfigView { return std.config.view }

// OnConfigChange registers fn to run when wasmvisor_configure brings a config that differs,
// byte for byte in its encoding, from the applied one (the first config counts as a change
// unless it is empty). Callbacks run in registration order with the old and new views, before
// the new config is applied; the first that returns an error rejects the config
// (STATUS_CONFIG_REJECTED with the error's text), the old config stays and the remaining
// callbacks do not run. Register callbacks in init().
func OnConfigChange(fn func(old, new ConfigView) error) {
	if fn == nil {
		panic("sdk: OnConfigChange(nil)")
	}
	std.onConfig = append(std.onConfig, fn)
}

// OnEvent registers fn to receive the bus events the host delivers (wasmvisor_deliver).
// Callbacks run in registration order; the first error becomes the delivery's status as for a
// handler. data is valid only until fn returns. Without any callback, a delivery answers
// STATUS_ERROR.
func OnEvent(fn func(topic string, data []byte) error) {
	if fn == nil {
		panic("sdk: OnEvent(nil)")
	}
	std.onEvent = append(std.onEvent, fn)
}

// SetEventCapacity sets the number of slots of the event ring (default
// DefaultEventCapacity); 0 means no ring. Call it in init() before any Emit; it panics later or
// if n is out of [0, 65536].
func SetEventCapacity(n int) { std.events.setCapacity(n) }

// SetMaxEventSize lowers the bound on an event's topic and data together (default and maximum
// MaxEventSize, 64 KiB); a larger event is refused and counted as dropped. The ring retains up
// to capacity × this bound. It may be called at any time; it panics if n is out of
// [0, MaxEventSize].
func SetMaxEventSize(n int) { std.events.setMaxSize(n) }

// Emit records an event in the instance's event ring, which the host reads without calling
// in. topic and data are copied. When the ring is full the oldest event is overwritten; an
// event whose topic and data exceed the bound (SetMaxEventSize) is refused and counted as dropped.
func Emit(topic string, data []byte) { std.emit(topic, data) }

// Publish publishes an event on the host's bus through the publish import. It returns
// ErrDropped when the host dropped it.
func Publish(topic string, data []byte) error {
	switch r := std.p.publish(topic, data); r {
	case abi.PublishAccepted:
		return nil
	case abi.PublishDropped:
		return ErrDropped
	default:
		return fmt.Errorf("sdk: publish: unexpected result %d from the host", r)
	}
}

// HostCall calls the host function name, which the host must offer and the plugin's
// capabilities grant, with input, and returns its output. It returns ErrHostFuncDenied when
// the function is not granted, and a *HostFuncError when the function failed. The function
// runs inside this call, under its deadline. Handles are looked up once per name and cached.
func HostCall(name string, input []byte) ([]byte, error) { return std.hostCall(name, input) }

// Level is a log level of the log import.
type Level int32

// Log levels.
const (
	LevelDebug Level = abi.LogDebug
	LevelInfo  Level = abi.LogInfo
	LevelWarn  Level = abi.LogWarn
	LevelError Level = abi.LogError
)

// Log sends msg to the host's logger at level.
func Log(level Level, msg string) { std.p.log(level, msg) }

// Logf formats with fmt.Sprintf and sends the line to the host's logger at level.
func Logf(level Level, format string, args ...any) { std.p.log(level, fmt.Sprintf(format, args...)) }

// Package sdk is the Go guest SDK for wasmvisor: it implements ABI v1 (abi/README.md) for
// plugins built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-buildid= -o plugin.wasm .
//
// # Register in init(), not in main()
//
// A plugin is a WASI reactor (-buildmode=c-shared): the host runs _initialize, which runs the
// package init functions but NOT main.main. Register handlers, config and event callbacks and
// metrics in init(); main must exist (package main) and is never called. wasmvisor_init fixes
// the handler list, so Handle after that panics.
//
// # A complete plugin
//
//	package main
//
//	import (
//		"errors"
//
//		sdk "github.com/wasmvisor/wasmvisor/sdk/go"
//	)
//
//	var greetings = sdk.NewCounter("greetings_total")
//
//	func init() {
//		sdk.Handle("hello", func(input []byte) ([]byte, error) {
//			if len(input) == 0 {
//				return nil, sdk.InvalidInput(errors.New("empty name"))
//			}
//			greeting, ok := sdk.Config().Get("greeting")
//			if !ok {
//				greeting = "hello"
//			}
//			greetings.Inc()
//			sdk.Emit("greeted", input)
//			return []byte(greeting + ", " + string(input)), nil
//		})
//		sdk.OnConfigChange(func(old, new sdk.ConfigView) error {
//			if g, ok := new.Get("greeting"); ok && g == "" {
//				return errors.New("greeting must not be empty")
//			}
//			return nil
//		})
//	}
//
//	func main() {} // never runs in a reactor
//
// # What the SDK does
//
// It exports wasmvisor_init, _reserve, _call, _configure and _deliver with //go:wasmexport and
// imports wasmvisor.log, .publish and .abort with //go:wasmimport. The control block, input
// and output buffers, applied config, event ring and metric records are Go allocations
// referenced from package-level state; the Go collector does not move objects, so their
// addresses (which fit in 32 bits on wasm) stay valid for the life of the instance.
//
//   - Handlers: a returned error maps to STATUS_ERROR with its text; InvalidInput(err) maps to
//     STATUS_INVALID_INPUT; an unknown handler number to STATUS_UNKNOWN_HANDLER. A panic in a
//     handler or callback calls the abort import with "panic: <value>": the instance traps and
//     the host replaces it.
//   - Config: Config returns the applied config; OnConfigChange callbacks may reject a new one.
//   - Events: Emit records into the ring the host reads from memory; Publish goes to the host's
//     bus; OnEvent receives deliveries.
//   - Telemetry: NewCounter, NewGauge and NewHistogram write their records in memory as values
//     change, so the host snapshots them without calling in.
//   - Logging: Log and Logf.
//   - JSON without reflection: NewJSONReader, a scanner that reads values in place (strings
//     without escapes are views of the input), and JSONWriter and AppendJSONString, which
//     append; see README.md for their cost against encoding/json.
//
// # Concurrency
//
// A wasm instance runs one export at a time on one thread. Call the SDK from handlers and
// callbacks, or from init; do not call it from goroutines that outlive the export that started
// them.
//
// # Native builds
//
// Natively (any GOOS but wasip1) the package compiles with no-op imports, so a plugin's main
// package builds, vets and unit-tests on the developer's machine; the exports do not exist.
package sdk

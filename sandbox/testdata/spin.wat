;; spin.wat: a loop with no end, for TestInterruptFromAnotherGoroutine: "spin" tells the host
;; it started (the import env.started), then loops for ever. Only the instrumented interrupt
;; global, set from another goroutine, can end it. Build: wat2wasm spin.wat -o spin.wasm
(module
  (import "env" "started" (func $started))
  (memory (export "memory") 1)
  (func (export "spin")
    (call $started)
    (loop $forever (br $forever))))

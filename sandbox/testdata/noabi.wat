;; noabi.wat: a module that breaks ABI v1 in as many ways as it can, so that the sandbox test
;; sees every problem named. Build: wat2wasm noabi.wat -o noabi.wasm
(module
  (import "env" "f" (func))
  (import "wasmvisor" "log" (func (param i32)))
  (import "wasmvisor" "sleep" (func))
  (import "wasi_snapshot_preview1" "not_a_wasi_function" (func))
  (memory (export "memory") 1)
  (func (export "wasmvisor_call") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_bogus"))
  (func (export "_start")))

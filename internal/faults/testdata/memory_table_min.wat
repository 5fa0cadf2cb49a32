;; memory_table_min.wat: a module whose table needs 100,000,000 elements at start (800 MB of
;; host memory in wazero), for the fault suite (internal/faults/memory_test.go): the host
;; must refuse it at load with ErrMemoryLimit, not allocate it. Otherwise a valid ABI v1
;; module, laid out as memory_hog.wat, with one handler, `ok`.
;; Build: wat2wasm memory_table_min.wat -o memory_table_min.wasm
(module
  (table 100000000 funcref)
  (memory (export "memory") 1)
  (data (i32.const 64) "wvab\01\00\00\00\00\10\00\00\00\10\00\00\00\00\00\00\00\00\00\00\00\02\00\00\02\00\00\00")
  (data (i32.const 512) "ok")
  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))
  (func (export "wasmvisor_call") (param i32 i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

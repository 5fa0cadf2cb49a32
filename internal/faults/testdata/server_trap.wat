;; server_trap.wat: a plugin of the server chaos test (cmd/wasmvisor) that follows ABI v1 and
;; traps on every call of its one handler, `call`. A flood of calls to it crashes instance
;; after instance. Build: wat2wasm server_trap.wat -o server_trap.wasm
(module
  (memory (export "memory") 1)
  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 4).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\04\00\00\00")
  (data (i32.const 512) "call")
  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))
  (func (export "wasmvisor_call") (param i32 i32) (result i32)
    (unreachable)))

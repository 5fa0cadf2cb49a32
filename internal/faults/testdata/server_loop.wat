;; server_loop.wat: a plugin of the server chaos test (cmd/wasmvisor) that follows ABI v1 and
;; loops forever in its one handler, `call`: every call runs until its deadline ends it.
;; Build: wat2wasm server_loop.wat -o server_loop.wasm
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
    (loop $forever (br $forever))
    (unreachable)))

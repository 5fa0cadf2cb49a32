;; hang.wat: a module that follows ABI v1 but never finishes starting: its _initialize loops
;; forever. The sandbox tests use it for the start deadline. Build: wat2wasm hang.wat -o hang.wasm
(module
  (memory (export "memory") 1)
  (func (export "_initialize") (loop $forever (br $forever)))
  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_call") (param i32 i32) (result i32) (i32.const 0)))

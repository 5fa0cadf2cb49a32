;; indices_added_type.wat: a module that names a type past its own, for the fault suite
;; (internal/faults/indices_test.go). Its three types are its functions' signatures, ()->i32,
;; (i32)->i32 and (i32 i32)->i32; its call handler makes a call_indirect of type 3, which it
;; does not have: as written it is invalid, and wazero refuses it. The sandbox's
;; instrumentation appends the types of its helpers after the module's (3, the safe point's
;; ()->()), so that, were the index not checked, the instrumented copy would load and its
;; guest could call, through its table, whatever of the sandbox's has that type. The host must
;; refuse it at load with ErrInvalidModule. Otherwise a valid ABI v1 module, laid out as
;; memory_hog.wat, with one handler, `ok`. Invalid on purpose, it is built without validation
;; (the Makefile reads the flag from the Build line):
;; Build: wat2wasm --no-check indices_added_type.wat -o indices_added_type.wasm
(module
  (table 1 funcref)
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
    (call_indirect (type 3) (i32.const 0)) ;; past the module's types: ()->(), once instrumented
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

;; indices_safe_point.wat: a module that calls a function past its own, for the fault suite
;; (internal/faults/indices_test.go). It defines four functions, 0 to 3, and its call handler
;; calls function 5, which it does not have: as written it is invalid, and wazero refuses it.
;; The sandbox's instrumentation appends its own functions after the module's (4, the
;; memory.grow helper; 5, the safe point, which refills the fuel counter), so that, were the
;; index not checked, the call would reach the safe point and the instrumented copy would load.
;; The host must refuse it at load with ErrInvalidModule. Otherwise a valid ABI v1 module,
;; laid out as memory_hog.wat, with one handler, `ok`. Invalid on purpose, it is built
;; without validation (the Makefile reads the flag from the Build line):
;; Build: wat2wasm --no-check indices_safe_point.wat -o indices_safe_point.wasm
(module
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
    (call 5) ;; past the module's functions: the safe point, once instrumented
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

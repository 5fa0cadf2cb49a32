;; deadline_copy.wat: a loop whose body is one overlapping memory.copy over 32 MiB (from the end).
;; Deadline fault suite (deadline_test.go). Handler "run" never finishes on its own (only the call
;; deadline ends it); "ok" answers at once, with nothing. Build: wat2wasm deadline_copy.wat -o deadline_copy.wasm
(module
  (import "wasmvisor" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 513)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 6: "run", "ok").
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\06\00\00\00")
  (data (i32.const 512) "run\nok")
  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))
  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (if (i32.eqz (local.get $h)) (then
      (call $log (i32.const 1) (i32.const 512) (i32.const 3)) ;; "run": the test knows it started
      (loop $again
        (memory.copy (i32.const 1) (i32.const 0) (i32.const 0x2000000))
        (br $again))))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

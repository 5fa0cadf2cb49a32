;; deadline_recurse.wat: a recursion that never loops: a binary tree of calls 60 deep (2^60 calls).
;; Deadline fault suite (deadline_test.go). Handler "run" never finishes on its own (only the call
;; deadline ends it); "ok" answers at once, with nothing. Build: wat2wasm deadline_recurse.wat -o deadline_recurse.wasm
(module
  (memory (export "memory") 1)

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
      (call $tree (i32.const 60))))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))
  (func $tree (param $n i32)
    (if (local.get $n) (then
      (call $tree (i32.sub (local.get $n) (i32.const 1)))
      (call $tree (i32.sub (local.get $n) (i32.const 1)))))))

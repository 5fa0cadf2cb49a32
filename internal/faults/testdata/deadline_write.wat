;; deadline_write.wat: one fd_write to stdout of 32 MiB without a newline: one host call, unbounded work.
;; Deadline fault suite (deadline_test.go). Handler "run" never finishes on its own (only the call
;; deadline ends it); "ok" answers at once, with nothing. Build: wat2wasm deadline_write.wat -o deadline_write.wasm
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 520)

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
      ;; the iovec at 2048: 32 MiB of zeros (no newline) from 64 KiB, again and again
      (i32.store (i32.const 2048) (i32.const 0x10000))
      (i32.store (i32.const 2052) (i32.const 0x2000000))
      (loop $again
        (drop (call $fd_write (i32.const 1) (i32.const 2048) (i32.const 1) (i32.const 2056)))
        (br $again))))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

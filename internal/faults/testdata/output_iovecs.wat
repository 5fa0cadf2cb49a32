;; output_iovecs.wat: a plugin that follows ABI v1 and makes one WASI fd_write to stdout hold
;; 4 million iovecs (32 MiB of them, each "x\n"), which the host serves one by one: without a
;; stop check inside the write, a deadline could not end it. The iovecs are written at start
;; (wasmvisor_init, under the start timeout), so that the call does nothing but the write.
;; Build: wat2wasm output_iovecs.wat -o output_iovecs.wasm
;;
;; Handlers (index: name):
;;   0 echo     output = input
;;   1 iovecs   the one fd_write
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 11).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\0b\00\00\00")
  (data (i32.const 512) "echo\niovecs")
  (data (i32.const 256) "x\n")

  ;; 4 Mi iovecs of 8 bytes from 64 KiB on: one written, then doubled with memory.copy.
  (func (export "wasmvisor_init") (result i32)
    (local $k i32)
    (if (i32.eq (memory.grow (i32.const 512)) (i32.const -1)) (then unreachable))
    (i32.store (i32.const 0x10000) (i32.const 256))
    (i32.store (i32.const 0x10004) (i32.const 2))
    (local.set $k (i32.const 8))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $k) (i32.const 0x2000000)))
      (memory.copy (i32.add (i32.const 0x10000) (local.get $k)) (i32.const 0x10000) (local.get $k))
      (local.set $k (i32.shl (local.get $k) (i32.const 1)))
      (br $l)))
    (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (i32.store (i32.const 80) (i32.const 1024))
    (i32.store (i32.const 84) (i32.const 0))
    (if (i32.eq (local.get $h) (i32.const 0)) (then
      (i32.store (i32.const 84) (local.get $len))
      (return (i32.const 0))))
    (drop (call $fd_write (i32.const 1) (i32.const 0x10000) (i32.const 0x400000) (i32.const 136)))
    (i32.const 0)))

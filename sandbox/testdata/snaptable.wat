;; snaptable.wat: snapenv.wat with a table its code writes, which makes it unsnapshottable:
;; the sandbox initializes every instance the normal way. Used by the sandbox's snapshot
;; tests. Build: wat2wasm snaptable.wat -o snaptable.wasm
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\03\00\00\00")
  (data (i32.const 512) "env")

  (func $nop)
  (elem declare func $nop)

  (func (export "wasmvisor_init") (result i32)
    (table.set $t (i32.const 0) (ref.func $nop))
    (drop (call $sizes (i32.const 2048) (i32.const 2052)))
    (drop (call $get (i32.const 4096) (i32.const 8192)))
    (i32.const 64))

  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))

  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (i32.store (i32.const 80) (i32.const 8192))
    (i32.store (i32.const 84) (i32.load (i32.const 2052)))
    (i32.const 0)))

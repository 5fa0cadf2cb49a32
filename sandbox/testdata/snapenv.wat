;; snapenv.wat: a plugin that reads its environment once, in wasmvisor_init, and returns it
;; from its one handler, "env" (the "K=V\0" strings of environ_get); its init also logs
;; "init", so that a test can count the start sequences that ran. Used by the sandbox's
;; snapshot tests (snaptable.wat is the same with a table its code writes). Build: wat2wasm snapenv.wat -o snapenv.wasm
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasmvisor" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 3).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\03\00\00\00")
  (data (i32.const 512) "env")
  (data (i32.const 600) "init")

  ;; 2048: the count; 2052: the bytes; 4096: the pointers; 8192: the strings.
  (func (export "wasmvisor_init") (result i32)
    (drop (call $sizes (i32.const 2048) (i32.const 2052)))
    (drop (call $get (i32.const 4096) (i32.const 8192)))
    (call $log (i32.const 1) (i32.const 600) (i32.const 4))
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

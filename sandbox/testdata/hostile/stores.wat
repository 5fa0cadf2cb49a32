;; stores.wat: a module that follows ABI v1 and lets a test write any bytes anywhere in its
;; memory, so that the sandbox tests can hand-build its stores (control-block fields, metric
;; records, the event ring, the applied config) byte by byte, hostile ones included.
;; Build: wat2wasm stores.wat -o stores.wasm (make plugins-wat)
;;
;; Layout: control block at 64, handler names at 512, the input buffer at 0x10000 (64 KiB).
;; Everything else is the test's to write: 0x1000-0xFFFF, and what `grow` adds after 0x20000.
(module
  (memory (export "memory") 2)

  ;; Control block: magic "wvab", version 1, in_ptr 0x10000, in_cap 0x10000, out 0/0,
  ;; handlers at 512 (length 9), config, metrics and events all 0.
  (data (i32.const 64) "wvab\01\00\00\00\00\00\01\00\00\00\01\00\00\00\00\00\00\00\00\00\00\02\00\00\09\00\00\00")
  ;; Handlers: 0 poke, 1 grow.
  (data (i32.const 512) "poke\ngrow")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))

  ;; The input buffer never grows.
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 5))

  ;; A config is accepted and not kept: the tests write config_ptr/config_len themselves.
  (func (export "wasmvisor_configure") (param i32) (result i32) (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    ;; 0 poke: input = u32 address, then the bytes to write there.
    (if (i32.eq (local.get $h) (i32.const 0)) (then
      (memory.copy
        (i32.load (i32.const 0x10000))
        (i32.const 0x10004)
        (i32.sub (local.get $len) (i32.const 4)))
      (return (i32.const 0))))
    ;; 1 grow: input = u32 page count to add; fails (status 5) if refused.
    (if (i32.eq (local.get $h) (i32.const 1)) (then
      (if (i32.eq (memory.grow (i32.load (i32.const 0x10000))) (i32.const -1))
        (then (return (i32.const 5))))
      (return (i32.const 0))))
    (i32.const 2)))

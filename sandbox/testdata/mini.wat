;; mini.wat: the smallest module that follows ABI v1, with handlers that break the ABI at run
;; time on purpose. The sandbox tests patch its control block (magic, version) to test the
;; checks at start. Build: wat2wasm mini.wat -o mini.wasm
(module
  (import "wasmvisor" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024,
  ;; out 0/0, handlers at 512 (length 41).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\29\00\00\00")
  ;; Handler list: 0 ok, 1 badout, 2 badstatus, 3 badlog, 4 spinning, 5 noop2 (41 bytes).
  (data (i32.const 512) "ok\nbadout\nbadstatus\nbadlog\nspinning\nnoop2")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))

  ;; Never grows: a larger input is an ABI violation on the host side.
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))

  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    ;; 0 ok: output = input
    (if (i32.eq (local.get $h) (i32.const 0)) (then
      (i32.store (i32.const 80) (i32.const 1024))
      (i32.store (i32.const 84) (local.get $len))
      (return (i32.const 0))))
    ;; 1 badout: an output far outside memory
    (if (i32.eq (local.get $h) (i32.const 1)) (then
      (i32.store (i32.const 80) (i32.const 0xffffff00))
      (i32.store (i32.const 84) (i32.const 1000))
      (return (i32.const 0))))
    ;; 2 badstatus
    (if (i32.eq (local.get $h) (i32.const 2)) (then (return (i32.const 99))))
    ;; 3 badlog: a log message outside memory
    (if (i32.eq (local.get $h) (i32.const 3)) (then
      (call $log (i32.const 1) (i32.const 0xfffffff0) (i32.const 100))
      (return (i32.const 0))))
    ;; 4 spinning: a loop that ends after $len * 1000000 iterations
    (if (i32.eq (local.get $h) (i32.const 4)) (then
      (local.set $len (i32.mul (local.get $len) (i32.const 1000000)))
      (loop $l
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br_if $l (i32.gt_s (local.get $len) (i32.const 0))))
      (i32.store (i32.const 84) (i32.const 0))
      (return (i32.const 0))))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

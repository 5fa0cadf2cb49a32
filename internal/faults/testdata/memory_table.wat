;; memory_table.wat: a table.grow bomb, for the fault suite (internal/faults/memory_test.go).
;; A table lives in host memory, outside the linear memory's limit; the host clamps every
;; table's maximum at load (sandbox/internal/wasmbin, MaxTableElements). ABI v1 with no language
;; runtime, laid out as memory_hog.wat.
;; Build: wat2wasm memory_table.wat -o memory_table.wasm
;;
;; Handlers (output: little-endian u32s):
;;   0 bomb   grows the table by 10,000 elements at a time until table.grow fails,
;;            then traps (unreachable)
;;   1 size   answers the table's size in elements (a fresh instance: 1)
(module
  (table $t 1 funcref)
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 0x1000, in_cap 0x1000,
  ;; out 0/0, handlers at 512 (length 9).
  (data (i32.const 64) "wvab\01\00\00\00\00\10\00\00\00\10\00\00\00\00\00\00\00\00\00\00\00\02\00\00\09\00\00\00")
  (data (i32.const 512) "bomb\nsize")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0x800))
    (i32.store (i32.const 84) (i32.const 0))
    (if (i32.eq (local.get $h) (i32.const 0)) (then
      (loop $more
        (br_if $more (i32.ne (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1))))
      (unreachable)))
    (i32.store (i32.const 0x800) (table.size $t))
    (i32.store (i32.const 84) (i32.const 4))
    (i32.const 0)))

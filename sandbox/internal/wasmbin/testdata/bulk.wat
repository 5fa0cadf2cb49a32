;; bulk.wat: every bulk memory and table instruction behind an export, for the differential
;; test of the instrumentation (TestBulkDifferential): the same calls, on this module as it
;; is and as Instrument rewrites it, must give the same results, traps and contents.
;; Build: wat2wasm bulk.wat -o bulk.wasm
(module
  (type $ret (func (result i32)))
  (memory (export "memory") 2)
  (table $t 40 funcref)
  (table $src 6 6 funcref)
  (func $f0 (result i32) (i32.const 100))
  (func $f1 (result i32) (i32.const 101))
  (func $f2 (result i32) (i32.const 102))
  (func $f3 (result i32) (i32.const 103))
  (elem (table $src) (i32.const 0) func $f0 $f1 $f2 $f3)
  (elem $e funcref
    (ref.func $f0) (ref.func $f1) (ref.func $f2) (ref.func $f3) (ref.null func)
    (ref.func $f3) (ref.func $f2) (ref.func $f1) (ref.func $f0) (ref.func $f1)
    (ref.func $f2) (ref.func $f0) (ref.func $f3) (ref.func $f1) (ref.func $f2)
    (ref.func $f0) (ref.func $f0) (ref.func $f1) (ref.null func) (ref.func $f3))
  (data $d "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!@#$%^&*()")

  (func (export "fill") (param i32 i32 i32)
    (memory.fill (local.get 0) (local.get 1) (local.get 2)))
  (func (export "copy") (param i32 i32 i32)
    (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init") (param i32 i32 i32)
    (memory.init $d (local.get 0) (local.get 1) (local.get 2)))
  (func (export "data_drop") (data.drop $d))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))

  ;; v selects the value: an index into $src (4 and 5 are null).
  (func (export "tfill") (param i32 i32 i32)
    (table.fill $t (local.get 0) (table.get $src (local.get 1)) (local.get 2)))
  (func (export "tcopy") (param i32 i32 i32)
    (table.copy $t $t (local.get 0) (local.get 1) (local.get 2)))
  (func (export "tcopy_src") (param i32 i32 i32)
    (table.copy $t $src (local.get 0) (local.get 1) (local.get 2)))
  (func (export "tinit") (param i32 i32 i32)
    (table.init $t $e (local.get 0) (local.get 1) (local.get 2)))
  (func (export "elem_drop") (elem.drop $e))
  (func (export "tgrow") (param i32 i32) (result i32)
    (table.grow $t (table.get $src (local.get 0)) (local.get 1)))
  (func (export "tsize") (result i32) (table.size $t))
  ;; what slot i of $t holds: -1 for null, else the function's number.
  (func (export "tget") (param i32) (result i32)
    (if (result i32) (ref.is_null (table.get $t (local.get 0)))
      (then (i32.const -1))
      (else (call_indirect $t (type $ret) (local.get 0))))))

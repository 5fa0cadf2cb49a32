;; stores_dup_names.wat: once armed, two counters both named requests_total (one record, two
;; values). The host must refuse them as an ABI violation rather than drop one silently.
;; Handlers: echo, arm.
(module
  (memory (export "memory") 2)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 0x10000, in_cap 0x10000, out 0/0,
  ;; handlers at 0x200 ("echo\narm", 8 bytes); config, metrics and events 0 until armed.
  (data (i32.const 64) "wvab\01\00\00\00\00\00\01\00\00\00\01\00\00\00\00\00\00\00\00\00\00\02\00\00\08\00\00\00")
  (data (i32.const 0x200) "echo\narm")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 5))
  (func (export "wasmvisor_configure") (param i32) (result i32) (i32.const 0))

  ;; 0 echo: the input back. 1 arm: make the stores hostile ($arm).
  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0x10000))
    (i32.store (i32.const 84) (local.get $len))
    (if (i32.eq (local.get $h) (i32.const 1)) (then
      (call $arm (local.get $len))
      (i32.store (i32.const 84) (i32.const 0))))
    (i32.const 0))

  (data (i32.const 0x1100) "requests_total")
  (func $arm (param $len i32)
    (i32.store (i32.const 0x1000) (i32.const 0x1100))  ;; record 0: name_ptr
    (i32.store (i32.const 0x1004) (i32.const 14))      ;;   name_len
    (i32.store (i32.const 0x1008) (i32.const 1))       ;;   kind: counter
    (i64.store (i32.const 0x1018) (i64.const 1))       ;;   value
    (i32.store (i32.const 0x1030) (i32.const 0x1100))  ;; record 1: the same name
    (i32.store (i32.const 0x1034) (i32.const 14))
    (i32.store (i32.const 0x1038) (i32.const 1))
    (i64.store (i32.const 0x1048) (i64.const 2))
    (i32.store (i32.const 104) (i32.const 0x1000))     ;; metrics_ptr
    (i32.store (i32.const 108) (i32.const 2))))        ;; metrics_count

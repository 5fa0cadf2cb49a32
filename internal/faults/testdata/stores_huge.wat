;; stores_huge.wat: once armed, a store with a huge length or count, chosen by the first input
;; byte: 0 metrics_count 0xFFFFFFFF; 1 a metric name_len 0xFFFFFFFF; 2 an event ring of
;; 0xFFFFFFFF slots; 3 an event whose topic_len is 0xFFFFFFFF. The host must refuse each as an
;; ABI violation before it allocates or copies anything. Handlers: echo, arm.
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

  (func $arm (param $len i32)
    (local $mode i32)
    (local.set $mode (i32.load8_u (i32.const 0x10000)))
    (if (i32.eq (local.get $mode) (i32.const 0)) (then
      (i32.store (i32.const 104) (i32.const 0x1000))
      (i32.store (i32.const 108) (i32.const 0xFFFFFFFF))))
    (if (i32.eq (local.get $mode) (i32.const 1)) (then
      (i32.store (i32.const 0x1000) (i32.const 0x1100))    ;; name_ptr
      (i32.store (i32.const 0x1004) (i32.const 0xFFFFFFFF)) ;; name_len
      (i32.store (i32.const 0x1008) (i32.const 1))         ;; counter
      (i32.store (i32.const 104) (i32.const 0x1000))
      (i32.store (i32.const 108) (i32.const 1))))
    (if (i32.eq (local.get $mode) (i32.const 2)) (then
      (i32.store (i32.const 0x2000) (i32.const 0x3000))    ;; slots_ptr
      (i32.store (i32.const 0x2004) (i32.const 0xFFFFFFFF)) ;; slot_count
      (i64.store (i32.const 0x2008) (i64.const -1))        ;; written
      (i32.store (i32.const 112) (i32.const 0x2000))))     ;; events_ptr
    (if (i32.eq (local.get $mode) (i32.const 3)) (then
      (i32.store (i32.const 0x2000) (i32.const 0x3000))    ;; slots_ptr
      (i32.store (i32.const 0x2004) (i32.const 1))         ;; slot_count
      (i64.store (i32.const 0x2008) (i64.const 1))         ;; written
      (i64.store (i32.const 0x3000) (i64.const 0))         ;; slot 0: seq 0
      (i32.store (i32.const 0x3008) (i32.const 0))         ;;   topic_ptr
      (i32.store (i32.const 0x300C) (i32.const 0xFFFFFFFF)) ;;   topic_len
      (i32.store (i32.const 112) (i32.const 0x2000))))))

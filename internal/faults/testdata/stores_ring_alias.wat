;; stores_ring_alias.wat: once armed, an event ring of 65,536 slots, all holding an event whose
;; data is the same region of N bytes (N: the input, a u32), so that a host that copies each
;; event copies 65,536 x N bytes: 1 TiB for N = 16 MiB. N above 64 KiB is an ABI violation;
;; N = 64 KiB is legal, and the host must bound what it copies by its read budget.
;; Arming grows memory by 280 pages (17.5 MiB): the slots at 0x20000 (1.5 MiB), the region
;; at 0x1A0000. Handlers: echo, arm.
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
    (local $n i32)
    (local $s i32)
    (local $at i32)
    (local.set $n (i32.load (i32.const 0x10000)))
    (drop (memory.grow (i32.const 280)))
    (loop $fill
      (local.set $at (i32.add (i32.const 0x20000) (i32.mul (local.get $s) (i32.const 24))))
      (i64.store (local.get $at) (i64.extend_i32_u (local.get $s)))  ;; seq
      (i32.store offset=8 (local.get $at) (i32.const 0))              ;; topic_ptr
      (i32.store offset=12 (local.get $at) (i32.const 0))             ;; topic_len
      (i32.store offset=16 (local.get $at) (i32.const 0x1A0000))      ;; data_ptr
      (i32.store offset=20 (local.get $at) (local.get $n))            ;; data_len
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $s) (i32.const 65536))))
    (i32.store (i32.const 0x1000) (i32.const 0x20000))  ;; slots_ptr
    (i32.store (i32.const 0x1004) (i32.const 65536))    ;; slot_count
    (i64.store (i32.const 0x1008) (i64.const 65536))    ;; written
    (i32.store (i32.const 112) (i32.const 0x1000))))    ;; events_ptr

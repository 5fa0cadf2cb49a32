;; stores_rename.wat: a counter whose name changes at every call: "renamed_" and the call
;; count in 8 hex digits, written into the name, and the value the count. Every scrape that
;; follows a call sees a new series; the host must cap them. Handlers: echo, arm (both echo,
;; and rename).
(module
  (memory (export "memory") 2)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 0x10000, in_cap 0x10000, out 0/0,
  ;; handlers at 0x200 ("echo\narm", 8 bytes); metrics at 0x1000, one record.
  (data (i32.const 64) "wvab\01\00\00\00\00\00\01\00\00\00\01\00\00\00\00\00\00\00\00\00\00\02\00\00\08\00\00\00")
  (data (i32.const 0x200) "echo\narm")
  (data (i32.const 0x1100) "renamed_00000000")
  (data (i32.const 0x1200) "0123456789abcdef")

  (global $calls (mut i32) (i32.const 0))

  ;; Declares the counter: name at 0x1100 (16 bytes), kind counter.
  (func (export "wasmvisor_init") (result i32)
    (i32.store (i32.const 0x1000) (i32.const 0x1100))  ;; name_ptr
    (i32.store (i32.const 0x1004) (i32.const 16))      ;; name_len
    (i32.store (i32.const 0x1008) (i32.const 1))       ;; kind: counter
    (i32.store (i32.const 104) (i32.const 0x1000))     ;; metrics_ptr
    (i32.store (i32.const 108) (i32.const 1))          ;; metrics_count
    (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 5))
  (func (export "wasmvisor_configure") (param i32) (result i32) (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (local $k i32)
    (local $v i32)
    (i32.store (i32.const 80) (i32.const 0x10000))
    (i32.store (i32.const 84) (local.get $len))
    ;; Count the call, and write the count into the name's last 8 bytes, in hex.
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i64.store (i32.const 0x1018) (i64.extend_i32_u (global.get $calls)))
    (local.set $v (global.get $calls))
    (local.set $k (i32.const 7))
    (loop $digit
      (i32.store8 (i32.add (i32.const 0x1108) (local.get $k))
        (i32.load8_u (i32.add (i32.const 0x1200) (i32.and (local.get $v) (i32.const 15)))))
      (local.set $v (i32.shr_u (local.get $v) (i32.const 4)))
      (local.set $k (i32.sub (local.get $k) (i32.const 1)))
      (br_if $digit (i32.ge_s (local.get $k) (i32.const 0))))
    (i32.const 0)))

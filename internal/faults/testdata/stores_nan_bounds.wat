;; stores_nan_bounds.wat: once armed, a histogram whose second bound is NaN. The host must
;; refuse it as an ABI violation of the telemetry store, keep listing and scraping the other
;; plugins, and keep serving this instance's calls. Handlers: echo, arm.
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

  (data (i32.const 0x1100) "latency")
  (func $arm (param $len i32)
    (i32.store (i32.const 0x1000) (i32.const 0x1100))  ;; name_ptr
    (i32.store (i32.const 0x1004) (i32.const 7))       ;; name_len
    (i32.store (i32.const 0x1008) (i32.const 3))       ;; kind: histogram
    (i32.store (i32.const 0x100C) (i32.const 2))       ;; bucket_count
    (i32.store (i32.const 0x1010) (i32.const 0x1200))  ;; bounds_ptr
    (i32.store (i32.const 0x1014) (i32.const 0x1300))  ;; buckets_ptr (3 x u64, zero)
    (f64.store (i32.const 0x1200) (f64.const 1))
    (f64.store (i32.const 0x1208) (f64.const nan))
    (i32.store (i32.const 104) (i32.const 0x1000))     ;; metrics_ptr
    (i32.store (i32.const 108) (i32.const 1))))        ;; metrics_count

;; quarantine_hostile.wat: a plugin that fails on demand, for the quarantine and poison-input
;; fault tests (internal/faults/quarantine_test.go, poison_test.go) and host's own tests.
;; Build: wat2wasm quarantine_hostile.wat -o quarantine_hostile.wasm
;;
;; Handlers: 0 echo (output = input), 1 trap (traps on any input), 2 loop (never ends: runs
;; past any call deadline), 3 trapon (traps when the input starts with "!", else echoes),
;; 4 logloop (logs "entered" at info level, then never ends: a test learns from the log line
;; that the call is inside the guest, and ends it from outside).
;; wasmvisor_configure traps on any non-empty config (more than the 4-byte empty encoding),
;; so an instance, or a quarantined plugin's probe, fails to start while the desired config
;; is not empty.
(module
  (import "wasmvisor" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 4096, in_cap 60000, out 0/0,
  ;; handlers at 512 (length 29).
  (data (i32.const 64) "wvab\01\00\00\00\00\10\00\00\60\ea\00\00\00\00\00\00\00\00\00\00\00\02\00\00\1d\00\00\00")
  (data (i32.const 512) "echo\ntrap\nloop\ntrapon\nlogloop")
  (data (i32.const 600) "entered")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))

  ;; Never grows: a larger input is refused by the host.
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))

  (func (export "wasmvisor_configure") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 4)) (then unreachable))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  (func $echo (param $len i32) (result i32)
    (i32.store (i32.const 80) (i32.const 4096))
    (i32.store (i32.const 84) (local.get $len))
    (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (if (i32.eq (local.get $h) (i32.const 0)) (then (return (call $echo (local.get $len)))))
    (if (i32.eq (local.get $h) (i32.const 1)) (then unreachable))
    (if (i32.eq (local.get $h) (i32.const 2)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $h) (i32.const 3)) (then
      (if (i32.and (i32.gt_u (local.get $len) (i32.const 0))
                   (i32.eq (i32.load8_u (i32.const 4096)) (i32.const 33)))
        (then unreachable))
      (return (call $echo (local.get $len)))))
    (if (i32.eq (local.get $h) (i32.const 4)) (then
      (call $log (i32.const 1) (i32.const 600) (i32.const 7))
      (loop $forever (br $forever))))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 2)))

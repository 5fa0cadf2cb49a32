;; hostcall.wat: calls host functions (ABI v1 host_fn, host_call, host_result).
;; Build: wat2wasm hostcall.wat -o hostcall.wasm
;; Handler input: one byte n, then the function's name (n bytes), then the function's input.
;; "call": output is the function's output, status its status (1 with the message on error);
;;   a name host_fn denies gives status 1 and the output "denied".
;; "small": first asks host_result with a 1-byte buffer (expects HostResultTooSmall, -1),
;;   then with the full buffer; output "toosmall:" followed by the result.
(module
  (import "wasmvisor" "host_fn" (func $host_fn (param i32 i32) (result i32)))
  (import "wasmvisor" "host_call" (func $host_call (param i32 i32 i32) (result i64)))
  (import "wasmvisor" "host_result" (func $host_result (param i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 10).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\0a\00\00\00")
  (data (i32.const 512) "call\nsmall")
  (data (i32.const 600) "denied")
  (data (i32.const 620) "toosmall:")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (local $n i32) (local $fn i32) (local $r i64) (local $got i32) (local $out i32)
    (local.set $n (i32.load8_u (i32.const 1024)))
    (local.set $fn (call $host_fn (i32.const 1025) (local.get $n)))
    (if (i32.lt_s (local.get $fn) (i32.const 0)) (then
      (i32.store (i32.const 80) (i32.const 600))
      (i32.store (i32.const 84) (i32.const 6))
      (return (i32.const 1))))
    (local.set $r (call $host_call (local.get $fn)
      (i32.add (i32.const 1025) (local.get $n))
      (i32.sub (i32.sub (local.get $len) (i32.const 1)) (local.get $n))))
    (local.set $out (i32.const 4096))
    (if (i32.eq (local.get $h) (i32.const 1)) (then
      ;; small: a 1-byte buffer first (only meaningful when the output is longer than 1)
      (if (i32.ne (call $host_result (i32.const 4096) (i32.const 1)) (i32.const -1)) (then
        (unreachable)))
      (memory.copy (i32.const 4096) (i32.const 620) (i32.const 9))
      (local.set $out (i32.const 4105))))
    (local.set $got (call $host_result (local.get $out) (i32.const 8192)))
    (i32.store (i32.const 80) (i32.const 4096))
    (i32.store (i32.const 84) (i32.add (local.get $got) (i32.sub (local.get $out) (i32.const 4096))))
    (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32)))))

;; hostfn_hostile.wat: attacks on the host-function imports (ABI v1 host_fn, host_call,
;; host_result). Build: wat2wasm hostfn_hostile.wat -o hostfn_hostile.wasm
;; Memory: 32 pages (2 MiB), fixed. The test offers host functions "echo" (returns its input),
;; "block" (waits for its context), "panics" and "big" (1 MiB of output), all granted.
;; Handlers:
;;   bad_name      host_fn with a name range past the end of memory        -> ABI violation
;;   huge_name     host_fn with a name length of 2^32-1                     -> ABI violation
;;   bad_input     host_call of echo with an input range past the end        -> ABI violation
;;   bad_result    host_result into a buffer past the end of memory          -> ABI violation
;;   result_edge   host_result into the last 8 bytes for a 16-byte result    -> ABI violation
;;   bad_handle    host_call with handles -5 and 1000: both must answer STATUS_UNKNOWN_HANDLER
;;                 (output "ok", else it traps)
;;   whole_memory  host_call of echo on all 2 MiB of memory: refused above the input limit;
;;                 returns the status and message the host gave
;;   flood         host_call of echo in an endless loop                      -> deadline
;;   block         host_call of block                                        -> deadline
;;   panics        host_call of panics 1,000 times, each must give STATUS_ERROR; output "ok"
;;   never_read    host_call of big 20 times, never fetching the result; output "ok"
(module
  (import "wasmvisor" "host_fn" (func $host_fn (param i32 i32) (result i32)))
  (import "wasmvisor" "host_call" (func $host_call (param i32 i32 i32) (result i64)))
  (import "wasmvisor" "host_result" (func $host_result (param i32 i32) (result i32)))
  (memory (export "memory") 32 32)

  ;; Control block at 64: magic, version 1, in 1024/1024, out 0/0, handlers at 300.
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\2c\01\00\00\69\00\00\00")
  (data (i32.const 300) "bad_name\0ahuge_name\0abad_input\0abad_result\0aresult_edge\0abad_handle\0awhole_memory\0aflood\0ablock\0apanics\0anever_read")
  (data (i32.const 700) "echo")
  (data (i32.const 710) "block")
  (data (i32.const 720) "panics")
  (data (i32.const 730) "big")
  (data (i32.const 740) "ok")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32) (i32.const 0))

  (func $fn (param $ptr i32) (param $len i32) (result i32)
    (local $h i32)
    (local.set $h (call $host_fn (local.get $ptr) (local.get $len)))
    (if (i32.lt_s (local.get $h) (i32.const 0)) (then (unreachable)))
    (local.get $h))

  (func $status (param $r i64) (result i32)
    (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32))))

  (func $out (param $ptr i32) (param $len i32)
    (i32.store (i32.const 80) (local.get $ptr))
    (i32.store (i32.const 84) (local.get $len)))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (local $f i32) (local $r i64) (local $n i32)
    (call $out (i32.const 0) (i32.const 0))
    (block $never_read (block $panics (block $block (block $flood (block $whole (block $bad_handle
    (block $result_edge (block $bad_result (block $bad_input (block $huge_name (block $bad_name
      (br_table $bad_name $huge_name $bad_input $bad_result $result_edge $bad_handle $whole
        $flood $block $panics $never_read (local.get $h)))
    ;; bad_name
    (drop (call $host_fn (i32.const 0x1fff00) (i32.const 0x1000)))
    (return (i32.const 0)))
    ;; huge_name
    (drop (call $host_fn (i32.const 0) (i32.const -1)))
    (return (i32.const 0)))
    ;; bad_input
    (drop (call $host_call (call $fn (i32.const 700) (i32.const 4)) (i32.const 0xfffffff0) (i32.const 64)))
    (return (i32.const 0)))
    ;; bad_result
    (drop (call $host_call (call $fn (i32.const 700) (i32.const 4)) (i32.const 2048) (i32.const 16)))
    (drop (call $host_result (i32.const 0xffffff00) (i32.const 0x1000)))
    (return (i32.const 0)))
    ;; result_edge: 2 MiB - 8
    (drop (call $host_call (call $fn (i32.const 700) (i32.const 4)) (i32.const 2048) (i32.const 16)))
    (drop (call $host_result (i32.const 0x1ffff8) (i32.const 16)))
    (return (i32.const 0)))
    ;; bad_handle
    (if (i32.ne (call $status (call $host_call (i32.const -5) (i32.const 0) (i32.const 0))) (i32.const 2))
      (then (unreachable)))
    (if (i32.ne (call $status (call $host_call (i32.const 1000) (i32.const 0) (i32.const 0))) (i32.const 2))
      (then (unreachable)))
    (call $out (i32.const 740) (i32.const 2))
    (return (i32.const 0)))
    ;; whole_memory: the message goes to 4096, within the 1,024-byte input buffer's successor
    (local.set $r (call $host_call (call $fn (i32.const 700) (i32.const 4)) (i32.const 0) (i32.const 0x200000)))
    (local.set $n (call $host_result (i32.const 4096) (i32.const 4096)))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then (unreachable)))
    (call $out (i32.const 4096) (local.get $n))
    (return (call $status (local.get $r))))
    ;; flood
    (local.set $f (call $fn (i32.const 700) (i32.const 4)))
    (loop $again
      (drop (call $host_call (local.get $f) (i32.const 2048) (i32.const 16)))
      (br $again))
    (return (i32.const 0)))
    ;; block
    (drop (call $host_call (call $fn (i32.const 710) (i32.const 5)) (i32.const 0) (i32.const 0)))
    (return (i32.const 0)))
    ;; panics
    (local.set $f (call $fn (i32.const 720) (i32.const 6)))
    (local.set $n (i32.const 1000))
    (loop $again
      (if (i32.ne (call $status (call $host_call (local.get $f) (i32.const 0) (i32.const 0))) (i32.const 1))
        (then (unreachable)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (local.get $n)))
    (call $out (i32.const 740) (i32.const 2))
    (return (i32.const 0)))
    ;; never_read
    (local.set $f (call $fn (i32.const 730) (i32.const 3)))
    (local.set $n (i32.const 20))
    (loop $again
      (if (i32.ne (call $status (call $host_call (local.get $f) (i32.const 0) (i32.const 0))) (i32.const 0))
        (then (unreachable)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (local.get $n)))
    (call $out (i32.const 740) (i32.const 2))
    (i32.const 0)))

;; output_flood.wat: a plugin that follows ABI v1 and floods every output stream the host
;; gives it: stdout and stderr (WASI fd_write to fd 1 and 2), the log import and the publish
;; import. The fault suite's output tests (output_test.go) call its handlers; a handler's input
;; length sets how hard it floods. Build: wat2wasm output_flood.wat -o output_flood.wasm
;;
;; Handlers (index: name):
;;   0 echo     output = input (the plugin still answers after a flood)
;;   1 grow     grows memory to hold 32 MiB from 64 KiB on (growing is not what is tested)
;;   2 big      one fd_write to stdout of 32 MiB of zero bytes: no newline at all
;;   3 lines    len*1000 fd_writes of "x\n" to stdout
;;   4 stderr   len*1000 fd_writes of "err\n" to stderr
;;   5 log      len*1000 calls of wasmvisor.log with a 17-byte message
;;   6 publish  len*1000 publishes of "t"/"payload"; output = how many were accepted, u32 LE
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasmvisor" "log" (func $log (param i32 i32 i32)))
  (import "wasmvisor" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 38).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\26\00\00\00")
  (data (i32.const 512) "echo\ngrow\nbig\nlines\nstderr\nlog\npublish")
  ;; Constant strings: "x\n" at 256, "err\n" at 260, the log message at 270, the topic "t"
  ;; at 300 and the data "payload" at 301.
  (data (i32.const 256) "x\n")
  (data (i32.const 260) "err\n")
  (data (i32.const 270) "a flood of logs!!")
  (data (i32.const 300) "tpayload")
  ;; Scratch: one iovec at 128, nwritten at 136, a u32 output at 144.

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  ;; write(fd, ptr, len): one fd_write of one iovec.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 128) (local.get $ptr))
    (i32.store (i32.const 132) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 128) (i32.const 1) (i32.const 136))))

  ;; grow_to(bytes): grows memory to at least bytes; traps if it cannot.
  (func $grow_to (param $bytes i32)
    (local $pages i32)
    (local.set $pages (i32.sub
      (i32.shr_u (i32.add (local.get $bytes) (i32.const 65535)) (i32.const 16))
      (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0)) (then
      (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1)) (then unreachable)))))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (local $n i32) (local $ok i32)
    (local.set $n (i32.mul (local.get $len) (i32.const 1000)))
    (i32.store (i32.const 80) (i32.const 1024))
    (i32.store (i32.const 84) (i32.const 0))
    ;; 0 echo
    (if (i32.eq (local.get $h) (i32.const 0)) (then
      (i32.store (i32.const 84) (local.get $len))
      (return (i32.const 0))))
    ;; 1 grow
    (if (i32.eq (local.get $h) (i32.const 1)) (then
      (call $grow_to (i32.const 0x2010000))
      (return (i32.const 0))))
    ;; 2 big: 32 MiB from 64 KiB on, all zero bytes
    (if (i32.eq (local.get $h) (i32.const 2)) (then
      (call $grow_to (i32.const 0x2010000))
      (call $write (i32.const 1) (i32.const 0x10000) (i32.const 0x2000000))
      (return (i32.const 0))))
    ;; 3 lines
    (if (i32.eq (local.get $h) (i32.const 3)) (then
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (call $write (i32.const 1) (i32.const 256) (i32.const 2))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
      (return (i32.const 0))))
    ;; 4 stderr
    (if (i32.eq (local.get $h) (i32.const 4)) (then
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (call $write (i32.const 2) (i32.const 260) (i32.const 4))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
      (return (i32.const 0))))
    ;; 5 log
    (if (i32.eq (local.get $h) (i32.const 5)) (then
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (call $log (i32.const 1) (i32.const 270) (i32.const 17))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
      (return (i32.const 0))))
    ;; 6 publish
    (if (i32.eq (local.get $h) (i32.const 6)) (then
      (block $done (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (if (i32.eqz (call $publish (i32.const 300) (i32.const 1) (i32.const 301) (i32.const 7)))
          (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
      (i32.store (i32.const 144) (local.get $ok))
      (i32.store (i32.const 80) (i32.const 144))
      (i32.store (i32.const 84) (i32.const 4))
      (return (i32.const 0))))
    (i32.const 0)))

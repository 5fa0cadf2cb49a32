;; caps_escape.wat: a plugin that tries to read past its directory grant with raw WASI calls,
;; for the fault suite (internal/faults/caps_test.go). A language runtime cleans a path
;; before it reaches the host (Go's turns "/data/../x" into "/x"); this module hands the
;; host's WASI layer whatever bytes the caller sends, "..", symbolic links and all, relative
;; to the first preopened directory (fd 3). ABI v1 with no language runtime: 1 page, the
;; control block at 64, a 4 KiB input buffer at 0x1000, file contents read into 0x2000.
;; Build: wat2wasm caps_escape.wat -o caps_escape.wasm
;;
;; Handlers:
;;   0 read   path_open(3, follow symlinks, input) then fd_read up to 32 KiB; answers the
;;            bytes, or fails (status 1) with "errno" and the WASI error number as one byte
;;   1 trap   unreachable
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 0x1000, in_cap 0x1000,
  ;; out 0/0, handlers at 512 (length 9).
  (data (i32.const 64) "wvab\01\00\00\00\00\10\00\00\00\10\00\00\00\00\00\00\00\00\00\00\00\02\00\00\09\00\00\00")
  (data (i32.const 512) "read\ntrap")
  (data (i32.const 0x900) "errno")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  ;; fail answers status 1 with "errno" and the error number.
  (func $fail (param $errno i32) (result i32)
    (i32.store8 (i32.const 0x905) (local.get $errno))
    (i32.store (i32.const 80) (i32.const 0x900))
    (i32.store (i32.const 84) (i32.const 6))
    (i32.const 1))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (local $errno i32) (local $fd i32)
    (if (i32.eq (local.get $h) (i32.const 1)) (then (unreachable)))
    ;; path_open(dirfd 3, LOOKUP_SYMLINK_FOLLOW, path, len, no oflags, FD_READ, 0, 0, &fd at 0x800)
    (local.set $errno
      (call $path_open (i32.const 3) (i32.const 1) (i32.const 0x1000) (local.get $len)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0x800)))
    (if (local.get $errno) (then (return (call $fail (local.get $errno)))))
    (local.set $fd (i32.load (i32.const 0x800)))
    ;; one iovec at 0x808: buffer 0x2000, 32 KiB; nread at 0x810
    (i32.store (i32.const 0x808) (i32.const 0x2000))
    (i32.store (i32.const 0x80c) (i32.const 0x8000))
    (local.set $errno (call $fd_read (local.get $fd) (i32.const 0x808) (i32.const 1) (i32.const 0x810)))
    (drop (call $fd_close (local.get $fd)))
    (if (local.get $errno) (then (return (call $fail (local.get $errno)))))
    (i32.store (i32.const 80) (i32.const 0x2000))
    (i32.store (i32.const 84) (i32.load (i32.const 0x810)))
    (i32.const 0)))

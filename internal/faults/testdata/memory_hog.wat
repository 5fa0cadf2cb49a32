;; memory_hog.wat: a plugin that spends all the memory it is allowed, for the fault suite's
;; memory accounting tests (internal/faults/memory_test.go). It follows ABI v1 with no
;; language runtime: 1 page to start, the control block at 64, a 4 KiB input buffer at
;; 0x1000 that never grows, the output at 0x800. Every page it gains it touches (one word
;; every 4 KiB, the marker "HOG!"), so the host must really commit it.
;; Build: wat2wasm memory_hog.wat -o memory_hog.wasm
;;
;; Handlers (input and output are little-endian u32s):
;;   0 fill   marks page 0 from 0x2000, grows 16 pages at a time until memory.grow
;;            fails, touching every new page, then traps (unreachable)
;;   1 grow   marks page 0 from 0x2000, grows by input[0] pages, touching them; answers
;;            the memory size in pages
;;   2 trap   as grow, then traps
;;   3 dirty  answers the memory size in pages and how many words from 0x2000 to the end
;;            are not zero (a fresh instance: 1 and 0)
(module
  (memory (export "memory") 1)

  ;; Control block at 64: magic "wvab", version 1, in_ptr 0x1000, in_cap 0x1000,
  ;; out 0/0, handlers at 512 (length 20).
  (data (i32.const 64) "wvab\01\00\00\00\00\10\00\00\00\10\00\00\00\00\00\00\00\00\00\00\00\02\00\00\14\00\00\00")
  (data (i32.const 512) "fill\ngrow\ntrap\ndirty")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 80) (i32.const 0))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))

  ;; $touch writes the marker at every 4 KiB of [p, end).
  (func $touch (param $p i32) (param $end i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (i32.store (local.get $p) (i32.const 0x21474f48))
        (local.set $p (i32.add (local.get $p) (i32.const 4096)))
        (br $l))))

  ;; $grow adds n pages and touches them; 0 when memory.grow failed.
  (func $grow (param $n i32) (result i32)
    (local $old i32)
    (local.set $old (memory.grow (local.get $n)))
    (if (i32.eq (local.get $old) (i32.const -1)) (then (return (i32.const 0))))
    (call $touch
      (i32.shl (local.get $old) (i32.const 16))
      (i32.shl (memory.size) (i32.const 16)))
    (i32.const 1))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $n i32)
    (i32.store (i32.const 80) (i32.const 0x800))
    (i32.store (i32.const 84) (i32.const 0))
    ;; 0 fill
    (if (i32.eq (local.get $h) (i32.const 0)) (then
      (call $touch (i32.const 0x2000) (i32.const 0x10000))
      (loop $more (br_if $more (call $grow (i32.const 16))))
      (unreachable)))
    ;; 1 grow, 2 trap
    (if (i32.le_u (local.get $h) (i32.const 2)) (then
      (call $touch (i32.const 0x2000) (i32.const 0x10000))
      (drop (call $grow (i32.load (i32.const 0x1000))))
      (if (i32.eq (local.get $h) (i32.const 2)) (then (unreachable)))
      (i32.store (i32.const 0x800) (memory.size))
      (i32.store (i32.const 84) (i32.const 4))
      (return (i32.const 0))))
    ;; 3 dirty
    (local.set $p (i32.const 0x2000))
    (local.set $end (i32.shl (memory.size) (i32.const 16)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.load (local.get $p)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $l)))
    (i32.store (i32.const 0x800) (memory.size))
    (i32.store (i32.const 0x804) (local.get $n))
    (i32.store (i32.const 84) (i32.const 8))
    (i32.const 0)))

;; recycle_scribble.wat: scribbles over all of its memory and its mutable globals, then traps,
;; loops past its deadline or returns. An instance that adopts its module instance afterwards
;; (sandbox.WithRecycling) must be byte for byte what a fresh one is. Handlers: digest (an
;; FNV-1a hash of the whole memory, its size and both globals), scribble, scribble_trap,
;; scribble_loop. 8 pages: a snapshot image large enough to be mapped copy-on-write.
(module
  (memory (export "memory") 8)
  (global $g1 (mut i32) (i32.const 7))
  (global $g2 (mut i64) (i64.const 9))

  ;; Control block at 64: magic "wvab", version 1, in_ptr 0x10000, in_cap 0x10000, out 0/0,
  ;; handlers at 0x200 (43 bytes); config, metrics and events 0.
  (data (i32.const 64) "wvab\01\00\00\00\00\00\01\00\00\00\01\00\00\00\00\00\00\00\00\00\00\02\00\00\2b\00\00\00")
  (data (i32.const 0x200) "digest\nscribble\nscribble_trap\nscribble_loop")
  (data (i32.const 0x40000) "initialized data the scribbler overwrites")

  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 5))
  (func (export "wasmvisor_configure") (param i32) (result i32) (i32.const 0))

  (func (export "wasmvisor_call") (param $h i32) (param $len i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (if (i32.eqz (local.get $h)) (then
      (i64.store (i32.const 0x300) (call $digest))
      (i32.store (i32.const 80) (i32.const 0x300))
      (i32.store (i32.const 84) (i32.const 8))
      (return (i32.const 0))))
    (call $scribble)
    (if (i32.eq (local.get $h) (i32.const 2)) (then unreachable))
    (if (i32.eq (local.get $h) (i32.const 3)) (then (loop $forever (br $forever))))
    (i32.const 0))

  ;; $scribble: 0xA5 over everything above the handler names, and new global values.
  (func $scribble
    (memory.fill (i32.const 0x400) (i32.const 0xA5)
      (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 0x400)))
    (global.set $g1 (i32.const -1))
    (global.set $g2 (i64.const -1)))

  ;; $digest: FNV-1a over the memory outside the output word, then the size and the globals.
  (func $digest (result i64)
    (local $h i64) (local $p i32) (local $end i32)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.or (i32.lt_u (local.get $p) (i32.const 0x300)) (i32.ge_u (local.get $p) (i32.const 0x308))) (then
          (local.set $h (i64.mul
            (i64.xor (local.get $h) (i64.load8_u (local.get $p)))
            (i64.const 0x100000001b3)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.set $h (i64.mul (i64.xor (local.get $h) (i64.extend_i32_u (local.get $end))) (i64.const 0x100000001b3)))
    (local.set $h (i64.mul (i64.xor (local.get $h) (i64.extend_i32_u (global.get $g1))) (i64.const 0x100000001b3)))
    (i64.mul (i64.xor (local.get $h) (global.get $g2)) (i64.const 0x100000001b3))))

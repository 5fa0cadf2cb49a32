;; Control flow for TestLocalFuelAccounts: loops that call, callees that loop and leave by
;; every kind of exit (end, return, br, br_if and br_table to the function's label),
;; memory.grow and a bulk instruction inside loops, a leaf without a loop, an indirect call
;; and a tail-free recursion. Every export takes an iteration count and returns a checksum,
;; so that the instrumented module's results can be compared with the original's.
(module
  (type $ii (func (param i32) (result i32)))
  (memory 1 100)
  (table 2 funcref)
  (elem (i32.const 0) $spin $leaf)

  ;; a leaf: no loop, no call
  (func $leaf (param $x i32) (result i32)
    (i32.add (i32.mul (local.get $x) (i32.const 31)) (i32.const 7)))

  ;; a loop that ends at the function's end
  (func $spin (export "spin") (param $n i32) (result i32)
    (local $acc i32)
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i32.add (local.get $acc) (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (local.get $acc))

  ;; leaves from inside its loop by return
  (func $exit_return (export "exit_return") (param $n i32) (result i32)
    (local $acc i32)
    (loop $l
      (local.set $acc (i32.xor (local.get $acc) (local.get $n)))
      (if (i32.le_s (local.get $n) (i32.const 0)) (then (return (local.get $acc))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l))
    (unreachable))

  ;; leaves from inside its loop by br to the function's label
  (func $exit_br (export "exit_br") (param $n i32) (result i32)
    (local.get $n)
    (loop $l (param i32) (result i32)
      (local.tee $n)
      (if (i32.le_s (local.get $n) (i32.const 0)) (then (br 2 (i32.const 99))))
      (i32.sub (local.get $n) (i32.const 1))
      (br $l)))

  ;; leaves by br_if to the function's label
  (func $exit_br_if (export "exit_br_if") (param $n i32) (result i32)
    (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.const 3)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (drop (br_if 1 (local.get $acc) (i32.le_s (local.get $n) (i32.const 0))))
      (br $l))
    (unreachable))

  ;; leaves by br_table, one of whose targets is the function's label
  (func $exit_br_table (export "exit_br_table") (param $n i32) (result i32)
    (i32.add
      (block $again (result i32)
        (i32.const 0)
        (loop $l (param i32) (result i32)
          (drop)
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (local.get $n)
          (br_table $l $again 2
            (select (i32.const 0)
              (select (i32.const 2) (i32.const 1) (i32.eqz (local.get $n)))
              (i32.gt_s (local.get $n) (i32.const 0))))))
      (i32.const 1000)))

  ;; a loop whose body calls every other kind of function
  (func $outer (export "outer") (param $n i32) (result i32)
    (local $acc i32)
    (block $done
      (loop $l
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i32.add (local.get $acc) (call $spin (i32.const 20))))
        (local.set $acc (i32.add (local.get $acc) (call $exit_return (i32.const 15))))
        (local.set $acc (i32.add (local.get $acc) (call $exit_br (i32.const 12))))
        (local.set $acc (i32.add (local.get $acc) (call $exit_br_if (i32.const 11))))
        (local.set $acc (i32.add (local.get $acc) (call $exit_br_table (i32.const 9))))
        (local.set $acc (i32.add (local.get $acc) (call $leaf (local.get $n))))
        (local.set $acc (i32.add (local.get $acc)
          (call_indirect (type $ii) (i32.const 8) (i32.and (local.get $n) (i32.const 1)))))
        (local.set $acc (i32.add (local.get $acc) (call $nested (i32.const 3))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (local.get $acc))

  ;; nested loops with memory.grow and memory.fill inside
  (func $nested (export "nested") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $a
      (local.set $i (i32.const 0))
      (loop $b
        (memory.fill (i32.const 0) (local.get $i) (i32.const 64))
        (local.set $acc (i32.add (local.get $acc) (memory.grow (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $b (i32.lt_u (local.get $i) (i32.const 4))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $a (i32.gt_s (local.get $n) (i32.const 0))))
    (i32.add (local.get $acc) (i32.load8_u (i32.const 5))))

  ;; recursion without a loop: a checked entry on every call
  (func $recurse (export "recurse") (param $n i32) (result i32)
    (if (result i32) (i32.le_s (local.get $n) (i32.const 0))
      (then (i32.const 1))
      (else (i32.add (call $recurse (i32.sub (local.get $n) (i32.const 1)))
                     (call $spin (i32.const 2))))))
)

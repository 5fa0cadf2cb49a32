;; snap.wat: data segments to merge, mutable globals and a start function, for
;; TestInstrumentSnapshot. Rebuild: wat2wasm snap.wat -o snap.wasm
(module
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 7))
  (global $h (mut i64) (i64.const 9))
  (global $c i32 (i32.const 3))
  (data (i32.const 16) "abc")
  (data (i32.const 19) "def")    ;; adjacent: merged
  (data (i32.const 100) "xyz")   ;; a gap of 78 zeros: merged
  (data (i32.const 17) "Q")      ;; overwrites an earlier byte: a new segment
  (data (i32.const 5000) "far")  ;; a long gap: a new segment
  (data $p "passive")
  (func $start (global.set $g (i32.add (global.get $g) (i32.const 1))))
  (start $start)
  (func (export "g") (result i32) (global.get $g))
  (func (export "h") (result i64) (global.get $h))
  ;; copies the passive segment to 200: its index must not move
  (func (export "copy") (memory.init $p (i32.const 200) (i32.const 0) (i32.const 7)))
)

;; snaptable.wat: a module whose code changes a table, for TestInstrumentSnapshot.
;; Rebuild: wat2wasm snaptable.wat -o snaptable.wasm
(module
  (memory (export "memory") 1)
  (table $t 2 funcref)
  (data (i32.const 8) "hi")
  (func $f)
  (elem declare func $f)
  (func (export "set") (table.set $t (i32.const 0) (ref.func $f)))
)

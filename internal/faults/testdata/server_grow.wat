;; server_grow.wat: a plugin of the server chaos test (cmd/wasmvisor) that follows ABI v1 and,
;; on every call of its one handler `call`, grows its memory to the limit (16 pages at a time,
;; then one at a time, until memory.grow fails), writes every byte past the first page so that
;; the host really holds the pages, and answers an empty output: an instance that sits at its
;; memory limit without failing. Build: wat2wasm server_grow.wat -o server_grow.wasm
(module
  (memory (export "memory") 1)
  ;; Control block at 64: magic "wvab", version 1, in_ptr 1024, in_cap 1024, out 0/0,
  ;; handlers at 512 (length 4).
  (data (i32.const 64) "wvab\01\00\00\00\00\04\00\00\00\04\00\00\00\00\00\00\00\00\00\00\00\02\00\00\04\00\00\00")
  (data (i32.const 512) "call")
  (func (export "wasmvisor_init") (result i32) (i32.const 64))
  (func (export "wasmvisor_reserve") (param i32) (result i32) (i32.const 0))
  (func (export "wasmvisor_configure") (param i32) (result i32)
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0))
  (func (export "wasmvisor_call") (param i32 i32) (result i32)
    (block $big (loop $more
      (br_if $big (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
      (br $more)))
    (block $full (loop $more
      (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $more)))
    (memory.fill (i32.const 65536) (i32.const 0xAB)
      (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 65536)))
    (i32.store (i32.const 84) (i32.const 0))
    (i32.const 0)))

// The wasmvisor ABI v1 exports. A plugin's entry file re-exports them with
//
//     export * from "<path to sdk/assemblyscript>/assembly/exports";
//
// (only the entry file's exports become WebAssembly exports).
export {
  wasmvisor_init,
  wasmvisor_reserve,
  wasmvisor_call,
  wasmvisor_configure,
  wasmvisor_deliver,
} from "./wasmvisor";

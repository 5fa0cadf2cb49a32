// A complete wasmvisor plugin: handler `hello` answers `hello, <input>`.
//
// Build (from sdk/assemblyscript/, after `npm ci`):
//
//   npx asc examples/hello/hello.ts -o examples/hello/hello.wasm \
//     --optimizeLevel 3 --shrinkLevel 2 --converge --noAssert \
//     --runtime incremental --exportStart _initialize \
//     --use abort=assembly/wasmvisor/wasmvisorAbort
import { handle, newCounter, Result, textOf } from "../../assembly/wasmvisor";
export * from "../../assembly/exports"; // the ABI exports

const greetings = newCounter("greetings_total");

handle("hello", (input: Uint8Array): Result => {
  greetings.inc();
  return Result.text("hello, " + textOf(input));
});

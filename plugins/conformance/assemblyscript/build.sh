#!/bin/sh
# Builds conformance.wasm, the JSON fixture json.wasm (and the SDK's hello example) with the AssemblyScript
# compiler pinned in sdk/assemblyscript/package-lock.json. Run from anywhere,
# e.g. from the repo root: sh plugins/conformance/assemblyscript/build.sh
# Needs `npm ci` in sdk/assemblyscript first (done here if node_modules is missing).
set -eu

root=$(cd "$(dirname "$0")/../../.." && pwd)
sdk=sdk/assemblyscript
cd "$root"

if [ ! -x "$sdk/node_modules/.bin/asc" ]; then
	(cd "$sdk" && npm ci --no-audit --no-fund)
fi
asc=$sdk/node_modules/.bin/asc

# Paths are relative to the repo root: asc names source files by their path
# from the working directory, and --use abort= names the SDK's abort function
# by that path.
flags="--optimizeLevel 3 --shrinkLevel 2 --converge --noAssert
	--runtime incremental --exportStart _initialize
	--use abort=$sdk/assembly/wasmvisor/wasmvisorAbort"

# shellcheck disable=SC2086 # flags is a word list
"$asc" plugins/conformance/assemblyscript/conformance.ts \
	-o plugins/conformance/assemblyscript/conformance.wasm $flags
# shellcheck disable=SC2086
"$asc" plugins/conformance/assemblyscript/json.ts \
	-o plugins/conformance/assemblyscript/json.wasm $flags

# The hello example is built from the SDK directory, with exactly the
# command its README gives, so that both give the same bytes.
cd "$sdk"
node_modules/.bin/asc examples/hello/hello.ts -o examples/hello/hello.wasm \
	--optimizeLevel 3 --shrinkLevel 2 --converge --noAssert \
	--runtime incremental --exportStart _initialize \
	--use abort=assembly/wasmvisor/wasmvisorAbort

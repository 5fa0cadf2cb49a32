#!/bin/sh
# Builds the Extism conformance plugin (conformance.wasm, next to its source). Run it from
# anywhere, e.g. from the repo root:
#
#     sh plugins/conformance/extism/build.sh
#
# Needs what the C plugin's build needs (Debian's clang, lld, wasi-libc and binaryen; see
# plugins/conformance/c/build.sh): CC overrides the compiler, WASM_OPT the optimiser,
# WASI_SYSROOT the sysroot. No Extism PDK: the kernel's imports are declared in the source.
#
# The build is reproducible for the same reasons as the C plugin's: compiling and linking are
# separate steps, the link has no -O flag (clang would run whatever wasm-opt is in PATH) and
# wasm-opt runs explicitly; --strip-all keeps names and build paths out.
set -eu

root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"

CC=${CC:-clang}
WASM_OPT=${WASM_OPT:-wasm-opt}
command -v "$WASM_OPT" >/dev/null 2>&1 || {
	echo "build.sh: $WASM_OPT not found; install binaryen (apt-get install -y binaryen)" >&2
	exit 1
}
sysroot=
if [ -n "${WASI_SYSROOT:-}" ]; then
	sysroot="--sysroot=$WASI_SYSROOT"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2086 # $sysroot is empty or one word
"$CC" --target=wasm32-wasi $sysroot -O2 -std=c11 -Wall -Wextra -Werror \
	-c -o "$tmp/conformance.o" plugins/conformance/extism/conformance.c
# -mexec-model=reactor: a WASI reactor (exports _initialize, which the Extism SDK runs before
# the first call, no _start).
# shellcheck disable=SC2086
"$CC" --target=wasm32-wasi -mexec-model=reactor $sysroot \
	-Wl,--stack-first -Wl,-z,stack-size=65536 -Wl,--strip-all \
	-o "$tmp/linked.wasm" "$tmp/conformance.o"
"$WASM_OPT" -O2 "$tmp/linked.wasm" -o "$tmp/optimised.wasm"
cp "$tmp/optimised.wasm" plugins/conformance/extism/conformance.wasm
chmod 644 plugins/conformance/extism/conformance.wasm

#!/bin/sh
# Builds the C conformance plugin (conformance.wasm, next to its source), the JSON fixture
# (json.wasm, from json.c) and the C SDK's hello example (sdk/c/hello/hello.wasm). Run it
# from anywhere, e.g. from the repo root:
#
#     sh plugins/conformance/c/build.sh
#
# Needs Debian's clang, lld, wasi-libc, libclang-rt-dev-wasm32 and binaryen (see
# sdk/c/README.md). CC overrides the compiler, WASM_OPT the optimiser, WASI_SYSROOT the
# sysroot (Debian's clang finds wasi-libc without one).
#
# The build is reproducible: the same toolchain gives the same bytes, whatever the checkout's
# path. Compiling and linking are separate steps on purpose: when clang links with an -O flag
# it runs whatever wasm-opt it finds in PATH, so the output would depend on PATH. Here the
# link has no -O flag and wasm-opt runs explicitly.
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

# compile SOURCE OBJECT
compile() {
	# shellcheck disable=SC2086 # $sysroot is empty or one word
	"$CC" --target=wasm32-wasi $sysroot -O2 -std=c11 -Wall -Wextra -Werror -Isdk/c \
		-c -o "$2" "$1"
}

# link OUTPUT OBJECT...
#   -mexec-model=reactor: a WASI reactor (exports _initialize, no _start).
#   --stack-first: a stack overflow traps instead of overwriting static data.
#   --strip-all: no debug info, names or producers (wasi-libc's archive carries DWARF), which
#     also keeps build paths out of the output.
link() {
	out=$1
	shift
	# shellcheck disable=SC2086
	"$CC" --target=wasm32-wasi -mexec-model=reactor $sysroot \
		-Wl,--stack-first -Wl,-z,stack-size=65536 -Wl,--strip-all \
		-o "$tmp/linked.wasm" "$@"
	"$WASM_OPT" -O2 "$tmp/linked.wasm" -o "$tmp/optimised.wasm"
	cp "$tmp/optimised.wasm" "$out"
	chmod 644 "$out"
}

compile sdk/c/wasmvisor.c "$tmp/wasmvisor.o"
compile plugins/conformance/c/conformance.c "$tmp/conformance.o"
compile plugins/conformance/c/json.c "$tmp/json.o"
compile sdk/c/hello/hello.c "$tmp/hello.o"

link plugins/conformance/c/conformance.wasm "$tmp/conformance.o" "$tmp/wasmvisor.o"
link plugins/conformance/c/json.wasm "$tmp/json.o" "$tmp/wasmvisor.o"
link sdk/c/hello/hello.wasm "$tmp/hello.o" "$tmp/wasmvisor.o"

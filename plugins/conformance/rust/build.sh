#!/bin/sh
# Builds the Rust conformance plugin (conformance.rs -> conformance.wasm), the JSON fixture
# (json.rs -> json.wasm) and the Rust SDK's
# hello example (sdk/rust/hello.rs -> hello.wasm). Run from anywhere; paths are taken from the
# repository root so that the panic locations baked into the binaries are the same everywhere.
#
# Toolchain: Debian's rustc 1.63 and its wasm32-wasi standard library
#   apt-get update && apt-get install -y rustc libstd-rust-dev-wasm32 binaryen
# RUSTC may name another rustc; it must be Debian's (a rustup toolchain gives other bytes).
set -eu
cd "$(dirname "$0")/../../.."
RUSTC=${RUSTC:-/usr/bin/rustc}
command -v wasm-opt >/dev/null 2>&1 || { echo "build.sh: wasm-opt not found: apt-get install -y binaryen" >&2; exit 1; }

build() { # build <src.rs> <out.wasm>
	"$RUSTC" --edition 2021 --target wasm32-wasi --crate-type cdylib \
		-C opt-level=z -C panic=abort -C lto -C codegen-units=1 -C strip=debuginfo \
		-C link-arg=-zstack-size=65536 \
		"$1" -o "$2.tmp"
	wasm-opt -Oz --strip-debug --strip-producers "$2.tmp" -o "$2"
	rm -f "$2.tmp"
}

build plugins/conformance/rust/conformance.rs plugins/conformance/rust/conformance.wasm
build plugins/conformance/rust/json.rs plugins/conformance/rust/json.wasm
build sdk/rust/hello.rs sdk/rust/hello.wasm

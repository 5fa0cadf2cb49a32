#!/bin/sh
# Builds each Rego policy of this directory into policy.wasm beside its source, with OPA's
# compiler (`opa build -t wasm`): OPA is a tool of the bench/opa module (its `tool` line), built
# here into a temporary directory, never a dependency of wasmvisor. Each line of the list is
# a directory and the entrypoints it is built with (a word starting with -- is a flag of opa
# build).
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd ../../bench/opa && ${GO:-go} build -o "$tmp/opa" github.com/open-policy-agent/opa)
while read -r dir entrypoints; do
	args=""
	for e in $entrypoints; do
		case $e in
		--*) args="$args $e" ;;
		*) args="$args -e $e" ;;
		esac
	done
	echo "opa build -t wasm$args $dir/$dir.rego"
	# shellcheck disable=SC2086
	"$tmp/opa" build -t wasm $args -o "$tmp/$dir.tar.gz" "$dir/$dir.rego"
	tar -xzf "$tmp/$dir.tar.gz" -C "$tmp" /policy.wasm 2>/dev/null || tar -xzf "$tmp/$dir.tar.gz" -C "$tmp" policy.wasm
	cp "$tmp/policy.wasm" "$dir/policy.wasm"
	chmod 644 "$dir/policy.wasm"
done <<LIST
authz authz/decision
example example/allow example/reasons
strings strings/result
spin spin/never spin/big spin/conflict
httpsend httpsend/status
print print/loud print/quiet --wasm-include-print
hostbuiltins hostbuiltins/result
clock clock/result
LIST
# example's bundle, as opa build writes it (policy.wasm, data.json, .manifest): wasmvisor
# takes it as is (sandbox/opa.ReadBundle).
echo "opa build -t wasm -e example/allow -e example/reasons -o example/bundle.tar.gz example/example.rego example/data.json"
"$tmp/opa" build -t wasm -e example/allow -e example/reasons -o "$tmp/bundle.tar.gz" example/example.rego example/data.json
cp "$tmp/bundle.tar.gz" example/bundle.tar.gz
chmod 644 example/bundle.tar.gz

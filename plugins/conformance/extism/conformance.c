// The Extism conformance plugin: the host-function cases of the conformance table
// (plugins/conformance/conformance_test.go) for the Extism format, written against the Extism
// kernel's imports, declared by hand, so that no PDK is needed to build it. Each host
// function is Extism's kind: an import "extism:host/user" <name> of type (i64) -> i64, which
// takes the kernel offset of its input and returns the kernel offset of its output.
//
// Handlers (input and output are the call's, through the kernel):
//   echo    output = input
//   kv_get  output = kv.get(input)
//   fails   output = fails(input): the host function fails, which ends the call
//   big     output = big(input)
#include <stdint.h>

#define KERNEL(name) __attribute__((import_module("extism:host/env"), import_name(#name)))
#define USER(name) __attribute__((import_module("extism:host/user"), import_name(name)))
#define HANDLER(name) __attribute__((export_name(#name))) int32_t name(void)

KERNEL(input_length) uint64_t extism_input_length(void);
KERNEL(input_load_u8) uint32_t extism_input_load_u8(uint64_t);
KERNEL(input_load_u64) uint64_t extism_input_load_u64(uint64_t);
KERNEL(alloc) uint64_t extism_alloc(uint64_t);
KERNEL(length) uint64_t extism_length(uint64_t);
KERNEL(store_u8) void extism_store_u8(uint64_t, uint32_t);
KERNEL(store_u64) void extism_store_u64(uint64_t, uint64_t);
KERNEL(output_set) void extism_output_set(uint64_t, uint64_t);

USER("kv.get") uint64_t host_kv_get(uint64_t);
USER("fails") uint64_t host_fails(uint64_t);
USER("big") uint64_t host_big(uint64_t);

// input copies the call's input into a kernel block and returns its offset (0 when empty).
static uint64_t input(void) {
	uint64_t n = extism_input_length();
	if (n == 0) {
		return 0;
	}
	uint64_t off = extism_alloc(n);
	uint64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		extism_store_u64(off + i, extism_input_load_u64(i));
	}
	for (; i < n; i++) {
		extism_store_u8(off + i, extism_input_load_u8(i));
	}
	return off;
}

// output sets the kernel block at off as the call's output.
static int32_t output(uint64_t off) {
	extism_output_set(off, extism_length(off));
	return 0;
}

HANDLER(echo) { return output(input()); }
HANDLER(kv_get) { return output(host_kv_get(input())); }
HANDLER(fails) { return output(host_fails(input())); }
HANDLER(big) { return output(host_big(input())); }

/* hello: the smallest useful wasmvisor plugin in C. Handler "hello" answers "hello, <input>".
 * Build and run it as sdk/c/README.md shows. */
#include <string.h>

#include "wasmvisor.h"

static wv_status hello(wv_bytes input) {
	static const char prefix[] = "hello, ";
	uint32_t n = sizeof prefix - 1 + input.len;
	uint8_t *out = wv_output_buffer(n);
	if (!out) {
		return wv_fail(WV_STATUS_NO_MEMORY, "out of memory", 13);
	}
	memcpy(out, prefix, sizeof prefix - 1);
	memcpy(out + sizeof prefix - 1, input.ptr, input.len);
	return wv_ok(out, n);
}

void wasmvisor_main(void) { wv_handle("hello", hello); }

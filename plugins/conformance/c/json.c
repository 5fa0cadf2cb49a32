/*
 * The C build of the JSON fixture (plugins/conformance/json_test.go): the SDK's JSON reader
 * and writer, driven from Go against encoding/json. Handlers:
 *
 *   canon   reads the input token by token and writes it back compact; malformed input fails
 *           with status invalid_input and the reader's message (json: ... at offset N);
 *   config  the config value of the key in the input, read as JSON (wv_config_get_json) and
 *           written back the same way; an absent key fails with "missing key".
 *
 * Build it with build.sh beside this file.
 */
#include <stdlib.h>
#include <string.h>

#include "wasmvisor.h"

static wv_json_writer out; /* kept: the output points into its buffer */

/* unescaped writes a string token's value through a scratch buffer. */
static void unescaped(wv_json_token t, bool key) {
	uint8_t *buf = malloc(t.text.len ? t.text.len : 1);
	if (!buf) {
		wv_abort("out of memory");
	}
	uint32_t n = wv_json_unescape(t, buf, t.text.len);
	if (key) {
		wv_json_write_key(&out, wv_bytes_of(buf, n));
	} else {
		wv_json_write_string(&out, wv_bytes_of(buf, n));
	}
	free(buf);
}

static wv_status canon(wv_bytes in) {
	wv_json_reader r;
	wv_json_token t;
	wv_json_reader_init(&r, in);
	wv_json_writer_free(&out);
	for (;;) {
		switch (wv_json_next(&r, &t)) {
		case WV_JSON_ERROR: return wv_json_fail(&r);
		case WV_JSON_DONE: {
			wv_bytes b;
			if (!wv_json_writer_finish(&out, &b)) {
				return wv_invalid_input("json: bad write at offset 0");
			}
			return wv_ok(b.ptr, b.len);
		}
		case WV_JSON_BEGIN_OBJECT: wv_json_begin_object(&out); break;
		case WV_JSON_END_OBJECT: wv_json_end_object(&out); break;
		case WV_JSON_BEGIN_ARRAY: wv_json_begin_array(&out); break;
		case WV_JSON_END_ARRAY: wv_json_end_array(&out); break;
		case WV_JSON_KEY: unescaped(t, true); break;
		case WV_JSON_STRING: unescaped(t, false); break;
		case WV_JSON_NUMBER: wv_json_write_number_text(&out, t.text); break;
		case WV_JSON_TRUE: wv_json_write_bool(&out, true); break;
		case WV_JSON_FALSE: wv_json_write_bool(&out, false); break;
		case WV_JSON_NULL: wv_json_write_null(&out); break;
		}
	}
}

static wv_status config(wv_bytes key) {
	wv_bytes v;
	char k[256];
	if (key.len >= sizeof k) {
		return wv_invalid_input("key too long");
	}
	memcpy(k, key.ptr, key.len);
	k[key.len] = 0;
	if (!wv_config_get_json(wv_config_current(), k, &v)) {
		return wv_error("missing key");
	}
	return canon(v);
}

void wasmvisor_main(void) {
	wv_handle("canon", canon);
	wv_handle("config", config);
}

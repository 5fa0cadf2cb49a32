/*
 * The C build of the conformance plugin: it implements exactly the handler list and the
 * semantics of the WAT reference plugin (plugins/reference/README.md), on top of the C SDK
 * (sdk/c), so that one conformance table runs against every guest language. Build it with
 * build.sh beside this file.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wasmvisor.h"

#define MARKER_CAP 256
#define MAX_CONFIG 4096
#define EVENT_SLOTS 16
#define MAX_EVENT 256

static wv_counter requests;
static wv_gauge level;
static wv_histogram size;

static uint64_t changes;            /* accepted config changes */
static uint8_t marker[MARKER_CAP];  /* set by "set", returned by "get" */
static uint32_t marker_len;
static char number[24];             /* decimal outputs */
static void *volatile hoard;        /* "grow": the retained blocks, linked through their first word */

/* parse_u64 parses one or more ASCII digits and nothing else, at most 2^64-1. */
static bool parse_u64(wv_bytes in, uint64_t *out) {
	if (in.len == 0) {
		return false;
	}
	uint64_t v = 0;
	for (uint32_t i = 0; i < in.len; i++) {
		uint32_t d = (uint32_t)in.ptr[i] - '0';
		if (d > 9 || v > UINT64_MAX / 10 || (v == UINT64_MAX / 10 && d > UINT64_MAX % 10)) {
			return false;
		}
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* parse_i64 parses an optional '-' then what parse_u64 accepts, within [-2^63, 2^63-1]. */
static bool parse_i64(wv_bytes in, int64_t *out) {
	bool neg = in.len > 0 && in.ptr[0] == '-';
	uint64_t u;
	if (neg) {
		in.ptr++;
		in.len--;
	}
	if (!parse_u64(in, &u) || u > (neg ? (uint64_t)1 << 63 : INT64_MAX)) {
		return false;
	}
	*out = neg ? (int64_t)(0 - u) : (int64_t)u;
	return true;
}

static wv_status bad_number(void) { return wv_invalid_input("bad number"); }

/* ok_decimal outputs v in decimal. */
static wv_status ok_decimal(uint64_t v) {
	char *end = number + sizeof number;
	char *p = end;
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return wv_ok(p, (uint32_t)(end - p));
}

/* split splits "topic\npayload" at the first newline; without one, all of in is the topic. */
static void split(wv_bytes in, wv_bytes *topic, wv_bytes *data) {
	const uint8_t *nl = in.len ? memchr(in.ptr, '\n', in.len) : NULL;
	if (!nl) {
		*topic = in;
		*data = wv_bytes_of(in.ptr + in.len, 0);
		return;
	}
	uint32_t n = (uint32_t)(nl - in.ptr);
	*topic = wv_bytes_of(in.ptr, n);
	*data = wv_bytes_of(nl + 1, in.len - n - 1);
}

static wv_status echo(wv_bytes in) { return wv_ok(in.ptr, in.len); }

static wv_status config_get(wv_bytes key) {
	wv_bytes v;
	if (!wv_config_get_bytes(wv_config_current(), key, &v)) {
		return wv_error("missing key");
	}
	return wv_ok(v.ptr, v.len);
}

static wv_status config_changes(wv_bytes in) {
	(void)in;
	return ok_decimal(changes);
}

static wv_status emit(wv_bytes in) {
	wv_bytes topic, data;
	split(in, &topic, &data);
	wv_emit(topic, data);
	return WV_STATUS_OK;
}

static wv_status publish(wv_bytes in) {
	wv_bytes topic, data;
	split(in, &topic, &data);
	return ok_decimal(wv_publish(topic, data));
}

static wv_status count(wv_bytes in) {
	uint64_t n = 1;
	if (in.len > 0 && !parse_u64(in, &n)) {
		return bad_number();
	}
	wv_counter_add(requests, n);
	return WV_STATUS_OK;
}

static wv_status gauge(wv_bytes in) {
	int64_t v;
	if (!parse_i64(in, &v)) {
		return bad_number();
	}
	wv_gauge_set(level, (double)v);
	return WV_STATUS_OK;
}

static wv_status observe(wv_bytes in) {
	uint64_t v;
	if (!parse_u64(in, &v)) {
		return bad_number();
	}
	wv_histogram_observe(size, (double)v);
	return WV_STATUS_OK;
}

static wv_status fail(wv_bytes in) {
	if (in.len == 0) {
		return wv_error("failed");
	}
	return wv_error_bytes(in.ptr, in.len);
}

/* trap: C's natural failure, a trap (`unreachable`), like abort(). */
static wv_status trap(wv_bytes in) {
	(void)in;
	__builtin_trap();
}

/* loop never returns: the host's deadline must end it. The empty asm with a memory clobber
 * is a side effect the optimiser must keep, so the loop stays. */
static wv_status loop(wv_bytes in) {
	(void)in;
	for (;;) {
		__asm__ volatile("" ::: "memory");
	}
}

/* grow allocates, touches and retains 1 MiB blocks until malloc fails, then traps. The host's
 * memory limit makes malloc fail. */
static wv_status grow(wv_bytes in) {
	(void)in;
	for (;;) {
		void **block = malloc(1 << 20);
		if (!block) {
			__builtin_trap();
		}
		memset(block, 0xA5, 1 << 20);
		*block = hoard;
		hoard = block;
	}
}

static wv_status set(wv_bytes in) {
	if (in.len > MARKER_CAP) {
		return wv_invalid_input("too long");
	}
	memcpy(marker, in.ptr, in.len);
	marker_len = in.len;
	return WV_STATUS_OK;
}

static wv_status get(wv_bytes in) {
	(void)in;
	return wv_ok(marker, marker_len);
}

static wv_status exit_handler(wv_bytes in) {
	uint64_t code;
	if (!parse_u64(in, &code) || code > UINT32_MAX) {
		return bad_number();
	}
	exit((int)(uint32_t)code); /* WASI proc_exit */
}

static wv_status log_handler(wv_bytes in) {
	wv_log_bytes(WV_LEVEL_INFO, in);
	return WV_STATUS_OK;
}

/* stdout writes the input to fd 1, repeating on short writes. */
static wv_status stdout_handler(wv_bytes in) {
	uint32_t done = 0;
	while (done < in.len) {
		ssize_t n = write(1, in.ptr + done, in.len - done);
		if (n <= 0) {
			return wv_error("write failed");
		}
		done += (uint32_t)n;
	}
	return WV_STATUS_OK;
}

/* error_prefixed fails with STATUS_ERROR and the message prefix followed by the bytes msg. */
static wv_status error_prefixed(const char *prefix, wv_bytes msg) {
	uint32_t p = (uint32_t)strlen(prefix);
	uint8_t *m = malloc(p + msg.len);
	if (!m) {
		return wv_fail(WV_STATUS_NO_MEMORY, "out of memory", 13);
	}
	memcpy(m, prefix, p);
	if (msg.len) {
		memcpy(m + p, msg.ptr, msg.len);
	}
	wv_status st = wv_error_bytes(m, p + msg.len);
	free(m);
	return st;
}

/* host_call: input "name\ninput" (no newline: an empty input) calls the host function name
 * and returns its output; a denial fails with "denied: <name>", a failure with
 * "failed: <message>". */
static wv_status host_call(wv_bytes in) {
	wv_bytes name, arg;
	split(in, &name, &arg);
	wv_host_result r;
	switch (wv_host_call_bytes(name, arg, &r)) {
	case WV_HOST_OK:
		return wv_ok(r.output.ptr, r.output.len); /* valid until the next wv_host_call */
	case WV_HOST_DENIED:
		return error_prefixed("denied: ", name);
	case WV_HOST_FAILED:
		return error_prefixed("failed: ", r.output);
	default:
		return wv_fail(WV_STATUS_NO_MEMORY, "out of memory", 13);
	}
}

/* on_config checks, in the reference's order, a `reject` key then the size; an accepted
 * change is counted. The SDK has already rejected a malformed encoding. */
static wv_status on_config(wv_config old_config, wv_config new_config) {
	(void)old_config;
	if (wv_config_get(new_config, "reject", NULL)) {
		return wv_reject("rejected by plugin");
	}
	if (new_config.raw_len > MAX_CONFIG) {
		return wv_reject("config too large");
	}
	changes++;
	return WV_STATUS_OK;
}

/* on_event records a delivered event in the ring. */
static wv_status on_event(wv_bytes topic, wv_bytes data) {
	wv_emit(topic, data);
	return WV_STATUS_OK;
}

void wasmvisor_main(void) {
	static const double bounds[] = {1, 10, 100, 1000};
	requests = wv_counter_new("requests_total");
	level = wv_gauge_new("level");
	size = wv_histogram_new("size", bounds, 4);
	wv_set_event_capacity(EVENT_SLOTS);
	wv_set_max_event_size(MAX_EVENT);

	wv_handle("echo", echo);
	wv_handle("config_get", config_get);
	wv_handle("config_changes", config_changes);
	wv_handle("emit", emit);
	wv_handle("publish", publish);
	wv_handle("count", count);
	wv_handle("gauge", gauge);
	wv_handle("observe", observe);
	wv_handle("fail", fail);
	wv_handle("trap", trap);
	wv_handle("loop", loop);
	wv_handle("grow", grow);
	wv_handle("set", set);
	wv_handle("get", get);
	wv_handle("exit", exit_handler);
	wv_handle("log", log_handler);
	wv_handle("stdout", stdout_handler);
	wv_handle("host_call", host_call);

	wv_on_config_change(on_config);
	wv_on_event(on_event);
}

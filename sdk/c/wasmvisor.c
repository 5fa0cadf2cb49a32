/*
 * wasmvisor.c: the implementation of the C guest SDK (wasmvisor.h), ABI v1 (abi/README.md).
 *
 * It exports wasmvisor_init, _reserve, _call, _configure and _deliver and imports
 * wasmvisor.log, .publish and .abort (and .host_fn, .host_call and .host_result when the
 * plugin calls wv_host_call). Every store the host reads lives in this instance's
 * memory: the control block is a static, the rest (handler list, input and output buffers,
 * applied config, metric records, event ring and the events' bytes) are malloc'd blocks
 * whose addresses the control block carries. Blocks that must move when they grow (the
 * input buffer, the metric records) are re-announced in the control block, which the host
 * re-reads after every export.
 */
#include "wasmvisor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Imports                                                                                    */
/* ---------------------------------------------------------------------------------------- */

__attribute__((import_module("wasmvisor"), import_name("log"))) extern void
wv_import_log(int32_t level, uint32_t ptr, uint32_t len);

__attribute__((import_module("wasmvisor"), import_name("publish"))) extern uint32_t
wv_import_publish(uint32_t topic_ptr, uint32_t topic_len, uint32_t data_ptr, uint32_t data_len);

__attribute__((import_module("wasmvisor"), import_name("abort"))) extern void
wv_import_abort(uint32_t ptr, uint32_t len);

/* The host-function imports. wasm-ld imports only what the plugin references, so a plugin
 * that never calls wv_host_call does not import them. */
__attribute__((import_module("wasmvisor"), import_name("host_fn"))) extern int32_t
wv_import_host_fn(uint32_t name_ptr, uint32_t name_len);

__attribute__((import_module("wasmvisor"), import_name("host_call"))) extern uint64_t
wv_import_host_call(int32_t fn, uint32_t in_ptr, uint32_t in_len);

__attribute__((import_module("wasmvisor"), import_name("host_result"))) extern int32_t
wv_import_host_result(uint32_t dst_ptr, uint32_t dst_len);

/* The plugin's registration function, optional. */
extern void wasmvisor_main(void) __attribute__((weak));

/* ---------------------------------------------------------------------------------------- */
/* ABI layout                                                                                 */
/* ---------------------------------------------------------------------------------------- */

#define MAGIC 0x62617677u /* the bytes "wvab" */
#define KIND_COUNTER 1u
#define KIND_GAUGE 2u
#define KIND_HISTOGRAM 3u

#define MAX_HANDLERS 1024u
#define MAX_NAME 64u
#define MAX_METRICS 1024u
#define MAX_BUCKETS 64u
#define MAX_SLOTS 65536u
#define MAX_CALLBACKS 64u

/* The input buffer's capacity after wasmvisor_init, so that small inputs need no reserve. */
#define INITIAL_IN_CAP 4096u

typedef struct control_block {
	uint32_t magic;
	uint32_t version;
	uint32_t in_ptr;
	uint32_t in_cap;
	uint32_t out_ptr;
	uint32_t out_len;
	uint32_t handlers_ptr;
	uint32_t handlers_len;
	uint32_t config_ptr;
	uint32_t config_len;
	uint32_t metrics_ptr;
	uint32_t metrics_count;
	uint32_t events_ptr;
	uint32_t flags;
	uint64_t reserved;
} control_block;
_Static_assert(sizeof(control_block) == 64, "control block is 64 bytes");

typedef struct metric_record {
	uint32_t name_ptr;
	uint32_t name_len;
	uint32_t kind;
	uint32_t bucket_count;
	uint32_t bounds_ptr;
	uint32_t buckets_ptr;
	uint64_t value; /* counter: count; gauge: f64 bits; histogram: observation count */
	double sum;
	uint64_t reserved;
} metric_record;
_Static_assert(sizeof(metric_record) == 48, "metric record is 48 bytes");

typedef struct ring_header {
	uint32_t slots_ptr;
	uint32_t slot_count;
	uint64_t written;
	uint64_t dropped;
	uint64_t reserved;
} ring_header;
_Static_assert(sizeof(ring_header) == 32, "ring header is 32 bytes");

typedef struct ring_slot {
	uint64_t seq;
	uint32_t topic_ptr;
	uint32_t topic_len;
	uint32_t data_ptr;
	uint32_t data_len;
} ring_slot;
_Static_assert(sizeof(ring_slot) == 24, "ring slot is 24 bytes");

/* ---------------------------------------------------------------------------------------- */
/* State                                                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct handler_entry {
	char *name;
	wv_handler fn;
} handler_entry;

/* What the SDK keeps about a metric besides its record (which may move). */
typedef struct metric_info {
	double *bounds;    /* histogram: bucket_count bounds */
	uint64_t *buckets; /* histogram: bucket_count + 1 counts */
	uint32_t bucket_count;
} metric_info;

/* The ring's storage: slot i's topic and data are copied into areas[i]. */
typedef struct ring_area {
	uint8_t *ptr;
	uint32_t cap;
} ring_area;

static _Alignas(8) control_block ctrl;
static bool init_done;

static handler_entry *handlers;
static uint32_t handler_count;
static char *handler_names; /* '\n'-separated, built by wasmvisor_init */

static uint8_t *in_buf;
static uint32_t in_cap;
static uint8_t *out_buf; /* the SDK's output buffer: copied outputs and messages */
static uint32_t out_cap;

static const uint8_t empty_config[4] = {0, 0, 0, 0};
static uint8_t *config_raw; /* the applied config, malloc'd; NULL: none yet */
static uint32_t config_len;
static wv_config_callback config_callbacks[MAX_CALLBACKS];
static uint32_t config_callback_count;
static wv_event_callback event_callbacks[MAX_CALLBACKS];
static uint32_t event_callback_count;

static metric_record *metric_records;
static metric_info *metric_infos;
static uint32_t metric_count;
static uint32_t metric_cap;

static uint32_t ring_capacity = WV_DEFAULT_EVENT_CAPACITY;
static uint32_t max_event_size = WV_DEFAULT_MAX_EVENT_SIZE;
static ring_header *ring; /* header then ring_capacity slots, one block */
static ring_slot *ring_slots;
static ring_area *ring_areas;

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static inline uint32_t addr(const void *p) { return (uint32_t)(uintptr_t)p; }

/* barrier keeps the compiler from moving memory writes across it: the host may stop the
 * guest between any two instructions (a deadline) and then read the stores. */
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static inline uint32_t load_u32(const uint8_t *p) {
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

__attribute__((noreturn)) void wv_abort_bytes(wv_bytes msg) {
	wv_import_abort(addr(msg.ptr), msg.len);
	__builtin_trap(); /* the import never returns */
}

__attribute__((noreturn)) void wv_abort(const char *msg) { wv_abort_bytes(wv_str(msg)); }

/* append copies the NUL-terminated s (at most max bytes of it) to msg at *pos, keeping room
 * for the final NUL. */
static void append(char *msg, size_t size, size_t *pos, const char *s, size_t max) {
	for (size_t i = 0; s[i] && i < max && *pos + 1 < size; i++) {
		msg[(*pos)++] = s[i];
	}
	msg[*pos] = 0;
}

/* abort_named aborts with "wasmvisor: <what>(\"<name>\"): <why>" (no printf, so that
 * plugins that do not format pay nothing for it). */
__attribute__((noreturn)) static void abort_named(const char *what, const char *name,
                                                  const char *why) {
	static char msg[256];
	size_t pos = 0;
	append(msg, sizeof msg, &pos, "wasmvisor: ", SIZE_MAX);
	append(msg, sizeof msg, &pos, what, SIZE_MAX);
	append(msg, sizeof msg, &pos, "(\"", SIZE_MAX);
	append(msg, sizeof msg, &pos, name ? name : "(null)", 64);
	append(msg, sizeof msg, &pos, "\"): ", SIZE_MAX);
	append(msg, sizeof msg, &pos, why, SIZE_MAX);
	wv_abort(msg);
}

__attribute__((noreturn)) static void abort_no_memory(const char *what) {
	abort_named(what, "", "out of memory");
}

static void set_out(const void *ptr, uint32_t len) {
	ctrl.out_ptr = len ? addr(ptr) : 0;
	ctrl.out_len = len;
}

/* grow_out makes the output buffer at least len bytes; false when it cannot. */
static bool grow_out(uint32_t len) {
	if (len <= out_cap) {
		return true;
	}
	uint32_t cap = out_cap ? out_cap : 64;
	while (cap < len) {
		cap = cap > UINT32_MAX / 2 ? len : cap * 2;
	}
	uint8_t *b = malloc(cap);
	if (!b) {
		return false;
	}
	free(out_buf);
	out_buf = b;
	out_cap = cap;
	return true;
}

/* out_copy makes a copy of the len bytes at ptr the output (no copy when they already are
 * in the output buffer). */
static bool out_copy(const void *ptr, uint32_t len) {
	const uint8_t *p = ptr;
	if (len == 0 || (out_buf && p >= out_buf && p + len <= out_buf + out_cap)) {
		set_out(ptr, len);
		return true;
	}
	if (!grow_out(len)) {
		return false;
	}
	memcpy(out_buf, ptr, len);
	set_out(out_buf, len);
	return true;
}

static const char msg_out_of_memory[] = "out of memory";

static wv_status no_memory(void) {
	set_out(msg_out_of_memory, sizeof msg_out_of_memory - 1);
	return WV_STATUS_NO_MEMORY;
}

static bool valid_status(int32_t st) {
	return st >= WV_STATUS_OK && st <= WV_STATUS_NO_MEMORY;
}

/* check_input aborts when the host hands over more bytes than the input buffer holds: it
 * skipped wasmvisor_reserve, so the bytes were written past the buffer. */
static void check_input(uint32_t n) {
	if (n > in_cap) {
		wv_abort("input larger than input buffer");
	}
}

/* ---------------------------------------------------------------------------------------- */
/* Output                                                                                     */
/* ---------------------------------------------------------------------------------------- */

wv_status wv_ok(const void *ptr, uint32_t len) {
	set_out(ptr, len);
	return WV_STATUS_OK;
}

wv_status wv_ok_copy(const void *ptr, uint32_t len) {
	return out_copy(ptr, len) ? WV_STATUS_OK : no_memory();
}

wv_status wv_ok_str(const char *s) {
	wv_bytes b = wv_str(s);
	return wv_ok_copy(b.ptr, b.len);
}

uint8_t *wv_output_buffer(uint32_t len) {
	if (!grow_out(len ? len : 1)) {
		return NULL;
	}
	return out_buf;
}

wv_status wv_fail(wv_status status, const void *msg, uint32_t len) {
	if (!valid_status(status)) {
		wv_abort("wasmvisor: wv_fail: invalid status");
	}
	return out_copy(msg, len) ? status : no_memory();
}

wv_status wv_error_bytes(const void *msg, uint32_t len) {
	return wv_fail(WV_STATUS_ERROR, msg, len);
}

wv_status wv_error(const char *msg) {
	wv_bytes b = wv_str(msg);
	return wv_fail(WV_STATUS_ERROR, b.ptr, b.len);
}

wv_status wv_invalid_input(const char *msg) {
	wv_bytes b = wv_str(msg);
	return wv_fail(WV_STATUS_INVALID_INPUT, b.ptr, b.len);
}

wv_status wv_reject(const char *msg) {
	wv_bytes b = wv_str(msg);
	return wv_fail(WV_STATUS_CONFIG_REJECTED, b.ptr, b.len);
}

/* format formats into a new malloc'd string (the arguments may point into the output
 * buffer, so it is not reused); *len gets its length. NULL when out of memory. */
static char *format(uint32_t *len, const char *fmt, va_list args) {
	va_list copy;
	va_copy(copy, args);
	int n = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (n < 0) {
		n = 0;
	}
	char *s = malloc((size_t)n + 1);
	if (!s) {
		return NULL;
	}
	vsnprintf(s, (size_t)n + 1, fmt, args);
	*len = (uint32_t)n;
	return s;
}

wv_status wv_errorf(const char *fmt, ...) {
	va_list args;
	va_start(args, fmt);
	uint32_t len = 0;
	char *s = format(&len, fmt, args);
	va_end(args);
	if (!s) {
		return no_memory();
	}
	/* The new string becomes the output buffer. */
	free(out_buf);
	out_buf = (uint8_t *)s;
	out_cap = len + 1;
	set_out(s, len);
	return WV_STATUS_ERROR;
}

/* ---------------------------------------------------------------------------------------- */
/* Logging                                                                                    */
/* ---------------------------------------------------------------------------------------- */

void wv_log_bytes(wv_level level, wv_bytes msg) {
	wv_import_log((int32_t)level, addr(msg.ptr), msg.len);
}

void wv_log(wv_level level, const char *msg) { wv_log_bytes(level, wv_str(msg)); }

void wv_logf(wv_level level, const char *fmt, ...) {
	va_list args;
	va_start(args, fmt);
	uint32_t len = 0;
	char *s = format(&len, fmt, args);
	va_end(args);
	if (!s) {
		wv_log(level, fmt); /* better the unformatted line than none */
		return;
	}
	wv_log_bytes(level, wv_bytes_of(s, len));
	free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Handlers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static bool valid_handler_name(const char *s) {
	size_t n = 0;
	for (; s[n]; n++) {
		char c = s[n];
		if (n >= MAX_NAME || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		                       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) {
			return false;
		}
	}
	return n > 0;
}

void wv_handle(const char *name, wv_handler fn) {
	if (init_done) {
		abort_named("wv_handle", name,
		            "called after wasmvisor_init; register handlers in wasmvisor_main");
	}
	if (!name || !valid_handler_name(name)) {
		abort_named("wv_handle", name, "a handler name must match [A-Za-z0-9_.-]{1,64}");
	}
	if (!fn) {
		abort_named("wv_handle", name, "NULL handler");
	}
	for (uint32_t i = 0; i < handler_count; i++) {
		if (strcmp(handlers[i].name, name) == 0) {
			abort_named("wv_handle", name, "duplicate handler name");
		}
	}
	if (handler_count >= MAX_HANDLERS) {
		abort_named("wv_handle", name, "more than 1024 handlers");
	}
	handler_entry *grown = realloc(handlers, (handler_count + 1) * sizeof *handlers);
	char *copy = strdup(name);
	if (!grown || !copy) {
		abort_no_memory("wv_handle");
	}
	handlers = grown;
	handlers[handler_count].name = copy;
	handlers[handler_count].fn = fn;
	handler_count++;
}

/* ---------------------------------------------------------------------------------------- */
/* Config                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static int compare_bytes(const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len) {
	uint32_t n = a_len < b_len ? a_len : b_len;
	int c = n ? memcmp(a, b, n) : 0;
	if (c != 0) {
		return c;
	}
	return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

/* config_well_formed checks the encoding: every length inside the input, keys strictly
 * ascending (so unique), no bytes left over. */
static bool config_well_formed(const uint8_t *p, uint32_t len) {
	if (len < 4) {
		return false;
	}
	uint32_t count = load_u32(p);
	uint32_t pos = 4;
	const uint8_t *prev = NULL;
	uint32_t prev_len = 0;
	for (uint32_t i = 0; i < count; i++) {
		if (len - pos < 4) {
			return false;
		}
		uint32_t key_len = load_u32(p + pos);
		pos += 4;
		if (key_len > len - pos) {
			return false;
		}
		const uint8_t *key = p + pos;
		pos += key_len;
		if (i > 0 && compare_bytes(prev, prev_len, key, key_len) >= 0) {
			return false;
		}
		prev = key;
		prev_len = key_len;
		if (len - pos < 4) {
			return false;
		}
		uint32_t value_len = load_u32(p + pos);
		pos += 4;
		if (value_len > len - pos) {
			return false;
		}
		pos += value_len;
	}
	return pos == len;
}

wv_config wv_config_current(void) {
	wv_config c;
	if (config_raw) {
		c.raw = config_raw;
		c.raw_len = config_len;
	} else {
		c.raw = empty_config;
		c.raw_len = sizeof empty_config;
	}
	return c;
}

uint32_t wv_config_count(wv_config config) {
	return config.raw && config.raw_len >= 4 ? load_u32(config.raw) : 0;
}

wv_config_iter wv_config_iterate(wv_config config) {
	wv_config_iter it;
	it.config = config;
	it.pos = 4;
	it.left = wv_config_count(config);
	return it;
}

bool wv_config_next(wv_config_iter *it, wv_bytes *key, wv_bytes *value) {
	if (it->left == 0) {
		return false;
	}
	const uint8_t *p = it->config.raw;
	uint32_t key_len = load_u32(p + it->pos);
	const uint8_t *k = p + it->pos + 4;
	uint32_t value_len = load_u32(k + key_len);
	const uint8_t *v = k + key_len + 4;
	it->pos += 8 + key_len + value_len;
	it->left--;
	if (key) {
		*key = wv_bytes_of(k, key_len);
	}
	if (value) {
		*value = wv_bytes_of(v, value_len);
	}
	return true;
}

bool wv_config_get_bytes(wv_config config, wv_bytes key, wv_bytes *value) {
	wv_config_iter it = wv_config_iterate(config);
	wv_bytes k, v;
	while (wv_config_next(&it, &k, &v)) {
		if (k.len == key.len && (key.len == 0 || memcmp(k.ptr, key.ptr, key.len) == 0)) {
			if (value) {
				*value = v;
			}
			return true;
		}
	}
	return false;
}

bool wv_config_get(wv_config config, const char *key, wv_bytes *value) {
	return wv_config_get_bytes(config, wv_str(key), value);
}

void wv_on_config_change(wv_config_callback fn) {
	if (!fn) {
		wv_abort("wasmvisor: wv_on_config_change(NULL)");
	}
	if (config_callback_count >= MAX_CALLBACKS) {
		wv_abort("wasmvisor: wv_on_config_change: more than 64 callbacks");
	}
	config_callbacks[config_callback_count++] = fn;
}

static void announce_config(void) {
	wv_config c = wv_config_current();
	ctrl.config_ptr = addr(c.raw);
	ctrl.config_len = c.raw_len;
}

/* ---------------------------------------------------------------------------------------- */
/* Events                                                                                     */
/* ---------------------------------------------------------------------------------------- */

void wv_set_event_capacity(uint32_t slots) {
	if (ring) {
		wv_abort("wasmvisor: wv_set_event_capacity after the event ring was set up; "
		         "call it in wasmvisor_main before any wv_emit");
	}
	if (slots > MAX_SLOTS) {
		wv_abort("wasmvisor: wv_set_event_capacity: at most 65536 slots");
	}
	ring_capacity = slots;
}

void wv_set_max_event_size(uint32_t bytes) { max_event_size = bytes; }

/* ring_setup allocates the ring on first use (wv_emit or wasmvisor_init). */
static void ring_setup(void) {
	if (ring || ring_capacity == 0) {
		return;
	}
	ring_header *r = calloc(1, sizeof(ring_header) + (size_t)ring_capacity * sizeof(ring_slot));
	ring_area *areas = calloc(ring_capacity, sizeof(ring_area));
	if (!r || !areas) {
		abort_no_memory("event ring");
	}
	ring_slots = (ring_slot *)(r + 1);
	ring_areas = areas;
	r->slots_ptr = addr(ring_slots);
	r->slot_count = ring_capacity;
	ring = r;
	ctrl.events_ptr = addr(ring);
}

static void count_dropped(void) {
	((volatile ring_header *)ring)->dropped = ring->dropped + 1;
}

/* The order of the writes makes a torn event invisible to a host that reads the ring after
 * the guest was stopped half-way: (1) invalidate the slot, (2) write the bytes and the
 * fields, (3) set seq, (4) increment written. */
bool wv_emit(wv_bytes topic, wv_bytes data) {
	if (!ring) {
		ring_setup();
		if (!ring) {
			return false; /* no ring */
		}
	}
	if (topic.len > max_event_size || data.len > max_event_size - topic.len) {
		count_dropped();
		return false;
	}
	uint32_t size = topic.len + data.len;
	uint64_t seq = ring->written;
	uint32_t i = (uint32_t)(seq % ring_capacity);
	ring_area *area = &ring_areas[i];
	uint8_t *fresh = NULL;
	if (size > area->cap) {
		fresh = malloc(size);
		if (!fresh) {
			count_dropped();
			return false;
		}
	}
	volatile ring_slot *slot = &ring_slots[i];
	slot->seq = UINT64_MAX; /* 1 */
	barrier();
	if (fresh) {
		free(area->ptr);
		area->ptr = fresh;
		area->cap = size;
	}
	if (topic.len) {
		memcpy(area->ptr, topic.ptr, topic.len); /* 2 */
	}
	if (data.len) {
		memcpy(area->ptr + topic.len, data.ptr, data.len);
	}
	slot->topic_ptr = addr(area->ptr);
	slot->topic_len = topic.len;
	slot->data_ptr = addr(area->ptr) + topic.len;
	slot->data_len = data.len;
	barrier();
	slot->seq = seq; /* 3 */
	barrier();
	((volatile ring_header *)ring)->written = seq + 1; /* 4 */
	return true;
}

uint32_t wv_publish(wv_bytes topic, wv_bytes data) {
	return wv_import_publish(addr(topic.ptr), topic.len, addr(data.ptr), data.len);
}

/* ---------------------------------------------------------------------------------------- */
/* Host functions                                                                             */
/* ---------------------------------------------------------------------------------------- */

/* HOST_FN_DENIED is host_fn's answer for a name the plugin was not granted (abi.HostFnDenied). */
#define HOST_FN_DENIED (-1)
/* MAX_HOST_FNS bounds the handle cache; names past it are resolved on every call. */
#define MAX_HOST_FNS 64u

/* A resolved host function: the host's handle, or HOST_FN_DENIED (grants are fixed for the
 * instance's life, so a denial is cached too). */
typedef struct host_fn_entry {
	uint8_t name[MAX_NAME];
	uint32_t name_len;
	int32_t handle;
} host_fn_entry;

static host_fn_entry host_fns[MAX_HOST_FNS];
static uint32_t host_fn_count;
static uint8_t *host_out; /* the last wv_host_call's output or message, malloc'd */

/* host_fn_handle returns the handle of name, asking the host (host_fn) only the first time. */
static int32_t host_fn_handle(wv_bytes name) {
	for (uint32_t i = 0; i < host_fn_count; i++) {
		host_fn_entry *e = &host_fns[i];
		if (e->name_len == name.len && memcmp(e->name, name.ptr, name.len) == 0) {
			return e->handle;
		}
	}
	int32_t h = wv_import_host_fn(addr(name.ptr), name.len);
	if (h < 0) {
		h = HOST_FN_DENIED;
	}
	/* A name longer than any the host offers is denied; it is not worth a slot. */
	if (host_fn_count < MAX_HOST_FNS && name.len <= MAX_NAME) {
		host_fn_entry *e = &host_fns[host_fn_count++];
		if (name.len) {
			memcpy(e->name, name.ptr, name.len);
		}
		e->name_len = name.len;
		e->handle = h;
	}
	return h;
}

wv_host_outcome wv_host_call_bytes(wv_bytes name, wv_bytes input, wv_host_result *result) {
	wv_host_result r;
	r.status = WV_STATUS_ERROR;
	r.output = wv_bytes_of(NULL, 0);
	int32_t h = host_fn_handle(name);
	if (h < 0) {
		if (result) {
			*result = r;
		}
		return WV_HOST_DENIED;
	}
	uint64_t v = wv_import_host_call(h, addr(input.ptr), input.len);
	uint32_t status = (uint32_t)(v >> 32), n = (uint32_t)v;
	/* The previous output is dropped here: the one pending replaces it. */
	free(host_out);
	host_out = malloc(n ? n : 1);
	if (!host_out) {
		/* The output stays pending in the host until the next host_call; nothing leaks. */
		r.status = WV_STATUS_NO_MEMORY;
		if (result) {
			*result = r;
		}
		return WV_HOST_NO_MEMORY;
	}
	int32_t got = wv_import_host_result(addr(host_out), n);
	if (got < 0 || (uint32_t)got != n) {
		wv_abort("wasmvisor: wv_host_call: host_result did not return the announced length");
	}
	r.status = (wv_status)status;
	r.output = wv_bytes_of(host_out, n);
	if (result) {
		*result = r;
	}
	return status == WV_STATUS_OK ? WV_HOST_OK : WV_HOST_FAILED;
}

wv_host_outcome wv_host_call(const char *name, wv_bytes input, wv_host_result *result) {
	return wv_host_call_bytes(wv_str(name), input, result);
}

void wv_on_event(wv_event_callback fn) {
	if (!fn) {
		wv_abort("wasmvisor: wv_on_event(NULL)");
	}
	if (event_callback_count >= MAX_CALLBACKS) {
		wv_abort("wasmvisor: wv_on_event: more than 64 callbacks");
	}
	event_callbacks[event_callback_count++] = fn;
}

/* ---------------------------------------------------------------------------------------- */
/* Telemetry                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static bool valid_metric_name(const char *s) {
	size_t n = 0;
	for (; s[n]; n++) {
		char c = s[n];
		bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
		if (n >= MAX_NAME || (!letter && (n == 0 || c < '0' || c > '9'))) {
			return false;
		}
	}
	return n > 0;
}

static uint32_t declare(const char *what, const char *name, uint32_t kind, const double *bounds,
                        uint32_t bound_count) {
	if (!name || !valid_metric_name(name)) {
		abort_named(what, name, "a metric name must match [a-zA-Z_][a-zA-Z0-9_]{0,63}");
	}
	for (uint32_t i = 0; i < metric_count; i++) {
		const metric_record *r = &metric_records[i];
		if (r->name_len == strlen(name) &&
		    memcmp((const void *)(uintptr_t)r->name_ptr, name, r->name_len) == 0) {
			abort_named(what, name, "duplicate metric name");
		}
	}
	if (metric_count >= MAX_METRICS) {
		abort_named(what, name, "more than 1024 metrics");
	}
	if (bound_count > MAX_BUCKETS) {
		abort_named(what, name, "more than 64 bounds");
	}
	if (bound_count > 0 && !bounds) {
		abort_named(what, name, "NULL bounds");
	}
	for (uint32_t i = 0; i < bound_count; i++) {
		double b = bounds[i];
		if (!__builtin_isfinite(b)) {
			abort_named(what, name, "a bound is not finite");
		}
		if (i > 0 && !(b > bounds[i - 1])) {
			abort_named(what, name, "bounds are not strictly ascending");
		}
	}
	if (metric_count == metric_cap) {
		uint32_t cap = metric_cap ? metric_cap * 2 : 8;
		metric_record *recs = calloc(cap, sizeof *recs);
		metric_info *infos = realloc(metric_infos, cap * sizeof *infos);
		if (!recs || !infos) {
			abort_no_memory(what);
		}
		if (metric_count) {
			memcpy(recs, metric_records, metric_count * sizeof *recs);
		}
		/* The host reads the control block after each export; until it moves here, it
		 * points at the old array, which stays valid until it is freed just after. */
		metric_record *old = metric_records;
		metric_records = recs;
		metric_infos = infos;
		metric_cap = cap;
		ctrl.metrics_ptr = addr(metric_records);
		free(old);
	}
	char *name_copy = strdup(name);
	if (!name_copy) {
		abort_no_memory(what);
	}
	metric_info info = {NULL, NULL, 0};
	if (kind == KIND_HISTOGRAM) {
		info.bounds = malloc((bound_count ? bound_count : 1) * sizeof(double));
		info.buckets = calloc(bound_count + 1, sizeof(uint64_t));
		if (!info.bounds || !info.buckets) {
			abort_no_memory(what);
		}
		if (bound_count) {
			memcpy(info.bounds, bounds, bound_count * sizeof(double));
		}
		info.bucket_count = bound_count;
	}
	uint32_t index = metric_count;
	metric_infos[index] = info;
	metric_record *r = &metric_records[index];
	memset(r, 0, sizeof *r);
	r->name_ptr = addr(name_copy);
	r->name_len = (uint32_t)strlen(name_copy);
	r->kind = kind;
	if (kind == KIND_HISTOGRAM) {
		r->bucket_count = bound_count;
		r->bounds_ptr = addr(info.bounds);
		r->buckets_ptr = addr(info.buckets);
	}
	metric_count++;
	ctrl.metrics_ptr = addr(metric_records);
	ctrl.metrics_count = metric_count;
	return index;
}

wv_counter wv_counter_new(const char *name) {
	wv_counter c = {declare("wv_counter_new", name, KIND_COUNTER, NULL, 0)};
	return c;
}

void wv_counter_add(wv_counter counter, uint64_t n) { metric_records[counter.index].value += n; }

void wv_counter_inc(wv_counter counter) { wv_counter_add(counter, 1); }

wv_gauge wv_gauge_new(const char *name) {
	wv_gauge g = {declare("wv_gauge_new", name, KIND_GAUGE, NULL, 0)};
	return g;
}

void wv_gauge_set(wv_gauge gauge, double value) {
	memcpy(&metric_records[gauge.index].value, &value, sizeof value);
}

void wv_gauge_add(wv_gauge gauge, double delta) {
	double v;
	memcpy(&v, &metric_records[gauge.index].value, sizeof v);
	wv_gauge_set(gauge, v + delta);
}

wv_histogram wv_histogram_new(const char *name, const double *bounds, uint32_t count) {
	wv_histogram h = {declare("wv_histogram_new", name, KIND_HISTOGRAM, bounds, count)};
	return h;
}

void wv_histogram_observe(wv_histogram histogram, double v) {
	metric_info *info = &metric_infos[histogram.index];
	uint32_t i = 0;
	while (i < info->bucket_count && !(v <= info->bounds[i])) {
		i++;
	}
	info->buckets[i]++;
	metric_record *r = &metric_records[histogram.index];
	r->sum += v;
	r->value++;
}

/* ---------------------------------------------------------------------------------------- */
/* Exports                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* wasmvisor_init runs the plugin's wasmvisor_main, fixes the handler list, sets up the
 * stores and returns the control block's address. A second call changes nothing. */
__attribute__((export_name("wasmvisor_init"))) uint32_t wasmvisor_init(void) {
	if (init_done) {
		return addr(&ctrl);
	}
	if (wasmvisor_main) {
		wasmvisor_main();
	}
	init_done = true;

	size_t len = 0;
	for (uint32_t i = 0; i < handler_count; i++) {
		len += strlen(handlers[i].name) + (i > 0);
	}
	handler_names = malloc(len ? len : 1);
	in_buf = malloc(INITIAL_IN_CAP);
	if (!handler_names || !in_buf) {
		abort_no_memory("wasmvisor_init");
	}
	size_t pos = 0;
	for (uint32_t i = 0; i < handler_count; i++) {
		if (i > 0) {
			handler_names[pos++] = '\n';
		}
		size_t n = strlen(handlers[i].name);
		memcpy(handler_names + pos, handlers[i].name, n);
		pos += n;
	}
	in_cap = INITIAL_IN_CAP;
	ring_setup();

	ctrl.magic = MAGIC;
	ctrl.version = WV_ABI_VERSION;
	ctrl.in_ptr = addr(in_buf);
	ctrl.in_cap = in_cap;
	set_out(NULL, 0);
	ctrl.handlers_ptr = addr(handler_names);
	ctrl.handlers_len = (uint32_t)len;
	ctrl.config_ptr = 0; /* no config yet */
	ctrl.config_len = 0;
	ctrl.metrics_ptr = addr(metric_records);
	ctrl.metrics_count = metric_count;
	ctrl.events_ptr = addr(ring);
	ctrl.flags = 0;
	ctrl.reserved = 0;
	return addr(&ctrl);
}

/* wasmvisor_reserve makes the input buffer at least size bytes (a multiple of 4 KiB). The
 * old contents are not kept: the host writes the input after this returns. */
__attribute__((export_name("wasmvisor_reserve"))) int32_t wasmvisor_reserve(uint32_t size) {
	set_out(NULL, 0);
	if (size <= in_cap) {
		return WV_STATUS_OK;
	}
	uint32_t cap = size <= UINT32_MAX - 4095 ? (size + 4095) & ~4095u : size;
	uint8_t *b = malloc(cap);
	if (!b) {
		return no_memory();
	}
	free(in_buf);
	in_buf = b;
	in_cap = cap;
	ctrl.in_ptr = addr(in_buf);
	ctrl.in_cap = in_cap;
	return WV_STATUS_OK;
}

/* finish turns a handler's or callback's status into the export's: an invalid status is a
 * bug in the plugin, and returning it would be an ABI violation, so it aborts instead. */
static int32_t finish(wv_status st) {
	if (!valid_status(st)) {
		wv_abort("wasmvisor: a handler or callback returned an invalid status");
	}
	return st;
}

/* wasmvisor_call runs handler number handler on the in_len bytes of the input buffer. */
__attribute__((export_name("wasmvisor_call"))) int32_t wasmvisor_call(uint32_t handler,
                                                                      uint32_t in_len) {
	check_input(in_len);
	set_out(NULL, 0);
	if (handler >= handler_count) {
		return WV_STATUS_UNKNOWN_HANDLER;
	}
	return finish(handlers[handler].fn(wv_bytes_of(in_buf, in_len)));
}

/* wasmvisor_configure replaces the config with the encoded one in the input buffer. */
__attribute__((export_name("wasmvisor_configure"))) int32_t wasmvisor_configure(uint32_t in_len) {
	static const char malformed[] = "malformed config";
	static const char rejected[] = "config rejected";
	check_input(in_len);
	set_out(NULL, 0);
	if (!config_well_formed(in_buf, in_len)) {
		set_out(malformed, sizeof malformed - 1);
		return WV_STATUS_CONFIG_REJECTED;
	}
	wv_config old = wv_config_current();
	if (old.raw_len == in_len && memcmp(old.raw, in_buf, in_len) == 0) {
		announce_config(); /* unchanged; the first empty config becomes the applied one */
		return WV_STATUS_OK;
	}
	uint8_t *copy = malloc(in_len);
	if (!copy) {
		return no_memory();
	}
	memcpy(copy, in_buf, in_len);
	wv_config next = {copy, in_len};
	for (uint32_t i = 0; i < config_callback_count; i++) {
		set_out(NULL, 0);
		wv_status st = config_callbacks[i](old, next);
		if (st != WV_STATUS_OK) {
			free(copy);
			if (ctrl.out_len == 0) {
				set_out(rejected, sizeof rejected - 1);
			}
			return WV_STATUS_CONFIG_REJECTED;
		}
	}
	uint8_t *previous = config_raw;
	config_raw = copy;
	config_len = in_len;
	announce_config();
	free(previous);
	set_out(NULL, 0);
	return WV_STATUS_OK;
}

/* wasmvisor_deliver hands a bus event (u32 topic_len, topic, payload) to the event
 * callbacks. */
__attribute__((export_name("wasmvisor_deliver"))) int32_t wasmvisor_deliver(uint32_t in_len) {
	static const char bad[] = "bad delivery";
	static const char none[] = "no event callback registered";
	check_input(in_len);
	set_out(NULL, 0);
	if (in_len < 4 || load_u32(in_buf) > in_len - 4) {
		set_out(bad, sizeof bad - 1);
		return WV_STATUS_INVALID_INPUT;
	}
	if (event_callback_count == 0) {
		set_out(none, sizeof none - 1);
		return WV_STATUS_ERROR;
	}
	uint32_t topic_len = load_u32(in_buf);
	wv_bytes topic = wv_bytes_of(in_buf + 4, topic_len);
	wv_bytes data = wv_bytes_of(in_buf + 4 + topic_len, in_len - 4 - topic_len);
	for (uint32_t i = 0; i < event_callback_count; i++) {
		set_out(NULL, 0);
		wv_status st = event_callbacks[i](topic, data);
		if (st != WV_STATUS_OK) {
			return finish(st);
		}
	}
	set_out(NULL, 0);
	return WV_STATUS_OK;
}

/* ------------------------------------------------------------------------------------------
 * JSON
 * ---------------------------------------------------------------------------------------- */

enum {
	EXPECT_VALUE,        /* the top-level value, or a value after ':' or ',' */
	EXPECT_VALUE_OR_END, /* after '[' */
	EXPECT_KEY_OR_END,   /* after '{' */
	EXPECT_KEY,          /* after ',' in an object */
	EXPECT_COMMA_OR_END, /* after a value inside a container */
	EXPECT_DONE          /* after the top-level value */
};

void wv_json_reader_init(wv_json_reader *r, wv_bytes input) {
	memset(r, 0, sizeof *r);
	r->in = input;
	r->expect = EXPECT_VALUE;
}

static wv_json_type json_err(wv_json_reader *r, wv_json_error e, uint32_t at) {
	if (r->err == WV_JSON_OK) {
		r->err = e;
		r->err_offset = at;
	}
	return WV_JSON_ERROR;
}

static void json_ws(wv_json_reader *r) {
	while (r->pos < r->in.len) {
		uint8_t c = r->in.ptr[r->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return;
		}
		r->pos++;
	}
}

static bool json_in_object(const wv_json_reader *r) {
	return r->depth > 0 && ((r->objects >> (r->depth - 1)) & 1);
}

static void json_after_value(wv_json_reader *r) {
	r->expect = r->depth == 0 ? EXPECT_DONE : EXPECT_COMMA_OR_END;
}

static wv_json_type json_close(wv_json_reader *r) {
	bool obj = json_in_object(r);
	r->pos++;
	r->depth--;
	json_after_value(r);
	return obj ? WV_JSON_END_OBJECT : WV_JSON_END_ARRAY;
}

static int hexval(uint8_t c) {
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* json_string reads a string whose opening quote is at r->pos. */
static bool json_string(wv_json_reader *r, wv_json_token *tok) {
	const uint8_t *b = r->in.ptr;
	uint32_t n = r->in.len, start = ++r->pos;
	bool escaped = false;
	for (;;) {
		if (r->pos >= n) {
			json_err(r, WV_JSON_UNEXPECTED_END, r->pos);
			return false;
		}
		uint8_t c = b[r->pos];
		if (c == '"') {
			break;
		}
		if (c < 0x20) {
			json_err(r, WV_JSON_CONTROL_IN_STRING, r->pos);
			return false;
		}
		if (c != '\\') {
			r->pos++;
			continue;
		}
		escaped = true;
		if (r->pos + 1 >= n) {
			json_err(r, WV_JSON_UNEXPECTED_END, n);
			return false;
		}
		switch (b[r->pos + 1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			r->pos += 2;
			break;
		case 'u':
			for (uint32_t k = r->pos + 2; k < r->pos + 6; k++) {
				if (k >= n) {
					json_err(r, WV_JSON_UNEXPECTED_END, k);
					return false;
				}
				if (hexval(b[k]) < 0) {
					json_err(r, WV_JSON_BAD_ESCAPE, r->pos);
					return false;
				}
			}
			r->pos += 6;
			break;
		default:
			json_err(r, WV_JSON_BAD_ESCAPE, r->pos);
			return false;
		}
	}
	if (tok) {
		tok->text = wv_bytes_of(b + start, r->pos - start);
		tok->escaped = escaped;
	}
	r->pos++;
	return true;
}

static uint32_t json_digits(wv_json_reader *r) {
	uint32_t start = r->pos;
	while (r->pos < r->in.len && r->in.ptr[r->pos] >= '0' && r->in.ptr[r->pos] <= '9') {
		r->pos++;
	}
	return r->pos - start;
}

static bool json_number(wv_json_reader *r, wv_json_token *tok) {
	const uint8_t *b = r->in.ptr;
	uint32_t start = r->pos;
	if (b[r->pos] == '-') {
		r->pos++;
	}
	uint32_t first = r->pos, nd = json_digits(r);
	if (nd == 0 || (nd > 1 && b[first] == '0')) {
		goto bad;
	}
	if (r->pos < r->in.len && b[r->pos] == '.') {
		r->pos++;
		if (json_digits(r) == 0) {
			goto bad;
		}
	}
	if (r->pos < r->in.len && (b[r->pos] == 'e' || b[r->pos] == 'E')) {
		r->pos++;
		if (r->pos < r->in.len && (b[r->pos] == '+' || b[r->pos] == '-')) {
			r->pos++;
		}
		if (json_digits(r) == 0) {
			goto bad;
		}
	}
	if (tok) {
		tok->text = wv_bytes_of(b + start, r->pos - start);
	}
	return true;
bad:
	json_err(r, WV_JSON_BAD_NUMBER, start);
	return false;
}

static wv_json_type json_literal(wv_json_reader *r, const char *word, wv_json_type t) {
	for (; *word; word++) {
		if (r->pos >= r->in.len) {
			return json_err(r, WV_JSON_UNEXPECTED_END, r->pos);
		}
		if (r->in.ptr[r->pos] != (uint8_t)*word) {
			return json_err(r, WV_JSON_UNEXPECTED_BYTE, r->pos);
		}
		r->pos++;
	}
	json_after_value(r);
	return t;
}

wv_json_type wv_json_next(wv_json_reader *r, wv_json_token *tok) {
	wv_json_token scratch;
	if (!tok) {
		tok = &scratch;
	}
	tok->text = wv_bytes_of(NULL, 0);
	tok->escaped = false;
	if (r->err != WV_JSON_OK) {
		return tok->type = WV_JSON_ERROR;
	}
	for (;;) {
		json_ws(r);
		if (r->expect == EXPECT_DONE) {
			return tok->type = r->pos == r->in.len ? WV_JSON_DONE : json_err(r, WV_JSON_TRAILING_DATA, r->pos);
		}
		if (r->pos >= r->in.len) {
			return tok->type = json_err(r, WV_JSON_UNEXPECTED_END, r->pos);
		}
		uint8_t c = r->in.ptr[r->pos];
		switch (r->expect) {
		case EXPECT_COMMA_OR_END:
			if (c == (json_in_object(r) ? '}' : ']')) {
				return tok->type = json_close(r);
			}
			if (c != ',') {
				return tok->type = json_err(r, WV_JSON_UNEXPECTED_BYTE, r->pos);
			}
			r->pos++;
			r->expect = json_in_object(r) ? EXPECT_KEY : EXPECT_VALUE;
			continue;
		case EXPECT_KEY_OR_END:
		case EXPECT_KEY:
			if (c == '}' && r->expect == EXPECT_KEY_OR_END) {
				return tok->type = json_close(r);
			}
			if (c != '"') {
				return tok->type = json_err(r, WV_JSON_UNEXPECTED_BYTE, r->pos);
			}
			if (!json_string(r, tok)) {
				return tok->type = WV_JSON_ERROR;
			}
			json_ws(r);
			if (r->pos >= r->in.len) {
				return tok->type = json_err(r, WV_JSON_UNEXPECTED_END, r->pos);
			}
			if (r->in.ptr[r->pos] != ':') {
				return tok->type = json_err(r, WV_JSON_UNEXPECTED_BYTE, r->pos);
			}
			r->pos++;
			r->expect = EXPECT_VALUE;
			return tok->type = WV_JSON_KEY;
		case EXPECT_VALUE_OR_END:
			if (c == ']') {
				return tok->type = json_close(r);
			}
			break;
		default:
			break;
		}
		switch (c) {
		case '{':
		case '[':
			if (r->depth == WV_JSON_MAX_DEPTH) {
				return tok->type = json_err(r, WV_JSON_TOO_DEEP, r->pos);
			}
			r->pos++;
			if (c == '{') {
				r->objects |= (uint64_t)1 << r->depth;
			} else {
				r->objects &= ~((uint64_t)1 << r->depth);
			}
			r->depth++;
			r->expect = c == '{' ? EXPECT_KEY_OR_END : EXPECT_VALUE_OR_END;
			return tok->type = c == '{' ? WV_JSON_BEGIN_OBJECT : WV_JSON_BEGIN_ARRAY;
		case '"':
			if (!json_string(r, tok)) {
				return tok->type = WV_JSON_ERROR;
			}
			json_after_value(r);
			return tok->type = WV_JSON_STRING;
		case 't':
			return tok->type = json_literal(r, "true", WV_JSON_TRUE);
		case 'f':
			return tok->type = json_literal(r, "false", WV_JSON_FALSE);
		case 'n':
			return tok->type = json_literal(r, "null", WV_JSON_NULL);
		default:
			if (c == '-' || (c >= '0' && c <= '9')) {
				if (!json_number(r, tok)) {
					return tok->type = WV_JSON_ERROR;
				}
				json_after_value(r);
				return tok->type = WV_JSON_NUMBER;
			}
			return tok->type = json_err(r, WV_JSON_UNEXPECTED_BYTE, r->pos);
		}
	}
}

bool wv_json_expect(wv_json_reader *r, wv_json_type type, wv_json_token *tok) {
	wv_json_token t;
	uint32_t at = r->pos;
	wv_json_type got = wv_json_next(r, &t);
	if (tok) {
		*tok = t;
	}
	if (got == type) {
		return true;
	}
	if (got != WV_JSON_ERROR) {
		json_err(r, WV_JSON_WRONG_TYPE, at);
	}
	return false;
}

bool wv_json_key(wv_json_reader *r, wv_json_token *key) {
	uint32_t at = r->pos;
	wv_json_type t = wv_json_next(r, key);
	if (t == WV_JSON_KEY) {
		return true;
	}
	if (t != WV_JSON_END_OBJECT && t != WV_JSON_ERROR) {
		json_err(r, WV_JSON_WRONG_TYPE, at);
	}
	return false;
}

bool wv_json_more(wv_json_reader *r) {
	if (r->err != WV_JSON_OK) {
		return false;
	}
	json_ws(r);
	bool arr = r->depth > 0 && !json_in_object(r);
	if (arr && (r->expect == EXPECT_VALUE_OR_END || r->expect == EXPECT_COMMA_OR_END)) {
		if (r->pos < r->in.len && r->in.ptr[r->pos] == ']') {
			json_close(r);
			return false;
		}
		if (r->expect == EXPECT_VALUE_OR_END) {
			return true;
		}
		if (r->pos < r->in.len && r->in.ptr[r->pos] == ',') {
			r->pos++;
			r->expect = EXPECT_VALUE;
			return true;
		}
	}
	json_err(r, r->pos >= r->in.len ? WV_JSON_UNEXPECTED_END : WV_JSON_UNEXPECTED_BYTE, r->pos);
	return false;
}

bool wv_json_skip(wv_json_reader *r) {
	uint32_t base = r->depth;
	for (;;) {
		wv_json_type t = wv_json_next(r, NULL);
		if (t == WV_JSON_ERROR) {
			return false;
		}
		if (t == WV_JSON_DONE) {
			json_err(r, WV_JSON_UNEXPECTED_END, r->pos);
			return false;
		}
		if (t != WV_JSON_KEY && r->depth == base) {
			return true;
		}
	}
}

bool wv_json_end(wv_json_reader *r) {
	wv_json_type t = wv_json_next(r, NULL);
	if (t == WV_JSON_DONE) {
		return true;
	}
	if (t != WV_JSON_ERROR) {
		json_err(r, WV_JSON_UNEXPECTED_BYTE, r->pos);
	}
	return false;
}

bool wv_json_int64(wv_json_reader *r, int64_t *v) {
	wv_json_token t;
	uint32_t at = r->pos;
	if (!wv_json_expect(r, WV_JSON_NUMBER, &t)) {
		return false;
	}
	const uint8_t *p = t.text.ptr, *end = p + t.text.len;
	bool neg = *p == '-';
	if (neg) {
		p++;
	}
	uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, n = 0;
	for (; p < end; p++) {
		uint32_t d = (uint32_t)*p - '0';
		if (d > 9 || n > (limit - d) / 10) {
			json_err(r, WV_JSON_OUT_OF_RANGE, at);
			return false;
		}
		n = n * 10 + d;
	}
	*v = neg ? (int64_t)(0 - n) : (int64_t)n;
	return true;
}

bool wv_json_double(wv_json_reader *r, double *v) {
	wv_json_token t;
	uint32_t at = r->pos;
	char buf[257];
	if (!wv_json_expect(r, WV_JSON_NUMBER, &t)) {
		return false;
	}
	if (t.text.len >= sizeof buf) {
		json_err(r, WV_JSON_OUT_OF_RANGE, at);
		return false;
	}
	memcpy(buf, t.text.ptr, t.text.len);
	buf[t.text.len] = 0;
	double d = strtod(buf, NULL);
	if (!__builtin_isfinite(d)) {
		json_err(r, WV_JSON_OUT_OF_RANGE, at);
		return false;
	}
	*v = d;
	return true;
}

static uint32_t utf8_put(uint8_t *o, uint32_t cp) {
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xC0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (uint8_t)(0xE0 | cp >> 12);
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (uint8_t)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (uint8_t)(0xF0 | cp >> 18);
	o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (uint8_t)(0x80 | (cp & 0x3F));
	return 4;
}

static uint32_t hex4(const uint8_t *p) {
	return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

uint32_t wv_json_unescape(wv_json_token tok, uint8_t *dst, uint32_t cap) {
	const uint8_t *b = tok.text.ptr;
	uint32_t n = tok.text.len, i = 0, o = 0;
	uint8_t tmp[4];
	while (i < n) {
		uint32_t k = 1;
		if (b[i] != '\\') {
			tmp[0] = b[i++];
		} else {
			uint8_t c = b[i + 1]; /* the reader checked every escape */
			i += 2;
			switch (c) {
			case 'n': tmp[0] = '\n'; break;
			case 't': tmp[0] = '\t'; break;
			case 'r': tmp[0] = '\r'; break;
			case 'b': tmp[0] = '\b'; break;
			case 'f': tmp[0] = '\f'; break;
			case 'u': {
				uint32_t cp = hex4(b + i);
				i += 4;
				if (cp >= 0xD800 && cp < 0xE000) {
					uint32_t hi = cp;
					cp = 0xFFFD;
					if (hi < 0xDC00 && i + 6 <= n && b[i] == '\\' && b[i + 1] == 'u') {
						uint32_t lo = hex4(b + i + 2);
						if (lo >= 0xDC00 && lo < 0xE000) {
							cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
							i += 6;
						}
					}
				}
				k = utf8_put(tmp, cp);
				break;
			}
			default: tmp[0] = c; break; /* '"', '\\', '/' */
			}
		}
		for (uint32_t j = 0; j < k; j++, o++) {
			if (o < cap) {
				dst[o] = tmp[j];
			}
		}
	}
	return o;
}

bool wv_json_eq(wv_json_token tok, const char *s) {
	uint32_t n = (uint32_t)strlen(s);
	if (!tok.escaped) {
		return tok.text.len == n && memcmp(tok.text.ptr, s, n) == 0;
	}
	if (n > tok.text.len) { /* an unescaped value is never longer than its text */
		return false;
	}
	/* compare piecewise through a small buffer */
	uint8_t *buf = malloc(tok.text.len ? tok.text.len : 1);
	if (!buf) {
		return false;
	}
	bool eq = wv_json_unescape(tok, buf, tok.text.len) == n && memcmp(buf, s, n) == 0;
	free(buf);
	return eq;
}

const char *wv_json_error_text(wv_json_error err) {
	switch (err) {
	case WV_JSON_OK: return "no error";
	case WV_JSON_UNEXPECTED_END: return "unexpected end";
	case WV_JSON_UNEXPECTED_BYTE: return "unexpected byte";
	case WV_JSON_BAD_ESCAPE: return "bad escape";
	case WV_JSON_CONTROL_IN_STRING: return "control character in string";
	case WV_JSON_BAD_NUMBER: return "bad number";
	case WV_JSON_TOO_DEEP: return "too deep";
	case WV_JSON_TRAILING_DATA: return "trailing data";
	case WV_JSON_WRONG_TYPE: return "wrong type";
	case WV_JSON_OUT_OF_RANGE: return "out of range";
	case WV_JSON_BAD_WRITE: return "bad write";
	}
	return "unknown error";
}

wv_status wv_json_fail(const wv_json_reader *r) {
	char msg[80];
	int n = snprintf(msg, sizeof msg, "json: %s at offset %u", wv_json_error_text(r->err), (unsigned)r->err_offset);
	return wv_fail(WV_STATUS_INVALID_INPUT, msg, (uint32_t)n);
}

/* The writer. */

void wv_json_writer_init(wv_json_writer *w) {
	memset(w, 0, sizeof *w);
}

static void jw_put(wv_json_writer *w, const void *p, uint32_t n) {
	if (w->failed) {
		return;
	}
	if (w->cap - w->len < n) {
		uint64_t want = (uint64_t)w->len + n, cap = w->cap ? w->cap : 64;
		while (cap < want) {
			cap *= 2;
		}
		uint8_t *b = cap > UINT32_MAX ? NULL : realloc(w->buf, (size_t)cap);
		if (!b) {
			w->failed = true;
			return;
		}
		w->buf = b;
		w->cap = (uint32_t)cap;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

static bool jw_in_object(const wv_json_writer *w) {
	return w->depth > 0 && ((w->objects >> (w->depth - 1)) & 1);
}

static bool jw_pre(wv_json_writer *w) {
	if (w->failed || w->done || w->want_key) {
		w->failed = true;
		return false;
	}
	if (w->depth > 0 && !jw_in_object(w) && !w->first) {
		jw_put(w, ",", 1);
	}
	w->first = false;
	return true;
}

static void jw_post(wv_json_writer *w) {
	if (w->depth == 0) {
		w->done = true;
	} else if (jw_in_object(w)) {
		w->want_key = true;
	}
}

static void jw_open(wv_json_writer *w, bool object) {
	if (!jw_pre(w)) {
		return;
	}
	if (w->depth == WV_JSON_MAX_DEPTH) {
		w->failed = true;
		return;
	}
	if (object) {
		w->objects |= (uint64_t)1 << w->depth;
	} else {
		w->objects &= ~((uint64_t)1 << w->depth);
	}
	w->depth++;
	jw_put(w, object ? "{" : "[", 1);
	w->first = true;
	w->want_key = object;
}

static void jw_close(wv_json_writer *w, bool object) {
	if (w->failed || w->depth == 0 || jw_in_object(w) != object || (object && !w->want_key)) {
		w->failed = true;
		return;
	}
	w->depth--;
	jw_put(w, object ? "}" : "]", 1);
	w->first = false;
	w->want_key = false;
	jw_post(w);
}

void wv_json_begin_object(wv_json_writer *w) { jw_open(w, true); }
void wv_json_end_object(wv_json_writer *w) { jw_close(w, true); }
void wv_json_begin_array(wv_json_writer *w) { jw_open(w, false); }
void wv_json_end_array(wv_json_writer *w) { jw_close(w, false); }

/* utf8_len returns the length of the valid UTF-8 sequence at the start of s (n > 0 bytes), or 0. */
static uint32_t utf8_len(const uint8_t *s, uint32_t n) {
	uint8_t c = s[0];
	uint32_t k;
	uint8_t lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF) {
		k = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		k = 3;
		if (c == 0xE0) lo = 0xA0;
		if (c == 0xED) hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		k = 4;
		if (c == 0xF0) lo = 0x90;
		if (c == 0xF4) hi = 0x8F;
	} else {
		return 0;
	}
	if (n < k || s[1] < lo || s[1] > hi) {
		return 0;
	}
	for (uint32_t i = 2; i < k; i++) {
		if (s[i] < 0x80 || s[i] > 0xBF) {
			return 0;
		}
	}
	return k;
}

static void jw_escape(wv_json_writer *w, wv_bytes s) {
	static const char hex[] = "0123456789abcdef";
	jw_put(w, "\"", 1);
	uint32_t i = 0, run = 0; /* run: the start of the bytes not yet written */
	while (i < s.len) {
		uint8_t c = s.ptr[i];
		const char *esc = NULL;
		char u[6];
		uint32_t k = 1;
		if (c < 0x80) {
			switch (c) {
			case '"': esc = "\\\""; break;
			case '\\': esc = "\\\\"; break;
			case '\n': esc = "\\n"; break;
			case '\r': esc = "\\r"; break;
			case '\t': esc = "\\t"; break;
			case '\b': esc = "\\b"; break;
			case '\f': esc = "\\f"; break;
			default:
				if (c < 0x20 || c == '<' || c == '>' || c == '&') {
					memcpy(u, "\\u00", 4);
					u[4] = hex[c >> 4];
					u[5] = hex[c & 15];
					esc = u;
				}
			}
		} else if ((k = utf8_len(s.ptr + i, s.len - i)) == 0) {
			esc = "\\ufffd";
			k = 1;
		} else if (k == 3 && c == 0xE2 && s.ptr[i + 1] == 0x80 && (s.ptr[i + 2] == 0xA8 || s.ptr[i + 2] == 0xA9)) {
			esc = s.ptr[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
		}
		if (esc) {
			jw_put(w, s.ptr + run, i - run);
			jw_put(w, esc, esc == u ? 6 : (uint32_t)strlen(esc));
			run = i + k;
		}
		i += k;
	}
	jw_put(w, s.ptr + run, s.len - run);
	jw_put(w, "\"", 1);
}

void wv_json_write_key(wv_json_writer *w, wv_bytes key) {
	if (w->failed || !w->want_key) {
		w->failed = true;
		return;
	}
	if (!w->first) {
		jw_put(w, ",", 1);
	}
	w->first = false;
	jw_escape(w, key);
	jw_put(w, ":", 1);
	w->want_key = false;
}

static void jw_raw(wv_json_writer *w, const void *p, uint32_t n) {
	if (jw_pre(w)) {
		jw_put(w, p, n);
		jw_post(w);
	}
}

void wv_json_write_string(wv_json_writer *w, wv_bytes s) {
	if (jw_pre(w)) {
		jw_escape(w, s);
		jw_post(w);
	}
}

void wv_json_write_int64(wv_json_writer *w, int64_t v) {
	char b[24];
	int n = snprintf(b, sizeof b, "%lld", (long long)v);
	jw_raw(w, b, (uint32_t)n);
}

void wv_json_write_uint64(wv_json_writer *w, uint64_t v) {
	char b[24];
	int n = snprintf(b, sizeof b, "%llu", (unsigned long long)v);
	jw_raw(w, b, (uint32_t)n);
}

void wv_json_write_double(wv_json_writer *w, double v) {
	if (!__builtin_isfinite(v)) {
		w->failed = true;
		return;
	}
	char b[32];
	int n = 0;
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(b, sizeof b, "%.*g", prec, v);
		if (strtod(b, NULL) == v) {
			break;
		}
	}
	jw_raw(w, b, (uint32_t)n);
}

void wv_json_write_number_text(wv_json_writer *w, wv_bytes text) {
	wv_json_reader r;
	wv_json_reader_init(&r, text);
	if (wv_json_next(&r, NULL) != WV_JSON_NUMBER || !wv_json_end(&r)) {
		w->failed = true;
		return;
	}
	jw_raw(w, text.ptr, text.len);
}

void wv_json_write_bool(wv_json_writer *w, bool v) {
	jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void wv_json_write_null(wv_json_writer *w) {
	jw_raw(w, "null", 4);
}

bool wv_json_writer_finish(wv_json_writer *w, wv_bytes *out) {
	if (w->failed || !w->done) {
		return false;
	}
	*out = wv_bytes_of(w->buf, w->len);
	return true;
}

void wv_json_writer_free(wv_json_writer *w) {
	free(w->buf);
	wv_json_writer_init(w);
}

bool wv_config_get_json(wv_config config, const char *key, wv_bytes *value) {
	return wv_config_get(config, key, value);
}

/*
 * wasmvisor.h: the C guest SDK for wasmvisor. It implements ABI v1 (abi/README.md) for
 * plugins written in C or C++ and built as WASI reactors:
 *
 *     clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wl,--strip-all -I sdk/c \
 *         -o plugin.wasm plugin.c sdk/c/wasmvisor.c
 *
 * The implementation is wasmvisor.c; compile it into every plugin. See README.md beside this
 * file for the toolchain, a complete plugin and the exact build flags.
 *
 * Register in wasmvisor_main
 * --------------------------
 * A plugin defines
 *
 *     void wasmvisor_main(void) { wv_handle("hello", hello); ... }
 *
 * and registers its handlers, callbacks and metrics there. The SDK calls it once, from the
 * wasmvisor_init export, before it fixes the handler list. (A function marked
 * __attribute__((constructor)) works too: constructors run in _initialize, which the host
 * calls before wasmvisor_init. wasmvisor_main is optional.) After wasmvisor_init, wv_handle
 * aborts: the host reads the handler list once.
 *
 * Errors and aborts
 * -----------------
 * A handler returns a status: WV_STATUS_OK (with an output set by wv_ok, wv_ok_copy or
 * wv_output_buffer + wv_ok, else an empty output), or an error made by wv_error,
 * wv_invalid_input, wv_errorf... which set the message and return the status. wv_abort(msg)
 * is the C "panic": the host's abort import traps the instance with kind "abort" and the
 * message, and the host replaces the instance. A plain C trap (abort(), __builtin_trap(), an
 * out-of-bounds access) ends the instance the same way, with the trap's own kind.
 *
 * Lifetimes
 * ---------
 * A wasm instance runs one export at a time on one thread, so nothing here is thread-safe
 * and nothing needs to be. Every wv_bytes the SDK hands out (a handler's input, config
 * values, a delivered topic and payload) points into SDK memory that is valid until the
 * handler or callback returns: copy what you keep.
 *
 * The header is plain C11 and also compiles as C++ (the declarations are extern "C").
 */
#ifndef WASMVISOR_H
#define WASMVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this SDK implements (the control block's version field). */
#define WV_ABI_VERSION 1

/* Status codes returned by handlers and callbacks, and by the SDK's exports to the host. */
typedef enum wv_status {
	WV_STATUS_OK = 0,
	WV_STATUS_ERROR = 1,
	WV_STATUS_UNKNOWN_HANDLER = 2,
	WV_STATUS_INVALID_INPUT = 3,
	WV_STATUS_CONFIG_REJECTED = 4,
	WV_STATUS_NO_MEMORY = 5
} wv_status;

/* A byte string that the SDK or the caller owns: ptr may be NULL when len is 0. */
typedef struct wv_bytes {
	const uint8_t *ptr;
	uint32_t len;
} wv_bytes;

/* wv_str views a NUL-terminated string (without the NUL) as bytes. */
static inline wv_bytes wv_str(const char *s) {
	wv_bytes b;
	b.ptr = (const uint8_t *)s;
	b.len = s ? (uint32_t)__builtin_strlen(s) : 0;
	return b;
}

/* wv_bytes_of views len bytes at ptr. */
static inline wv_bytes wv_bytes_of(const void *ptr, uint32_t len) {
	wv_bytes b;
	b.ptr = (const uint8_t *)ptr;
	b.len = len;
	return b;
}

/* ------------------------------------------------------------------------------------------
 * Handlers
 * ---------------------------------------------------------------------------------------- */

/* A handler gets its input (the SDK's input buffer, valid until it returns) and returns a
 * status. See "Output" below for how it sets its output or error message. */
typedef wv_status (*wv_handler)(wv_bytes input);

/* wv_handle registers fn under name. The handler list the host sees is the registration
 * order. It aborts if name does not match [A-Za-z0-9_.-]{1,64}, is already registered, if
 * fn is NULL, past 1024 handlers, or after wasmvisor_init (register in wasmvisor_main). */
void wv_handle(const char *name, wv_handler fn);

/* ------------------------------------------------------------------------------------------
 * Output. Each of these sets the output (or error message) of the current handler or
 * callback and returns the status to return from it, as in `return wv_ok(p, n);`. A handler
 * that returns WV_STATUS_OK without calling any of them has an empty output.
 * ---------------------------------------------------------------------------------------- */

/* wv_ok makes the len bytes at ptr the output, without copying: they must stay valid after
 * the handler returns (static data, the input, wv_output_buffer, a heap block the plugin
 * keeps; never the stack). Returns WV_STATUS_OK. */
wv_status wv_ok(const void *ptr, uint32_t len);

/* wv_ok_copy copies the len bytes at ptr into the SDK's output buffer and makes them the
 * output. Returns WV_STATUS_OK, or WV_STATUS_NO_MEMORY if the buffer cannot grow. */
wv_status wv_ok_copy(const void *ptr, uint32_t len);

/* wv_ok_str is wv_ok_copy of a NUL-terminated string. */
wv_status wv_ok_str(const char *s);

/* wv_output_buffer returns the SDK's output buffer, grown to at least len bytes, to build an
 * output in place and then return wv_ok(buf, n). Valid until the handler returns; NULL if it
 * cannot grow. Its previous contents are not kept. */
uint8_t *wv_output_buffer(uint32_t len);

/* wv_error sets msg (copied) as the error message and returns WV_STATUS_ERROR. */
wv_status wv_error(const char *msg);

/* wv_error_bytes is wv_error with a message of len bytes. */
wv_status wv_error_bytes(const void *msg, uint32_t len);

/* wv_errorf formats the message with vsnprintf and returns WV_STATUS_ERROR. */
wv_status wv_errorf(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* wv_invalid_input sets msg (copied) and returns WV_STATUS_INVALID_INPUT: use it when the
 * handler cannot decode its input. */
wv_status wv_invalid_input(const char *msg);

/* wv_reject sets msg (copied) and returns WV_STATUS_CONFIG_REJECTED: for config callbacks. */
wv_status wv_reject(const char *msg);

/* wv_fail sets the len-byte message at msg (copied) and returns status: the general form of
 * the functions above. */
wv_status wv_fail(wv_status status, const void *msg, uint32_t len);

/* ------------------------------------------------------------------------------------------
 * Config
 * ---------------------------------------------------------------------------------------- */

/* A config: a read-only view of its ABI encoding (u32 count, then count x (u32 key_len,
 * key, u32 value_len, value), keys unique and ascending). The SDK only hands out
 * well-formed ones. Keys and values are bytes; plugins usually treat them as UTF-8. */
typedef struct wv_config {
	const uint8_t *raw;
	uint32_t raw_len;
} wv_config;

/* wv_config_current returns the applied config: the empty config until the host's first
 * wasmvisor_configure. Valid until the current handler or callback returns. */
wv_config wv_config_current(void);

/* wv_config_get looks up the NUL-terminated key; on success sets *value (if value is not
 * NULL) to a view of its value and returns true. */
bool wv_config_get(wv_config config, const char *key, wv_bytes *value);

/* wv_config_get_bytes is wv_config_get with a key of any bytes. */
bool wv_config_get_bytes(wv_config config, wv_bytes key, wv_bytes *value);

/* wv_config_count returns the number of keys. */
uint32_t wv_config_count(wv_config config);

/* Iterating over the keys in ascending byte order:
 *
 *     wv_config_iter it = wv_config_iterate(config);
 *     wv_bytes key, value;
 *     while (wv_config_next(&it, &key, &value)) { ... }
 */
typedef struct wv_config_iter {
	wv_config config;
	uint32_t pos;  /* offset of the next entry in config.raw */
	uint32_t left; /* entries not yet returned */
} wv_config_iter;

wv_config_iter wv_config_iterate(wv_config config);
bool wv_config_next(wv_config_iter *it, wv_bytes *key, wv_bytes *value);

/* A config change callback gets the applied config and the new one. It returns WV_STATUS_OK
 * to accept, or anything else to reject the new config (return wv_reject("why")): the host
 * then gets WV_STATUS_CONFIG_REJECTED with that message, the old config stays, and the
 * remaining callbacks do not run. */
typedef wv_status (*wv_config_callback)(wv_config old_config, wv_config new_config);

/* wv_on_config_change registers fn. Callbacks run in registration order when
 * wasmvisor_configure brings a config that differs byte-wise from the applied one ("no config
 * yet" compares as the empty config, so a first empty config is not a change), before the new
 * config is applied. A malformed encoding is rejected with "malformed config" before any
 * callback runs. At most 64 callbacks. */
void wv_on_config_change(wv_config_callback fn);

/* ------------------------------------------------------------------------------------------
 * Events
 * ---------------------------------------------------------------------------------------- */

/* Defaults of the event ring: its number of slots and the largest event (topic + data) it
 * records. */
#define WV_DEFAULT_EVENT_CAPACITY 64
#define WV_DEFAULT_MAX_EVENT_SIZE 65536

/* wv_set_event_capacity sets the number of slots of the event ring (0: no ring, at most
 * 65536). Call it in wasmvisor_main before any wv_emit; it aborts once the ring exists. */
void wv_set_event_capacity(uint32_t slots);

/* wv_set_max_event_size sets the largest event (topic + data bytes) wv_emit records; a
 * larger one is refused and counted in the ring's dropped field. */
void wv_set_max_event_size(uint32_t bytes);

/* wv_emit records an event in the instance's event ring, which the host reads without
 * calling in. topic and data are copied. When the ring is full the oldest event is
 * overwritten. Returns false when the event was refused (too large, or no memory for its
 * copy: counted as dropped) or when there is no ring. */
bool wv_emit(wv_bytes topic, wv_bytes data);

/* Results of wv_publish: the host accepted the event, or dropped it (and counted it). */
#define WV_PUBLISH_ACCEPTED 0u
#define WV_PUBLISH_DROPPED 1u

/* wv_publish publishes an event on the host's bus through the publish import and returns
 * the host's answer: WV_PUBLISH_ACCEPTED or WV_PUBLISH_DROPPED. */
uint32_t wv_publish(wv_bytes topic, wv_bytes data);

/* An event callback gets a bus event delivered by the host (wasmvisor_deliver). Its status
 * is the delivery's status, as for a handler. */
typedef wv_status (*wv_event_callback)(wv_bytes topic, wv_bytes data);

/* wv_on_event registers fn. Callbacks run in registration order; the first that does not
 * return WV_STATUS_OK ends the delivery with its status. Without any callback a delivery
 * gets WV_STATUS_ERROR. A malformed delivery gets WV_STATUS_INVALID_INPUT "bad delivery".
 * At most 64 callbacks. */
void wv_on_event(wv_event_callback fn);

/* ------------------------------------------------------------------------------------------
 * Host functions: functions the embedding program offers by name and grants per plugin
 * (abi/README.md, "Host functions"). A plugin is granted none by default.
 * ---------------------------------------------------------------------------------------- */

/* What wv_host_call came to. */
typedef enum wv_host_outcome {
	WV_HOST_OK = 0,       /* the function ran: result->output is its output */
	WV_HOST_DENIED = 1,   /* the plugin was not granted name, or the host does not offer it
	                       * (the plugin cannot tell the two apart) */
	WV_HOST_FAILED = 2,   /* the function failed: result->status is the host's status (usually
	                       * WV_STATUS_ERROR) and result->output its error message */
	WV_HOST_NO_MEMORY = 3 /* no memory for the output: result->status is WV_STATUS_NO_MEMORY */
} wv_host_outcome;

/* The result of wv_host_call: the host's status (WV_STATUS_ERROR when denied) and the output
 * or error message (empty when denied or out of memory). */
typedef struct wv_host_result {
	wv_status status;
	wv_bytes output;
} wv_host_result;

/* wv_host_call calls the host function of the NUL-terminated name with input, and sets
 * *result (if result is not NULL). The SDK resolves a name once (host_fn) and caches its
 * handle for the instance's life, a denial too (the first 64 names; later ones are resolved
 * on every call). It then calls it (host_call) and copies the output into a block of the
 * size the host announced (host_result). result->output points into SDK memory that is valid
 * until the next wv_host_call: copy what you keep; returning it with wv_ok is fine. The
 * function runs under the call's deadline. */
wv_host_outcome wv_host_call(const char *name, wv_bytes input, wv_host_result *result);

/* wv_host_call_bytes is wv_host_call with a name of any bytes. */
wv_host_outcome wv_host_call_bytes(wv_bytes name, wv_bytes input, wv_host_result *result);

/* ------------------------------------------------------------------------------------------
 * Telemetry: metric records in guest memory, read by the host without calling in.
 * Declare metrics in wasmvisor_main (a later declaration still works). A declaration aborts
 * if the name does not match [a-zA-Z_][a-zA-Z0-9_]{0,63}, is already declared, or past 1024
 * metrics.
 * ---------------------------------------------------------------------------------------- */

typedef struct wv_counter { uint32_t index; } wv_counter;
typedef struct wv_gauge { uint32_t index; } wv_gauge;
typedef struct wv_histogram { uint32_t index; } wv_histogram;

/* A counter: a u64 that only goes up (wrapping at 2^64). */
wv_counter wv_counter_new(const char *name);
void wv_counter_add(wv_counter counter, uint64_t n);
void wv_counter_inc(wv_counter counter);

/* A gauge: an f64 that goes up and down. */
wv_gauge wv_gauge_new(const char *name);
void wv_gauge_set(wv_gauge gauge, double value);
void wv_gauge_add(wv_gauge gauge, double delta);

/* A histogram with count upper bounds (at most 64, finite, strictly ascending; a last +Inf
 * bucket is implicit; it aborts otherwise). The bounds are copied. */
wv_histogram wv_histogram_new(const char *name, const double *bounds, uint32_t count);
/* wv_histogram_observe counts v in the first bucket whose bound is >= v (else +Inf), and
 * adds v to the sum. */
void wv_histogram_observe(wv_histogram histogram, double v);

/* ------------------------------------------------------------------------------------------
 * Logging and aborting
 * ---------------------------------------------------------------------------------------- */

typedef enum wv_level {
	WV_LEVEL_DEBUG = 0,
	WV_LEVEL_INFO = 1,
	WV_LEVEL_WARN = 2,
	WV_LEVEL_ERROR = 3
} wv_level;

/* wv_log sends a NUL-terminated line to the host's logger. */
void wv_log(wv_level level, const char *msg);
/* wv_log_bytes sends msg.len bytes. */
void wv_log_bytes(wv_level level, wv_bytes msg);
/* wv_logf formats the line with vsnprintf. */
void wv_logf(wv_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* wv_abort never returns: the host's abort import ends the call with a trap of kind "abort"
 * and msg, and the instance is replaced. It is the SDK's panic. */
__attribute__((noreturn)) void wv_abort(const char *msg);
__attribute__((noreturn)) void wv_abort_bytes(wv_bytes msg);

/* ------------------------------------------------------------------------------------------
 * JSON (RFC 8259). A pull reader over a byte string that allocates nothing (tokens point into
 * the input), and a writer that builds compact JSON in a malloc'd buffer. See README.md, JSON.
 * ---------------------------------------------------------------------------------------- */

/* The deepest nesting of arrays and objects the reader and the writer accept. */
#define WV_JSON_MAX_DEPTH 64

typedef enum wv_json_type {
	WV_JSON_ERROR = 0,   /* malformed input (or a type asked for and not found): see err */
	WV_JSON_DONE,        /* after the top-level value, only whitespace follows */
	WV_JSON_BEGIN_OBJECT,
	WV_JSON_END_OBJECT,
	WV_JSON_BEGIN_ARRAY,
	WV_JSON_END_ARRAY,
	WV_JSON_KEY,         /* an object's key; the ':' after it is consumed */
	WV_JSON_STRING,
	WV_JSON_NUMBER,      /* text: the number as written, checked against the grammar */
	WV_JSON_TRUE,
	WV_JSON_FALSE,
	WV_JSON_NULL
} wv_json_type;

typedef enum wv_json_error {
	WV_JSON_OK = 0,
	WV_JSON_UNEXPECTED_END,    /* the input ended inside a value */
	WV_JSON_UNEXPECTED_BYTE,   /* a byte that cannot come here */
	WV_JSON_BAD_ESCAPE,        /* \x, \u12g4 */
	WV_JSON_CONTROL_IN_STRING, /* a byte below 0x20 inside a string */
	WV_JSON_BAD_NUMBER,        /* 01, 1., -, 1e */
	WV_JSON_TOO_DEEP,          /* deeper than WV_JSON_MAX_DEPTH */
	WV_JSON_TRAILING_DATA,     /* bytes after the top-level value */
	WV_JSON_WRONG_TYPE,        /* wv_json_expect found another token */
	WV_JSON_OUT_OF_RANGE,      /* wv_json_int64 / wv_json_double: not representable */
	WV_JSON_BAD_WRITE          /* a writer used out of order, a non-finite double, no memory */
} wv_json_error;

/* A token. For KEY and STRING, text is the bytes between the quotes with escapes still in
 * (escaped tells whether there are any); for NUMBER the number's text; else empty. */
typedef struct wv_json_token {
	wv_json_type type;
	wv_bytes text;
	bool escaped;
} wv_json_token;

/* A reader. Initialise it with wv_json_reader_init; the fields are private but for err and
 * err_offset, set when a call returns WV_JSON_ERROR (after which every call does). */
typedef struct wv_json_reader {
	wv_bytes in;
	uint32_t pos;
	uint32_t depth;
	uint64_t objects; /* bit d: the container at depth d+1 is an object */
	uint8_t expect;
	wv_json_error err;
	uint32_t err_offset;
} wv_json_reader;

void wv_json_reader_init(wv_json_reader *r, wv_bytes input);

/* wv_json_next reads the next token into *tok (tok may be NULL) and returns its type. */
wv_json_type wv_json_next(wv_json_reader *r, wv_json_token *tok);

/* wv_json_expect reads the next token and checks its type: false (err WV_JSON_WRONG_TYPE, or
 * the reader's own error) if it is another. Use it for '{', '[' and literals. */
bool wv_json_expect(wv_json_reader *r, wv_json_type type, wv_json_token *tok);

/* wv_json_key, inside an object: true with the next key in *key, false after consuming the
 * closing '}' or on error (check r->err). */
bool wv_json_key(wv_json_reader *r, wv_json_token *key);

/* wv_json_more, inside an array: true if another element follows, false after consuming the
 * closing ']' or on error (check r->err). */
bool wv_json_more(wv_json_reader *r);

/* wv_json_skip skips the next value, a whole array or object with its contents. */
bool wv_json_skip(wv_json_reader *r);

/* wv_json_end checks that only whitespace follows the top-level value. */
bool wv_json_end(wv_json_reader *r);

/* wv_json_int64 reads the next value as an integer (no fraction or exponent, in range). */
bool wv_json_int64(wv_json_reader *r, int64_t *v);

/* wv_json_double reads the next value as the nearest finite double (at most 256 bytes of text). */
bool wv_json_double(wv_json_reader *r, double *v);

/* wv_json_unescape writes the string token's value without escapes to dst (at most cap
 * bytes) and returns its length, which is never more than tok.text.len: a buffer of that size
 * always suffices. \u escapes of a lone surrogate become U+FFFD, as in Go's encoding/json. */
uint32_t wv_json_unescape(wv_json_token tok, uint8_t *dst, uint32_t cap);

/* wv_json_eq tells whether the string token's value equals the NUL-terminated s (a token with
 * escapes is unescaped into a scratch block from malloc; false if there is no memory). */
bool wv_json_eq(wv_json_token tok, const char *s);

/* wv_json_error_text names an error ("unexpected byte"). */
const char *wv_json_error_text(wv_json_error err);

/* wv_json_fail sets the handler's error to "json: <error> at offset <n>" and returns
 * WV_STATUS_INVALID_INPUT: `if (!wv_json_key(&r, &k) && r.err) return wv_json_fail(&r);` */
wv_status wv_json_fail(const wv_json_reader *r);

/* A writer: zero it (or wv_json_writer_init) and call the functions below; misuse (a value
 * where a key must come, an unclosed array, NaN, no memory) makes wv_json_writer_finish fail.
 * Strings are escaped as Go's encoding/json escapes them (<, >, &, U+2028, U+2029 too;
 * invalid UTF-8 becomes \ufffd). */
typedef struct wv_json_writer {
	uint8_t *buf; /* malloc'd */
	uint32_t len, cap;
	uint32_t depth;
	uint64_t objects;
	bool first, want_key, failed, done;
} wv_json_writer;

void wv_json_writer_init(wv_json_writer *w);
void wv_json_begin_object(wv_json_writer *w);
void wv_json_end_object(wv_json_writer *w);
void wv_json_begin_array(wv_json_writer *w);
void wv_json_end_array(wv_json_writer *w);
void wv_json_write_key(wv_json_writer *w, wv_bytes key);
void wv_json_write_string(wv_json_writer *w, wv_bytes s);
void wv_json_write_int64(wv_json_writer *w, int64_t v);
void wv_json_write_uint64(wv_json_writer *w, uint64_t v);
/* the shortest of %.15g, %.16g, %.17g that reads back as v */
void wv_json_write_double(wv_json_writer *w, double v);
/* a number's text, checked against the grammar (a reader's NUMBER token) */
void wv_json_write_number_text(wv_json_writer *w, wv_bytes text);
void wv_json_write_bool(wv_json_writer *w, bool v);
void wv_json_write_null(wv_json_writer *w);

/* wv_json_writer_finish sets *out to the JSON text (in w's buffer, valid until
 * wv_json_writer_free) and returns true, or false when the writer was misused or the value
 * is incomplete. */
bool wv_json_writer_finish(wv_json_writer *w, wv_bytes *out);
void wv_json_writer_free(wv_json_writer *w);

/* wv_config_get_json is wv_config_get for a value to read as JSON: a structured value of the
 * server config (a map, list, number or bool) arrives as its JSON text, a plain string as
 * itself. The text is not checked here: read it with wv_json_reader_init(&r, value). */
bool wv_config_get_json(wv_config config, const char *key, wv_bytes *value);

/* ------------------------------------------------------------------------------------------
 * The plugin's entry point
 * ---------------------------------------------------------------------------------------- */

/* wasmvisor_main, if the plugin defines it, is called once by wasmvisor_init, before the
 * handler list is fixed. Register handlers, callbacks and metrics there. */
void wasmvisor_main(void);

#ifdef __cplusplus
}
#endif

#endif /* WASMVISOR_H */

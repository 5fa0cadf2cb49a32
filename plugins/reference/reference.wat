;; wasmvisor reference plugin: the executable reference of wasmvisor ABI v1
;; (abi/README.md), written by hand in the WebAssembly text format.
;;
;; It implements the whole ABI with no language runtime in the way: every
;; byte the host reads is placed by the code below. Build with
;;
;;     wat2wasm reference.wat -o reference.wasm
;;
;; Features used: WebAssembly MVP plus bulk memory (memory.copy only).
;;
;; ---------------------------------------------------------------------------
;; Memory layout
;; ---------------------------------------------------------------------------
;;
;; The module starts with 2 pages (128 KiB) and declares no maximum (the host
;; sets the limit). Page 0 holds every static store at a fixed address; page 1
;; onwards is the input buffer. All addresses are also named by the immutable
;; globals below, so the code never uses a bare address.
;;
;;   0x0000 - 0x003F  unused, so that no store lives at address 0
;;   0x0040 - 0x007F  control block, 64 bytes                 $CONTROL_BLOCK
;;   0x0080 - 0x009F  event ring header, 32 bytes             $EVENT_RING
;;   0x00A0 - 0x012F  metric records, 3 x 48 bytes            $METRIC_RECORDS
;;                      0x00A0 counter   requests_total       $METRIC_REQUESTS_TOTAL
;;                      0x00D0 gauge     level                $METRIC_LEVEL
;;                      0x0100 histogram size                 $METRIC_SIZE
;;   0x0130 - 0x014F  histogram `size` bounds, 4 x f64        $SIZE_BOUNDS
;;   0x0150 - 0x0177  histogram `size` buckets, 5 x u64       $SIZE_BUCKETS
;;   0x0180 - 0x01AF  metric names (data segments)
;;   0x0200 - 0x0274  handler names, `\n`-separated, 117 bytes $HANDLER_NAMES
;;   0x0300 - 0x049F  constant strings: messages, the key `reject`, the
;;                    empty config `00 00 00 00`, and the prefixes of
;;                    `host_call`'s errors (data segments)
;;   0x0500 - 0x067F  event ring slots, 16 x 24 bytes         $EVENT_SLOTS
;;   0x0700 - 0x070B  WASI scratch: one iovec and `nwritten`   $WASI_IOVEC
;;   0x0780 - 0x079F  output area for decimal numbers, 32 B   $OUTPUT
;;   0x0800 - 0x08FF  marker storage, 256 bytes               $MARKER
;;   0x1000 - 0x1FFF  event topic+data copies, 16 x 256 bytes $EVENT_DATA
;;   0x2000 - 0x2FFF  applied config storage, 4096 bytes      $CONFIG
;;   0x3000 - 0xFFFF  unused
;;   0x10000 - end    input buffer                            $INPUT_BUFFER
;;
;; The input buffer is always the tail of memory: it starts at 0x10000 and
;; ends where memory ends, so `in_cap` = memory size - 0x10000. To make it
;; bigger, `wasmvisor_reserve` grows memory and adds the new pages to the
;; buffer in place; nothing moves (`host_call` uses it the same way for its
;; output, which it writes over its input once the host has copied it). Nothing else ever grows memory except the
;; `grow` handler, which never returns (it ends in a trap).
;;
;; Small pieces of state that the host never reads live in mutable globals:
;; the config change counter, the marker length, and the result of parsing a
;; number.
;;
;; Output: a handler's output is returned "in place" by pointing `out_ptr` at
;; wherever the bytes already are (the input buffer for `echo` and `fail`, the
;; config storage for `config_get`, the marker storage for `get`, a constant
;; string for messages). Only decimal numbers are formatted, into $OUTPUT. An
;; empty output is `out_ptr` = $OUTPUT, `out_len` = 0.

(module
  ;; -------------------------------------------------------------------------
  ;; Imports
  ;; -------------------------------------------------------------------------

  ;; wasmvisor.log(level, ptr, len): a log line. Levels: 0 debug .. 3 error.
  (import "wasmvisor" "log"
    (func $host_log (param $level i32) (param $ptr i32) (param $len i32)))

  ;; wasmvisor.publish(topic, data) -> 0 accepted, 1 dropped by the host.
  (import "wasmvisor" "publish"
    (func $host_publish
      (param $topic_ptr i32) (param $topic_len i32)
      (param $data_ptr i32) (param $data_len i32)
      (result i32)))

  ;; wasmvisor.abort(ptr, len): never returns; the call traps with kind `abort`.
  (import "wasmvisor" "abort"
    (func $host_abort (param $ptr i32) (param $len i32)))

  ;; Host functions (abi/README.md, "Host functions"):
  ;; wasmvisor.host_fn(name) -> handle, or -1 when not granted.
  (import "wasmvisor" "host_fn"
    (func $host_fn (param $name_ptr i32) (param $name_len i32) (result i32)))
  ;; wasmvisor.host_call(handle, input) -> status << 32 | out_len; the output pends.
  (import "wasmvisor" "host_call"
    (func $host_call (param $fn i32) (param $in_ptr i32) (param $in_len i32) (result i64)))
  ;; wasmvisor.host_result(dst, dst_len) -> bytes copied, or -1 when dst is too small.
  (import "wasmvisor" "host_result"
    (func $host_result (param $dst_ptr i32) (param $dst_len i32) (result i32)))

  ;; WASI fd_write(fd, iovs, iovs_len, nwritten_ptr) -> errno.
  (import "wasi_snapshot_preview1" "fd_write"
    (func $wasi_fd_write
      (param $fd i32) (param $iovs i32) (param $iovs_len i32) (param $nwritten i32)
      (result i32)))

  ;; WASI proc_exit(code): never returns.
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $wasi_proc_exit (param $code i32)))

  ;; -------------------------------------------------------------------------
  ;; Memory: 2 pages to start, no maximum.
  ;; -------------------------------------------------------------------------

  (memory (export "memory") 2)

  ;; -------------------------------------------------------------------------
  ;; Constants
  ;; -------------------------------------------------------------------------

  ;; Status codes.
  (global $STATUS_OK              i32 (i32.const 0))
  (global $STATUS_ERROR           i32 (i32.const 1))
  (global $STATUS_UNKNOWN_HANDLER i32 (i32.const 2))
  (global $STATUS_INVALID_INPUT   i32 (i32.const 3))
  (global $STATUS_CONFIG_REJECTED i32 (i32.const 4))
  (global $STATUS_NO_MEMORY       i32 (i32.const 5))

  ;; Control block identity.
  (global $MAGIC   i32 (i32.const 0x62617677)) ;; the bytes `w v a b`
  (global $VERSION i32 (i32.const 1))

  ;; Metric kinds.
  (global $KIND_COUNTER   i32 (i32.const 1))
  (global $KIND_GAUGE     i32 (i32.const 2))
  (global $KIND_HISTOGRAM i32 (i32.const 3))

  ;; Addresses and sizes of the stores (see the layout above).
  (global $CONTROL_BLOCK         i32 (i32.const 0x0040))
  (global $EVENT_RING            i32 (i32.const 0x0080))
  (global $METRIC_RECORDS        i32 (i32.const 0x00A0))
  (global $METRIC_COUNT          i32 (i32.const 3))
  (global $METRIC_REQUESTS_TOTAL i32 (i32.const 0x00A0))
  (global $METRIC_LEVEL          i32 (i32.const 0x00D0))
  (global $METRIC_SIZE           i32 (i32.const 0x0100))
  (global $SIZE_BOUNDS           i32 (i32.const 0x0130))
  (global $SIZE_BOUND_COUNT      i32 (i32.const 4))
  (global $SIZE_BUCKETS          i32 (i32.const 0x0150))
  (global $HANDLER_NAMES         i32 (i32.const 0x0200))
  (global $HANDLER_NAMES_LEN     i32 (i32.const 117))
  (global $EVENT_SLOTS           i32 (i32.const 0x0500))
  (global $EVENT_SLOT_COUNT      i32 (i32.const 16))
  (global $EVENT_SLOT_SIZE       i32 (i32.const 24))
  (global $WASI_IOVEC            i32 (i32.const 0x0700)) ;; {u32 buf, u32 buf_len}
  (global $WASI_NWRITTEN         i32 (i32.const 0x0708)) ;; u32
  (global $OUTPUT                i32 (i32.const 0x0780))
  (global $OUTPUT_SIZE           i32 (i32.const 32))
  (global $MARKER                i32 (i32.const 0x0800))
  (global $MARKER_CAP            i32 (i32.const 256))
  (global $EVENT_DATA            i32 (i32.const 0x1000))
  (global $EVENT_DATA_SIZE       i32 (i32.const 256))    ;; per slot
  (global $CONFIG                i32 (i32.const 0x2000))
  (global $CONFIG_CAP            i32 (i32.const 4096))
  (global $INPUT_BUFFER          i32 (i32.const 0x10000))
  (global $PAGE_SIZE             i32 (i32.const 65536))

  ;; Metric names.
  (global $NAME_REQUESTS_TOTAL     i32 (i32.const 0x0180))
  (global $NAME_REQUESTS_TOTAL_LEN i32 (i32.const 14))
  (global $NAME_LEVEL              i32 (i32.const 0x0190))
  (global $NAME_LEVEL_LEN          i32 (i32.const 5))
  (global $NAME_SIZE               i32 (i32.const 0x01A0))
  (global $NAME_SIZE_LEN           i32 (i32.const 4))

  ;; Constant strings: messages, the `reject` key, the empty config.
  (global $MSG_MISSING_KEY            i32 (i32.const 0x0300))
  (global $MSG_MISSING_KEY_LEN        i32 (i32.const 11))
  (global $MSG_BAD_NUMBER             i32 (i32.const 0x0320))
  (global $MSG_BAD_NUMBER_LEN         i32 (i32.const 10))
  (global $MSG_TOO_LONG               i32 (i32.const 0x0340))
  (global $MSG_TOO_LONG_LEN           i32 (i32.const 8))
  (global $MSG_MALFORMED_CONFIG       i32 (i32.const 0x0360))
  (global $MSG_MALFORMED_CONFIG_LEN   i32 (i32.const 16))
  (global $MSG_REJECTED_BY_PLUGIN     i32 (i32.const 0x0380))
  (global $MSG_REJECTED_BY_PLUGIN_LEN i32 (i32.const 18))
  (global $MSG_CONFIG_TOO_LARGE       i32 (i32.const 0x03A0))
  (global $MSG_CONFIG_TOO_LARGE_LEN   i32 (i32.const 16))
  (global $MSG_BAD_DELIVERY           i32 (i32.const 0x03C0))
  (global $MSG_BAD_DELIVERY_LEN       i32 (i32.const 12))
  (global $MSG_OUT_OF_MEMORY          i32 (i32.const 0x03E0))
  (global $MSG_OUT_OF_MEMORY_LEN      i32 (i32.const 13))
  (global $MSG_FAILED                 i32 (i32.const 0x0400))
  (global $MSG_FAILED_LEN             i32 (i32.const 6))
  (global $MSG_WRITE_FAILED           i32 (i32.const 0x0420))
  (global $MSG_WRITE_FAILED_LEN       i32 (i32.const 12))
  (global $MSG_INPUT_TOO_LARGE        i32 (i32.const 0x0440))
  (global $MSG_INPUT_TOO_LARGE_LEN    i32 (i32.const 30))
  (global $KEY_REJECT                 i32 (i32.const 0x0460))
  (global $KEY_REJECT_LEN             i32 (i32.const 6))
  (global $EMPTY_CONFIG               i32 (i32.const 0x0470))
  (global $EMPTY_CONFIG_LEN           i32 (i32.const 4))
  (global $MSG_DENIED_PREFIX          i32 (i32.const 0x0480)) ;; 8 bytes
  (global $MSG_FAILED_PREFIX          i32 (i32.const 0x0490)) ;; 8 bytes

  ;; -------------------------------------------------------------------------
  ;; Mutable state the host does not read
  ;; -------------------------------------------------------------------------

  ;; How many times the config change callback fired.
  (global $config_change_count (mut i64) (i64.const 0))
  ;; Length of the marker stored by `set` (0 = never set, or set to empty).
  (global $marker_len (mut i32) (i32.const 0))
  ;; The value of the last successful $parse_u64 / $parse_i64.
  (global $parsed_value (mut i64) (i64.const 0))

  ;; -------------------------------------------------------------------------
  ;; Static data
  ;; -------------------------------------------------------------------------

  ;; Metric names.
  (data (i32.const 0x0180) "requests_total")
  (data (i32.const 0x0190) "level")
  (data (i32.const 0x01A0) "size")

  ;; The handler list: handler i is the i-th name (no trailing newline).
  ;; The order here is the order of the dispatch in $wasmvisor_call.
  (data (i32.const 0x0200)
    "echo\n"            ;; 0
    "config_get\n"      ;; 1
    "config_changes\n"  ;; 2
    "emit\n"            ;; 3
    "publish\n"         ;; 4
    "count\n"           ;; 5
    "gauge\n"           ;; 6
    "observe\n"         ;; 7
    "fail\n"            ;; 8
    "trap\n"            ;; 9
    "loop\n"            ;; 10
    "grow\n"            ;; 11
    "set\n"             ;; 12
    "get\n"             ;; 13
    "exit\n"            ;; 14
    "log\n"             ;; 15
    "stdout\n"          ;; 16
    "host_call")        ;; 17

  ;; Constant strings.
  (data (i32.const 0x0300) "missing key")
  (data (i32.const 0x0320) "bad number")
  (data (i32.const 0x0340) "too long")
  (data (i32.const 0x0360) "malformed config")
  (data (i32.const 0x0380) "rejected by plugin")
  (data (i32.const 0x03A0) "config too large")
  (data (i32.const 0x03C0) "bad delivery")
  (data (i32.const 0x03E0) "out of memory")
  (data (i32.const 0x0400) "failed")
  (data (i32.const 0x0420) "write failed")
  (data (i32.const 0x0440) "input larger than input buffer")
  (data (i32.const 0x0460) "reject")
  (data (i32.const 0x0470) "\00\00\00\00") ;; the empty config: count = 0
  (data (i32.const 0x0480) "denied: ")
  (data (i32.const 0x0490) "failed: ")

  ;; =========================================================================
  ;; Small helpers
  ;; =========================================================================

  ;; Set the control block's out_ptr/out_len.
  (func $set_output (param $ptr i32) (param $len i32)
    (i32.store offset=16 (global.get $CONTROL_BLOCK) (local.get $ptr))
    (i32.store offset=20 (global.get $CONTROL_BLOCK) (local.get $len)))

  ;; Set out_ptr/out_len to ($ptr, $len) and return $status. Every export
  ;; returns through this (or $reply_ok_empty), so the output always matches
  ;; the status: the output for STATUS_OK, the message otherwise.
  (func $reply (param $status i32) (param $ptr i32) (param $len i32) (result i32)
    (call $set_output (local.get $ptr) (local.get $len))
    (local.get $status))

  ;; STATUS_OK with an empty output.
  (func $reply_ok_empty (result i32)
    (call $reply (global.get $STATUS_OK) (global.get $OUTPUT) (i32.const 0)))

  ;; STATUS_OK with the decimal ASCII form of the unsigned $value as output.
  ;; The digits are written backwards from the end of $OUTPUT (a u64 has at
  ;; most 20 digits; $OUTPUT has 32 bytes).
  (func $reply_decimal (param $value i64) (result i32)
    (local $end i32)
    (local $pos i32)
    (local.set $end (i32.add (global.get $OUTPUT) (global.get $OUTPUT_SIZE)))
    (local.set $pos (local.get $end))
    (loop $next_digit
      (local.set $pos (i32.sub (local.get $pos) (i32.const 1)))
      (i32.store8 (local.get $pos)
        (i32.add (i32.const 0x30) ;; '0'
          (i32.wrap_i64 (i64.rem_u (local.get $value) (i64.const 10)))))
      (local.set $value (i64.div_u (local.get $value) (i64.const 10)))
      (br_if $next_digit (i64.ne (local.get $value) (i64.const 0))))
    (call $reply (global.get $STATUS_OK)
      (local.get $pos) (i32.sub (local.get $end) (local.get $pos))))

  ;; The current input buffer address (in_ptr).
  (func $input_ptr (result i32)
    (i32.load offset=8 (global.get $CONTROL_BLOCK)))

  ;; The host promises to call wasmvisor_reserve before handing over an input
  ;; larger than in_cap. If it did not, the bytes were written past the
  ;; buffer: refuse to go on, by aborting with a message.
  (func $check_input_fits (param $in_len i32)
    (if (i32.gt_u (local.get $in_len)
                  (i32.load offset=12 (global.get $CONTROL_BLOCK))) ;; in_cap
      (then
        (call $host_abort (global.get $MSG_INPUT_TOO_LARGE)
                          (global.get $MSG_INPUT_TOO_LARGE_LEN))
        (unreachable))))

  ;; Compare two byte strings in byte order (like memcmp, a shorter prefix is
  ;; smaller). Returns -1, 0 or 1.
  (func $compare_bytes
    (param $a i32) (param $a_len i32) (param $b i32) (param $b_len i32)
    (result i32)
    (local $common_len i32)
    (local $i i32)
    (local $a_byte i32)
    (local $b_byte i32)
    (local.set $common_len
      (select (local.get $a_len) (local.get $b_len)
        (i32.lt_u (local.get $a_len) (local.get $b_len))))
    (block $done
      (loop $next_byte
        (br_if $done (i32.ge_u (local.get $i) (local.get $common_len)))
        (local.set $a_byte (i32.load8_u (i32.add (local.get $a) (local.get $i))))
        (local.set $b_byte (i32.load8_u (i32.add (local.get $b) (local.get $i))))
        (if (i32.lt_u (local.get $a_byte) (local.get $b_byte))
          (then (return (i32.const -1))))
        (if (i32.gt_u (local.get $a_byte) (local.get $b_byte))
          (then (return (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_byte)))
    (if (i32.lt_u (local.get $a_len) (local.get $b_len))
      (then (return (i32.const -1))))
    (if (i32.gt_u (local.get $a_len) (local.get $b_len))
      (then (return (i32.const 1))))
    (i32.const 0))

  ;; 1 if the two byte strings are identical, else 0.
  (func $bytes_equal
    (param $a i32) (param $a_len i32) (param $b i32) (param $b_len i32)
    (result i32)
    (i32.eqz (call $compare_bytes
      (local.get $a) (local.get $a_len) (local.get $b) (local.get $b_len))))

  ;; The index of the first `\n` in the $len bytes at $ptr, or $len if none.
  (func $index_of_newline (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next_byte
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eq (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))
                    (i32.const 0x0A)) ;; '\n'
          (then (return (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_byte)))
    (local.get $len))

  ;; Parse an unsigned decimal number: one or more ASCII digits `0`-`9` and
  ;; nothing else (no sign, no spaces), at most 2^64-1. Leading zeros are
  ;; allowed. On success stores the value in $parsed_value and returns 1;
  ;; otherwise returns 0.
  (func $parse_u64 (param $ptr i32) (param $len i32) (result i32)
    (local $end i32)
    (local $digit i32)
    (local $value i64)
    (if (i32.eqz (local.get $len))
      (then (return (i32.const 0))))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (loop $next_digit
      ;; A byte below '0' wraps around to a large unsigned number, so one
      ;; unsigned comparison rejects every non-digit.
      (local.set $digit (i32.sub (i32.load8_u (local.get $ptr)) (i32.const 0x30)))
      (if (i32.gt_u (local.get $digit) (i32.const 9))
        (then (return (i32.const 0))))
      ;; value * 10 + digit must not exceed 18446744073709551615.
      (if (i64.gt_u (local.get $value) (i64.const 1844674407370955161))
        (then (return (i32.const 0))))
      (if (i32.and
            (i64.eq (local.get $value) (i64.const 1844674407370955161))
            (i32.gt_u (local.get $digit) (i32.const 5)))
        (then (return (i32.const 0))))
      (local.set $value
        (i64.add (i64.mul (local.get $value) (i64.const 10))
                 (i64.extend_i32_u (local.get $digit))))
      (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
      (br_if $next_digit (i32.lt_u (local.get $ptr) (local.get $end))))
    (global.set $parsed_value (local.get $value))
    (i32.const 1))

  ;; Parse a signed decimal number: an optional `-` then what $parse_u64
  ;; accepts, within the i64 range [-2^63, 2^63-1]. No `+`. On success stores
  ;; the value in $parsed_value and returns 1; otherwise returns 0.
  (func $parse_i64 (param $ptr i32) (param $len i32) (result i32)
    (if (i32.and
          (i32.gt_u (local.get $len) (i32.const 0))
          (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x2D))) ;; '-'
      (then
        (if (i32.eqz (call $parse_u64
                       (i32.add (local.get $ptr) (i32.const 1))
                       (i32.sub (local.get $len) (i32.const 1))))
          (then (return (i32.const 0))))
        ;; The magnitude may be at most 2^63.
        (if (i64.gt_u (global.get $parsed_value) (i64.const 0x8000000000000000))
          (then (return (i32.const 0))))
        ;; 0 - 2^63 wraps to -2^63, which is exactly right.
        (global.set $parsed_value (i64.sub (i64.const 0) (global.get $parsed_value)))
        (return (i32.const 1))))
    (if (i32.eqz (call $parse_u64 (local.get $ptr) (local.get $len)))
      (then (return (i32.const 0))))
    (if (i64.gt_u (global.get $parsed_value) (i64.const 0x7FFFFFFFFFFFFFFF))
      (then (return (i32.const 0))))
    (i32.const 1))

  ;; =========================================================================
  ;; Stores: metrics, event ring, config
  ;; =========================================================================

  ;; Write one 48-byte metric record with zeroed values.
  (func $declare_metric
    (param $record i32) (param $name_ptr i32) (param $name_len i32)
    (param $kind i32) (param $bucket_count i32)
    (param $bounds_ptr i32) (param $buckets_ptr i32)
    (i32.store offset=0  (local.get $record) (local.get $name_ptr))
    (i32.store offset=4  (local.get $record) (local.get $name_len))
    (i32.store offset=8  (local.get $record) (local.get $kind))
    (i32.store offset=12 (local.get $record) (local.get $bucket_count))
    (i32.store offset=16 (local.get $record) (local.get $bounds_ptr))
    (i32.store offset=20 (local.get $record) (local.get $buckets_ptr))
    (i64.store offset=24 (local.get $record) (i64.const 0))   ;; value
    (f64.store offset=32 (local.get $record) (f64.const 0))   ;; sum
    (i64.store offset=40 (local.get $record) (i64.const 0)))  ;; reserved

  ;; Declare the three metrics: counter `requests_total`, gauge `level`,
  ;; histogram `size` with bounds [1, 10, 100, 1000].
  (func $declare_metrics
    (call $declare_metric (global.get $METRIC_REQUESTS_TOTAL)
      (global.get $NAME_REQUESTS_TOTAL) (global.get $NAME_REQUESTS_TOTAL_LEN)
      (global.get $KIND_COUNTER) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $declare_metric (global.get $METRIC_LEVEL)
      (global.get $NAME_LEVEL) (global.get $NAME_LEVEL_LEN)
      (global.get $KIND_GAUGE) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $declare_metric (global.get $METRIC_SIZE)
      (global.get $NAME_SIZE) (global.get $NAME_SIZE_LEN)
      (global.get $KIND_HISTOGRAM) (global.get $SIZE_BOUND_COUNT)
      (global.get $SIZE_BOUNDS) (global.get $SIZE_BUCKETS))
    ;; Upper bounds, strictly ascending.
    (f64.store offset=0  (global.get $SIZE_BOUNDS) (f64.const 1))
    (f64.store offset=8  (global.get $SIZE_BOUNDS) (f64.const 10))
    (f64.store offset=16 (global.get $SIZE_BOUNDS) (f64.const 100))
    (f64.store offset=24 (global.get $SIZE_BOUNDS) (f64.const 1000))
    ;; Per-bucket counts; the fifth bucket is +Inf.
    (i64.store offset=0  (global.get $SIZE_BUCKETS) (i64.const 0))
    (i64.store offset=8  (global.get $SIZE_BUCKETS) (i64.const 0))
    (i64.store offset=16 (global.get $SIZE_BUCKETS) (i64.const 0))
    (i64.store offset=24 (global.get $SIZE_BUCKETS) (i64.const 0))
    (i64.store offset=32 (global.get $SIZE_BUCKETS) (i64.const 0)))

  ;; Write the event ring header: 16 slots, nothing written or dropped yet.
  ;; Slot i's topic and data bytes are copied to $EVENT_DATA + i * 256.
  (func $declare_event_ring
    (i32.store offset=0  (global.get $EVENT_RING) (global.get $EVENT_SLOTS))
    (i32.store offset=4  (global.get $EVENT_RING) (global.get $EVENT_SLOT_COUNT))
    (i64.store offset=8  (global.get $EVENT_RING) (i64.const 0))   ;; written
    (i64.store offset=16 (global.get $EVENT_RING) (i64.const 0))   ;; dropped
    (i64.store offset=24 (global.get $EVENT_RING) (i64.const 0)))  ;; reserved

  ;; Record an event in the ring, copying its topic and data into the slot's
  ;; own 256-byte area. An event whose topic + data exceed 256 bytes is
  ;; refused and counted in `dropped`.
  ;;
  ;; Order of writes, so that a host reading the ring at any moment (even
  ;; after the instance was stopped half-way, e.g. by a deadline) never sees
  ;; a torn event:
  ;;   1. mark the slot invalid (seq = 0xFFFF_FFFF_FFFF_FFFF): the old event
  ;;      it held (seq - 16) stops being valid before its bytes are replaced;
  ;;   2. copy the bytes and write the pointers and lengths;
  ;;   3. write the slot's seq;
  ;;   4. increment `written`.
  (func $record_event
    (param $topic_ptr i32) (param $topic_len i32)
    (param $data_ptr i32) (param $data_len i32)
    (local $seq i64)
    (local $slot_index i32)
    (local $slot i32)
    (local $area i32)
    ;; topic_len + data_len > 256, written so that it cannot overflow.
    (if (i32.or
          (i32.gt_u (local.get $topic_len) (global.get $EVENT_DATA_SIZE))
          (i32.gt_u (local.get $data_len)
                    (i32.sub (global.get $EVENT_DATA_SIZE) (local.get $topic_len))))
      (then
        (i64.store offset=16 (global.get $EVENT_RING)              ;; dropped += 1
          (i64.add (i64.load offset=16 (global.get $EVENT_RING)) (i64.const 1)))
        (return)))
    (local.set $seq (i64.load offset=8 (global.get $EVENT_RING)))  ;; written
    (local.set $slot_index
      (i32.wrap_i64 (i64.rem_u (local.get $seq)
                               (i64.extend_i32_u (global.get $EVENT_SLOT_COUNT)))))
    (local.set $slot
      (i32.add (global.get $EVENT_SLOTS)
               (i32.mul (local.get $slot_index) (global.get $EVENT_SLOT_SIZE))))
    (local.set $area
      (i32.add (global.get $EVENT_DATA)
               (i32.mul (local.get $slot_index) (global.get $EVENT_DATA_SIZE))))
    ;; 1. invalidate
    (i64.store offset=0 (local.get $slot) (i64.const -1))
    ;; 2. copy topic then data, and describe them
    (memory.copy (local.get $area) (local.get $topic_ptr) (local.get $topic_len))
    (memory.copy (i32.add (local.get $area) (local.get $topic_len))
                 (local.get $data_ptr) (local.get $data_len))
    (i32.store offset=8  (local.get $slot) (local.get $area))        ;; topic_ptr
    (i32.store offset=12 (local.get $slot) (local.get $topic_len))   ;; topic_len
    (i32.store offset=16 (local.get $slot)                           ;; data_ptr
      (i32.add (local.get $area) (local.get $topic_len)))
    (i32.store offset=20 (local.get $slot) (local.get $data_len))    ;; data_len
    ;; 3. the slot is complete
    (i64.store offset=0 (local.get $slot) (local.get $seq))
    ;; 4. publish it to the host
    (i64.store offset=8 (global.get $EVENT_RING)
      (i64.add (local.get $seq) (i64.const 1))))

  ;; Check that the $len bytes at $ptr are a well-formed config:
  ;;   u32 count, then count x (u32 key_len, key, u32 value_len, value),
  ;; every length inside $len, keys strictly ascending in byte order (so also
  ;; unique), and no bytes left over. Returns 1 if well-formed, else 0.
  ;; `pos` is an offset from $ptr; every check compares a length with the
  ;; bytes remaining ($len - pos), so nothing can overflow.
  (func $config_is_well_formed (param $ptr i32) (param $len i32) (result i32)
    (local $count i32)
    (local $i i32)
    (local $pos i32)
    (local $key_ptr i32)
    (local $key_len i32)
    (local $value_len i32)
    (local $prev_key_ptr i32)
    (local $prev_key_len i32)
    (if (i32.lt_u (local.get $len) (i32.const 4))
      (then (return (i32.const 0))))
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $pos (i32.const 4))
    (block $done
      (loop $next_entry
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        ;; key
        (if (i32.lt_u (i32.sub (local.get $len) (local.get $pos)) (i32.const 4))
          (then (return (i32.const 0))))
        (local.set $key_len (i32.load (i32.add (local.get $ptr) (local.get $pos))))
        (local.set $pos (i32.add (local.get $pos) (i32.const 4)))
        (if (i32.gt_u (local.get $key_len) (i32.sub (local.get $len) (local.get $pos)))
          (then (return (i32.const 0))))
        (local.set $key_ptr (i32.add (local.get $ptr) (local.get $pos)))
        (local.set $pos (i32.add (local.get $pos) (local.get $key_len)))
        ;; keys strictly ascending
        (if (i32.gt_u (local.get $i) (i32.const 0))
          (then
            (if (i32.ge_s (call $compare_bytes
                            (local.get $prev_key_ptr) (local.get $prev_key_len)
                            (local.get $key_ptr) (local.get $key_len))
                          (i32.const 0))
              (then (return (i32.const 0))))))
        (local.set $prev_key_ptr (local.get $key_ptr))
        (local.set $prev_key_len (local.get $key_len))
        ;; value
        (if (i32.lt_u (i32.sub (local.get $len) (local.get $pos)) (i32.const 4))
          (then (return (i32.const 0))))
        (local.set $value_len (i32.load (i32.add (local.get $ptr) (local.get $pos))))
        (local.set $pos (i32.add (local.get $pos) (i32.const 4)))
        (if (i32.gt_u (local.get $value_len) (i32.sub (local.get $len) (local.get $pos)))
          (then (return (i32.const 0))))
        (local.set $pos (i32.add (local.get $pos) (local.get $value_len)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_entry)))
    ;; no trailing bytes
    (i32.eq (local.get $pos) (local.get $len)))

  ;; Look up a key in a well-formed config at $config. Returns the address of
  ;; the entry's u32 value_len (the value bytes follow it), or 0 if absent.
  (func $config_find_value
    (param $config i32) (param $key_ptr i32) (param $key_len i32)
    (result i32)
    (local $count i32)
    (local $i i32)
    (local $entry i32)
    (local $entry_key_len i32)
    (local $value_field i32)
    (local.set $count (i32.load (local.get $config)))
    (local.set $entry (i32.add (local.get $config) (i32.const 4)))
    (block $done
      (loop $next_entry
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $entry_key_len (i32.load (local.get $entry)))
        (local.set $value_field
          (i32.add (i32.add (local.get $entry) (i32.const 4)) (local.get $entry_key_len)))
        (if (call $bytes_equal
              (i32.add (local.get $entry) (i32.const 4)) (local.get $entry_key_len)
              (local.get $key_ptr) (local.get $key_len))
          (then (return (local.get $value_field))))
        ;; next entry: after the value_len field and the value bytes
        (local.set $entry
          (i32.add (i32.add (local.get $value_field) (i32.const 4))
                   (i32.load (local.get $value_field))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_entry)))
    (i32.const 0))

  ;; The config change callback: fired by wasmvisor_configure when the newly
  ;; applied config differs from the previous one.
  (func $on_config_change
    (global.set $config_change_count
      (i64.add (global.get $config_change_count) (i64.const 1))))

  ;; =========================================================================
  ;; Exports
  ;; =========================================================================

  ;; wasmvisor_init() -> control block address.
  ;; Fills in the control block and declares the metrics and the event ring.
  ;; Called once per instance.
  (func $wasmvisor_init (export "wasmvisor_init") (result i32)
    (local $cb i32)
    (local.set $cb (global.get $CONTROL_BLOCK))
    (i32.store offset=0  (local.get $cb) (global.get $MAGIC))
    (i32.store offset=4  (local.get $cb) (global.get $VERSION))
    ;; in_ptr / in_cap: the input buffer runs from 0x10000 to the end of memory.
    (i32.store offset=8  (local.get $cb) (global.get $INPUT_BUFFER))
    (i32.store offset=12 (local.get $cb)
      (i32.sub (i32.mul (memory.size) (global.get $PAGE_SIZE))
               (global.get $INPUT_BUFFER)))
    ;; out_ptr / out_len: empty.
    (i32.store offset=16 (local.get $cb) (global.get $OUTPUT))
    (i32.store offset=20 (local.get $cb) (i32.const 0))
    ;; handlers_ptr / handlers_len
    (i32.store offset=24 (local.get $cb) (global.get $HANDLER_NAMES))
    (i32.store offset=28 (local.get $cb) (global.get $HANDLER_NAMES_LEN))
    ;; config_ptr / config_len: 0/0, no config yet.
    (i32.store offset=32 (local.get $cb) (i32.const 0))
    (i32.store offset=36 (local.get $cb) (i32.const 0))
    ;; metrics_ptr / metrics_count
    (i32.store offset=40 (local.get $cb) (global.get $METRIC_RECORDS))
    (i32.store offset=44 (local.get $cb) (global.get $METRIC_COUNT))
    ;; events_ptr / flags / reserved
    (i32.store offset=48 (local.get $cb) (global.get $EVENT_RING))
    (i32.store offset=52 (local.get $cb) (i32.const 0))
    (i64.store offset=56 (local.get $cb) (i64.const 0))
    (call $declare_metrics)
    (call $declare_event_ring)
    (local.get $cb))

  ;; wasmvisor_reserve(size) -> status.
  ;; Make the input buffer at least $size bytes. The buffer is the tail of
  ;; memory, so growing memory by enough pages extends it in place.
  ;; STATUS_NO_MEMORY ("out of memory") if memory cannot grow.
  (func $wasmvisor_reserve (export "wasmvisor_reserve") (param $size i32) (result i32)
    (local $in_cap i32)
    (local $missing i32)
    (local $pages i32)
    (local.set $in_cap (i32.load offset=12 (global.get $CONTROL_BLOCK)))
    (if (i32.le_u (local.get $size) (local.get $in_cap))
      (then (return (call $reply_ok_empty))))
    ;; pages = ceil(missing / 65536), written so that it cannot overflow.
    (local.set $missing (i32.sub (local.get $size) (local.get $in_cap)))
    (local.set $pages
      (i32.add (i32.shr_u (local.get $missing) (i32.const 16))
               (i32.ne (i32.and (local.get $missing) (i32.const 0xFFFF)) (i32.const 0))))
    (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1))
      (then
        (return (call $reply (global.get $STATUS_NO_MEMORY)
                  (global.get $MSG_OUT_OF_MEMORY) (global.get $MSG_OUT_OF_MEMORY_LEN)))))
    (i32.store offset=12 (global.get $CONTROL_BLOCK)
      (i32.add (local.get $in_cap) (i32.mul (local.get $pages) (global.get $PAGE_SIZE))))
    (call $reply_ok_empty))

  ;; wasmvisor_call(handler, in_len) -> status.
  ;; Run handler number $handler on the $in_len bytes at in_ptr.
  (func $wasmvisor_call (export "wasmvisor_call")
    (param $handler i32) (param $in_len i32) (result i32)
    (local $in_ptr i32)
    (call $check_input_fits (local.get $in_len))
    (local.set $in_ptr (call $input_ptr))
    (if (i32.eq (local.get $handler) (i32.const 0))
      (then (return (call $handle_echo (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 1))
      (then (return (call $handle_config_get (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 2))
      (then (return (call $handle_config_changes (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 3))
      (then (return (call $handle_emit (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 4))
      (then (return (call $handle_publish (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 5))
      (then (return (call $handle_count (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 6))
      (then (return (call $handle_gauge (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 7))
      (then (return (call $handle_observe (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 8))
      (then (return (call $handle_fail (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 9))
      (then (return (call $handle_trap (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 10))
      (then (return (call $handle_loop (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 11))
      (then (return (call $handle_grow (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 12))
      (then (return (call $handle_set (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 13))
      (then (return (call $handle_get (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 14))
      (then (return (call $handle_exit (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 15))
      (then (return (call $handle_log (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 16))
      (then (return (call $handle_stdout (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eq (local.get $handler) (i32.const 17))
      (then (return (call $handle_host_call (local.get $in_ptr) (local.get $in_len)))))
    ;; Any other number (including negative ones seen as i32).
    (call $reply (global.get $STATUS_UNKNOWN_HANDLER) (global.get $OUTPUT) (i32.const 0)))

  ;; wasmvisor_configure(in_len) -> status.
  ;; Replace the config with the encoded config at in_ptr. In order:
  ;;   - malformed encoding           -> STATUS_CONFIG_REJECTED "malformed config"
  ;;   - contains the key `reject`    -> STATUS_CONFIG_REJECTED "rejected by plugin"
  ;;   - larger than 4096 bytes       -> STATUS_CONFIG_REJECTED "config too large"
  ;; A rejected config leaves the old one in place. Otherwise the bytes are
  ;; copied into $CONFIG, config_ptr/config_len point at them, and the change
  ;; callback fires if they differ byte-wise from the previous config ("no
  ;; config yet" compares as the empty config `00 00 00 00`).
  (func $wasmvisor_configure (export "wasmvisor_configure") (param $in_len i32) (result i32)
    (local $in_ptr i32)
    (local $old_ptr i32)
    (local $old_len i32)
    (local $changed i32)
    (call $check_input_fits (local.get $in_len))
    (local.set $in_ptr (call $input_ptr))
    (if (i32.eqz (call $config_is_well_formed (local.get $in_ptr) (local.get $in_len)))
      (then
        (return (call $reply (global.get $STATUS_CONFIG_REJECTED)
                  (global.get $MSG_MALFORMED_CONFIG) (global.get $MSG_MALFORMED_CONFIG_LEN)))))
    (if (call $config_find_value (local.get $in_ptr)
          (global.get $KEY_REJECT) (global.get $KEY_REJECT_LEN))
      (then
        (return (call $reply (global.get $STATUS_CONFIG_REJECTED)
                  (global.get $MSG_REJECTED_BY_PLUGIN) (global.get $MSG_REJECTED_BY_PLUGIN_LEN)))))
    (if (i32.gt_u (local.get $in_len) (global.get $CONFIG_CAP))
      (then
        (return (call $reply (global.get $STATUS_CONFIG_REJECTED)
                  (global.get $MSG_CONFIG_TOO_LARGE) (global.get $MSG_CONFIG_TOO_LARGE_LEN)))))
    ;; Compare with the previous config before overwriting it.
    (local.set $old_ptr (i32.load offset=32 (global.get $CONTROL_BLOCK)))
    (local.set $old_len (i32.load offset=36 (global.get $CONTROL_BLOCK)))
    (if (i32.eqz (local.get $old_ptr))
      (then
        (local.set $old_ptr (global.get $EMPTY_CONFIG))
        (local.set $old_len (global.get $EMPTY_CONFIG_LEN))))
    (local.set $changed
      (i32.eqz (call $bytes_equal (local.get $old_ptr) (local.get $old_len)
                                  (local.get $in_ptr) (local.get $in_len))))
    ;; Apply.
    (memory.copy (global.get $CONFIG) (local.get $in_ptr) (local.get $in_len))
    (i32.store offset=32 (global.get $CONTROL_BLOCK) (global.get $CONFIG))
    (i32.store offset=36 (global.get $CONTROL_BLOCK) (local.get $in_len))
    (if (local.get $changed)
      (then (call $on_config_change)))
    (call $reply_ok_empty))

  ;; wasmvisor_deliver(in_len) -> status.
  ;; Decode `u32 topic_len, topic, payload` at in_ptr and record it in the
  ;; event ring (topic = the delivered topic, data = the payload). A delivery
  ;; too large for a slot is counted in `dropped` and still STATUS_OK.
  ;; Malformed -> STATUS_INVALID_INPUT "bad delivery".
  (func $wasmvisor_deliver (export "wasmvisor_deliver") (param $in_len i32) (result i32)
    (local $in_ptr i32)
    (local $topic_len i32)
    (call $check_input_fits (local.get $in_len))
    (local.set $in_ptr (call $input_ptr))
    (if (i32.lt_u (local.get $in_len) (i32.const 4))
      (then
        (return (call $reply (global.get $STATUS_INVALID_INPUT)
                  (global.get $MSG_BAD_DELIVERY) (global.get $MSG_BAD_DELIVERY_LEN)))))
    (local.set $topic_len (i32.load (local.get $in_ptr)))
    (if (i32.gt_u (local.get $topic_len) (i32.sub (local.get $in_len) (i32.const 4)))
      (then
        (return (call $reply (global.get $STATUS_INVALID_INPUT)
                  (global.get $MSG_BAD_DELIVERY) (global.get $MSG_BAD_DELIVERY_LEN)))))
    (call $record_event
      (i32.add (local.get $in_ptr) (i32.const 4))                         ;; topic
      (local.get $topic_len)
      (i32.add (i32.add (local.get $in_ptr) (i32.const 4)) (local.get $topic_len)) ;; payload
      (i32.sub (i32.sub (local.get $in_len) (i32.const 4)) (local.get $topic_len)))
    (call $reply_ok_empty))

  ;; =========================================================================
  ;; Handlers: (in_ptr, in_len) -> status, output set through $reply
  ;; =========================================================================

  ;; 0 `echo`: output = input.
  (func $handle_echo (param $in_ptr i32) (param $in_len i32) (result i32)
    (call $reply (global.get $STATUS_OK) (local.get $in_ptr) (local.get $in_len)))

  ;; 1 `config_get`: input = a key; output = its value in the applied config.
  ;; Absent (or no config yet) -> STATUS_ERROR "missing key".
  (func $handle_config_get (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $config i32)
    (local $value_field i32)
    (local.set $config (i32.load offset=32 (global.get $CONTROL_BLOCK))) ;; config_ptr
    (if (i32.ne (local.get $config) (i32.const 0))
      (then
        (local.set $value_field
          (call $config_find_value (local.get $config) (local.get $in_ptr) (local.get $in_len)))))
    (if (i32.eqz (local.get $value_field))
      (then
        (return (call $reply (global.get $STATUS_ERROR)
                  (global.get $MSG_MISSING_KEY) (global.get $MSG_MISSING_KEY_LEN)))))
    (call $reply (global.get $STATUS_OK)
      (i32.add (local.get $value_field) (i32.const 4))   ;; value bytes
      (i32.load (local.get $value_field))))              ;; value_len

  ;; 2 `config_changes`: output = how many times the change callback fired,
  ;; in decimal ASCII.
  (func $handle_config_changes (param $in_ptr i32) (param $in_len i32) (result i32)
    (call $reply_decimal (global.get $config_change_count)))

  ;; 3 `emit`: input = topic `\n` payload (split at the first newline; with no
  ;; newline the whole input is the topic and the payload is empty). Records
  ;; the event in the ring. Output empty; a too-large event is counted in
  ;; `dropped` and still STATUS_OK.
  (func $handle_emit (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $topic_len i32)
    (local $data_start i32)
    (local.set $topic_len (call $index_of_newline (local.get $in_ptr) (local.get $in_len)))
    (local.set $data_start (local.get $in_len))                         ;; no newline
    (if (i32.lt_u (local.get $topic_len) (local.get $in_len))
      (then (local.set $data_start (i32.add (local.get $topic_len) (i32.const 1)))))
    (call $record_event
      (local.get $in_ptr) (local.get $topic_len)
      (i32.add (local.get $in_ptr) (local.get $data_start))
      (i32.sub (local.get $in_len) (local.get $data_start)))
    (call $reply_ok_empty))

  ;; 4 `publish`: input as for `emit`; calls wasmvisor.publish. Output = its
  ;; result in decimal ASCII (`0` accepted, `1` dropped).
  (func $handle_publish (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $topic_len i32)
    (local $data_start i32)
    (local $result i32)
    (local.set $topic_len (call $index_of_newline (local.get $in_ptr) (local.get $in_len)))
    (local.set $data_start (local.get $in_len))                         ;; no newline
    (if (i32.lt_u (local.get $topic_len) (local.get $in_len))
      (then (local.set $data_start (i32.add (local.get $topic_len) (i32.const 1)))))
    (local.set $result
      (call $host_publish
        (local.get $in_ptr) (local.get $topic_len)
        (i32.add (local.get $in_ptr) (local.get $data_start))
        (i32.sub (local.get $in_len) (local.get $data_start))))
    (call $reply_decimal (i64.extend_i32_u (local.get $result))))

  ;; 5 `count`: input = optional unsigned decimal (empty -> 1); adds it to the
  ;; counter `requests_total` (wrapping at 2^64). Output empty.
  ;; Malformed -> STATUS_INVALID_INPUT "bad number".
  (func $handle_count (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $amount i64)
    (local.set $amount (i64.const 1))
    (if (i32.ne (local.get $in_len) (i32.const 0))
      (then
        (if (i32.eqz (call $parse_u64 (local.get $in_ptr) (local.get $in_len)))
          (then
            (return (call $reply (global.get $STATUS_INVALID_INPUT)
                      (global.get $MSG_BAD_NUMBER) (global.get $MSG_BAD_NUMBER_LEN)))))
        (local.set $amount (global.get $parsed_value))))
    (i64.store offset=24 (global.get $METRIC_REQUESTS_TOTAL)             ;; value
      (i64.add (i64.load offset=24 (global.get $METRIC_REQUESTS_TOTAL))
               (local.get $amount)))
    (call $reply_ok_empty))

  ;; 6 `gauge`: input = signed decimal integer (i64); sets the gauge `level`
  ;; to it as an f64 (rounded to nearest). Output empty.
  ;; Malformed -> STATUS_INVALID_INPUT "bad number".
  (func $handle_gauge (param $in_ptr i32) (param $in_len i32) (result i32)
    (if (i32.eqz (call $parse_i64 (local.get $in_ptr) (local.get $in_len)))
      (then
        (return (call $reply (global.get $STATUS_INVALID_INPUT)
                  (global.get $MSG_BAD_NUMBER) (global.get $MSG_BAD_NUMBER_LEN)))))
    (f64.store offset=24 (global.get $METRIC_LEVEL)                      ;; value (f64 bits)
      (f64.convert_i64_s (global.get $parsed_value)))
    (call $reply_ok_empty))

  ;; 7 `observe`: input = unsigned decimal v; observes it in the histogram
  ;; `size`: the first bucket whose bound >= v, else the +Inf bucket; then
  ;; sum += v and count += 1. Output empty.
  ;; Malformed -> STATUS_INVALID_INPUT "bad number".
  (func $handle_observe (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $v f64)
    (local $bucket i32)
    (local $bucket_addr i32)
    (if (i32.eqz (call $parse_u64 (local.get $in_ptr) (local.get $in_len)))
      (then
        (return (call $reply (global.get $STATUS_INVALID_INPUT)
                  (global.get $MSG_BAD_NUMBER) (global.get $MSG_BAD_NUMBER_LEN)))))
    (local.set $v (f64.convert_i64_u (global.get $parsed_value)))
    ;; Find the bucket: stop at the first bound >= v; if none, $bucket ends
    ;; as 4, the +Inf bucket.
    (block $found
      (loop $next_bound
        (br_if $found (i32.ge_u (local.get $bucket) (global.get $SIZE_BOUND_COUNT)))
        (br_if $found
          (f64.le (local.get $v)
                  (f64.load (i32.add (global.get $SIZE_BOUNDS)
                                     (i32.mul (local.get $bucket) (i32.const 8))))))
        (local.set $bucket (i32.add (local.get $bucket) (i32.const 1)))
        (br $next_bound)))
    (local.set $bucket_addr
      (i32.add (global.get $SIZE_BUCKETS) (i32.mul (local.get $bucket) (i32.const 8))))
    (i64.store (local.get $bucket_addr)
      (i64.add (i64.load (local.get $bucket_addr)) (i64.const 1)))
    (f64.store offset=32 (global.get $METRIC_SIZE)                       ;; sum
      (f64.add (f64.load offset=32 (global.get $METRIC_SIZE)) (local.get $v)))
    (i64.store offset=24 (global.get $METRIC_SIZE)                       ;; value = count
      (i64.add (i64.load offset=24 (global.get $METRIC_SIZE)) (i64.const 1)))
    (call $reply_ok_empty))

  ;; 8 `fail`: STATUS_ERROR with the input as message, or "failed" if empty.
  (func $handle_fail (param $in_ptr i32) (param $in_len i32) (result i32)
    (if (i32.eqz (local.get $in_len))
      (then
        (return (call $reply (global.get $STATUS_ERROR)
                  (global.get $MSG_FAILED) (global.get $MSG_FAILED_LEN)))))
    (call $reply (global.get $STATUS_ERROR) (local.get $in_ptr) (local.get $in_len)))

  ;; 9 `trap`: executes `unreachable`.
  (func $handle_trap (param $in_ptr i32) (param $in_len i32) (result i32)
    (unreachable))

  ;; 10 `loop`: loops forever (until the host's deadline stops it).
  (func $handle_loop (param $in_ptr i32) (param $in_len i32) (result i32)
    (loop $forever
      (br $forever))
    (unreachable)) ;; never reached

  ;; 11 `grow`: a memory bomb. Grows memory 16 pages at a time until
  ;; memory.grow fails (returns -1), then executes `unreachable`.
  (func $handle_grow (param $in_ptr i32) (param $in_len i32) (result i32)
    (block $exhausted
      (loop $grow_more
        (br_if $exhausted (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
        (br $grow_more)))
    (unreachable))

  ;; 12 `set`: stores the input (at most 256 bytes) as the marker.
  ;; Longer -> STATUS_INVALID_INPUT "too long". Output empty.
  (func $handle_set (param $in_ptr i32) (param $in_len i32) (result i32)
    (if (i32.gt_u (local.get $in_len) (global.get $MARKER_CAP))
      (then
        (return (call $reply (global.get $STATUS_INVALID_INPUT)
                  (global.get $MSG_TOO_LONG) (global.get $MSG_TOO_LONG_LEN)))))
    (memory.copy (global.get $MARKER) (local.get $in_ptr) (local.get $in_len))
    (global.set $marker_len (local.get $in_len))
    (call $reply_ok_empty))

  ;; 13 `get`: output = the stored marker (empty if never set).
  (func $handle_get (param $in_ptr i32) (param $in_len i32) (result i32)
    (call $reply (global.get $STATUS_OK) (global.get $MARKER) (global.get $marker_len)))

  ;; 14 `exit`: input = unsigned decimal exit code (at most 2^32-1); calls
  ;; WASI proc_exit with it, which never returns.
  ;; Malformed -> STATUS_INVALID_INPUT "bad number".
  (func $handle_exit (param $in_ptr i32) (param $in_len i32) (result i32)
    (if (i32.or
          (i32.eqz (call $parse_u64 (local.get $in_ptr) (local.get $in_len)))
          (i64.gt_u (global.get $parsed_value) (i64.const 0xFFFFFFFF)))
      (then
        (return (call $reply (global.get $STATUS_INVALID_INPUT)
                  (global.get $MSG_BAD_NUMBER) (global.get $MSG_BAD_NUMBER_LEN)))))
    (call $wasi_proc_exit (i32.wrap_i64 (global.get $parsed_value)))
    (unreachable)) ;; proc_exit does not return

  ;; 15 `log`: calls wasmvisor.log with level 1 (info) and the input as the
  ;; message. Output empty.
  (func $handle_log (param $in_ptr i32) (param $in_len i32) (result i32)
    (call $host_log (i32.const 1) (local.get $in_ptr) (local.get $in_len))
    (call $reply_ok_empty))

  ;; 16 `stdout`: writes the input to fd 1 with WASI fd_write, repeating on
  ;; short writes until every byte is written. Output empty. An fd_write error
  ;; (for example when stdout is not granted), or a write that makes no
  ;; progress, -> STATUS_ERROR "write failed".
  (func $handle_stdout (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $done_len i32)
    (local $errno i32)
    (local $nwritten i32)
    (block $all_written
      (loop $write_more
        (br_if $all_written (i32.ge_u (local.get $done_len) (local.get $in_len)))
        ;; iovec = { buf: in_ptr + done_len, buf_len: in_len - done_len }
        (i32.store offset=0 (global.get $WASI_IOVEC)
          (i32.add (local.get $in_ptr) (local.get $done_len)))
        (i32.store offset=4 (global.get $WASI_IOVEC)
          (i32.sub (local.get $in_len) (local.get $done_len)))
        (local.set $errno
          (call $wasi_fd_write
            (i32.const 1)                ;; fd: stdout
            (global.get $WASI_IOVEC)     ;; iovs
            (i32.const 1)                ;; iovs_len
            (global.get $WASI_NWRITTEN))) ;; nwritten: where to store the count
        (local.set $nwritten (i32.load (global.get $WASI_NWRITTEN)))
        (if (i32.or (i32.ne (local.get $errno) (i32.const 0))
                    (i32.eqz (local.get $nwritten)))
          (then
            (return (call $reply (global.get $STATUS_ERROR)
                      (global.get $MSG_WRITE_FAILED) (global.get $MSG_WRITE_FAILED_LEN)))))
        (local.set $done_len (i32.add (local.get $done_len) (local.get $nwritten)))
        (br $write_more)))
    (call $reply_ok_empty))

  ;; 17 `host_call`: input = a host function's name `\n` its input (split at
  ;; the first newline; no newline: the input is empty). Calls the function;
  ;; output = its output. Not granted -> STATUS_ERROR "denied: <name>"; the
  ;; function failed -> STATUS_ERROR "failed: <message>". The output is built
  ;; at the start of the input buffer (the host copied the input during
  ;; host_call), 8 bytes in, after room for either prefix; the buffer grows as
  ;; for an input.
  (func $handle_host_call (param $in_ptr i32) (param $in_len i32) (result i32)
    (local $name_len i32)
    (local $data_start i32)
    (local $fn i32)
    (local $r i64)
    (local $n i32)
    (local $st i32)
    (local.set $name_len (call $index_of_newline (local.get $in_ptr) (local.get $in_len)))
    (local.set $data_start (local.get $in_len))                         ;; no newline
    (if (i32.lt_u (local.get $name_len) (local.get $in_len))
      (then (local.set $data_start (i32.add (local.get $name_len) (i32.const 1)))))
    (local.set $fn (call $host_fn (local.get $in_ptr) (local.get $name_len)))
    (if (i32.lt_s (local.get $fn) (i32.const 0))
      (then
        ;; "denied: " + the name, in place: the name moves up 8 bytes.
        (local.set $st (call $ensure_input_cap (i32.add (local.get $name_len) (i32.const 8))))
        (if (local.get $st) (then (return (local.get $st))))
        (memory.copy (i32.add (local.get $in_ptr) (i32.const 8)) (local.get $in_ptr) (local.get $name_len))
        (memory.copy (local.get $in_ptr) (global.get $MSG_DENIED_PREFIX) (i32.const 8))
        (return (call $reply (global.get $STATUS_ERROR)
                  (local.get $in_ptr) (i32.add (local.get $name_len) (i32.const 8))))))
    (local.set $r (call $host_call (local.get $fn)
      (i32.add (local.get $in_ptr) (local.get $data_start))
      (i32.sub (local.get $in_len) (local.get $data_start))))
    (local.set $n (i32.wrap_i64 (local.get $r)))
    (local.set $st (call $ensure_input_cap (i32.add (local.get $n) (i32.const 8))))
    (if (local.get $st) (then (return (local.get $st))))
    (if (i32.ne (call $host_result (i32.add (local.get $in_ptr) (i32.const 8)) (local.get $n))
                (local.get $n))
      (then (unreachable)))                                             ;; the host broke the ABI
    (if (i64.eqz (i64.shr_u (local.get $r) (i64.const 32)))
      (then
        (return (call $reply (global.get $STATUS_OK)
                  (i32.add (local.get $in_ptr) (i32.const 8)) (local.get $n)))))
    (memory.copy (local.get $in_ptr) (global.get $MSG_FAILED_PREFIX) (i32.const 8))
    (call $reply (global.get $STATUS_ERROR) (local.get $in_ptr) (i32.add (local.get $n) (i32.const 8))))

  ;; Make the input buffer hold at least $size bytes, as wasmvisor_reserve
  ;; does for the host. Returns 0, or wasmvisor_reserve's status (its reply,
  ;; STATUS_NO_MEMORY "out of memory", is then already set).
  (func $ensure_input_cap (param $size i32) (result i32)
    (if (i32.le_u (local.get $size) (i32.load offset=12 (global.get $CONTROL_BLOCK)))
      (then (return (i32.const 0))))
    (call $wasmvisor_reserve (local.get $size)))
)

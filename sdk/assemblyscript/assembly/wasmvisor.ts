// wasmvisor AssemblyScript guest SDK: implements ABI v1 (abi/README.md).
//
// A plugin imports the API from this file and re-exports the ABI from
// `exports.ts`; see ../README.md for the build flags (--exportStart
// _initialize, --use abort=<this file>/wasmvisorAbort).
//
// Memory: every byte the host reads is in one of three places:
//   - static memory (memory.data): the control block, the event ring header,
//     the abort scratch buffer;
//   - managed ArrayBuffers referenced from module-level variables: the last
//     output, the handler list, the applied config, the ring slots and the
//     bytes of each event, the metric records with their names, bounds and
//     buckets. Module-level variables are GC roots and the AssemblyScript
//     collectors never move objects, so these addresses stay valid for as
//     long as the SDK references them, under every runtime (incremental,
//     minimal, stub);
//   - the input buffer: pages the SDK adds with memory.grow at the end of
//     memory, outside the allocator's heap (the allocator adds its later
//     pages after them). It grows in place while it is the last thing in
//     memory, like the reference plugin's, so a failed memory.grow is a
//     STATUS_NO_MEMORY answer from wasmvisor_reserve, never a trap.

// ---------------------------------------------------------------------------
// Imports
// ---------------------------------------------------------------------------

// @ts-ignore: decorator
@external("wasmvisor", "log")
declare function hostLog(level: i32, ptr: usize, len: usize): void;

// @ts-ignore: decorator
@external("wasmvisor", "publish")
declare function hostPublish(topicPtr: usize, topicLen: usize, dataPtr: usize, dataLen: usize): u32;

// @ts-ignore: decorator
@external("wasmvisor", "abort")
declare function hostAbort(ptr: usize, len: usize): void;

// @ts-ignore: decorator
@external("wasmvisor", "host_fn")
declare function hostFnImport(namePtr: usize, nameLen: usize): i32;

// @ts-ignore: decorator
@external("wasmvisor", "host_call")
declare function hostCallImport(fn: i32, inPtr: usize, inLen: usize): u64;

// @ts-ignore: decorator
@external("wasmvisor", "host_result")
declare function hostResultImport(dstPtr: usize, dstLen: usize): i32;

// ---------------------------------------------------------------------------
// ABI constants
// ---------------------------------------------------------------------------

/** The status codes of ABI v1, returned by every wasmvisor_* export. */
export enum Status {
  OK = 0,
  ERROR = 1,
  UNKNOWN_HANDLER = 2,
  INVALID_INPUT = 3,
  CONFIG_REJECTED = 4,
  NO_MEMORY = 5,
}

/** Log levels of the log import. */
export enum Level {
  Debug = 0,
  Info = 1,
  Warn = 2,
  Error = 3,
}

const MAGIC: u32 = 0x62617677; // the bytes `w v a b`
const VERSION: u32 = 1;

// Control block offsets.
const CTRL_SIZE = 64;
const CTRL_MAGIC = 0;
const CTRL_VERSION = 4;
const CTRL_IN_PTR = 8;
const CTRL_IN_CAP = 12;
const CTRL_OUT_PTR = 16;
const CTRL_OUT_LEN = 20;
const CTRL_HANDLERS_PTR = 24;
const CTRL_HANDLERS_LEN = 28;
const CTRL_CONFIG_PTR = 32;
const CTRL_CONFIG_LEN = 36;
const CTRL_METRICS_PTR = 40;
const CTRL_METRICS_COUNT = 44;
const CTRL_EVENTS_PTR = 48;

// Event ring.
const RING_SIZE = 32;
const RING_SLOTS_PTR = 0;
const RING_SLOT_COUNT = 4;
const RING_WRITTEN = 8;
const RING_DROPPED = 16;
const SLOT_SIZE = 24;
const SLOT_SEQ = 0;
const SLOT_TOPIC_PTR = 8;
const SLOT_TOPIC_LEN = 12;
const SLOT_DATA_PTR = 16;
const SLOT_DATA_LEN = 20;
const MAX_SLOTS = 1 << 16;

// Metric records.
const METRIC_SIZE = 48;
const METRIC_NAME_PTR = 0;
const METRIC_NAME_LEN = 4;
const METRIC_KIND = 8;
const METRIC_BUCKET_COUNT = 12;
const METRIC_BOUNDS_PTR = 16;
const METRIC_BUCKETS_PTR = 20;
const METRIC_VALUE = 24;
const METRIC_SUM = 32;
const KIND_COUNTER: u32 = 1;
const KIND_GAUGE: u32 = 2;
const KIND_HISTOGRAM: u32 = 3;
const MAX_BUCKETS = 64;
const MAX_METRICS = 1024;
const MAX_NAME = 64;
const MAX_HANDLERS = 1024;


// The input buffer lives past the allocator's heap; the stub runtime's bump
// allocator would hand out those pages, the TLSF allocator of the incremental
// and minimal runtimes does not.
// @ts-ignore: ASC_RUNTIME is a compiler constant
if (ASC_RUNTIME == 0) ERROR("the wasmvisor SDK needs --runtime incremental (the default) or minimal");

/** Slots of the event ring unless setEventCapacity says otherwise. */
export const DEFAULT_EVENT_CAPACITY = 64;
/** Bound on topic + data of an event unless setMaxEventSize says otherwise. */
export const DEFAULT_MAX_EVENT_SIZE = 64 << 10;

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

// Static memory: fixed addresses for the life of the instance.
const ctrl: usize = memory.data(CTRL_SIZE, 8);
const ringHdr: usize = memory.data(RING_SIZE, 8);
const ABORT_SCRATCH_SIZE = 1024;
const abortScratch: usize = memory.data(ABORT_SCRATCH_SIZE);

class HandlerEntry {
  constructor(public name: string, public fn: (input: Uint8Array) => Result) {}
}

let initDone = false;
const handlers = new Array<HandlerEntry>();
let handlerNames: ArrayBuffer = new ArrayBuffer(0);
let inPtr: usize = 0; // input buffer: pages outside the heap
let inCap: usize = 0;
let lastOut: Uint8Array | null = null; // keeps the output alive until the next export

let applied: ConfigView | null = null; // null: no config yet
const configCallbacks = new Array<(old: ConfigView, next: ConfigView) => string | null>();
const eventCallbacks = new Array<(event: Delivery) => Result>();

let eventCapacity: i32 = DEFAULT_EVENT_CAPACITY;
let maxEventSize: i32 = DEFAULT_MAX_EVENT_SIZE;
let ringReady = false;
let ringSlots: ArrayBuffer = new ArrayBuffer(0);
let ringHeld: StaticArray<ArrayBuffer | null> = new StaticArray<ArrayBuffer | null>(0);

let metricRecs: ArrayBuffer = new ArrayBuffer(0); // capacity; metricList.length are in use
const metricList = new Array<Metric>();

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

@inline function addr(buf: ArrayBuffer): usize {
  return changetype<usize>(buf);
}

/** Returns n zeroed bytes whose address is 8-aligned (AssemblyScript allocations are 16-aligned). */
function alignedBuffer(n: i32): ArrayBuffer {
  const b = new ArrayBuffer(n);
  if ((addr(b) & 7) != 0) fatal("wasmvisor: misaligned allocation");
  return b;
}

function utf8(s: string): ArrayBuffer {
  return String.UTF8.encode(s);
}

/** Decodes UTF-8 bytes (a handler's input, a config value, ...) into a string. */
export function textOf(bytes: Uint8Array): string {
  return String.UTF8.decodeUnsafe(bytes.dataStart, bytes.length);
}

/** Byte-wise comparison, like memcmp with the shorter prefix smaller: -1, 0 or 1. */
function compareBytes(a: usize, aLen: usize, b: usize, bLen: usize): i32 {
  const n = aLen < bLen ? aLen : bLen;
  const c = memory.compare(a, b, n);
  if (c != 0) return c < 0 ? -1 : 1;
  if (aLen < bLen) return -1;
  if (aLen > bLen) return 1;
  return 0;
}

/** Appends the UTF-8 form of s to the abort scratch buffer at pos; returns the new position. */
function scratchAppend(pos: usize, s: string): usize {
  const end = abortScratch + ABORT_SCRATCH_SIZE;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    let c = <u32>s.charCodeAt(i);
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < n) {
      const d = <u32>s.charCodeAt(i + 1);
      if (d >= 0xDC00 && d < 0xE000) {
        c = 0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00);
        i++;
      }
    }
    if (c >= 0xD800 && c < 0xE000) c = 0xFFFD; // a lone surrogate
    const width: usize = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (pos + width > end) break;
    if (width == 1) {
      store<u8>(pos, c);
    } else if (width == 2) {
      store<u8>(pos, 0xC0 | (c >> 6));
      store<u8>(pos + 1, 0x80 | (c & 63));
    } else if (width == 3) {
      store<u8>(pos, 0xE0 | (c >> 12));
      store<u8>(pos + 1, 0x80 | ((c >> 6) & 63));
      store<u8>(pos + 2, 0x80 | (c & 63));
    } else {
      store<u8>(pos, 0xF0 | (c >> 18));
      store<u8>(pos + 1, 0x80 | ((c >> 12) & 63));
      store<u8>(pos + 2, 0x80 | ((c >> 6) & 63));
      store<u8>(pos + 3, 0x80 | (c & 63));
    }
    pos += width;
  }
  return pos;
}

function scratchAppendU32(pos: usize, v: u32): usize {
  let digits: usize = 1;
  for (let t = v; t >= 10; t /= 10) digits++;
  if (pos + digits > abortScratch + ABORT_SCRATCH_SIZE) return pos;
  let p = pos + digits;
  do {
    p--;
    store<u8>(p, 0x30 + (v % 10));
    v /= 10;
  } while (v != 0);
  return pos + digits;
}

/**
 * The AssemblyScript abort function of a wasmvisor plugin: build with
 * `--use abort=<path of this file without .ts>/wasmvisorAbort` so that
 * `abort()`, `throw` and failed assertions trap the instance through the
 * `wasmvisor.abort` import with the message `<message> at <file>:<line>:<column>`.
 * It allocates nothing, so it also works when the heap is exhausted.
 */
export function wasmvisorAbort(
  message: string | null = null,
  fileName: string | null = null,
  lineNumber: u32 = 0,
  columnNumber: u32 = 0,
): void {
  let pos = scratchAppend(abortScratch, message !== null ? message : "abort");
  if (fileName !== null) {
    pos = scratchAppend(pos, " at ");
    pos = scratchAppend(pos, fileName);
    pos = scratchAppend(pos, ":");
    pos = scratchAppendU32(pos, lineNumber);
    pos = scratchAppend(pos, ":");
    pos = scratchAppendU32(pos, columnNumber);
  }
  hostAbort(abortScratch, pos - abortScratch);
  unreachable();
}

/** Traps the instance through the abort import with msg (for misuse of the SDK). */
function fatal(msg: string): void {
  const end = scratchAppend(abortScratch, msg);
  hostAbort(abortScratch, end - abortScratch);
  unreachable();
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/**
 * What a handler (or an event callback) returns: a status and its output,
 * which for a status other than OK is the UTF-8 error message.
 */
export class Result {
  private constructor(public readonly status: Status, public readonly output: Uint8Array | null) {}

  /** STATUS_OK with output (null or omitted: empty). The bytes are handed to the host as is: do not modify them afterwards. */
  static ok(output: Uint8Array | null = null): Result {
    return new Result(Status.OK, output);
  }

  /** STATUS_OK with the UTF-8 encoding of s as output. */
  static text(s: string): Result {
    return new Result(Status.OK, Uint8Array.wrap(utf8(s)));
  }

  /** STATUS_ERROR with message. */
  static error(message: string): Result {
    return new Result(Status.ERROR, Uint8Array.wrap(utf8(message)));
  }

  /** STATUS_ERROR with message given as (UTF-8) bytes. */
  static errorBytes(message: Uint8Array): Result {
    return new Result(Status.ERROR, message);
  }

  /** STATUS_INVALID_INPUT with message: the input could not be decoded. */
  static invalidInput(message: string): Result {
    return new Result(Status.INVALID_INPUT, Uint8Array.wrap(utf8(message)));
  }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

function validHandlerName(s: string): bool {
  const n = s.length;
  if (n == 0 || n > MAX_NAME) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) ||
      c == 0x5F || c == 0x2E || c == 0x2D; // _ . -
    if (!ok) return false;
  }
  return true;
}

/**
 * Registers handler fn under name. The handler list the host sees is the
 * registration order. Call it from top-level statements (they run in
 * `_initialize`): wasmvisor_init fixes the list. Traps on an invalid
 * (`[A-Za-z0-9_.-]{1,64}`) or duplicate name, or after wasmvisor_init.
 *
 * The input is a view of the SDK's input buffer, valid only until fn returns:
 * copy (`input.slice()`) what you keep. It lies outside the heap, so
 * `input.buffer` and `input.byteOffset` do not describe it: use the element
 * methods, `input.dataStart`/`input.length`, or `textOf(input)`.
 */
export function handle(name: string, fn: (input: Uint8Array) => Result): void {
  if (initDone) fatal("wasmvisor: handle(\"" + name + "\") after wasmvisor_init: the handler list is fixed; register handlers at top level");
  if (!validHandlerName(name)) fatal("wasmvisor: handle(\"" + name + "\"): a handler name must match [A-Za-z0-9_.-]{1,64}");
  if (handlers.length >= MAX_HANDLERS) fatal("wasmvisor: handle(\"" + name + "\"): too many handlers");
  for (let i = 0; i < handlers.length; i++) {
    if (handlers[i].name == name) fatal("wasmvisor: handle(\"" + name + "\"): duplicate handler name");
  }
  handlers.push(new HandlerEntry(name, fn));
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/**
 * An immutable view of a config: keys to values, both UTF-8 byte strings,
 * keys in ascending byte order. A new config is a new view.
 */
export class ConfigView {
  // raw is the config's ABI encoding; entry i is described by
  // offs[4i..4i+3] = key offset, key length, value offset, value length.
  private constructor(private raw: ArrayBuffer, private offs: StaticArray<u32>) {}

  /** The number of keys. */
  get size(): i32 {
    return this.offs.length >> 2;
  }

  /** The length in bytes of the config's ABI encoding. */
  get encodedLength(): i32 {
    return this.raw.byteLength;
  }

  /** The value of key as bytes (a view: do not modify it), or null when key is not set. */
  find(key: Uint8Array): Uint8Array | null {
    return this.findRaw(key.dataStart, key.length);
  }

  /** The value of key as bytes (a view: do not modify it), or null when key is not set. */
  getBytes(key: string): Uint8Array | null {
    const k = utf8(key);
    return this.findRaw(addr(k), k.byteLength);
  }

  /**
   * The value of key to read as JSON (a view), or null when key is not set: a
   * structured value of the server config (a map, list, number or bool)
   * arrives as its JSON text, a plain string as itself. The text is not
   * checked here: read it with new JsonReader(value) (./json).
   */
  getJson(key: string): Uint8Array | null {
    return this.getBytes(key);
  }

  /** The value of key decoded from UTF-8, or null when key is not set. */
  get(key: string): string | null {
    const v = this.getBytes(key);
    if (v === null) return null;
    return String.UTF8.decodeUnsafe(v.dataStart, v.length);
  }

  /** Whether key is set. */
  has(key: string): bool {
    return this.getBytes(key) !== null;
  }

  /** The keys, decoded from UTF-8, in ascending byte order. */
  keys(): string[] {
    const n = this.size;
    const out = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      out[i] = String.UTF8.decodeUnsafe(addr(this.raw) + this.offs[4 * i], this.offs[4 * i + 1]);
    }
    return out;
  }

  private findRaw(key: usize, keyLen: usize): Uint8Array | null {
    const base = addr(this.raw);
    const n = this.size;
    for (let i = 0; i < n; i++) {
      const o = 4 * i;
      if (compareBytes(base + this.offs[o], this.offs[o + 1], key, keyLen) == 0) {
        return Uint8Array.wrap(this.raw, this.offs[o + 2], this.offs[o + 3]);
      }
    }
    return null;
  }

  /** @internal The encoding's address. */
  get rawPtr(): usize {
    return addr(this.raw);
  }

  /** The empty config. */
  static empty(): ConfigView {
    const raw = new ArrayBuffer(4);
    return new ConfigView(raw, new StaticArray<u32>(0));
  }

  /** A view of a copy of m (for tests of config callbacks). Traps if two keys have the same UTF-8 encoding. */
  static fromMap(m: Map<string, string>): ConfigView {
    const keys = m.keys();
    const entries = new Array<ConfigEntry>(keys.length);
    let size = 4;
    for (let i = 0; i < keys.length; i++) {
      const e = new ConfigEntry(utf8(keys[i]), utf8(m.get(keys[i])));
      entries[i] = e;
      size += 8 + e.key.byteLength + e.value.byteLength;
    }
    entries.sort((a: ConfigEntry, b: ConfigEntry): i32 =>
      compareBytes(addr(a.key), a.key.byteLength, addr(b.key), b.key.byteLength));
    const raw = new ArrayBuffer(size);
    const p = addr(raw);
    store<u32>(p, entries.length);
    let pos: usize = 4;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      store<u32>(p + pos, e.key.byteLength);
      memory.copy(p + pos + 4, addr(e.key), e.key.byteLength);
      pos += 4 + e.key.byteLength;
      store<u32>(p + pos, e.value.byteLength);
      memory.copy(p + pos + 4, addr(e.value), e.value.byteLength);
      pos += 4 + e.value.byteLength;
    }
    const v = ConfigView.decode(raw);
    if (v === null) fatal("wasmvisor: ConfigView.fromMap: duplicate key");
    return v!;
  }

  /** @internal Decodes raw, which the view then owns; null if it is not a well-formed config. */
  static decode(raw: ArrayBuffer): ConfigView | null {
    const offs = configOffsets(addr(raw), raw.byteLength);
    if (offs === null) return null;
    return new ConfigView(raw, offs);
  }
}

class ConfigEntry {
  constructor(public key: ArrayBuffer, public value: ArrayBuffer) {}
}

/**
 * Checks that the len bytes at p are a well-formed config (u32 count, then
 * count entries of u32 key_len, key, u32 value_len, value; every length
 * inside the input; keys strictly ascending; nothing left over) and returns
 * the entries' offsets, or null.
 */
function configOffsets(p: usize, len: usize): StaticArray<u32> | null {
  if (len < 4) return null;
  const count = load<u32>(p);
  // Each entry needs at least 8 bytes: a larger count cannot be well formed.
  if (<u64>count * 8 > <u64>(len - 4)) return null;
  const offs = new StaticArray<u32>(<i32>count * 4);
  let pos: usize = 4;
  for (let i: u32 = 0; i < count; i++) {
    if (len - pos < 4) return null;
    const keyLen = <usize>load<u32>(p + pos);
    pos += 4;
    if (keyLen > len - pos) return null;
    const keyOff = pos;
    pos += keyLen;
    if (i > 0) {
      const prev = 4 * (i - 1);
      if (compareBytes(p + offs[prev], offs[prev + 1], p + keyOff, keyLen) >= 0) return null;
    }
    if (len - pos < 4) return null;
    const valueLen = <usize>load<u32>(p + pos);
    pos += 4;
    if (valueLen > len - pos) return null;
    offs[4 * i] = <u32>keyOff;
    offs[4 * i + 1] = <u32>keyLen;
    offs[4 * i + 2] = <u32>pos;
    offs[4 * i + 3] = <u32>valueLen;
    pos += valueLen;
  }
  if (pos != len) return null;
  return offs;
}

const EMPTY_CONFIG = ConfigView.empty();

/** The applied config: empty until the host's first wasmvisor_configure. */
export function config(): ConfigView {
  const a = applied;
  return a !== null ? a : EMPTY_CONFIG;
}

/**
 * Registers fn to run when wasmvisor_configure brings a config that differs,
 * byte for byte in its encoding, from the applied one ("no config yet"
 * compares as the empty config). Callbacks run in registration order with
 * the old and new views, before the new config is applied; the first that
 * returns a message (not null) rejects the config with
 * STATUS_CONFIG_REJECTED and that message, the old config stays and the
 * remaining callbacks do not run.
 */
export function onConfigChange(fn: (old: ConfigView, next: ConfigView) => string | null): void {
  configCallbacks.push(fn);
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/** A bus event delivered by the host (wasmvisor_deliver). The views are valid only during the callback. */
export class Delivery {
  constructor(public readonly topicBytes: Uint8Array, public readonly data: Uint8Array) {}

  /** The topic decoded from UTF-8. */
  get topic(): string {
    return String.UTF8.decodeUnsafe(this.topicBytes.dataStart, this.topicBytes.length);
  }
}

/**
 * Registers fn to receive the bus events the host delivers. Callbacks run in
 * registration order; the first result that is not OK becomes the delivery's
 * status. Without any callback a delivery answers STATUS_ERROR.
 */
export function onEvent(fn: (event: Delivery) => Result): void {
  eventCallbacks.push(fn);
}

/**
 * Sets the number of slots of the event ring (default DEFAULT_EVENT_CAPACITY);
 * 0 means no ring. Call it at top level before any emit: traps later, or if n
 * is outside [0, 65536].
 */
export function setEventCapacity(n: i32): void {
  if (ringReady) fatal("wasmvisor: setEventCapacity after the event ring was set up; call it at top level before any emit");
  if (n < 0 || n > MAX_SLOTS) fatal("wasmvisor: setEventCapacity: want 0 (no ring) to 65536 slots");
  eventCapacity = n;
}

/** Sets the largest topic + data an event may have (default DEFAULT_MAX_EVENT_SIZE); larger events are counted as dropped. */
export function setMaxEventSize(n: i32): void {
  if (n < 0) fatal("wasmvisor: setMaxEventSize: negative size");
  maxEventSize = n;
}

function setupRing(): void {
  if (ringReady) return;
  ringReady = true;
  if (eventCapacity == 0) return;
  ringSlots = alignedBuffer(eventCapacity * SLOT_SIZE);
  ringHeld = new StaticArray<ArrayBuffer | null>(eventCapacity);
  store<u32>(ringHdr, <u32>addr(ringSlots), RING_SLOTS_PTR);
  store<u32>(ringHdr, <u32>eventCapacity, RING_SLOT_COUNT);
  if (initDone) store<u32>(ctrl, <u32>ringHdr, CTRL_EVENTS_PTR);
}

/** Records an event in the instance's event ring (topic and data are copied). */
export function emit(topic: string, data: Uint8Array | null = null): void {
  const t = utf8(topic);
  if (data === null) recordEvent(addr(t), t.byteLength, 0, 0);
  else recordEvent(addr(t), t.byteLength, data.dataStart, data.length);
}

/** Records an event whose topic is given as (UTF-8) bytes. */
export function emitBytes(topic: Uint8Array, data: Uint8Array): void {
  recordEvent(topic.dataStart, topic.length, data.dataStart, data.length);
}

function recordEvent(topicPtr: usize, topicLen: i32, dataPtr: usize, dataLen: i32): void {
  setupRing();
  if (eventCapacity == 0) return;
  if (topicLen > maxEventSize || dataLen > maxEventSize - topicLen) {
    store<u64>(ringHdr, load<u64>(ringHdr, RING_DROPPED) + 1, RING_DROPPED);
    return;
  }
  // Allocate before touching the ring: an allocation may trap.
  const buf = new ArrayBuffer(topicLen + dataLen);
  const b = addr(buf);
  memory.copy(b, topicPtr, topicLen);
  memory.copy(b + topicLen, dataPtr, dataLen);
  const seq = load<u64>(ringHdr, RING_WRITTEN);
  const i = <i32>(seq % <u64>eventCapacity);
  const slot = addr(ringSlots) + <usize>i * SLOT_SIZE;
  // 1. invalidate the slot, 2. describe the event, 3. validate it, 4. count it:
  // a host that reads the ring after an interrupted call never sees a torn event.
  store<u64>(slot, u64.MAX_VALUE, SLOT_SEQ);
  ringHeld[i] = buf;
  store<u32>(slot, <u32>b, SLOT_TOPIC_PTR);
  store<u32>(slot, <u32>topicLen, SLOT_TOPIC_LEN);
  store<u32>(slot, <u32>(b + topicLen), SLOT_DATA_PTR);
  store<u32>(slot, <u32>dataLen, SLOT_DATA_LEN);
  store<u64>(slot, seq, SLOT_SEQ);
  store<u64>(ringHdr, seq + 1, RING_WRITTEN);
}

/** Publishes an event on the host's bus. Returns true if the host accepted it, false if it dropped it. */
export function publish(topic: string, data: Uint8Array | null = null): bool {
  const t = utf8(topic);
  if (data === null) return hostPublish(addr(t), t.byteLength, 0, 0) == 0;
  return hostPublish(addr(t), t.byteLength, data.dataStart, data.length) == 0;
}

/** Publishes an event whose topic is given as (UTF-8) bytes; returns the host's answer as for publish. */
export function publishBytes(topic: Uint8Array, data: Uint8Array): bool {
  return hostPublish(topic.dataStart, topic.length, data.dataStart, data.length) == 0;
}

// ---------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------

/** Sends msg to the host's logger at level. */
export function log(level: Level, msg: string): void {
  const b = utf8(msg);
  hostLog(level, addr(b), b.byteLength);
}

/** Sends msg, given as (UTF-8) bytes, to the host's logger at level. */
export function logBytes(level: Level, msg: Uint8Array): void {
  hostLog(level, msg.dataStart, msg.length);
}

// ---------------------------------------------------------------------------
// Host functions
// ---------------------------------------------------------------------------

/** host_fn's answer for a host function the plugin was not granted (or the host does not offer). */
const HOST_FN_DENIED: i32 = -1;
/** How many host function names the SDK remembers; past that, a name is resolved on every call. */
const MAX_HOST_FNS = 64;

// Handles by name, resolved once with host_fn: the grants are fixed for the
// instance's life, so a denial (HOST_FN_DENIED) is remembered too.
// Allocated on the first host call, so that plugins without one carry none of it.
let hostFnNames: Array<ArrayBuffer> | null = null; // UTF-8 names
let hostFnHandles: Array<i32> | null = null;

function hostFnHandle(name: usize, nameLen: i32): i32 {
  let names = hostFnNames;
  let handles = hostFnHandles;
  if (names === null || handles === null) {
    names = new Array<ArrayBuffer>();
    handles = new Array<i32>();
    hostFnNames = names;
    hostFnHandles = handles;
  }
  for (let i = 0; i < names.length; i++) {
    const n = names[i];
    if (compareBytes(addr(n), n.byteLength, name, nameLen) == 0) return handles[i];
  }
  const h = hostFnImport(name, nameLen);
  if (names.length < MAX_HOST_FNS) {
    const copy = new ArrayBuffer(nameLen);
    memory.copy(addr(copy), name, nameLen);
    names.push(copy);
    handles.push(h);
  }
  return h;
}

/**
 * What hostCall returns: the host function's output, or why there is none.
 * Exactly one of `ok`, `denied`, `failed` is true.
 */
export class HostCallResult {
  private constructor(
    /** The host function's name, as UTF-8 bytes. */
    public readonly nameBytes: Uint8Array,
    /** True when the plugin was not granted the function (or the host does not offer it: the plugin cannot tell). */
    public readonly denied: bool,
    /** The host's status: Status.OK, else (usually Status.ERROR) the function failed. Status.ERROR when denied. */
    public readonly status: Status,
    /** With Status.OK the output, else the failure's UTF-8 message (empty when denied). */
    public readonly output: Uint8Array,
  ) {}

  /** The function ran and returned output. */
  get ok(): bool {
    return !this.denied && this.status == Status.OK;
  }

  /** The function was granted but failed: status and message say how. */
  get failed(): bool {
    return !this.denied && this.status != Status.OK;
  }

  /** The host function's name. */
  get name(): string {
    return textOf(this.nameBytes);
  }

  /** The failure's message decoded from UTF-8 (`host function <name> not granted` when denied; empty when ok). */
  get message(): string {
    if (this.denied) return "host function " + this.name + " not granted";
    if (this.status == Status.OK) return "";
    return textOf(this.output);
  }

  /** @internal */
  static make(name: Uint8Array, denied: bool, status: Status, output: Uint8Array): HostCallResult {
    return new HostCallResult(name, denied, status, output);
  }
}

/**
 * Calls the host function name, which the host must offer and the plugin's
 * capabilities grant, with input (null: empty), inside the current call and
 * under its deadline. The handle is looked up once per name (host_fn) and
 * remembered, a denial too; the output is copied into a new buffer of the
 * length the host announces (host_call, host_result), which the caller owns.
 * Returns the output (`r.ok`, `r.output`), a denial (`r.denied`) or the
 * function's failure (`r.failed`, `r.status`, `r.message`).
 */
export function hostCall(name: string, input: Uint8Array | null = null): HostCallResult {
  return hostCallBytes(Uint8Array.wrap(utf8(name)), input);
}

/** hostCall with the name given as (UTF-8) bytes (copied: the caller may reuse them). */
export function hostCallBytes(name: Uint8Array, input: Uint8Array | null = null): HostCallResult {
  name = name.slice();
  const h = hostFnHandle(name.dataStart, name.length);
  if (h == HOST_FN_DENIED) return HostCallResult.make(name, true, Status.ERROR, new Uint8Array(0));
  const r = input === null ? hostCallImport(h, 0, 0) : hostCallImport(h, input.dataStart, input.length);
  const status = <Status><i32>(r >>> 32);
  const n = <i32><u32>r;
  const out = new Uint8Array(n);
  const got = hostResultImport(out.dataStart, n);
  if (got != n) {
    const msg = "host_result returned " + got.toString() + " for " + n.toString() + " bytes";
    return HostCallResult.make(name, false, Status.ERROR, Uint8Array.wrap(utf8(msg)));
  }
  return HostCallResult.make(name, false, status, out);
}

// ---------------------------------------------------------------------------
// Telemetry
// ---------------------------------------------------------------------------

class Metric {
  constructor(
    public idx: i32,
    public name: ArrayBuffer,
    public bounds: StaticArray<f64>,
    public boundsBuf: ArrayBuffer, // n × f64, little-endian, what bounds_ptr points at
    public buckets: ArrayBuffer, // (n+1) × u64, what buckets_ptr points at
  ) {}

  /** The address of this metric's record (the records move when they grow). */
  @inline get rec(): usize {
    return addr(metricRecs) + <usize>this.idx * METRIC_SIZE;
  }
}

function validMetricName(s: string): bool {
  const n = s.length;
  if (n == 0 || n > MAX_NAME) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    const letter = (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || c == 0x5F;
    if (!letter && !(i > 0 && c >= 0x30 && c <= 0x39)) return false;
  }
  return true;
}

function declare(fn: string, name: string, kind: u32, bounds: f64[]): Metric {
  const what = "wasmvisor: " + fn + "(\"" + name + "\"): ";
  if (!validMetricName(name)) fatal(what + "a metric name must match [a-zA-Z_][a-zA-Z0-9_]{0,63}");
  const nameBuf = utf8(name);
  for (let i = 0; i < metricList.length; i++) {
    const other = metricList[i].name;
    if (compareBytes(addr(other), other.byteLength, addr(nameBuf), nameBuf.byteLength) == 0) {
      fatal(what + "duplicate metric name");
    }
  }
  if (metricList.length >= MAX_METRICS) fatal(what + "too many metrics");
  if (bounds.length > MAX_BUCKETS) fatal(what + "more than 64 bounds");
  for (let i = 0; i < bounds.length; i++) {
    if (!isFinite(bounds[i])) fatal(what + "a bound is not finite");
    if (i > 0 && bounds[i] <= bounds[i - 1]) fatal(what + "bounds not strictly ascending");
  }

  const n = metricList.length;
  if ((n + 1) * METRIC_SIZE > metricRecs.byteLength) {
    const grown = alignedBuffer(max(8, 2 * n) * METRIC_SIZE);
    memory.copy(addr(grown), addr(metricRecs), n * METRIC_SIZE);
    metricRecs = grown;
  }
  const b = StaticArray.fromArray<f64>(bounds);
  const boundsBuf = alignedBuffer(8 * bounds.length);
  for (let i = 0; i < bounds.length; i++) store<f64>(addr(boundsBuf) + 8 * i, bounds[i]);
  const buckets = kind == KIND_HISTOGRAM ? alignedBuffer(8 * (bounds.length + 1)) : new ArrayBuffer(0);
  const m = new Metric(n, nameBuf, b, boundsBuf, buckets);
  metricList.push(m);

  const r = m.rec;
  store<u32>(r, <u32>addr(nameBuf), METRIC_NAME_PTR);
  store<u32>(r, <u32>nameBuf.byteLength, METRIC_NAME_LEN);
  store<u32>(r, kind, METRIC_KIND);
  if (kind == KIND_HISTOGRAM) {
    store<u32>(r, <u32>bounds.length, METRIC_BUCKET_COUNT);
    store<u32>(r, <u32>addr(boundsBuf), METRIC_BOUNDS_PTR);
    store<u32>(r, <u32>addr(buckets), METRIC_BUCKETS_PTR);
  }
  if (initDone) {
    store<u32>(ctrl, <u32>addr(metricRecs), CTRL_METRICS_PTR);
    store<u32>(ctrl, <u32>metricList.length, CTRL_METRICS_COUNT);
  }
  return m;
}

/** A monotonically increasing u64 in a metric record of kind counter, updated in guest memory. */
export class Counter {
  constructor(private m: Metric) {}

  /** Adds n to the counter (wrapping at 2^64). */
  add(n: u64): void {
    const r = this.m.rec;
    store<u64>(r, load<u64>(r, METRIC_VALUE) + n, METRIC_VALUE);
  }

  /** Adds 1 to the counter. */
  inc(): void {
    this.add(1);
  }
}

/** An f64 that goes up and down, in a metric record of kind gauge. */
export class Gauge {
  constructor(private m: Metric) {}

  /** Sets the gauge to v. */
  set(v: f64): void {
    store<f64>(this.m.rec, v, METRIC_VALUE);
  }

  /** Adds d (which may be negative) to the gauge. */
  add(d: f64): void {
    const r = this.m.rec;
    store<f64>(r, load<f64>(r, METRIC_VALUE) + d, METRIC_VALUE);
  }
}

/** Observations counted in buckets with fixed upper bounds, in a metric record of kind histogram. */
export class Histogram {
  constructor(private m: Metric) {}

  /** Counts v in the first bucket whose upper bound is ≥ v (else the +Inf bucket) and adds v to the sum. */
  observe(v: f64): void {
    const m = this.m;
    const bounds = m.bounds;
    let i = bounds.length;
    for (let j = 0; j < bounds.length; j++) {
      if (v <= bounds[j]) {
        i = j;
        break;
      }
    }
    const bucket = addr(m.buckets) + 8 * <usize>i;
    store<u64>(bucket, load<u64>(bucket) + 1);
    const r = m.rec;
    store<u64>(r, load<u64>(r, METRIC_VALUE) + 1, METRIC_VALUE);
    store<f64>(r, load<f64>(r, METRIC_SUM) + v, METRIC_SUM);
  }
}

/**
 * Declares a counter. Declare metrics at top level; a declaration after
 * wasmvisor_init appends a record and still works. Traps if name does not
 * match [a-zA-Z_][a-zA-Z0-9_]{0,63} or is already declared.
 */
export function newCounter(name: string): Counter {
  return new Counter(declare("newCounter", name, KIND_COUNTER, []));
}

/** Declares a gauge, with the same rules as newCounter. */
export function newGauge(name: string): Gauge {
  return new Gauge(declare("newGauge", name, KIND_GAUGE, []));
}

/**
 * Declares a histogram with the given upper bounds (at most 64, finite,
 * strictly ascending; a last +Inf bucket is implicit), with the same naming
 * rules as newCounter.
 */
export function newHistogram(name: string, bounds: f64[]): Histogram {
  return new Histogram(declare("newHistogram", name, KIND_HISTOGRAM, bounds));
}

// ---------------------------------------------------------------------------
// The ABI exports (re-exported by plugins from exports.ts)
// ---------------------------------------------------------------------------

/** Makes out the output of the current export and returns status. */
function reply(status: Status, out: Uint8Array | null): u32 {
  lastOut = out;
  if (out === null) {
    store<u32>(ctrl, 0, CTRL_OUT_PTR);
    store<u32>(ctrl, 0, CTRL_OUT_LEN);
  } else {
    store<u32>(ctrl, <u32>out.dataStart, CTRL_OUT_PTR);
    store<u32>(ctrl, <u32>out.length, CTRL_OUT_LEN);
  }
  return status;
}

function replyMessage(status: Status, message: string): u32 {
  return reply(status, Uint8Array.wrap(utf8(message)));
}

/**
 * The host promises to call wasmvisor_reserve before handing over an input
 * larger than in_cap; if it did not, the bytes were written past the buffer.
 */
function checkInputFits(inLen: u32): void {
  if (<usize>inLen > inCap) fatal("input larger than input buffer");
}

/**
 * A Uint8Array over len bytes at ptr, outside the heap: its dataStart and
 * length are the bytes, its buffer is an empty ArrayBuffer (so the collector
 * sees a valid object). Indexing, subarray, slice and the other element
 * methods work on the bytes; .buffer and .byteOffset do not describe them.
 */
function rawView(ptr: usize, len: usize): Uint8Array {
  const v = new Uint8Array(0);
  store<usize>(changetype<usize>(v), ptr, offsetof<Uint8Array>("dataStart"));
  store<i32>(changetype<usize>(v), <i32>len, offsetof<Uint8Array>("byteLength"));
  return v;
}

/** The number of 64 KiB pages that hold n bytes, or -1 if that is 4 GiB or more. */
function pagesFor(n: u64): i32 {
  const pages = (n + 0xFFFF) >> 16;
  return pages >= 0x10000 ? -1 : <i32>pages;
}

/**
 * Makes the input buffer at least size bytes: extends it in place while it
 * ends where memory ends, else moves it to new pages at the end of memory
 * (at least doubling it, so that moves stay rare). False if memory cannot grow.
 */
function growInput(size: usize): bool {
  // Page counts in u64, so that nothing overflows near 4 GiB.
  const end = <u64>memory.size() << 16;
  if (inPtr != 0 && <u64>inPtr + <u64>inCap == end) {
    const pages = pagesFor(<u64>size - <u64>inCap);
    if (pages < 0 || memory.grow(pages) < 0) return false;
    inCap += <usize>pages << 16;
  } else {
    let pages = pagesFor(max(<u64>size, <u64>inCap << 1));
    if (pages < 0 || memory.grow(pages) < 0) {
      pages = pagesFor(<u64>size);
      if (pages < 0 || memory.grow(pages) < 0) return false;
    }
    inPtr = <usize>end;
    inCap = <usize>pages << 16;
  }
  store<u32>(ctrl, <u32>inPtr, CTRL_IN_PTR);
  store<u32>(ctrl, <u32>inCap, CTRL_IN_CAP);
  return true;
}

/** @internal wasmvisor_init: fixes the handler list, sets up the stores, returns the control block. */
export function wasmvisor_init(): u32 {
  if (initDone) return <u32>ctrl;
  initDone = true;
  let size = 0;
  for (let i = 0; i < handlers.length; i++) {
    size += (i > 0 ? 1 : 0) + String.UTF8.byteLength(handlers[i].name);
  }
  const names = new ArrayBuffer(size);
  let pos = addr(names);
  for (let i = 0; i < handlers.length; i++) {
    if (i > 0) store<u8>(pos++, 0x0A);
    pos += String.UTF8.encodeUnsafe(changetype<usize>(handlers[i].name), handlers[i].name.length, pos);
  }
  handlerNames = names; // (the heap exists by now: growInput must come after its first allocation)
  setupRing();
  store<u32>(ctrl, MAGIC, CTRL_MAGIC);
  store<u32>(ctrl, VERSION, CTRL_VERSION);
  if (!growInput(65536)) fatal("wasmvisor_init: out of memory"); // a first 64 KiB input buffer
  reply(Status.OK, null);
  store<u32>(ctrl, <u32>addr(names), CTRL_HANDLERS_PTR);
  store<u32>(ctrl, <u32>names.byteLength, CTRL_HANDLERS_LEN);
  store<u32>(ctrl, 0, CTRL_CONFIG_PTR);
  store<u32>(ctrl, 0, CTRL_CONFIG_LEN);
  store<u32>(ctrl, <u32>addr(metricRecs), CTRL_METRICS_PTR);
  store<u32>(ctrl, <u32>metricList.length, CTRL_METRICS_COUNT);
  store<u32>(ctrl, eventCapacity > 0 ? <u32>ringHdr : 0, CTRL_EVENTS_PTR);
  return <u32>ctrl;
}

/** @internal wasmvisor_reserve: makes the input buffer at least size bytes. */
export function wasmvisor_reserve(size: u32): u32 {
  if (<usize>size <= inCap) return reply(Status.OK, null);
  if (!growInput(size)) return replyMessage(Status.NO_MEMORY, "out of memory");
  return reply(Status.OK, null);
}

/** @internal wasmvisor_call: runs handler number handler on the inLen input bytes. */
export function wasmvisor_call(handler: u32, inLen: u32): u32 {
  checkInputFits(inLen);
  if (handler >= <u32>handlers.length) return reply(Status.UNKNOWN_HANDLER, null);
  lastOut = null;
  const fn = handlers[handler].fn;
  const r = fn(rawView(inPtr, inLen));
  return reply(r.status, r.output);
}

/** @internal wasmvisor_configure: replaces the config, firing the change callbacks. */
export function wasmvisor_configure(inLen: u32): u32 {
  checkInputFits(inLen);
  if (configOffsets(inPtr, inLen) === null) {
    return replyMessage(Status.CONFIG_REJECTED, "malformed config");
  }
  const old = config();
  const oldPtr = old.rawPtr;
  const oldLen = old.encodedLength;
  const changed = compareBytes(oldPtr, oldLen, inPtr, inLen) != 0;
  const raw = new ArrayBuffer(inLen);
  memory.copy(addr(raw), inPtr, inLen);
  const next = ConfigView.decode(raw)!;
  if (changed) {
    for (let i = 0; i < configCallbacks.length; i++) {
      const fn = configCallbacks[i];
      const err = fn(old, next);
      if (err !== null) return replyMessage(Status.CONFIG_REJECTED, err);
    }
  }
  applied = next;
  store<u32>(ctrl, <u32>addr(raw), CTRL_CONFIG_PTR);
  store<u32>(ctrl, inLen, CTRL_CONFIG_LEN);
  return reply(Status.OK, null);
}

/** @internal wasmvisor_deliver: hands a bus event (u32 topic_len, topic, payload) to the event callbacks. */
export function wasmvisor_deliver(inLen: u32): u32 {
  checkInputFits(inLen);
  if (inLen < 4) return replyMessage(Status.INVALID_INPUT, "bad delivery");
  const topicLen = load<u32>(inPtr);
  if (topicLen > inLen - 4) return replyMessage(Status.INVALID_INPUT, "bad delivery");
  if (eventCallbacks.length == 0) return replyMessage(Status.ERROR, "no event callback registered");
  const ev = new Delivery(rawView(inPtr + 4, topicLen), rawView(inPtr + 4 + topicLen, inLen - 4 - topicLen));
  for (let i = 0; i < eventCallbacks.length; i++) {
    const fn = eventCallbacks[i];
    const r = fn(ev);
    if (r.status != Status.OK) return reply(r.status, r.output);
  }
  return reply(Status.OK, null);
}

// The AssemblyScript build of the conformance plugin: the handler list and
// semantics of the WAT reference plugin (plugins/reference/README.md), byte
// for byte, written with the AssemblyScript SDK (sdk/assemblyscript). Built by
// build.sh next to this file.
import {
  Delivery,
  emitBytes,
  handle,
  hostCallBytes,
  Level,
  logBytes,
  newCounter,
  newGauge,
  newHistogram,
  onConfigChange,
  onEvent,
  publishBytes,
  Result,
  setEventCapacity,
  setMaxEventSize,
  config,
  ConfigView,
} from "../../../sdk/assemblyscript/assembly/wasmvisor";
export * from "../../../sdk/assemblyscript/assembly/exports";

// WASI preview 1, for `exit` and `stdout`.

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "fd_write")
declare function fd_write(fd: u32, iovs: usize, iovsLen: usize, nwritten: usize): u32;

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "proc_exit")
declare function proc_exit(code: u32): void;

const CONFIG_CAP = 4096; // the reference plugin's config storage
const MARKER_CAP = 256;

setEventCapacity(16);
setMaxEventSize(256);

const requests = newCounter("requests_total");
const level = newGauge("level");
const size = newHistogram("size", [1, 10, 100, 1000]);

let changes: u64 = 0; // how many times the config change callback fired
let marker: Uint8Array = new Uint8Array(0); // set by `set`, returned by `get`
const hoard = new Array<ArrayBuffer>(); // what `grow` keeps

// Numbers are strict ASCII decimal: digits only, leading zeros allowed.
let parsed: u64 = 0;

/** Parses one or more digits that fit in a u64 into `parsed`. */
function parseU64(p: usize, len: i32): bool {
  if (len == 0) return false;
  let v: u64 = 0;
  for (let i = 0; i < len; i++) {
    const d = <u32>load<u8>(p + i) - 0x30;
    if (d > 9) return false;
    if (v > 1844674407370955161 || (v == 1844674407370955161 && d > 5)) return false;
    v = v * 10 + d;
  }
  parsed = v;
  return true;
}

/** Parses an optional `-` then digits, within the i64 range, into `parsed`. */
function parseI64(p: usize, len: i32): bool {
  if (len > 0 && load<u8>(p) == 0x2D) {
    if (!parseU64(p + 1, len - 1) || parsed > 0x8000000000000000) return false;
    parsed = 0 - parsed; // 0 - 2^63 wraps to -2^63
    return true;
  }
  return parseU64(p, len) && parsed <= 0x7FFFFFFFFFFFFFFF;
}

function badNumber(): Result {
  return Result.invalidInput("bad number");
}

/** The index of the first `\n` in input, or its length. */
function newline(input: Uint8Array): i32 {
  const i = input.indexOf(0x0A);
  return i < 0 ? input.length : i;
}

function decimal(v: u64): Result {
  return Result.text(v.toString());
}

handle("echo", (input: Uint8Array): Result => Result.ok(input));

handle("config_get", (input: Uint8Array): Result => {
  const v = config().find(input);
  return v === null ? Result.error("missing key") : Result.ok(v);
});

handle("config_changes", (input: Uint8Array): Result => decimal(changes));

handle("emit", (input: Uint8Array): Result => {
  const t = newline(input);
  emitBytes(input.subarray(0, t), input.subarray(min(t + 1, input.length)));
  return Result.ok();
});

handle("publish", (input: Uint8Array): Result => {
  const t = newline(input);
  const accepted = publishBytes(input.subarray(0, t), input.subarray(min(t + 1, input.length)));
  return Result.text(accepted ? "0" : "1");
});

handle("count", (input: Uint8Array): Result => {
  let n: u64 = 1;
  if (input.length > 0) {
    if (!parseU64(input.dataStart, input.length)) return badNumber();
    n = parsed;
  }
  requests.add(n);
  return Result.ok();
});

handle("gauge", (input: Uint8Array): Result => {
  if (!parseI64(input.dataStart, input.length)) return badNumber();
  level.set(<f64><i64>parsed);
  return Result.ok();
});

handle("observe", (input: Uint8Array): Result => {
  if (!parseU64(input.dataStart, input.length)) return badNumber();
  size.observe(<f64>parsed);
  return Result.ok();
});

handle("fail", (input: Uint8Array): Result =>
  input.length == 0 ? Result.error("failed") : Result.errorBytes(input));

handle("trap", (input: Uint8Array): Result => {
  throw new Error("trap");
});

handle("loop", (input: Uint8Array): Result => {
  while (true) {
    // spin until the host's deadline ends the call
  }
});

handle("grow", (input: Uint8Array): Result => {
  // Allocate and keep 1 MiB blocks until the allocator cannot grow memory and traps.
  while (true) hoard.push(new ArrayBuffer(1 << 20));
});

handle("set", (input: Uint8Array): Result => {
  if (input.length > MARKER_CAP) return Result.invalidInput("too long");
  marker = input.slice();
  return Result.ok();
});

handle("get", (input: Uint8Array): Result => Result.ok(marker));

handle("exit", (input: Uint8Array): Result => {
  if (!parseU64(input.dataStart, input.length) || parsed > 0xFFFFFFFF) return badNumber();
  proc_exit(<u32>parsed);
  unreachable();
  return Result.ok();
});

handle("log", (input: Uint8Array): Result => {
  logBytes(Level.Info, input);
  return Result.ok();
});

// One iovec and nwritten, in static memory.
const iovec = memory.data(12, 4);

handle("stdout", (input: Uint8Array): Result => {
  let done = 0;
  while (done < input.length) {
    store<u32>(iovec, <u32>(input.dataStart + done), 0);
    store<u32>(iovec, <u32>(input.length - done), 4);
    const errno = fd_write(1, iovec, 1, iovec + 8);
    const n = load<u32>(iovec, 8);
    if (errno != 0 || n == 0) return Result.error("write failed");
    done += n;
  }
  return Result.ok();
});

// host_call: input "name\ninput" (no "\n": empty input) calls the host function
// name; a denial fails with "denied: <name>", a failure with "failed: <message>".
handle("host_call", (input: Uint8Array): Result => {
  const t = newline(input);
  const name = input.subarray(0, t);
  const r = hostCallBytes(name, input.subarray(min(t + 1, input.length)));
  if (r.denied) return Result.errorBytes(concat("denied: ", r.nameBytes));
  if (r.failed) return Result.errorBytes(concat("failed: ", r.output));
  return Result.ok(r.output);
});

/** The UTF-8 bytes of prefix followed by rest. */
function concat(prefix: string, rest: Uint8Array): Uint8Array {
  const p = String.UTF8.encode(prefix);
  const out = new Uint8Array(p.byteLength + rest.length);
  out.set(Uint8Array.wrap(p));
  out.set(rest, p.byteLength);
  return out;
}

onConfigChange((old: ConfigView, next: ConfigView): string | null => {
  if (next.has("reject")) return "rejected by plugin";
  if (next.encodedLength > CONFIG_CAP) return "config too large";
  changes++;
  return null;
});

onEvent((event: Delivery): Result => {
  emitBytes(event.topicBytes, event.data);
  return Result.ok();
});

// A JSON reader and writer for the wasmvisor AssemblyScript SDK (RFC 8259).
//
// JsonReader is a pull parser over a Uint8Array: next() returns one token at a
// time and allocates nothing (a token is a range of the input: textStart,
// textEnd; a string's range is between its quotes, escapes still in). The
// value is decoded only when asked: str() (a string), bytes(), eq(s), i64(),
// f64(). Nesting is bounded by JSON_MAX_DEPTH. Malformed input makes next()
// return JsonToken.Error and sets error and errorOffset; every later call
// returns Error too; nothing traps. fail() turns it into an invalid-input
// Result ("json: bad number at offset 9").
//
// JsonWriter builds compact JSON. Strings are escaped as Go's encoding/json
// escapes them (<, >, & and U+2028, U+2029 too; invalid UTF-8 becomes
// \ufffd); misuse (a value where a key must come, an unclosed array, NaN)
// makes finish() return null.
import { Result } from "./wasmvisor";

/** The deepest nesting of arrays and objects the reader and writer accept. */
export const JSON_MAX_DEPTH = 64;

export enum JsonToken {
  Error = 0,
  /** After the top-level value, only whitespace follows. */
  Done,
  BeginObject,
  EndObject,
  BeginArray,
  EndArray,
  /** An object's key; the ':' after it is consumed. */
  Key,
  String,
  /** textStart..textEnd: the number as written, checked against the grammar. */
  Number,
  True,
  False,
  Null,
}

export enum JsonError {
  None = 0,
  UnexpectedEnd,
  UnexpectedByte,
  BadEscape,
  ControlInString,
  BadNumber,
  TooDeep,
  TrailingData,
  WrongType,
  OutOfRange,
}

/** The name of an error, as in the messages of fail(). */
export function jsonErrorText(e: JsonError): string {
  switch (e) {
    case JsonError.None: return "no error";
    case JsonError.UnexpectedEnd: return "unexpected end";
    case JsonError.UnexpectedByte: return "unexpected byte";
    case JsonError.BadEscape: return "bad escape";
    case JsonError.ControlInString: return "control character in string";
    case JsonError.BadNumber: return "bad number";
    case JsonError.TooDeep: return "too deep";
    case JsonError.TrailingData: return "trailing data";
    case JsonError.WrongType: return "wrong type";
    case JsonError.OutOfRange: return "out of range";
  }
  return "unknown error";
}

const EXPECT_VALUE: i32 = 0;
const EXPECT_VALUE_OR_END: i32 = 1;
const EXPECT_KEY_OR_END: i32 = 2;
const EXPECT_KEY: i32 = 3;
const EXPECT_COMMA_OR_END: i32 = 4;
const EXPECT_DONE: i32 = 5;

// @ts-ignore: decorator
@inline function hexVal(c: u32): i32 {
  if (c >= 0x30 && c <= 0x39) return <i32>(c - 0x30);
  if (c >= 0x61 && c <= 0x66) return <i32>(c - 0x61 + 10);
  if (c >= 0x41 && c <= 0x46) return <i32>(c - 0x41 + 10);
  return -1;
}

// @ts-ignore: decorator
@inline function isWS(c: u32): bool {
  return c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d;
}

export class JsonReader {
  private p: usize; // input.dataStart
  private n: i32;
  private pos: i32 = 0;
  private depth: i32 = 0;
  private objects: u64 = 0; // bit d: the container at depth d+1 is an object
  private expect: i32 = EXPECT_VALUE;
  /** The last token's text: a string's bytes between the quotes, or a number. */
  textStart: i32 = 0;
  textEnd: i32 = 0;
  /** Whether the last string token has escapes. */
  escaped: bool = false;
  error: JsonError = JsonError.None;
  errorOffset: i32 = 0;

  constructor(public readonly input: Uint8Array) {
    this.p = input.dataStart;
    this.n = input.length;
  }

  /** Whether an error was found. */
  get failed(): bool {
    return this.error != JsonError.None;
  }

  /** The byte offset of the next token. */
  get offset(): i32 {
    return this.pos;
  }

  // @ts-ignore: decorator
  @inline
  private at(i: i32): u32 {
    return <u32>load<u8>(this.p + <usize>i);
  }

  private fail_(e: JsonError, at: i32): JsonToken {
    if (this.error == JsonError.None) {
      this.error = e;
      this.errorOffset = at;
    }
    return JsonToken.Error;
  }

  // @ts-ignore: decorator
  @inline
  private ws(): void {
    while (this.pos < this.n && isWS(this.at(this.pos))) this.pos++;
  }

  // @ts-ignore: decorator
  @inline
  private inObject(): bool {
    return this.depth > 0 && ((this.objects >> <u64>(this.depth - 1)) & 1) == 1;
  }

  // @ts-ignore: decorator
  @inline
  private afterValue(): void {
    this.expect = this.depth == 0 ? EXPECT_DONE : EXPECT_COMMA_OR_END;
  }

  private close(): JsonToken {
    const obj = this.inObject();
    this.pos++;
    this.depth--;
    this.afterValue();
    return obj ? JsonToken.EndObject : JsonToken.EndArray;
  }

  private string(): bool {
    const start = ++this.pos;
    let escaped = false;
    for (;;) {
      if (this.pos >= this.n) {
        this.fail_(JsonError.UnexpectedEnd, this.pos);
        return false;
      }
      const c = this.at(this.pos);
      if (c == 0x22) break;
      if (c < 0x20) {
        this.fail_(JsonError.ControlInString, this.pos);
        return false;
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      escaped = true;
      if (this.pos + 1 >= this.n) {
        this.fail_(JsonError.UnexpectedEnd, this.n);
        return false;
      }
      const e = this.at(this.pos + 1);
      if (e == 0x22 || e == 0x5c || e == 0x2f || e == 0x62 || e == 0x66 || e == 0x6e || e == 0x72 || e == 0x74) {
        this.pos += 2;
      } else if (e == 0x75) {
        for (let k = this.pos + 2; k < this.pos + 6; k++) {
          if (k >= this.n) {
            this.fail_(JsonError.UnexpectedEnd, k);
            return false;
          }
          if (hexVal(this.at(k)) < 0) {
            this.fail_(JsonError.BadEscape, this.pos);
            return false;
          }
        }
        this.pos += 6;
      } else {
        this.fail_(JsonError.BadEscape, this.pos);
        return false;
      }
    }
    this.textStart = start;
    this.textEnd = this.pos;
    this.escaped = escaped;
    this.pos++;
    return true;
  }

  // @ts-ignore: decorator
  @inline
  private digits(): i32 {
    const start = this.pos;
    while (this.pos < this.n) {
      const c = this.at(this.pos);
      if (c < 0x30 || c > 0x39) break;
      this.pos++;
    }
    return this.pos - start;
  }

  private number(): bool {
    const start = this.pos;
    if (this.at(this.pos) == 0x2d) this.pos++;
    const first = this.pos;
    const nd = this.digits();
    let ok = !(nd == 0 || (nd > 1 && this.at(first) == 0x30));
    if (ok && this.pos < this.n && this.at(this.pos) == 0x2e) {
      this.pos++;
      ok = this.digits() > 0;
    }
    if (ok && this.pos < this.n && (this.at(this.pos) | 0x20) == 0x65) {
      this.pos++;
      if (this.pos < this.n && (this.at(this.pos) == 0x2b || this.at(this.pos) == 0x2d)) this.pos++;
      ok = this.digits() > 0;
    }
    if (!ok) {
      this.fail_(JsonError.BadNumber, start);
      return false;
    }
    this.textStart = start;
    this.textEnd = this.pos;
    return true;
  }

  private literal(word: string, t: JsonToken): JsonToken {
    for (let i = 0; i < word.length; i++) {
      if (this.pos >= this.n) return this.fail_(JsonError.UnexpectedEnd, this.pos);
      if (this.at(this.pos) != <u32>word.charCodeAt(i)) return this.fail_(JsonError.UnexpectedByte, this.pos);
      this.pos++;
    }
    this.afterValue();
    return t;
  }

  /** The next token. */
  next(): JsonToken {
    if (this.error != JsonError.None) return JsonToken.Error;
    this.textStart = this.textEnd = this.pos;
    this.escaped = false;
    for (;;) {
      this.ws();
      if (this.expect == EXPECT_DONE) {
        return this.pos == this.n ? JsonToken.Done : this.fail_(JsonError.TrailingData, this.pos);
      }
      if (this.pos >= this.n) return this.fail_(JsonError.UnexpectedEnd, this.pos);
      const c = this.at(this.pos);
      const ex = this.expect;
      if (ex == EXPECT_COMMA_OR_END) {
        if (c == (this.inObject() ? <u32>0x7d : <u32>0x5d)) return this.close();
        if (c != 0x2c) return this.fail_(JsonError.UnexpectedByte, this.pos);
        this.pos++;
        this.expect = this.inObject() ? EXPECT_KEY : EXPECT_VALUE;
        continue;
      }
      if (ex == EXPECT_KEY_OR_END || ex == EXPECT_KEY) {
        if (c == 0x7d && ex == EXPECT_KEY_OR_END) return this.close();
        if (c != 0x22) return this.fail_(JsonError.UnexpectedByte, this.pos);
        if (!this.string()) return JsonToken.Error;
        this.ws();
        if (this.pos >= this.n) return this.fail_(JsonError.UnexpectedEnd, this.pos);
        if (this.at(this.pos) != 0x3a) return this.fail_(JsonError.UnexpectedByte, this.pos);
        this.pos++;
        this.expect = EXPECT_VALUE;
        return JsonToken.Key;
      }
      if (ex == EXPECT_VALUE_OR_END && c == 0x5d) return this.close();
      if (c == 0x7b || c == 0x5b) {
        if (this.depth == JSON_MAX_DEPTH) return this.fail_(JsonError.TooDeep, this.pos);
        this.pos++;
        const bit: u64 = (<u64>1) << <u64>this.depth;
        if (c == 0x7b) this.objects |= bit;
        else this.objects &= ~bit;
        this.depth++;
        this.expect = c == 0x7b ? EXPECT_KEY_OR_END : EXPECT_VALUE_OR_END;
        return c == 0x7b ? JsonToken.BeginObject : JsonToken.BeginArray;
      }
      if (c == 0x22) {
        if (!this.string()) return JsonToken.Error;
        this.afterValue();
        return JsonToken.String;
      }
      if (c == 0x74) return this.literal("true", JsonToken.True);
      if (c == 0x66) return this.literal("false", JsonToken.False);
      if (c == 0x6e) return this.literal("null", JsonToken.Null);
      if (c == 0x2d || (c >= 0x30 && c <= 0x39)) {
        if (!this.number()) return JsonToken.Error;
        this.afterValue();
        return JsonToken.Number;
      }
      return this.fail_(JsonError.UnexpectedByte, this.pos);
    }
  }

  /** Reads the next token and checks its type (false, with error WrongType, if another). */
  expectToken(t: JsonToken): bool {
    const at = this.pos;
    const got = this.next();
    if (got == t) return true;
    if (got != JsonToken.Error) this.fail_(JsonError.WrongType, at);
    return false;
  }

  /** Inside an object: true with the next key as the token, false after the closing '}' or on error. */
  key(): bool {
    const at = this.pos;
    const t = this.next();
    if (t == JsonToken.Key) return true;
    if (t != JsonToken.EndObject && t != JsonToken.Error) this.fail_(JsonError.WrongType, at);
    return false;
  }

  /** Inside an array: true if another element follows, false after the closing ']' or on error. */
  more(): bool {
    if (this.error != JsonError.None) return false;
    this.ws();
    const arr = this.depth > 0 && !this.inObject();
    if (arr && (this.expect == EXPECT_VALUE_OR_END || this.expect == EXPECT_COMMA_OR_END)) {
      if (this.pos < this.n && this.at(this.pos) == 0x5d) {
        this.close();
        return false;
      }
      if (this.expect == EXPECT_VALUE_OR_END) return true;
      if (this.pos < this.n && this.at(this.pos) == 0x2c) {
        this.pos++;
        this.expect = EXPECT_VALUE;
        return true;
      }
    }
    this.fail_(this.pos >= this.n ? JsonError.UnexpectedEnd : JsonError.UnexpectedByte, this.pos);
    return false;
  }

  /** Skips the next value, a whole array or object with its contents. */
  skip(): bool {
    const base = this.depth;
    for (;;) {
      const t = this.next();
      if (t == JsonToken.Error) return false;
      if (t == JsonToken.Done) {
        this.fail_(JsonError.UnexpectedEnd, this.pos);
        return false;
      }
      if (t != JsonToken.Key && this.depth == base) return true;
    }
    return false; // not reached
  }

  /** Checks that only whitespace follows the top-level value. */
  end(): bool {
    const t = this.next();
    if (t == JsonToken.Done) return true;
    if (t != JsonToken.Error) this.fail_(JsonError.UnexpectedByte, this.pos);
    return false;
  }

  /** The last token's text as a view of the input (no copy). */
  text(): Uint8Array {
    return this.input.subarray(this.textStart, this.textEnd);
  }

  /** The last string or key token's value without escapes, as UTF-8 bytes (the input's view when it has none). */
  bytes(): Uint8Array {
    if (!this.escaped) return this.text();
    const out = new Uint8Array(this.textEnd - this.textStart); // never longer than the text
    const n = this.unescapeInto(out.dataStart);
    return out.subarray(0, n);
  }

  /** The last string or key token's value as a string. */
  str(): string {
    const b = this.bytes();
    return String.UTF8.decodeUnsafe(b.dataStart, b.length);
  }

  /** Whether the last string or key token's value equals s. */
  eq(s: string): bool {
    const want = String.UTF8.encode(s);
    const got = this.bytes();
    if (got.length != want.byteLength) return false;
    return memory.compare(got.dataStart, changetype<usize>(want), got.length) == 0;
  }

  private putUTF8(dst: usize, o: i32, cp: u32): i32 {
    if (cp < 0x80) {
      store<u8>(dst + <usize>o, <u8>cp);
      return o + 1;
    }
    if (cp < 0x800) {
      store<u8>(dst + <usize>o, <u8>(0xc0 | (cp >> 6)));
      store<u8>(dst + <usize>o + 1, <u8>(0x80 | (cp & 0x3f)));
      return o + 2;
    }
    if (cp < 0x10000) {
      store<u8>(dst + <usize>o, <u8>(0xe0 | (cp >> 12)));
      store<u8>(dst + <usize>o + 1, <u8>(0x80 | ((cp >> 6) & 0x3f)));
      store<u8>(dst + <usize>o + 2, <u8>(0x80 | (cp & 0x3f)));
      return o + 3;
    }
    store<u8>(dst + <usize>o, <u8>(0xf0 | (cp >> 18)));
    store<u8>(dst + <usize>o + 1, <u8>(0x80 | ((cp >> 12) & 0x3f)));
    store<u8>(dst + <usize>o + 2, <u8>(0x80 | ((cp >> 6) & 0x3f)));
    store<u8>(dst + <usize>o + 3, <u8>(0x80 | (cp & 0x3f)));
    return o + 4;
  }

  private hex4(i: i32): u32 {
    return <u32>((hexVal(this.at(i)) << 12) | (hexVal(this.at(i + 1)) << 8) | (hexVal(this.at(i + 2)) << 4) | hexVal(this.at(i + 3)));
  }

  /**
   * Writes the last string or key token's value without escapes to dst, which
   * must have room for textEnd - textStart bytes (the value is never longer),
   * and returns its length.
   */
  unescapeInto(dst: usize): i32 {
    let i = this.textStart;
    const end = this.textEnd;
    let o = 0;
    while (i < end) {
      const c = this.at(i);
      if (c != 0x5c) {
        store<u8>(dst + <usize>o, <u8>c);
        o++;
        i++;
        continue;
      }
      const e = this.at(i + 1); // the reader checked every escape
      i += 2;
      let b: u32 = e; // '"', '\\', '/'
      if (e == 0x6e) b = 0x0a;
      else if (e == 0x74) b = 0x09;
      else if (e == 0x72) b = 0x0d;
      else if (e == 0x62) b = 0x08;
      else if (e == 0x66) b = 0x0c;
      else if (e == 0x75) {
        let cp = this.hex4(i);
        i += 4;
        if (cp >= 0xd800 && cp < 0xe000) {
          const hi = cp;
          cp = 0xfffd;
          if (hi < 0xdc00 && i + 6 <= end && this.at(i) == 0x5c && this.at(i + 1) == 0x75) {
            const lo = this.hex4(i + 2);
            if (lo >= 0xdc00 && lo < 0xe000) {
              cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
              i += 6;
            }
          }
        }
        o = this.putUTF8(dst, o, cp);
        continue;
      }
      store<u8>(dst + <usize>o, <u8>b);
      o++;
    }
    return o;
  }

  /** The next value as an integer (no fraction or exponent, in range); 0 and failed on error. */
  i64(): i64 {
    const at = this.pos;
    if (!this.expectToken(JsonToken.Number)) return 0;
    let i = this.textStart;
    const neg = this.at(i) == 0x2d;
    if (neg) i++;
    const limit: u64 = neg ? <u64>i64.MAX_VALUE + 1 : <u64>i64.MAX_VALUE;
    let v: u64 = 0;
    for (; i < this.textEnd; i++) {
      const d = <u64>(this.at(i) - 0x30);
      if (d > 9 || v > (limit - d) / 10) {
        this.fail_(JsonError.OutOfRange, at);
        return 0;
      }
      v = v * 10 + d;
    }
    return neg ? <i64>(0 - v) : <i64>v;
  }

  /** The next value as the nearest finite f64; 0 and failed on error. */
  f64(): f64 {
    const at = this.pos;
    if (!this.expectToken(JsonToken.Number)) return 0;
    const v = parseFloat(String.UTF8.decodeUnsafe(this.p + <usize>this.textStart, this.textEnd - this.textStart));
    if (!isFinite(v)) {
      this.fail_(JsonError.OutOfRange, at);
      return 0;
    }
    return v;
  }

  /** "json: <error> at offset <n>". */
  message(): string {
    return "json: " + jsonErrorText(this.error) + " at offset " + this.errorOffset.toString();
  }

  /** An invalid-input Result with message(). */
  fail(): Result {
    return Result.invalidInput(this.message());
  }
}

const HEX = "0123456789abcdef";

/** Builds compact JSON; see the file's comment. */
export class JsonWriter {
  private buf: Uint8Array = new Uint8Array(64);
  private len: i32 = 0;
  private depth: i32 = 0;
  private objects: u64 = 0;
  private first: bool = true;
  private wantKey: bool = false;
  private failed: bool = false;
  private done: bool = false;

  // @ts-ignore: decorator
  @inline
  private put(c: u32): void {
    if (this.len == this.buf.length) this.grow(1);
    store<u8>(this.buf.dataStart + <usize>this.len, <u8>c);
    this.len++;
  }

  private putBytes(p: usize, n: i32): void {
    if (this.buf.length - this.len < n) this.grow(n);
    memory.copy(this.buf.dataStart + <usize>this.len, p, <usize>n);
    this.len += n;
  }

  private putStr(s: string): void {
    for (let i = 0; i < s.length; i++) this.put(<u32>s.charCodeAt(i)); // ASCII only
  }

  private grow(n: i32): void {
    let cap = this.buf.length * 2;
    while (cap - this.len < n) cap *= 2;
    const b = new Uint8Array(cap);
    memory.copy(b.dataStart, this.buf.dataStart, <usize>this.len);
    this.buf = b;
  }

  // @ts-ignore: decorator
  @inline
  private inObject(): bool {
    return this.depth > 0 && ((this.objects >> <u64>(this.depth - 1)) & 1) == 1;
  }

  private pre(): bool {
    if (this.failed || this.done || this.wantKey) {
      this.failed = true;
      return false;
    }
    if (this.depth > 0 && !this.inObject() && !this.first) this.put(0x2c);
    this.first = false;
    return true;
  }

  private post(): void {
    if (this.depth == 0) this.done = true;
    else if (this.inObject()) this.wantKey = true;
  }

  private open(object: bool): void {
    if (!this.pre()) return;
    if (this.depth == JSON_MAX_DEPTH) {
      this.failed = true;
      return;
    }
    const bit: u64 = (<u64>1) << <u64>this.depth;
    if (object) this.objects |= bit;
    else this.objects &= ~bit;
    this.depth++;
    this.put(object ? 0x7b : 0x5b);
    this.first = true;
    this.wantKey = object;
  }

  private close(object: bool): void {
    if (this.failed || this.depth == 0 || this.inObject() != object || (object && !this.wantKey)) {
      this.failed = true;
      return;
    }
    this.depth--;
    this.put(object ? 0x7d : 0x5d);
    this.first = false;
    this.wantKey = false;
    this.post();
  }

  beginObject(): void { this.open(true); }
  endObject(): void { this.close(true); }
  beginArray(): void { this.open(false); }
  endArray(): void { this.close(false); }

  /** An object's key given as UTF-8 bytes. */
  keyBytes(k: Uint8Array): void {
    if (this.failed || !this.wantKey) {
      this.failed = true;
      return;
    }
    if (!this.first) this.put(0x2c);
    this.first = false;
    this.escape(k.dataStart, k.length);
    this.put(0x3a);
    this.wantKey = false;
  }

  key(k: string): void {
    this.keyBytes(Uint8Array.wrap(String.UTF8.encode(k)));
  }

  /** A string value given as UTF-8 bytes. */
  stringBytes(s: Uint8Array): void {
    if (this.pre()) {
      this.escape(s.dataStart, s.length);
      this.post();
    }
  }

  string(s: string): void {
    this.stringBytes(Uint8Array.wrap(String.UTF8.encode(s)));
  }

  private raw(s: string): void {
    if (this.pre()) {
      this.putStr(s);
      this.post();
    }
  }

  i64(v: i64): void { this.raw(v.toString()); }
  u64(v: u64): void { this.raw(v.toString()); }

  /** A finite f64 in its shortest round-trip form; NaN and the infinities are an error. */
  f64(v: f64): void {
    if (!isFinite(v)) {
      this.failed = true;
      return;
    }
    this.raw(v.toString());
  }

  private scratch: Uint8Array = new Uint8Array(0);

  // copyStr writes the reader's last string token, escaped, without allocating
  // (a token with escapes goes through a scratch buffer kept for the next one).
  private copyStr(r: JsonReader): void {
    const n = r.textEnd - r.textStart;
    if (!r.escaped) {
      this.escape(r.input.dataStart + <usize>r.textStart, n);
      return;
    }
    if (this.scratch.length < n) this.scratch = new Uint8Array(n);
    this.escape(this.scratch.dataStart, r.unescapeInto(this.scratch.dataStart));
  }

  /** The reader's last Key token as a key, without allocating: copying JSON through. */
  copyKey(r: JsonReader): void {
    if (this.failed || !this.wantKey) {
      this.failed = true;
      return;
    }
    if (!this.first) this.put(0x2c);
    this.first = false;
    this.copyStr(r);
    this.put(0x3a);
    this.wantKey = false;
  }

  /** The reader's last String token as a string value, without allocating. */
  copyString(r: JsonReader): void {
    if (this.pre()) {
      this.copyStr(r);
      this.post();
    }
  }

  /** The reader's last Number token as written (the reader checked it). */
  copyNumber(r: JsonReader): void {
    if (this.pre()) {
      this.putBytes(r.input.dataStart + <usize>r.textStart, r.textEnd - r.textStart);
      this.post();
    }
  }

  /** A number's text, checked against the grammar (a reader's Number token). */
  numberText(t: Uint8Array): void {
    const r = new JsonReader(t);
    if (r.next() != JsonToken.Number || !r.end()) {
      this.failed = true;
      return;
    }
    if (this.pre()) {
      this.putBytes(t.dataStart, t.length);
      this.post();
    }
  }

  bool(v: bool): void { this.raw(v ? "true" : "false"); }
  null(): void { this.raw("null"); }

  /** The JSON text, or null when the writer was misused or the value is incomplete. */
  finish(): Uint8Array | null {
    if (this.failed || !this.done) return null;
    return this.buf.subarray(0, this.len);
  }

  private escape(p: usize, n: i32): void {
    this.put(0x22);
    let run = 0; // the start of the bytes not yet written
    let i = 0;
    while (i < n) {
      const c = <u32>load<u8>(p + <usize>i);
      if (c >= 0x20 && c < 0x80 && c != 0x22 && c != 0x5c && c != 0x3c && c != 0x3e && c != 0x26) {
        i++; // the common case: a byte written as is
        continue;
      }
      let esc: string | null = null;
      let k = 1;
      if (c < 0x80) {
        if (c == 0x22) esc = "\\\"";
        else if (c == 0x5c) esc = "\\\\";
        else if (c == 0x0a) esc = "\\n";
        else if (c == 0x0d) esc = "\\r";
        else if (c == 0x09) esc = "\\t";
        else if (c == 0x08) esc = "\\b";
        else if (c == 0x0c) esc = "\\f";
        else if (c < 0x20 || c == 0x3c || c == 0x3e || c == 0x26) esc = "\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 15);
      } else {
        k = utf8Len(p + <usize>i, n - i);
        if (k == 0) {
          esc = "\\ufffd";
          k = 1;
        } else if (k == 3 && c == 0xe2 && load<u8>(p + <usize>i + 1) == 0x80) {
          const c2 = load<u8>(p + <usize>i + 2);
          if (c2 == 0xa8) esc = "\\u2028";
          else if (c2 == 0xa9) esc = "\\u2029";
        }
      }
      if (esc !== null) {
        this.putBytes(p + <usize>run, i - run);
        this.putStr(esc);
        run = i + k;
      }
      i += k;
    }
    this.putBytes(p + <usize>run, n - run);
    this.put(0x22);
  }
}

// utf8Len returns the length of the valid UTF-8 sequence at p (n > 0 bytes), or 0.
function utf8Len(p: usize, n: i32): i32 {
  const c = <u32>load<u8>(p);
  let k = 0;
  let lo: u32 = 0x80, hi: u32 = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) k = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    k = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    k = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else return 0;
  if (n < k) return 0;
  const c1 = <u32>load<u8>(p + 1);
  if (c1 < lo || c1 > hi) return 0;
  for (let j = 2; j < k; j++) {
    const cj = <u32>load<u8>(p + <usize>j);
    if (cj < 0x80 || cj > 0xbf) return 0;
  }
  return k;
}

/**
 * Writes plain JavaScript data as a Python pickle (protocol 4, data opcodes
 * only), for `send` on the `"python"` wire. The mapping is SPEC.md's:
 * `null` → None, `boolean` → bool, an integer-valued `number` or a
 * `bigint` → int, any other `number` → float, `string` → str, `Uint8Array`
 * → bytes, `Array` → list, a plain object → dict with str keys, `Map` →
 * dict, `Set` → set. An object met twice is written once and referred to
 * (the pickle memo), so shared and cyclic arrays and objects arrive as they
 * are. Anything else is a `TypeError` naming it, and nothing is written.
 *
 * ```ts
 * import { encodePickle } from "./pickle_write.ts";
 * import { strict as assert } from "node:assert";
 *
 * // pickle.dumps(None, protocol=4) == b"\x80\x04N."
 * assert.deepEqual(encodePickle(null), new Uint8Array([0x80, 4, 0x4e, 0x2e]));
 * ```
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";

/** How deep containers may nest (Python's own recursion limit is 1000). */
export const PICKLE_MAX_DEPTH = 1000;

const encoder = new TextEncoder();

// The opcodes written (names as in Python's pickletools).
const PROTO = 0x80, STOP = 0x2e, NONE = 0x4e, NEWTRUE = 0x88, NEWFALSE = 0x89;
const BININT = 0x4a, BININT1 = 0x4b, BININT2 = 0x4d;
const LONG1 = 0x8a, LONG4 = 0x8b, BINFLOAT = 0x47;
const SHORT_BINUNICODE = 0x8c, BINUNICODE = 0x58, BINUNICODE8 = 0x8d;
const SHORT_BINBYTES = 0x43, BINBYTES = 0x42, BINBYTES8 = 0x8e;
const EMPTY_LIST = 0x5d, APPENDS = 0x65, EMPTY_DICT = 0x7d, SETITEMS = 0x75;
const EMPTY_SET = 0x8f, ADDITEMS = 0x90, MARK = 0x28, MEMOIZE = 0x94;
const BINGET = 0x68, LONG_BINGET = 0x6a;

/** A growing byte buffer. */
class Out {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  len = 0;

  room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }
  byte(b: number): void {
    this.room(1);
    this.buf[this.len++] = b;
  }
  u32(n: number): void {
    this.room(4);
    this.view.setUint32(this.len, n, true);
    this.len += 4;
  }
  /**
   * An opcode and its argument `n`: `short` and one byte below 256, else
   * `long` and a u32.
   */
  opWithArg(short: number, long: number, n: number): void {
    if (n < 256) {
      this.byte(short);
      this.byte(n);
    } else {
      this.byte(long);
      this.u32(n);
    }
  }
  u64(n: number): void {
    this.room(8);
    this.view.setBigUint64(this.len, BigInt(n), true);
    this.len += 8;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
}

/**
 * Encodes a JS string as Python does (UTF-8, with lone surrogates written
 * as their own 3-byte form, Python's `surrogatepass`).
 */
function utf8(s: string): Uint8Array {
  if (s.isWellFormed()) return encoder.encode(s);
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.codePointAt(i)!;
    if (c > 0xffff) i++;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) {
      out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    } else {
      out.push(
        0xf0 | (c >> 18),
        0x80 | ((c >> 12) & 63),
        0x80 | ((c >> 6) & 63),
        0x80 | (c & 63),
      );
    }
  }
  return new Uint8Array(out);
}

/** Two's complement little-endian bytes of `n`, as few as hold it. */
function longBytes(n: bigint): Uint8Array {
  if (n === 0n) return new Uint8Array(0);
  const out: number[] = [];
  for (let x = n;;) {
    const b = Number(x & 0xffn);
    out.push(b);
    x >>= 8n;
    if ((x === 0n && b < 0x80) || (x === -1n && b >= 0x80)) break;
  }
  return new Uint8Array(out);
}

/** Whether a value may be a Python dict key or set item once written. */
function hashable(v: unknown): boolean {
  return v === null || typeof v === "boolean" || typeof v === "number" ||
    typeof v === "bigint" || typeof v === "string" || v instanceof Uint8Array;
}

class Writer {
  readonly out = new Out();
  readonly #memo = new Map<object, number>();

  fail(what: string): never {
    throw new TypeError(`Cannot send as a Python pickle: ${what}`);
  }

  int(n: bigint | number): void {
    const o = this.out;
    if (typeof n === "number" && n >= -0x80000000 && n <= 0x7fffffff) {
      if (n >= 0 && n < 0x100) {
        o.byte(BININT1);
        o.byte(n);
      } else if (n >= 0 && n < 0x10000) {
        o.byte(BININT2);
        o.byte(n & 0xff);
        o.byte(n >> 8);
      } else {
        o.byte(BININT);
        o.u32(n >>> 0);
      }
      return;
    }
    const b = longBytes(BigInt(n));
    o.opWithArg(LONG1, LONG4, b.length);
    o.bytes(b);
  }

  sized(
    short: number,
    four: number,
    eight: number,
    b: Uint8Array,
  ): void {
    const o = this.out;
    if (b.length <= 0xffffffff) o.opWithArg(short, four, b.length);
    else {
      o.byte(eight);
      o.u64(b.length);
    }
    o.bytes(b);
  }

  /** Refers to `v` if it was written before; else remembers it. */
  seen(v: object): boolean {
    const at = this.#memo.get(v);
    if (at === undefined) {
      this.#memo.set(v, this.#memo.size);
      return false;
    }
    this.out.opWithArg(BINGET, LONG_BINGET, at);
    return true;
  }

  key(k: unknown, what: string, depth: number): void {
    if (!hashable(k)) {
      this.fail(
        `${
          describeValue(k)
        } cannot be a ${what} (Python needs a hashable one: null, boolean, number, bigint, string or Uint8Array)`,
      );
    }
    this.value(k, depth);
  }

  value(v: unknown, depth: number): void {
    const o = this.out;
    switch (typeof v) {
      case "boolean":
        o.byte(v ? NEWTRUE : NEWFALSE);
        return;
      case "number":
        if (Number.isInteger(v)) this.int(v);
        else {
          o.byte(BINFLOAT);
          o.room(8);
          o.view.setFloat64(o.len, v); // big-endian, as pickle wants
          o.len += 8;
        }
        return;
      case "bigint":
        this.int(v);
        return;
      case "string":
        this.sized(SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, utf8(v));
        return;
      case "object":
        if (v === null) {
          o.byte(NONE);
          return;
        }
        break;
      default:
        this.fail(
          `${describeValue(v)} has no Python equivalent${
            v === undefined ? " (use null for None)" : ""
          }`,
        );
    }
    if (depth >= PICKLE_MAX_DEPTH) {
      this.fail(`it nests deeper than ${PICKLE_MAX_DEPTH} levels`);
    }
    if (this.seen(v)) return;
    const d = depth + 1;
    if (v instanceof Uint8Array) {
      this.sized(SHORT_BINBYTES, BINBYTES, BINBYTES8, v);
      o.byte(MEMOIZE);
      return;
    }
    if (Array.isArray(v)) {
      o.byte(EMPTY_LIST);
      o.byte(MEMOIZE);
      if (v.length === 0) return;
      o.byte(MARK);
      for (let i = 0; i < v.length; i++) {
        if (!(i in v)) this.fail(`the array has a hole at index ${i}`);
        this.value(v[i], d);
      }
      o.byte(APPENDS);
      return;
    }
    const proto = Object.getPrototypeOf(v);
    if (proto === Object.prototype || proto === null || v instanceof Map) {
      o.byte(EMPTY_DICT);
      o.byte(MEMOIZE);
      const entries: Iterable<[unknown, unknown]> = v instanceof Map
        ? v
        : Object.entries(v as Record<string, unknown>);
      let any = false;
      for (const [k, x] of entries) {
        if (!any) o.byte(MARK);
        any = true;
        this.key(k, "dict key", d);
        this.value(x, d);
      }
      if (any) o.byte(SETITEMS);
      return;
    }
    if (v instanceof Set) {
      o.byte(EMPTY_SET);
      o.byte(MEMOIZE);
      if (v.size === 0) return;
      o.byte(MARK);
      for (const x of v) this.key(x, "set item", d);
      o.byte(ADDITEMS);
      return;
    }
    this.fail(
      `${
        describeValue(v)
      } has no Python equivalent (null, boolean, number, bigint, string, Uint8Array, arrays, plain objects, Map and Set do)`,
    );
  }
}

/**
 * Pickles a value (protocol 4, unframed; see the module doc for the
 * mapping).
 *
 * @param value The value.
 * @returns The pickle's bytes.
 * @throws {TypeError} If the value holds something Python has no plain
 *   equivalent for, or a dict key / set item Python cannot hash.
 */
export function encodePickle(value: unknown): Uint8Array {
  const w = new Writer();
  w.out.byte(PROTO);
  w.out.byte(4);
  w.value(value, 0);
  w.out.byte(STOP);
  return w.out.buf.subarray(0, w.out.len);
}

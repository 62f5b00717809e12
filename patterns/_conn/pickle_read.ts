/**
 * Reads Python pickles of plain data, for `recv` on the `"python"` wire:
 * every data opcode of protocols 0–5 (numbers, strings, bytes, lists,
 * tuples, dicts, sets, the memo, marks, frames) and nothing else. An opcode
 * that would find a class or function and call it (`GLOBAL`,
 * `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`,
 * `EXT1/2/4`, `PERSID`, `BINPERSID`) is refused with a `TypeError` that
 * names it; nothing is ever looked up or run — this reader has no way to.
 * The mapping is SPEC.md's: None → `null`, bool → `boolean`, int →
 * `number` when safe, else `bigint`, float → `number`, str → `string`,
 * bytes and bytearray → `Uint8Array`, list and tuple → `Array`, a dict whose
 * keys are all str → a plain object, any other dict → `Map`, set and
 * frozenset → `Set`. Shared and cyclic containers stay shared and cyclic.
 *
 * ```ts
 * import { decodePickle } from "./pickle_read.ts";
 * import { strict as assert } from "node:assert";
 *
 * // pickle.dumps({"a": (1, 2.5)}, protocol=2)
 * const bytes = Uint8Array.from(
 *   atob("gAJ9cQBYAQAAAGFxAUsBR0AEAAAAAAAAhnECcy4="),
 *   (c) => c.charCodeAt(0),
 * );
 * assert.deepEqual(decodePickle(bytes, "recv"), { a: [1, 2.5] });
 * ```
 *
 * @module
 */

import { PICKLE_MAX_DEPTH } from "./pickle_write.ts";

/** A Python dict while the pickle is read (its key types decide its class). */
class PyDict {
  readonly map = new Map<unknown, unknown>();
}

/** What the opcodes that are refused are called, by byte. */
const REFUSED: Record<number, string> = {
  0x63: "GLOBAL",
  0x93: "STACK_GLOBAL",
  0x52: "REDUCE",
  0x62: "BUILD",
  0x69: "INST",
  0x6f: "OBJ",
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x50: "PERSID",
  0x51: "BINPERSID",
};

const PLAIN =
  "only plain data (None, bool, int, float, str, bytes, list, tuple, dict, set) is accepted";

const utf8Strict = new TextDecoder("utf-8", { fatal: true });
const latin1 = new TextDecoder("latin1");

/**
 * Decodes UTF-8 as Python's pickle does (`surrogatepass`: a lone surrogate
 * written as its own 3-byte form is kept).
 */
function decodeUtf8(b: Uint8Array, bad: (why: string) => never): string {
  try {
    return utf8Strict.decode(b);
  } catch {
    // Fall through: maybe surrogates, which the strict decoder refuses.
  }
  let s = "";
  for (let i = 0; i < b.length;) {
    const c = b[i]!;
    let cp: number, n: number;
    if (c < 0x80) [cp, n] = [c, 1];
    else if (c >= 0xc2 && c < 0xe0) [cp, n] = [c & 0x1f, 2];
    else if (c >= 0xe0 && c < 0xf0) [cp, n] = [c & 0x0f, 3];
    else if (c >= 0xf0 && c < 0xf5) [cp, n] = [c & 0x07, 4];
    else return bad("a str that is not UTF-8");
    if (i + n > b.length) return bad("a str that is not UTF-8");
    for (let k = 1; k < n; k++) {
      const x = b[i + k]!;
      if ((x & 0xc0) !== 0x80) return bad("a str that is not UTF-8");
      cp = (cp << 6) | (x & 0x3f);
    }
    if (
      (n === 3 && cp < 0x800) || (n === 4 && (cp < 0x10000 || cp > 0x10ffff))
    ) {
      return bad("a str that is not UTF-8");
    }
    s += String.fromCodePoint(cp);
    i += n;
  }
  return s;
}

/** Decodes a Python 2 str's bytes (ASCII, Python 3's default for them). */
function decodeAscii(b: Uint8Array, bad: (why: string) => never): string {
  for (const c of b) if (c > 0x7f) bad("a Python 2 str that is not ASCII");
  return latin1.decode(b);
}

/** A safe integer as a `number`, any other as a `bigint`. */
function intValue(n: bigint): number | bigint {
  return n >= -9007199254740991n && n <= 9007199254740991n ? Number(n) : n;
}

/** Two's complement little-endian bytes as an int. */
function longFromBytes(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let hex = "";
  for (let i = b.length - 1; i >= 0; i--) {
    hex += b[i]!.toString(16).padStart(2, "0");
  }
  let n = BigInt("0x" + hex);
  if (b[b.length - 1]! >= 0x80) n -= 1n << BigInt(8 * b.length);
  return intValue(n);
}

/** Python's limit on the digits of an int read from text (3.11+). */
const MAX_INT_DIGITS = 4300;

class Reader {
  readonly #b: Uint8Array;
  readonly #view: DataView;
  readonly #what: string;
  #at = 0;
  #stack: unknown[] = [];
  readonly #marks: unknown[][] = [];
  readonly #memo = new Map<number, unknown>();

  constructor(bytes: Uint8Array, what: string) {
    this.#b = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#what = what;
  }

  bad = (why: string): never => {
    throw new SyntaxError(
      `Cannot ${this.#what}: the message is not a valid pickle: ${why} (at byte ${this.#at})`,
    );
  };

  #need(n: number): number {
    if (n > this.#b.length - this.#at) this.bad("it ends early");
    const at = this.#at;
    this.#at += n;
    return at;
  }
  #u8(): number {
    return this.#b[this.#need(1)]!;
  }
  #u16(): number {
    return this.#view.getUint16(this.#need(2), true);
  }
  #u32(): number {
    return this.#view.getUint32(this.#need(4), true);
  }
  #i32(): number {
    return this.#view.getInt32(this.#need(4), true);
  }
  #u64(): number {
    const n = this.#view.getBigUint64(this.#need(8), true);
    if (n > BigInt(this.#b.length)) this.bad("a length past its end");
    return Number(n);
  }
  #take(n: number): Uint8Array {
    const at = this.#need(n);
    return this.#b.subarray(at, at + n);
  }
  /** A text argument: the bytes up to the next newline (dropped). */
  #line(): string {
    return this.#nextLine() ?? this.bad("a text argument has no newline");
  }
  /** The bytes up to the next newline (dropped), if there is one. */
  #nextLine(): string | undefined {
    const end = this.#b.indexOf(0x0a, this.#at);
    if (end < 0) return undefined;
    const s = latin1.decode(this.#b.subarray(this.#at, end));
    this.#at = end + 1;
    return s;
  }

  #push(v: unknown): void {
    this.#stack.push(v);
  }
  #pop(): unknown {
    if (this.#stack.length === 0) this.bad("the stack is empty");
    return this.#stack.pop();
  }
  #top(): unknown {
    if (this.#stack.length === 0) this.bad("the stack is empty");
    return this.#stack[this.#stack.length - 1];
  }
  #popMark(): unknown[] {
    const items = this.#stack;
    const outer = this.#marks.pop();
    if (!outer) this.bad("no MARK to pop to");
    this.#stack = outer!;
    return items;
  }
  #decimal(s: string): bigint {
    const t = s.trim();
    if (!/^[+-]?\d+$/.test(t)) this.bad(`not an integer: ${JSON.stringify(s)}`);
    if (t.replace(/^[+-]/, "").length > MAX_INT_DIGITS) {
      this.bad(`an integer of more than ${MAX_INT_DIGITS} digits`);
    }
    return BigInt(t);
  }
  #memoKey(s: string): number {
    const t = s.trim();
    if (!/^\d{1,10}$/.test(t)) {
      this.bad(`a bad memo index ${JSON.stringify(s)}`);
    }
    return Number(t);
  }
  #get(i: number): void {
    if (!this.#memo.has(i)) this.bad(`memo entry ${i} was never stored`);
    this.#push(this.#memo.get(i));
  }
  #put(i: number): void {
    this.#memo.set(i, this.#top());
  }
  #setItems(target: unknown, items: unknown[]): void {
    if (!(target instanceof PyDict)) {
      this.bad("SETITEM(S) on something not a dict");
    }
    if (items.length % 2 !== 0) this.bad("SETITEMS with an odd item count");
    for (let i = 0; i < items.length; i += 2) {
      (target as PyDict).map.set(items[i], items[i + 1]);
    }
  }

  #refuse(op: number, name: string): never {
    let detail = name;
    if (op === 0x63 || op === 0x69) {
      // GLOBAL and INST name "module\nname\n": say which, never look it up.
      const module = this.#nextLine() ?? "";
      const text = `${module}.${this.#nextLine() ?? ""}`;
      detail = `${name} ${JSON.stringify(text.slice(0, 80))}`;
    } else if (op === 0x93) {
      const n = this.#stack.length;
      const [m, q] = [this.#stack[n - 2], this.#stack[n - 1]];
      if (typeof m === "string" && typeof q === "string") {
        detail = `${name} ${JSON.stringify(`${m}.${q}`.slice(0, 80))}`;
      }
    }
    throw new TypeError(
      `Cannot ${this.#what}: the pickle names a class or function (${detail}); ${PLAIN}, and nothing from it was run`,
    );
  }

  /** Runs the opcodes up to STOP and returns the value (not yet finished). */
  run(): unknown {
    const b = this.#b;
    for (;;) {
      const start = this.#at;
      if (start >= b.length) this.bad("it has no STOP");
      const op = b[this.#at++]!;
      switch (op) {
        case 0x80: { // PROTO
          const v = this.#u8();
          if (v > 5) this.bad(`unsupported protocol ${v}`);
          break;
        }
        case 0x95: // FRAME: a length hint only
          this.#u64();
          break;
        case 0x2e: { // STOP
          const v = this.#pop();
          if (this.#at !== b.length) this.bad("bytes after STOP");
          return v;
        }
        // -- Atoms --
        case 0x4e: // NONE
          this.#push(null);
          break;
        case 0x88: // NEWTRUE
          this.#push(true);
          break;
        case 0x89: // NEWFALSE
          this.#push(false);
          break;
        case 0x49: { // INT
          const s = this.#line();
          if (s === "00") this.#push(false);
          else if (s === "01") this.#push(true);
          else this.#push(intValue(this.#decimal(s)));
          break;
        }
        case 0x4a: // BININT
          this.#push(this.#i32());
          break;
        case 0x4b: // BININT1
          this.#push(this.#u8());
          break;
        case 0x4d: // BININT2
          this.#push(this.#u16());
          break;
        case 0x4c: // LONG
          this.#push(intValue(this.#decimal(this.#line().replace(/L$/, ""))));
          break;
        case 0x8a: // LONG1
          this.#push(longFromBytes(this.#take(this.#u8())));
          break;
        case 0x8b: { // LONG4
          const n = this.#i32();
          if (n < 0) this.bad("a negative LONG4 length");
          this.#push(longFromBytes(this.#take(n)));
          break;
        }
        case 0x46: { // FLOAT
          const s = this.#line().trim();
          if (
            // No two parts may match the same digits: a pattern that can
            // split a digit run two ways backtracks quadratically on a long
            // one that fails at its end.
            !/^[+-]?((\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$/i.test(
              s,
            )
          ) this.bad(`not a float: ${JSON.stringify(s)}`);
          const t = s.replace(/^([+-]?)inf(inity)?$/i, "$1Infinity");
          this.#push(/nan/i.test(t) ? NaN : Number(t));
          break;
        }
        case 0x47: // BINFLOAT (big-endian)
          this.#push(this.#view.getFloat64(this.#need(8)));
          break;
        // -- Strings and bytes --
        case 0x8c: // SHORT_BINUNICODE
          this.#push(decodeUtf8(this.#take(this.#u8()), this.bad));
          break;
        case 0x58: // BINUNICODE
          this.#push(decodeUtf8(this.#take(this.#u32()), this.bad));
          break;
        case 0x8d: // BINUNICODE8
          this.#push(decodeUtf8(this.#take(this.#u64()), this.bad));
          break;
        case 0x56: // UNICODE (raw-unicode-escape text)
          this.#push(rawUnicodeEscape(this.#line(), this.bad));
          break;
        case 0x55: // SHORT_BINSTRING
          this.#push(decodeAscii(this.#take(this.#u8()), this.bad));
          break;
        case 0x54: { // BINSTRING
          const n = this.#i32();
          if (n < 0) this.bad("a negative BINSTRING length");
          this.#push(decodeAscii(this.#take(n), this.bad));
          break;
        }
        case 0x53: // STRING (a quoted, escaped text)
          this.#push(quotedString(this.#line(), this.bad));
          break;
        case 0x43: // SHORT_BINBYTES
          this.#push(this.#take(this.#u8()).slice());
          break;
        case 0x42: // BINBYTES
          this.#push(this.#take(this.#u32()).slice());
          break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
          this.#push(this.#take(this.#u64()).slice());
          break;
        case 0x97: // NEXT_BUFFER
          this.bad("it uses an out-of-band buffer (none is given)");
          break;
        case 0x98: // READONLY_BUFFER: changes nothing here
          this.#top();
          break;
        // -- Containers --
        case 0x5d: // EMPTY_LIST
          this.#push([]);
          break;
        case 0x6c: // LIST
          this.#push(this.#popMark());
          break;
        case 0x61: { // APPEND
          const v = this.#pop();
          const list = this.#top();
          if (!Array.isArray(list)) this.bad("APPEND to something not a list");
          (list as unknown[]).push(v);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.#popMark();
          const list = this.#top();
          if (!Array.isArray(list)) this.bad("APPENDS to something not a list");
          for (const v of items) (list as unknown[]).push(v);
          break;
        }
        case 0x29: // EMPTY_TUPLE
          this.#push([]);
          break;
        case 0x74: // TUPLE
          this.#push(this.#popMark());
          break;
        case 0x85: // TUPLE1
          this.#push([this.#pop()]);
          break;
        case 0x86: { // TUPLE2
          const y = this.#pop(), x = this.#pop();
          this.#push([x, y]);
          break;
        }
        case 0x87: { // TUPLE3
          const z = this.#pop(), y = this.#pop(), x = this.#pop();
          this.#push([x, y, z]);
          break;
        }
        case 0x7d: // EMPTY_DICT
          this.#push(new PyDict());
          break;
        case 0x64: { // DICT
          const items = this.#popMark();
          const d = new PyDict();
          this.#setItems(d, items);
          this.#push(d);
          break;
        }
        case 0x73: { // SETITEM
          const v = this.#pop(), k = this.#pop();
          this.#setItems(this.#top(), [k, v]);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.#popMark();
          this.#setItems(this.#top(), items);
          break;
        }
        case 0x8f: // EMPTY_SET
          this.#push(new Set());
          break;
        case 0x90: { // ADDITEMS
          const items = this.#popMark();
          const set = this.#top();
          if (!(set instanceof Set)) {
            this.bad("ADDITEMS to something not a set");
          }
          for (const v of items) (set as Set<unknown>).add(v);
          break;
        }
        case 0x91: // FROZENSET
          this.#push(new Set(this.#popMark()));
          break;
        // -- The stack and the memo --
        case 0x28: // MARK
          this.#marks.push(this.#stack);
          this.#stack = [];
          break;
        case 0x30: // POP
          if (this.#stack.length > 0) this.#stack.pop();
          else this.#popMark();
          break;
        case 0x31: // POP_MARK
          this.#popMark();
          break;
        case 0x32: // DUP
          this.#push(this.#top());
          break;
        case 0x67: // GET
          this.#get(this.#memoKey(this.#line()));
          break;
        case 0x68: // BINGET
          this.#get(this.#u8());
          break;
        case 0x6a: // LONG_BINGET
          this.#get(this.#u32());
          break;
        case 0x70: // PUT
          this.#put(this.#memoKey(this.#line()));
          break;
        case 0x71: // BINPUT
          this.#put(this.#u8());
          break;
        case 0x72: // LONG_BINPUT
          this.#put(this.#u32());
          break;
        case 0x94: // MEMOIZE
          this.#put(this.#memo.size);
          break;
        default:
          if (Object.hasOwn(REFUSED, op)) this.#refuse(op, REFUSED[op]!);
          this.#at = start;
          this.bad(`unknown opcode 0x${op.toString(16).padStart(2, "0")}`);
      }
    }
  }
}

/** Python's `raw-unicode-escape`: latin-1 text with `\uXXXX`/`\UXXXXXXXX`. */
function rawUnicodeEscape(s: string, bad: (why: string) => never): string {
  // Backslashes pair off first: only the odd one of a run escapes.
  return s.replace(
    /\\\\|\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[uU])/g,
    (all, hex) => {
      if (hex === undefined) return all;
      if (hex.length === 1) bad(`a truncated \\${hex} escape`);
      const cp = parseInt(hex.slice(1), 16);
      if (cp > 0x10ffff) bad("a \\U escape past U+10FFFF");
      return String.fromCodePoint(cp);
    },
  );
}

const SIMPLE_ESCAPES: Record<string, string> = {
  "\\": "\\",
  "'": "'",
  '"': '"',
  n: "\n",
  t: "\t",
  r: "\r",
  a: "\x07",
  b: "\b",
  f: "\f",
  v: "\v",
  "\n": "",
};

/** Protocol 0's `STRING`: a quoted text with Python's bytes escapes. */
function quotedString(s: string, bad: (why: string) => never): string {
  const q = s[0];
  if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) {
    bad("a STRING argument that is not quoted");
  }
  const out = s.slice(1, -1).replace(
    /\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|[\s\S])/g,
    (all, e: string) => {
      if (e[0] === "x") return String.fromCharCode(parseInt(e.slice(1), 16));
      if (/^[0-7]/.test(e)) return String.fromCharCode(parseInt(e, 8) & 0xff);
      return Object.hasOwn(SIMPLE_ESCAPES, e) ? SIMPLE_ESCAPES[e]! : all;
    },
  );
  return decodeAscii(Uint8Array.from(out, (c) => c.charCodeAt(0)), bad);
}

/** Sets an own data property, `"__proto__"` included. */
function setOwn(out: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(out, k, {
    value: v,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

/**
 * Turns the reader's dicts into plain objects or `Map`s, in place
 * elsewhere, keeping shared and cyclic structure.
 */
function finish(
  v: unknown,
  done: Map<object, unknown>,
  depth: number,
  what: string,
): unknown {
  if (typeof v !== "object" || v === null || v instanceof Uint8Array) return v;
  const seen = done.get(v);
  if (seen !== undefined) return seen;
  if (depth >= PICKLE_MAX_DEPTH) {
    throw new RangeError(
      `Cannot ${what}: the pickled value nests deeper than ${PICKLE_MAX_DEPTH} levels`,
    );
  }
  const d = depth + 1;
  if (Array.isArray(v)) {
    done.set(v, v);
    for (let i = 0; i < v.length; i++) v[i] = finish(v[i], done, d, what);
    return v;
  }
  if (v instanceof Set) {
    done.set(v, v);
    const items = [...v];
    v.clear();
    for (const x of items) v.add(finish(x, done, d, what));
    return v;
  }
  const dict = v as PyDict;
  const allStr = dict.map.keys().every((k) => typeof k === "string");
  if (allStr) {
    const out: Record<string, unknown> = {};
    done.set(v, out);
    for (const [k, x] of dict.map) {
      setOwn(out, k as string, finish(x, done, d, what));
    }
    return out;
  }
  const out = new Map<unknown, unknown>();
  done.set(v, out);
  for (const [k, x] of dict.map) {
    out.set(finish(k, done, d, what), finish(x, done, d, what));
  }
  return out;
}

/**
 * Reads a pickle of plain data (see the module doc for the mapping).
 *
 * @param bytes The pickle.
 * @param what The call, for error messages (e.g. `"recv"`).
 * @returns The value.
 * @throws {TypeError} If the pickle names a class or function (nothing is
 *   run).
 * @throws {SyntaxError} If it is not a valid pickle.
 * @throws {RangeError} If it nests deeper than 1000 levels.
 */
export function decodePickle(bytes: Uint8Array, what: string): unknown {
  const r = new Reader(bytes, what);
  return finish(r.run(), new Map(), 0, what);
}

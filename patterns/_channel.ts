/**
 * The engine under `pipe.ts` and `queue.ts`: a ring of variable-length
 * records in a `SharedArrayBuffer`, guarded by a short, recoverable lock, plus
 * the codec that turns values into records.
 *
 * Internal: the public names are `Pipe`/`Connection` (`pipe.ts`) and
 * `Queue`/`SimpleQueue`/`JoinableQueue` (`queue.ts`).
 *
 * **Layout.** 128 bytes of control words, then `capacity` bytes of data. A
 * record is a 4-byte header (`length * 8 + tag`) and its payload, padded to a
 * multiple of 4, so a header never straddles the end of the ring (a payload
 * may; it is copied in two pieces).
 *
 * **Codec.** Small integers travel as one `Int32`, other numbers as a
 * `Float64`, well-formed strings as UTF-8 (`TextEncoder.encodeInto`), byte
 * messages as they are, plain JSON-shaped data (objects, arrays, finite
 * numbers, strings, booleans, `null`) as JSON text, and everything else
 * through `node:v8`'s structured clone serializer. A value the serializer refuses is a `TypeError` before the
 * ring is touched, so nothing is ever half-written.
 *
 * **Lock.** The lock word holds the holder's thread id. A thread that finds it
 * held spins briefly, then sleeps on it in 1 ms slices; when the holder's
 * thread is gone (terminated, crashed, exited) for longer than a short grace
 * period, the waiter takes the lock over. The commit of a put or a get is a
 * few straight-line stores with no call and no loop, and V8 only stops a
 * thread at a function entry or a loop back-edge, so a thread stopped while
 * holding the lock never leaves a half-committed ring: what it had not
 * committed is simply not there. A consumer killed while waiting holds no lock
 * and has taken nothing, so it loses nothing.
 *
 * **Waking.** Consumers that sleep count themselves in `WAIT_GET` and sleep on
 * `PUT_SEQ`; producers on `GET_SEQ` with `WAIT_PUT`. A put only bumps and
 * notifies `PUT_SEQ` when someone sleeps (and vice versa), and every sleeper
 * spins first, so a busy channel makes no system call per item.
 *
 * ```ts
 * import { DRAINED, EMPTY, OK, Ring } from "./_channel.ts";
 * import { strict as assert } from "node:assert";
 *
 * const ring = new Ring(Ring.allocate(1024, 0));
 * assert.equal(ring.put(42, "put"), OK);
 * assert.equal(ring.put("hi", "put"), OK);
 * assert.equal(ring.tryGet(false), 42);
 * assert.equal(ring.tryGet(false), "hi");
 * assert.equal(ring.tryGet(false), EMPTY);
 * ring.closeWriter();
 * assert.equal(ring.tryGet(false), DRAINED);
 * ```
 *
 * @module
 */

import { deserialize, serialize } from "node:v8";
import {
  currentThreadId,
  describeValue,
  isThreadAlive,
  throwIfStopRequested,
  waitAsync,
  type WaitOptions,
  waitSync,
} from "./_util.ts";

// -- Control words (Int32 indices) ---------------------------------------

const LOCK = 0;
const LOCK_WAITERS = 1;
const HEAD = 2;
const TAIL = 3;
const USED = 4;
const COUNT = 5;
const CAP = 6;
const MAXSIZE = 7;
const FLAGS = 8;
/** Bumped when a record was added (or the ring closed) and a consumer sleeps. */
const PUT_SEQ = 16;
/** Bumped when a record was taken (or the ring closed) and a producer sleeps. */
const GET_SEQ = 17;
const WAIT_GET = 18;
const WAIT_PUT = 19;
/** JoinableQueue: items put and not yet marked done. */
const UNFINISHED = 24;
const WAIT_JOIN = 25;
/** Bytes of control words before the data. */
const HEADER_BYTES = 128;

/** Flag: the writing side is closed (a closed queue, a pipe's sender gone). */
const W_CLOSED = 1;
/** Flag: the reading side is closed (a pipe's receiver gone). */
const R_CLOSED = 2;

// -- Results -------------------------------------------------------------

/** A put succeeded. */
export const OK = 0;
/** A put found no room (items or bytes). */
export const FULL = 1;
/** A put found the writing side closed. */
export const CLOSED = 2;
/** A put found the reading side closed (a broken pipe). */
export const BROKEN = 3;
/** What a put returns. */
export type PutResult = typeof OK | typeof FULL | typeof CLOSED | typeof BROKEN;

/** A get found the ring empty. */
export const EMPTY: unique symbol = Symbol("empty");
/** A get found the ring empty and the writing side closed. */
export const DRAINED: unique symbol = Symbol("drained");
/** A get found a record of the other kind (bytes vs value): nothing taken. */
export const MISMATCH: unique symbol = Symbol("mismatch");
/** The sentinels a get may return instead of a value. */
export type GetSentinel = typeof EMPTY | typeof DRAINED | typeof MISMATCH;

// -- Codec ---------------------------------------------------------------

const TAG_INT = 1;
const TAG_FLOAT = 2;
const TAG_STR = 3;
const TAG_BYTES = 4;
const TAG_V8 = 5;
const TAG_JSON = 6;
/** A string with lone surrogates, as UTF-16 code units (UTF-8 cannot). */
const TAG_UTF16 = 7;

/** The largest payload a record can describe (2^28 − 1 bytes). */
const MAX_PAYLOAD = (1 << 28) - 1;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const f64 = new Float64Array(1);
const f64w = new Int32Array(f64.buffer);
const NO_BYTES = new Uint8Array(0);

// The last encoded value: a put encodes, then writes, with no await between.
let encTag = 0;
let encLen = 0;
let encNum = 0;
let encBytes: Uint8Array = NO_BYTES;
let scratchOut = new Uint8Array(4096);
let scratchIn = new Uint8Array(4096);

// Received byte messages are cut from slabs, as Node's Buffer pool does:
// allocating an ArrayBuffer costs microseconds in Deno, a view of a slab
// does not. Each message gets its own region, never reused.
const SLAB_BYTES = 256 * 1024;
const SLAB_MAX_ITEM = 8 * 1024;
let slab = new ArrayBuffer(0);
let slabUsed = 0;

function allocBytes(len: number): Uint8Array {
  if (len > SLAB_MAX_ITEM) return new Uint8Array(len);
  if (slabUsed + len > slab.byteLength) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabUsed = 0;
  }
  const view = new Uint8Array(slab, slabUsed, len);
  slabUsed += (len + 7) & ~7;
  return view;
}

/** An encoded value kept aside while its put waits for room. */
export interface EncodedRecord {
  /** The record's tag. */
  tag: number;
  /** The payload length in bytes. */
  len: number;
  /** The number, for number tags. */
  num: number;
  /** A private copy of the payload, for the other tags. */
  bytes: Uint8Array;
}

function cloneError(what: string, value: unknown, e: unknown): TypeError {
  const detail = e instanceof Error ? e.message : String(e);
  return new TypeError(
    `Cannot ${what}: the value cannot be cloned (${detail}), received ${
      describeValue(value)
    }`,
    { cause: e },
  );
}

function encodeUtf8(text: string): void {
  const max = text.length * 3;
  if (max <= 1 << 16) {
    if (scratchOut.length < max) scratchOut = new Uint8Array(1 << 16);
    encLen = encoder.encodeInto(text, scratchOut).written;
    encBytes = scratchOut;
  } else {
    encBytes = encoder.encode(text);
    encLen = encBytes.length;
  }
}

/**
 * Whether JSON carries `value` exactly as structured clone would: plain
 * objects and dense arrays of finite numbers (not `-0`), well-formed
 * strings, booleans and `null`, not too deep. JSON is some 20 times faster
 * than `node:v8`'s serializer in Deno, so such values take that path.
 */
function jsonExact(value: object, depth: number): boolean {
  if (depth > 32) return false;
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return false;
    for (let i = 0; i < value.length; i++) {
      if (!jsonExactItem(value[i], depth)) return false;
    }
    return true;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const k in value) {
    if (!Object.hasOwn(value, k) || k === "__proto__") return false;
    if (!jsonExactItem((value as Record<string, unknown>)[k], depth)) {
      return false;
    }
  }
  return true;
}

function jsonExactItem(v: unknown, depth: number): boolean {
  switch (typeof v) {
    case "string":
      return v.isWellFormed();
    case "number":
      return Number.isFinite(v) && (v !== 0 || 1 / v > 0);
    case "boolean":
      return true;
    case "object":
      return v === null || jsonExact(v, depth + 1);
    default:
      return false;
  }
}

/**
 * Encodes a value as the pending record (see the module doc).
 *
 * @param value Any structured-clone value.
 * @param what The call, for error messages (e.g. `"put"`).
 * @returns The record's total size in the ring, header and padding included.
 * @throws {TypeError} If the value cannot be cloned.
 */
export function encodeValue(value: unknown, what: string): number {
  if (typeof value === "number") {
    encNum = value;
    if ((value | 0) === value && (value !== 0 || 1 / value > 0)) {
      encTag = TAG_INT;
      encLen = 4;
      return 8;
    }
    encTag = TAG_FLOAT;
    encLen = 8;
    return 12;
  }
  if (typeof value === "string" && value.isWellFormed()) {
    encodeUtf8(value);
    encTag = TAG_STR;
    return 4 + ((encLen + 3) & ~3);
  }
  if (typeof value === "string") {
    encLen = value.length * 2;
    encBytes = new Uint8Array(encLen);
    const units = new Uint16Array(encBytes.buffer);
    for (let i = 0; i < value.length; i++) units[i] = value.charCodeAt(i);
    encTag = TAG_UTF16;
    return 4 + ((encLen + 3) & ~3);
  }
  if (typeof value === "object" && value !== null && jsonExact(value, 0)) {
    encodeUtf8(JSON.stringify(value));
    encTag = TAG_JSON;
    return 4 + ((encLen + 3) & ~3);
  }
  let bytes: Uint8Array;
  try {
    bytes = serialize(value);
  } catch (e) {
    throw cloneError(what, value, e);
  }
  encTag = TAG_V8;
  encBytes = bytes;
  encLen = bytes.length;
  return 4 + ((encLen + 3) & ~3);
}

/**
 * Encodes a byte message as the pending record.
 *
 * @param bytes The bytes.
 * @returns The record's total size in the ring.
 */
export function encodeBytes(bytes: Uint8Array): number {
  encTag = TAG_BYTES;
  encBytes = bytes;
  encLen = bytes.length;
  return 4 + ((encLen + 3) & ~3);
}

/**
 * Keeps a copy of the pending record, for a put that has to wait.
 *
 * @returns The copy.
 */
export function saveEncoded(): EncodedRecord {
  return {
    tag: encTag,
    len: encLen,
    num: encNum,
    bytes: encTag === TAG_INT || encTag === TAG_FLOAT
      ? NO_BYTES
      : encBytes.slice(0, encLen),
  };
}

/**
 * Makes a saved record the pending one again.
 *
 * @param r The saved record.
 */
export function restoreEncoded(r: EncodedRecord): void {
  encTag = r.tag;
  encLen = r.len;
  encNum = r.num;
  encBytes = r.bytes;
}

/**
 * The size in the ring of a record with this payload length.
 *
 * @param len Payload bytes.
 * @returns Header, payload and padding.
 */
export function recordSize(len: number): number {
  return 4 + ((len + 3) & ~3);
}

// -- The lock ------------------------------------------------------------

/** How long a dead holder must stay dead before its lock is taken over. */
const TAKEOVER_GRACE_MS = 20;

function lock(c: Int32Array, tid: number): void {
  if (Atomics.compareExchange(c, LOCK, 0, tid) !== 0) lockSlow(c, tid);
}

function lockSlow(c: Int32Array, tid: number): void {
  let spins = 0;
  let deadHolder = 0;
  let deadSince = 0;
  for (;;) {
    const h = Atomics.load(c, LOCK);
    if (h === 0) {
      if (Atomics.compareExchange(c, LOCK, 0, tid) === 0) return;
      continue;
    }
    if (++spins < 256) continue;
    if (!isThreadAlive(h)) {
      const now = performance.now();
      if (deadHolder !== h) {
        deadHolder = h;
        deadSince = now;
      } else if (
        now - deadSince >= TAKEOVER_GRACE_MS &&
        Atomics.compareExchange(c, LOCK, h, tid) === h
      ) {
        return;
      }
    }
    Atomics.add(c, LOCK_WAITERS, 1);
    Atomics.wait(c, LOCK, h, 1);
    Atomics.sub(c, LOCK_WAITERS, 1);
  }
}

function unlock(c: Int32Array): void {
  Atomics.store(c, LOCK, 0);
  if (Atomics.load(c, LOCK_WAITERS) !== 0) Atomics.notify(c, LOCK, 1);
}

function bump(c: Int32Array, index: number): void {
  Atomics.add(c, index, 1);
  Atomics.notify(c, index);
}

// -- The ring ------------------------------------------------------------

/**
 * A multi-producer, multi-consumer ring of records in shared memory. Every
 * thread that holds the same `SharedArrayBuffer` sees the same ring.
 */
export class Ring {
  /** The shared memory (control words and data). */
  readonly buffer: SharedArrayBuffer;
  /** Data capacity in bytes. */
  readonly capacity: number;
  /** Item limit, or 0 for none. */
  readonly maxsize: number;
  readonly #c: Int32Array;
  readonly #data: Uint8Array;
  readonly #d32: Int32Array;
  /** The wake sequence read under the lock by the last failed try. */
  #seq = 0;

  /**
   * Allocates the memory of a ring.
   *
   * @param capacity Data bytes (a multiple of 8).
   * @param maxsize Item limit (≤ 0: none).
   * @returns The buffer to hand to {@linkcode Ring}'s constructor.
   */
  static allocate(capacity: number, maxsize: number): SharedArrayBuffer {
    const buffer = new SharedArrayBuffer(HEADER_BYTES + capacity);
    const c = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    c[CAP] = capacity;
    c[MAXSIZE] = maxsize > 0 ? maxsize : 0;
    return buffer;
  }

  /**
   * Attaches to a ring's memory.
   *
   * @param buffer Memory from {@linkcode Ring.allocate}.
   */
  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#c = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.capacity = this.#c[CAP]!;
    this.maxsize = this.#c[MAXSIZE]!;
    this.#data = new Uint8Array(buffer, HEADER_BYTES, this.capacity);
    this.#d32 = new Int32Array(buffer, HEADER_BYTES, this.capacity / 4);
  }

  /** Items in the ring. */
  get count(): number {
    return Atomics.load(this.#c, COUNT);
  }

  /** Whether the writing side is closed. */
  get writerClosed(): boolean {
    return (Atomics.load(this.#c, FLAGS) & W_CLOSED) !== 0;
  }

  /** Whether the reading side is closed. */
  get readerClosed(): boolean {
    return (Atomics.load(this.#c, FLAGS) & R_CLOSED) !== 0;
  }

  /**
   * Tries to append the pending record (see {@linkcode encodeValue}).
   *
   * @param register When it is full, count the caller as a sleeping
   *   producer (it must then sleep with {@linkcode Ring.waitPutSync} or
   *   {@linkcode Ring.waitPut}).
   * @returns `OK`, `FULL`, `CLOSED` or `BROKEN`.
   */
  tryPut(register: boolean): PutResult {
    const c = this.#c;
    lock(c, currentThreadId());
    const flags = c[FLAGS]!;
    if (flags !== 0) {
      unlock(c);
      return (flags & W_CLOSED) !== 0 ? CLOSED : BROKEN;
    }
    const len = encLen;
    const size = 4 + ((len + 3) & ~3);
    const used = c[USED]!;
    const count = c[COUNT]!;
    const cap = this.capacity;
    if (used + size > cap || (this.maxsize > 0 && count >= this.maxsize)) {
      if (register) {
        this.#seq = Atomics.load(c, GET_SEQ);
        Atomics.add(c, WAIT_PUT, 1);
      }
      unlock(c);
      return FULL;
    }
    const tail = c[TAIL]!;
    const d32 = this.#d32;
    d32[tail >> 2] = len * 8 + encTag;
    let p = tail + 4;
    if (p === cap) p = 0;
    if (encTag === TAG_INT) {
      d32[p >> 2] = encNum;
    } else if (encTag === TAG_FLOAT) {
      f64[0] = encNum;
      d32[p >> 2] = f64w[0]!;
      const q = p + 4;
      d32[(q === cap ? 0 : q) >> 2] = f64w[1]!;
    } else {
      const first = cap - p;
      if (len <= first) {
        this.#data.set(
          len === encBytes.length ? encBytes : encBytes.subarray(0, len),
          p,
        );
      } else {
        this.#data.set(encBytes.subarray(0, first), p);
        this.#data.set(encBytes.subarray(first, len), 0);
      }
    }
    let next = tail + size;
    if (next >= cap) next -= cap;
    // The commit: straight-line stores, never half-done.
    c[TAIL] = next;
    c[USED] = used + size;
    c[COUNT] = count + 1;
    const wake = c[WAIT_GET] !== 0;
    unlock(c);
    if (wake) bump(c, PUT_SEQ);
    return OK;
  }

  /**
   * Encodes `value` and tries to append it once.
   *
   * @param value The value.
   * @param what The call, for error messages.
   * @returns `OK`, `FULL`, `CLOSED` or `BROKEN`.
   * @throws {TypeError} If it cannot be cloned.
   * @throws {RangeError} If it can never fit.
   */
  put(value: unknown, what: string): PutResult {
    this.checkFits(encodeValue(value, what), what);
    return this.tryPut(false);
  }

  /**
   * Throws when a record of this size can never fit the ring.
   *
   * @param size The record's size from {@linkcode encodeValue}.
   * @param what The call, for the message.
   * @throws {RangeError} If it is too big.
   */
  checkFits(size: number, what: string): void {
    if (size > this.capacity || encLen > MAX_PAYLOAD) {
      throw new RangeError(
        `Cannot ${what}: the item needs ${size} bytes but the channel holds at most ${this.capacity} bytes (raise capacityBytes)`,
      );
    }
  }

  /**
   * Tries to take the oldest record.
   *
   * @param register When it is empty, count the caller as a sleeping
   *   consumer (it must then sleep with {@linkcode Ring.waitGetSync} or
   *   {@linkcode Ring.waitGet}).
   * @param kind `0` any record, `1` only a value, `2` only bytes (a record of
   *   the other kind is left in place and `MISMATCH` returned).
   * @returns The value, or `EMPTY`, `DRAINED` or `MISMATCH`.
   */
  tryGet(register: boolean, kind = 0): unknown {
    const c = this.#c;
    lock(c, currentThreadId());
    const count = c[COUNT]!;
    if (count === 0) {
      const closed = (c[FLAGS]! & W_CLOSED) !== 0;
      if (!closed && register) {
        this.#seq = Atomics.load(c, PUT_SEQ);
        Atomics.add(c, WAIT_GET, 1);
      }
      unlock(c);
      return closed ? DRAINED : EMPTY;
    }
    const cap = this.capacity;
    const d32 = this.#d32;
    const head = c[HEAD]!;
    const hdr = d32[head >> 2]!;
    const tag = hdr & 7;
    if (kind !== 0 && (tag === TAG_BYTES) !== (kind === 2)) {
      unlock(c);
      return MISMATCH;
    }
    const len = hdr >>> 3;
    let p = head + 4;
    if (p === cap) p = 0;
    let num = 0;
    let out: Uint8Array = scratchIn;
    if (tag === TAG_INT) {
      num = d32[p >> 2]!;
    } else if (tag === TAG_FLOAT) {
      f64w[0] = d32[p >> 2]!;
      const q = p + 4;
      f64w[1] = d32[(q === cap ? 0 : q) >> 2]!;
      num = f64[0]!;
    } else {
      if (tag === TAG_BYTES) {
        out = allocBytes(len);
      } else {
        if (scratchIn.length < len) {
          scratchIn = new Uint8Array(Math.max(len, scratchIn.length * 2));
        }
        out = scratchIn;
      }
      const first = cap - p;
      const data = this.#data;
      if (len <= first) {
        out.set(data.subarray(p, p + len), 0);
      } else {
        out.set(data.subarray(p, cap), 0);
        out.set(data.subarray(0, len - first), first);
      }
    }
    const size = 4 + ((len + 3) & ~3);
    let next = head + size;
    if (next >= cap) next -= cap;
    // The commit: straight-line stores, never half-done.
    const used = c[USED]! - size;
    c[HEAD] = next;
    c[USED] = used;
    c[COUNT] = count - 1;
    // Wake sleeping producers only once there is real room (half the bytes
    // and half the items free, or empty), so a full ring does not cost a
    // notify per get.
    const max = this.maxsize;
    const wake = c[WAIT_PUT] !== 0 &&
      (count === 1 ||
        (used <= cap >> 1 && (max === 0 || count - 1 <= max >> 1)));
    unlock(c);
    if (wake) bump(c, GET_SEQ);
    switch (tag) {
      case TAG_INT:
      case TAG_FLOAT:
        return num;
      case TAG_STR:
        return decoder.decode(scratchIn.subarray(0, len));
      case TAG_BYTES:
        return out;
      case TAG_UTF16: {
        const units = new Uint16Array(scratchIn.slice(0, len).buffer);
        let text = "";
        for (let i = 0; i < units.length; i += 4096) {
          text += String.fromCharCode(...units.subarray(i, i + 4096));
        }
        return text;
      }
      case TAG_JSON:
        return JSON.parse(decoder.decode(scratchIn.subarray(0, len)));
      default:
        return deserialize(scratchIn.subarray(0, len));
    }
  }

  /**
   * Spins (reading without the lock) until an item may be there or the
   * writer closed.
   *
   * @param spins How many reads at most.
   * @returns `true` when it may be readable now.
   */
  spinReadable(spins: number): boolean {
    const c = this.#c;
    for (let i = 0; i < spins; i++) {
      if (Atomics.load(c, COUNT) !== 0 || Atomics.load(c, FLAGS) !== 0) {
        return true;
      }
    }
    return false;
  }

  /**
   * Spins (reading without the lock) until a record of `size` bytes may fit.
   *
   * @param size The record's size.
   * @param spins How many reads at most.
   * @returns `true` when it may fit now.
   */
  spinWritable(size: number, spins: number): boolean {
    const c = this.#c;
    const room = this.capacity - size;
    const max = this.maxsize;
    for (let i = 0; i < spins; i++) {
      if (
        (Atomics.load(c, USED) <= room &&
          (max === 0 || Atomics.load(c, COUNT) < max)) ||
        Atomics.load(c, FLAGS) !== 0
      ) return true;
    }
    return false;
  }

  /**
   * Whether a get would not wait (an item is there, or the writer closed).
   *
   * @param register When not, count the caller as a sleeping consumer.
   * @returns `true` when readable.
   */
  readable(register: boolean): boolean {
    const c = this.#c;
    lock(c, currentThreadId());
    const ready = c[COUNT] !== 0 || (c[FLAGS]! & W_CLOSED) !== 0;
    if (!ready && register) {
      this.#seq = Atomics.load(c, PUT_SEQ);
      Atomics.add(c, WAIT_GET, 1);
    }
    unlock(c);
    return ready;
  }

  /**
   * Sleeps (blocking) until a registered consumer may retry.
   *
   * @param timeout Milliseconds.
   */
  waitGetSync(timeout: number): void {
    try {
      waitSync(this.#c, PUT_SEQ, this.#seq, timeout);
    } finally {
      Atomics.sub(this.#c, WAIT_GET, 1);
    }
  }

  /**
   * Sleeps (blocking) until a registered producer may retry.
   *
   * @param timeout Milliseconds.
   */
  waitPutSync(timeout: number): void {
    try {
      waitSync(this.#c, GET_SEQ, this.#seq, timeout);
    } finally {
      Atomics.sub(this.#c, WAIT_PUT, 1);
    }
  }

  /**
   * Waits, without blocking, until a registered consumer may retry.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   */
  async waitGet(
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const seq = this.#seq;
    try {
      await waitAsync(this.#c, PUT_SEQ, seq, options(timeout, signal));
    } finally {
      Atomics.sub(this.#c, WAIT_GET, 1);
    }
  }

  /**
   * Waits, without blocking, until a registered producer may retry.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   */
  async waitPut(
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const seq = this.#seq;
    try {
      await waitAsync(this.#c, GET_SEQ, seq, options(timeout, signal));
    } finally {
      Atomics.sub(this.#c, WAIT_PUT, 1);
    }
  }

  #setFlag(flag: number): void {
    const c = this.#c;
    lock(c, currentThreadId());
    c[FLAGS] = c[FLAGS]! | flag;
    unlock(c);
    bump(c, PUT_SEQ);
    bump(c, GET_SEQ);
  }

  /** Closes the writing side: puts fail, gets drain then see `DRAINED`. */
  closeWriter(): void {
    this.#setFlag(W_CLOSED);
  }

  /** Closes the reading side: puts see `BROKEN`. */
  closeReader(): void {
    this.#setFlag(R_CLOSED);
  }

  // -- JoinableQueue accounting --

  /** Counts one more unfinished task (after a successful put). */
  addUnfinished(): void {
    Atomics.add(this.#c, UNFINISHED, 1);
  }

  /**
   * Marks one task done.
   *
   * @returns `false` when none was unfinished (nothing changed).
   */
  taskDone(): boolean {
    const c = this.#c;
    for (;;) {
      const u = Atomics.load(c, UNFINISHED);
      if (u <= 0) return false;
      if (Atomics.compareExchange(c, UNFINISHED, u, u - 1) === u) {
        if (u === 1 && Atomics.load(c, WAIT_JOIN) !== 0) {
          Atomics.notify(c, UNFINISHED);
        }
        return true;
      }
    }
  }

  /**
   * Waits until every task is done.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   * @returns `false` on timeout.
   */
  async join(
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    const c = this.#c;
    const end = performance.now() + timeout;
    Atomics.add(c, WAIT_JOIN, 1);
    try {
      for (;;) {
        const u = Atomics.load(c, UNFINISHED);
        if (u === 0) return true;
        const left = end - performance.now();
        if (left <= 0) return false;
        await waitAsync(c, UNFINISHED, u, options(left, signal));
      }
    } finally {
      Atomics.sub(c, WAIT_JOIN, 1);
    }
  }

  /** Items put and not yet marked done. */
  get unfinished(): number {
    return Atomics.load(this.#c, UNFINISHED);
  }
}

function options(
  timeout: number,
  signal: AbortSignal | undefined,
): WaitOptions {
  const o: WaitOptions = { timeout };
  if (signal) o.signal = signal;
  return o;
}

/**
 * Checks a byte-capacity option and rounds it up to a multiple of 8.
 *
 * @param value The option as given.
 * @param fallback The default.
 * @param what The call, for the message.
 * @returns The capacity in bytes.
 * @throws {RangeError} If it is not an integer from 64 to 2^30.
 */
export function checkCapacity(
  value: unknown,
  fallback: number,
  what: string,
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 64 ||
    value > 1 << 30
  ) {
    throw new RangeError(
      `Cannot ${what}: capacityBytes must be an integer from 64 to ${
        1 << 30
      }, received ${describeValue(value)}`,
    );
  }
  return (value + 7) & ~7;
}

// -- Waiting loops shared by pipe.ts and queue.ts --------------------------

/** Lock-free reads to spin before registering as a sleeper. */
const SPIN = 2000;

/**
 * Gets a record, waiting (without blocking) up to `timeout` ms.
 *
 * @param ring The ring.
 * @param kind As {@linkcode Ring.tryGet}.
 * @param timeout Milliseconds (`0` only tries).
 * @param signal Aborts the wait with its reason.
 * @param check Called after each wake; throws to end the wait (e.g. the
 *   caller's own end was closed meanwhile).
 * @returns The value, or `EMPTY` on timeout, `DRAINED` or `MISMATCH`.
 */
export async function getAsync(
  ring: Ring,
  kind: number,
  timeout: number,
  signal: AbortSignal | undefined,
  check?: () => void,
): Promise<unknown> {
  if (signal?.aborted) throw signal.reason;
  const first = ring.tryGet(false, kind);
  if (first !== EMPTY || timeout <= 0) return first;
  const end = performance.now() + timeout;
  for (;;) {
    ring.spinReadable(SPIN);
    const v = ring.tryGet(true, kind);
    if (v !== EMPTY) return v;
    await ring.waitGet(Math.max(0, end - performance.now()), signal);
    check?.();
    if (performance.now() >= end) return ring.tryGet(false, kind);
  }
}

/**
 * Gets a record, blocking the thread up to `timeout` ms.
 *
 * @param ring The ring.
 * @param kind As {@linkcode Ring.tryGet}.
 * @param timeout Milliseconds (`0` only tries).
 * @param check Called after each wake; throws to end the wait.
 * @returns The value, or `EMPTY` on timeout, `DRAINED` or `MISMATCH`.
 */
export function getSync(
  ring: Ring,
  kind: number,
  timeout: number,
  check?: () => void,
): unknown {
  const first = ring.tryGet(false, kind);
  if (first !== EMPTY || timeout <= 0) return first;
  const end = performance.now() + timeout;
  for (;;) {
    ring.spinReadable(SPIN);
    const v = ring.tryGet(true, kind);
    if (v !== EMPTY) return v;
    ring.waitGetSync(Math.max(0, end - performance.now()));
    throwIfStopRequested();
    check?.();
    if (performance.now() >= end) return ring.tryGet(false, kind);
  }
}

/**
 * Puts the pending record (see {@linkcode encodeValue}), waiting (without
 * blocking) up to `timeout` ms for room.
 *
 * @param ring The ring.
 * @param timeout Milliseconds (`0` only tries).
 * @param signal Aborts the wait with its reason.
 * @param check Called after each wake; throws to end the wait.
 * @returns `OK`, `FULL` (timed out), `CLOSED` or `BROKEN`.
 */
export async function putAsync(
  ring: Ring,
  timeout: number,
  signal: AbortSignal | undefined,
  check?: () => void,
): Promise<PutResult> {
  const first = ring.tryPut(false);
  if (first !== FULL || timeout <= 0) return first;
  const saved = saveEncoded();
  const end = performance.now() + timeout;
  for (;;) {
    ring.spinWritable(recordSize(saved.len), SPIN);
    restoreEncoded(saved);
    const r = ring.tryPut(true);
    if (r !== FULL) return r;
    await ring.waitPut(Math.max(0, end - performance.now()), signal);
    check?.();
    if (performance.now() >= end) {
      restoreEncoded(saved);
      return ring.tryPut(false);
    }
  }
}

/**
 * Puts the pending record, blocking the thread up to `timeout` ms for room.
 *
 * @param ring The ring.
 * @param timeout Milliseconds (`0` only tries).
 * @param check Called after each wake; throws to end the wait.
 * @returns `OK`, `FULL` (timed out), `CLOSED` or `BROKEN`.
 */
export function putSync(
  ring: Ring,
  timeout: number,
  check?: () => void,
): PutResult {
  const first = ring.tryPut(false);
  if (first !== FULL || timeout <= 0) return first;
  const end = performance.now() + timeout;
  const size = recordSize(encLen);
  for (;;) {
    // Nothing else runs in this thread while it blocks: the pending record
    // stays as it is.
    ring.spinWritable(size, SPIN);
    const r = ring.tryPut(true);
    if (r !== FULL) return r;
    ring.waitPutSync(Math.max(0, end - performance.now()));
    throwIfStopRequested();
    check?.();
    if (performance.now() >= end) return ring.tryPut(false);
  }
}

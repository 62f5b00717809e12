/**
 * The binary record format of the shared-memory channels (`pipe.ts`,
 * `queue.ts`): how a value becomes one record of a `RecordRing`
 * (`ring.ts`) and back. Not to be confused with the manager's tagged-JSON
 * `encodeValue`, which is for untrusted peers.
 *
 * **Record.** A 4-byte header (`length * 8 + tag`) and its payload, padded to
 * a multiple of 4, so a header never straddles the end of the ring (a payload
 * may; it is copied in two pieces).
 *
 * **Tags.** Small integers travel as one `Int32`, other numbers as a
 * `Float64`, well-formed strings as UTF-8 (`TextEncoder.encodeInto`), byte
 * messages as they are, plain JSON-shaped data (objects, arrays, finite
 * numbers, strings, booleans, `null`) as JSON text, and everything else
 * through `node:v8`'s structured clone serializer. A value the serializer
 * refuses is a `TypeError` before the ring is touched, so nothing is ever
 * half-written.
 *
 * **Streams.** A record larger than a ring is carried by the ring as a
 * stream of tag-0 records ({@linkcode TAG_STREAM}): the ring takes the
 * encoded payload ({@linkcode takePending}) and the reader decodes the
 * reassembled bytes with {@linkcode decodeMessage}.
 *
 * **The pending record.** A put encodes its value here
 * ({@linkcode encodeRecord}, {@linkcode encodeBytesRecord}), then the ring
 * writes it ({@linkcode writePending}) with no `await` between, so each
 * thread needs one pending record only; a put that has to wait keeps a copy
 * ({@linkcode savePending}, {@linkcode restorePending}).
 *
 * @module
 */

import { deserialize, serialize } from "node:v8";
import { describeValue } from "../_core/errors.ts";
import { deposit, forget, withdraw } from "../_core/exchange.ts";
import {
  ambientReviveContext,
  decodeShared,
  encodeShared,
  handleModules,
  holdsShared,
  type ReviveContext,
  reviveHandles,
} from "../_core/share.ts";

/**
 * The key of the one-key JSON record that stands for a value holding shared
 * objects: its value is the exchange id the handles were deposited under.
 */
const EXCHANGE_KEY = "\u0000deno-multiprocessing.exchange";

const TAG_INT = 1;
const TAG_FLOAT = 2;
const TAG_STR = 3;
const TAG_BYTES = 4;
const TAG_V8 = 5;
const TAG_JSON = 6;
/** A string with lone surrogates, as UTF-16 code units (UTF-8 cannot). */
const TAG_UTF16 = 7;

/** The largest payload a record can describe (2^28 − 1 bytes). */
export const MAX_PAYLOAD = (1 << 28) - 1;
/**
 * The largest message or item a channel carries (2^31 − 1 bytes encoded):
 * larger ones stream in pieces up to this.
 */
export const MAX_MESSAGE = 0x7fffffff;
/**
 * Tag 0: a piece of a message streamed in pieces (the ring's stream
 * records, see `ring.ts`); never a value of its own.
 */
export const TAG_STREAM = 0;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const f64 = new Float64Array(1);
const f64w = new Int32Array(f64.buffer);
const NO_BYTES = new Uint8Array(0);

// The pending record: a put encodes, then writes, with no await between.
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

/** An encoded record kept aside while its put waits for room. */
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

/** The objects met by the current {@linkcode jsonExact} check. */
const seen = new Set<object>();

/**
 * Whether JSON carries `value` exactly as structured clone would: plain
 * objects and dense arrays of finite numbers (not `-0`), well-formed
 * strings, booleans and `null`, not too deep, and no object met twice
 * (JSON would make two copies of it; structured clone, like pickle, keeps
 * one object referenced twice). JSON is some 20 times faster than
 * `node:v8`'s serializer in Deno, so such values take that path.
 */
function jsonExactValue(value: object): boolean {
  try {
    return jsonExact(value, 0);
  } finally {
    seen.clear();
  }
}

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
      if (v === null) return true;
      if (seen.has(v)) return false;
      seen.add(v);
      return jsonExact(v, depth + 1);
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
 * @throws {RangeError} If it encodes larger than any message may be.
 */
export function encodeRecord(value: unknown, what: string): number {
  lastDeposit = undefined;
  encodeValue(value, what);
  return checkedSize(what);
}

function encodeValue(value: unknown, what: string): void {
  if (typeof value === "number") {
    encNum = value;
    if ((value | 0) === value && (value !== 0 || 1 / value > 0)) {
      encTag = TAG_INT;
      encLen = 4;
      return;
    }
    encTag = TAG_FLOAT;
    encLen = 8;
    return;
  }
  if (typeof value === "string" && value.isWellFormed()) {
    encodeUtf8(value);
    encTag = TAG_STR;
    return;
  }
  if (typeof value === "string") {
    encLen = value.length * 2;
    encBytes = new Uint8Array(encLen);
    const units = new Uint16Array(encBytes.buffer);
    for (let i = 0; i < value.length; i++) units[i] = value.charCodeAt(i);
    encTag = TAG_UTF16;
    return;
  }
  if (typeof value === "object" && value !== null && jsonExactValue(value)) {
    encodeUtf8(JSON.stringify(value));
    encTag = TAG_JSON;
    return;
  }
  // This package's shared objects (a Lock, a Value, a Queue, a pipe end)
  // hold SharedArrayBuffers, which bytes cannot carry: their handles go
  // through the exchange, and the record carries the id.
  if (typeof value === "object" && value !== null && holdsShared(value)) {
    const transfer: Transferable[] = [];
    const encoded = encodeShared(value, transfer);
    if (transfer.length > 0) {
      throw new TypeError(
        `Cannot ${what}: ${
          describeValue(value)
        } holds an object that must be transferred (a port), which cannot travel through a pipe or queue; pass it to the Process or Pool task as an argument instead`,
      );
    }
    const id = deposit(encoded.value);
    lastDeposit = { id, handles: encoded.value };
    for (const fn of encoded.afterSend) fn();
    encodeUtf8(JSON.stringify({ [EXCHANGE_KEY]: id }));
    encTag = TAG_JSON;
    return;
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
}

/**
 * Encodes a byte message as the pending record.
 *
 * @param bytes The bytes.
 * @param what The call, for error messages (e.g. `"sendBytes"`).
 * @returns The record's total size in the ring.
 * @throws {RangeError} If it is larger than any message may be.
 */
export function encodeBytesRecord(bytes: Uint8Array, what: string): number {
  encTag = TAG_BYTES;
  encBytes = bytes;
  encLen = bytes.length;
  return checkedSize(what);
}

/**
 * The pending record's size in a ring; a record larger than any message
 * may be (2^31 − 1 bytes encoded) is refused here, before any ring is
 * touched (one larger than a ring is streamed).
 */
function checkedSize(what: string): number {
  if (encLen > MAX_MESSAGE) {
    throw new RangeError(
      `Cannot ${what}: the item encodes to ${encLen} bytes, more than the ${MAX_MESSAGE} a channel carries`,
    );
  }
  return recordSize(encLen);
}

/**
 * Keeps a copy of the pending record, for a put that has to wait.
 *
 * @returns The copy, for {@linkcode restorePending}.
 */
export function savePending(): EncodedRecord {
  return {
    tag: encTag,
    len: encLen,
    num: encNum,
    bytes: encTag === TAG_INT || encTag === TAG_FLOAT
      ? NO_BYTES
      : ownedBytes(true),
  };
}

/**
 * The pending payload as bytes of exactly its length. With `copy`, bytes
 * that someone else may change (the caller's `sendBytes` buffer, this
 * thread's scratch) are copied; bytes a put encoded afresh never are.
 */
function ownedBytes(copy: boolean): Uint8Array {
  if (copy && (encTag === TAG_BYTES || encBytes === scratchOut)) {
    return encBytes.slice(0, encLen);
  }
  return encBytes.length === encLen ? encBytes : encBytes.subarray(0, encLen);
}

/**
 * Takes the pending record's tag and payload, for a ring that streams it
 * in pieces (a record larger than the ring; never a number).
 *
 * @param copy Copy bytes that may change before the stream ends (a put
 *   that waits without blocking the thread); a blocking put passes `false`.
 * @returns The tag and the payload bytes.
 */
export function takePending(copy: boolean): { tag: number; bytes: Uint8Array } {
  return { tag: encTag, bytes: ownedBytes(copy) };
}

/**
 * Decodes a message reassembled from a stream.
 *
 * @param tag The message's own tag (from the stream's first record).
 * @param bytes Its whole payload.
 * @returns The value (the bytes themselves for a byte message).
 */
export function decodeMessage(tag: number, bytes: Uint8Array): unknown {
  if (tag === TAG_BYTES) return bytes;
  return decodePayload(tag, bytes, bytes.length);
}

/**
 * Makes a record kept by {@linkcode savePending} the pending one again.
 *
 * @param r The kept record.
 */
export function restorePending(r: EncodedRecord): void {
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

/** The payload length of the pending record, in bytes. */
export function pendingLength(): number {
  return encLen;
}

/** The size in the ring of the pending record (header and padding included). */
export function pendingSize(): number {
  return recordSize(encLen);
}

/**
 * Writes the pending record, header and payload, into a ring's data.
 *
 * @param data The ring's data bytes.
 * @param d32 The same bytes as `Int32`s.
 * @param at Where the record starts (a multiple of 4, below `cap`).
 * @param cap The data capacity: the payload wraps there to 0.
 */
export function writePending(
  data: Uint8Array,
  d32: Int32Array,
  at: number,
  cap: number,
): void {
  const len = encLen;
  d32[at >> 2] = len * 8 + encTag;
  let p = at + 4;
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
      data.set(
        len === encBytes.length ? encBytes : encBytes.subarray(0, len),
        p,
      );
    } else {
      data.set(encBytes.subarray(0, first), p);
      data.set(encBytes.subarray(first, len), 0);
    }
  }
}

/**
 * Whether a record holds a byte message (sent as bytes, read as bytes).
 *
 * @param header The record's header word.
 * @returns `true` for a byte message.
 */
export function isBytesRecord(header: number): boolean {
  return (header & 7) === TAG_BYTES;
}

/**
 * The size in the ring of the record with this header.
 *
 * @param header The record's header word.
 * @returns Header, payload and padding.
 */
export function storedSize(header: number): number {
  return 4 + (((header >>> 3) + 3) & ~3);
}

/**
 * Copies a record's payload out of a ring's data (while the ring is
 * locked); {@linkcode decodePayload} turns it into the value afterwards.
 *
 * @param data The ring's data bytes.
 * @param d32 The same bytes as `Int32`s.
 * @param header The record's header word.
 * @param at Where the record starts.
 * @param cap The data capacity: the payload wraps there to 0.
 * @returns The number, or the payload's bytes (a fresh region for a byte
 *   message, this thread's scratch buffer for the other tags).
 */
export function readPayload(
  data: Uint8Array,
  d32: Int32Array,
  header: number,
  at: number,
  cap: number,
): number | Uint8Array {
  const tag = header & 7;
  const len = header >>> 3;
  let p = at + 4;
  if (p === cap) p = 0;
  if (tag === TAG_INT) return d32[p >> 2]!;
  if (tag === TAG_FLOAT) {
    f64w[0] = d32[p >> 2]!;
    const q = p + 4;
    f64w[1] = d32[(q === cap ? 0 : q) >> 2]!;
    return f64[0]!;
  }
  let out: Uint8Array;
  if (tag === TAG_BYTES) {
    out = allocBytes(len);
  } else {
    if (scratchIn.length < len) {
      scratchIn = new Uint8Array(Math.max(len, scratchIn.length * 2));
    }
    out = scratchIn;
  }
  const first = cap - p;
  if (len <= first) {
    out.set(data.subarray(p, p + len), 0);
  } else {
    out.set(data.subarray(p, cap), 0);
    out.set(data.subarray(0, len - first), first);
  }
  return out;
}

/**
 * Turns what {@linkcode readPayload} copied out into the value sent (before
 * the next read in this thread reuses the scratch buffer).
 *
 * @param header The record's header word.
 * @param raw What `readPayload` returned.
 * @param length The payload length, when the header cannot hold it (a
 *   reassembled stream).
 * @returns The value.
 */
export function decodePayload(
  header: number,
  raw: number | Uint8Array,
  length?: number,
): unknown {
  if (typeof raw === "number") return raw;
  const len = length ?? header >>> 3;
  switch (header & 7) {
    case TAG_STR:
      return decoder.decode(raw.subarray(0, len));
    case TAG_BYTES:
      return raw;
    case TAG_UTF16: {
      const units = new Uint16Array(raw.slice(0, len).buffer);
      let text = "";
      for (let i = 0; i < units.length; i += 4096) {
        text += String.fromCharCode(...units.subarray(i, i + 4096));
      }
      return text;
    }
    case TAG_JSON: {
      const v = JSON.parse(decoder.decode(raw.subarray(0, len)));
      if (typeof v === "object" && v !== null && EXCHANGE_KEY in v) {
        return receiveShared(String(v[EXCHANGE_KEY]));
      }
      return v;
    }
    default:
      return deserialize(raw.subarray(0, len));
  }
}

/** A value's shared objects deposited for a record not yet written. */
export interface PendingDeposit {
  /** The exchange id in the record. */
  id: string;
  /** The handles deposited. */
  handles: unknown;
}

let lastDeposit: PendingDeposit | undefined;

/**
 * The deposit the last {@linkcode encodeRecord} in this thread made, if
 * its value held shared objects; a put that then fails gives it to
 * {@linkcode failPut}.
 *
 * @returns The deposit, or `undefined`.
 */
export function takeDeposit(): PendingDeposit | undefined {
  const d = lastDeposit;
  lastDeposit = undefined;
  return d;
}

/**
 * Fails a put whose record was never written: first undoes its deposit, if
 * it made one (the exchange forgets it, and what handing the objects on
 * did — a pipe end's extra copy — is undone by reviving them here and
 * closing them at once), then throws the put's error.
 *
 * @param d What {@linkcode takeDeposit} gave, if anything.
 * @param error The put's error.
 * @returns Never: it throws `error`.
 */
export function failPut(d: PendingDeposit | undefined, error: unknown): never {
  if (d) {
    forget(d.id);
    try {
      reviveHandles(d.handles, { onTaskEnd: (fn) => fn() });
    } catch {
      // Best effort: the put's own error is the one to report.
    }
  }
  throw error;
}

/**
 * A received value whose shared objects are of types this thread has not
 * loaded yet: the async receive calls import them and revive the value
 * ({@linkcode settleReceived}); a blocking one cannot.
 */
export class PendingRevival {
  readonly #value: unknown;
  readonly #modules: Set<string>;
  readonly #context: ReviveContext;

  /**
   * Keeps what the async receive call needs to finish.
   *
   * @param value The handles as deposited.
   * @param modules The modules to import first.
   * @param context The task the objects belong to.
   */
  constructor(value: unknown, modules: Set<string>, context: ReviveContext) {
    this.#value = value;
    this.#modules = modules;
    this.#context = context;
  }

  /**
   * Imports the types' modules, then revives the value.
   *
   * @returns The live value.
   */
  revive(): Promise<unknown> {
    return decodeShared(this.#value, this.#context);
  }

  /**
   * The error of a blocking receive, which cannot import.
   *
   * @param what The call.
   * @returns The error to throw.
   */
  syncError(what: string): TypeError {
    return new TypeError(
      `Cannot ${what}: the value holds shared objects of a module this thread has not loaded (${
        [...this.#modules].join(", ")
      }); import it in this thread first, or receive with the async call`,
    );
  }
}

function receiveShared(id: string): unknown {
  const value = withdraw(id);
  const context = ambientReviveContext();
  const modules = handleModules(value);
  if (modules.size > 0) return new PendingRevival(value, modules, context);
  return reviveHandles(value, context);
}

/**
 * What a receive call hands its caller: the value, or for a
 * {@linkcode PendingRevival} the revived value (async calls) or its error
 * (blocking calls).
 *
 * @param v What the ring returned.
 * @param what The call, for errors.
 * @param sync Whether the call blocks the thread.
 * @returns The value, or a promise of it (async calls only).
 */
export function settleReceived(
  v: unknown,
  what: string,
  sync: boolean,
): unknown {
  if (!(v instanceof PendingRevival)) return v;
  if (sync) throw v.syncError(what);
  return v.revive();
}

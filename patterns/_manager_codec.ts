/**
 * The manager's wire format, shared by the client (`server_process.ts`) and
 * the server core (`_manager_server.ts`): the tagged-JSON value codec,
 * length-prefixed frames and the HMAC-SHA256 handshake helpers. Nothing here
 * evaluates code or deserialises anything but JSON. The format is described
 * in `docs/manager-protocol.md`.
 *
 * ```ts
 * import { decodeValue, encodeValue } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * const wire = JSON.stringify(encodeValue({ n: 1n, s: new Set([1]) }));
 * assert.deepEqual(decodeValue(JSON.parse(wire)), { n: 1n, s: new Set([1]) });
 * ```
 *
 * @module
 */

import { describeValue } from "./_util.ts";

/** The protocol's name and version, sent in the handshake. */
export const PROTOCOL = "dmp-manager";
/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;
/** The largest frame accepted by default (16 MiB). */
export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
/** The largest frame accepted before authentication. */
export const HANDSHAKE_MAX_FRAME = 1024;
/** How deep a value may nest. */
export const MAX_DEPTH = 200;

/** The key that marks a tagged value in the encoded tree. */
const TAG = "$t";

/** A reference to a managed object inside an encoded value. */
export interface RefTag {
  /** The object's id on the server. */
  id: number;
  /** The object's type, e.g. `"dict"`. */
  type: string;
}

/** How {@linkcode encodeValue} turns a proxy into a reference. */
export type RefEncoder = (value: object) => RefTag | undefined;
/** How {@linkcode decodeValue} turns a reference into a live object. */
export type RefDecoder = (ref: RefTag) => unknown;

const TYPED: Record<string, new (b: ArrayBuffer) => ArrayBufferView> = {
  Uint8Array,
  Int8Array,
  Uint16Array,
  Int16Array,
  Uint32Array,
  Int32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
  Uint8ClampedArray,
};

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Encodes a value into a JSON-compatible tree: JSON's own values pass
 * through; `undefined`, `bigint`, non-finite numbers and `-0`, `Map`, `Set`,
 * `Date`, typed arrays, plain objects that use the tag key, and references
 * to managed objects become tagged objects `{ "$t": tag, … }`.
 *
 * @example Usage
 * ```ts
 * import { encodeValue } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.deepEqual(encodeValue([1, 2n]), [1, { $t: "big", v: "2" }]);
 * ```
 *
 * @param value The value.
 * @param refs Turns a proxy into a reference (or returns `undefined`).
 * @param depth The current depth (internal).
 * @returns The tree.
 * @throws {TypeError} If the value holds a function, symbol, class instance
 *   or cycle that cannot cross the wire.
 */
export function encodeValue(
  value: unknown,
  refs?: RefEncoder,
  depth = 0,
): unknown {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (Number.isFinite(value) && !Object.is(value, -0)) return value;
      return { [TAG]: "num", v: Object.is(value, -0) ? "-0" : String(value) };
    case "bigint":
      return { [TAG]: "big", v: value.toString() };
    case "undefined":
      return { [TAG]: "u" };
    case "function":
    case "symbol":
      throw new TypeError(
        `Cannot send a value to the manager: ${
          describeValue(value)
        } cannot be sent`,
      );
  }
  if (value === null) return null;
  if (depth > MAX_DEPTH) {
    throw new TypeError(
      `Cannot send a value to the manager: it nests deeper than ${MAX_DEPTH} levels (or holds a cycle)`,
    );
  }
  const d = depth + 1;
  if (Array.isArray(value)) {
    const out = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      out[i] = encodeValue(value[i], refs, d);
    }
    return out;
  }
  const ref = refs?.(value as object);
  if (ref) return { [TAG]: "ref", id: ref.id, type: ref.type };
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) {
    const rec = value as Record<string, unknown>;
    if (Object.hasOwn(rec, TAG)) {
      return {
        [TAG]: "obj",
        v: Object.keys(rec).map((k) => [k, encodeValue(rec[k], refs, d)]),
      };
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(rec)) {
      const x = encodeValue(rec[k], refs, d);
      if (k === "__proto__") {
        Object.defineProperty(out, k, {
          value: x,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else out[k] = x;
    }
    return out;
  }
  if (value instanceof Map) {
    return {
      [TAG]: "map",
      v: [...value].map((
        [k, x],
      ) => [encodeValue(k, refs, d), encodeValue(x, refs, d)]),
    };
  }
  if (value instanceof Set) {
    return { [TAG]: "set", v: [...value].map((x) => encodeValue(x, refs, d)) };
  }
  if (value instanceof Date) return { [TAG]: "date", v: value.getTime() };
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    const kind = value.constructor.name;
    if (Object.hasOwn(TYPED, kind)) {
      const bytes = new Uint8Array(
        value.buffer,
        value.byteOffset,
        value.byteLength,
      );
      return { [TAG]: "bytes", k: kind, v: toBase64(bytes) };
    }
  }
  throw new TypeError(
    `Cannot send a value to the manager: ${
      describeValue(value)
    } cannot be sent (plain objects, arrays, Map, Set, Date, typed arrays, primitives and manager proxies can)`,
  );
}

function bad(what: string): never {
  throw new TypeError(`Cannot decode a manager value: ${what}`);
}

/**
 * Decodes a tree made by {@linkcode encodeValue}. Objects are rebuilt with
 * own data properties only (a `"__proto__"` key stays a plain key), so a
 * peer cannot touch prototypes.
 *
 * @example Usage
 * ```ts
 * import { decodeValue } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.deepEqual(decodeValue({ $t: "map", v: [["a", 1]] }), new Map([["a", 1]]));
 * ```
 *
 * @param tree The tree.
 * @param refs Turns a reference into a live object.
 * @param freeze Deep-freezes the containers it builds.
 * @param depth The current depth (internal).
 * @returns The value.
 * @throws {TypeError} If the tree is not a valid encoding.
 */
export function decodeValue(
  tree: unknown,
  refs?: RefDecoder,
  freeze = false,
  depth = 0,
): unknown {
  if (typeof tree !== "object" || tree === null) {
    if (typeof tree === "number" || typeof tree === "string") return tree;
    if (typeof tree === "boolean" || tree === null) return tree;
    bad(`unexpected ${describeValue(tree)}`);
  }
  if (depth > MAX_DEPTH) bad(`it nests deeper than ${MAX_DEPTH} levels`);
  const d = depth + 1;
  if (Array.isArray(tree)) {
    const out = new Array(tree.length);
    for (let i = 0; i < tree.length; i++) {
      out[i] = decodeValue(tree[i], refs, freeze, d);
    }
    return freeze ? Object.freeze(out) : out;
  }
  if (Object.getPrototypeOf(tree) !== Object.prototype) {
    bad(`unexpected ${describeValue(tree)}`);
  }
  const rec = tree as Record<string, unknown>;
  if (!Object.hasOwn(rec, TAG)) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(rec)) {
      const x = decodeValue(rec[k], refs, freeze, d);
      if (k === "__proto__") {
        Object.defineProperty(out, k, {
          value: x,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else out[k] = x;
    }
    return freeze ? Object.freeze(out) : out;
  }
  const v = rec.v;
  switch (rec[TAG]) {
    case "u":
      return undefined;
    case "num":
      if (v === "-0") return -0;
      if (v === "NaN") return NaN;
      if (v === "Infinity") return Infinity;
      if (v === "-Infinity") return -Infinity;
      return bad(`bad number ${describeValue(v)}`);
    case "big":
      if (typeof v !== "string" || !/^-?\d{1,10000}$/.test(v)) {
        bad(`bad bigint ${describeValue(v)}`);
      }
      return BigInt(v);
    case "date":
      if (typeof v !== "number") bad(`bad date ${describeValue(v)}`);
      return new Date(v);
    case "bytes": {
      const k = rec.k;
      if (typeof k !== "string" || !Object.hasOwn(TYPED, k)) {
        bad(`unknown typed array ${describeValue(k)}`);
      }
      if (typeof v !== "string") bad("bad bytes");
      let bytes: Uint8Array;
      try {
        bytes = fromBase64(v);
      } catch {
        return bad("bad base64 bytes");
      }
      const Ctor = TYPED[k]!;
      const per = (Ctor as unknown as { BYTES_PER_ELEMENT: number })
        .BYTES_PER_ELEMENT;
      if (bytes.byteLength % per !== 0) bad(`bad ${k} length`);
      return new Ctor(bytes.buffer as ArrayBuffer);
    }
    case "obj": {
      if (!Array.isArray(v)) bad("bad object");
      const out: Record<string, unknown> = {};
      for (const e of v) {
        if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== "string") {
          bad("bad object entry");
        }
        Object.defineProperty(out, e[0], {
          value: decodeValue(e[1], refs, freeze, d),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return freeze ? Object.freeze(out) : out;
    }
    case "map": {
      if (!Array.isArray(v)) bad("bad map");
      const out = freeze ? new FrozenMap() : new Map();
      for (const e of v) {
        if (!Array.isArray(e) || e.length !== 2) bad("bad map entry");
        Map.prototype.set.call(
          out,
          decodeValue(e[0], refs, freeze, d),
          decodeValue(e[1], refs, freeze, d),
        );
      }
      return freeze ? Object.freeze(out) : out;
    }
    case "set": {
      if (!Array.isArray(v)) bad("bad set");
      const out = freeze ? new FrozenSet() : new Set();
      for (const x of v) {
        Set.prototype.add.call(out, decodeValue(x, refs, freeze, d));
      }
      return freeze ? Object.freeze(out) : out;
    }
    case "ref": {
      const id = rec.id, type = rec.type;
      if (!Number.isSafeInteger(id) || typeof type !== "string") {
        bad("bad reference");
      }
      if (!refs) bad("references are not accepted here");
      return refs({ id: id as number, type });
    }
    default:
      return bad(`unknown tag ${describeValue(rec[TAG])}`);
  }
}

const FROZEN_HINT =
  "it is a read-only copy of a value read from the manager; change it " +
  "through the proxy (e.g. d.set(key, newValue)), or store a manager " +
  "dict/list proxy in it to mutate it in place";

/** A `Map` read from the manager: a copy whose mutators throw. */
class FrozenMap<K, V> extends Map<K, V> {
  override set(): this {
    throw new TypeError(`Cannot set on this Map: ${FROZEN_HINT}`);
  }
  override delete(): boolean {
    throw new TypeError(`Cannot delete from this Map: ${FROZEN_HINT}`);
  }
  override clear(): void {
    throw new TypeError(`Cannot clear this Map: ${FROZEN_HINT}`);
  }
}

/** A `Set` read from the manager: a copy whose mutators throw. */
class FrozenSet<T> extends Set<T> {
  override add(): this {
    throw new TypeError(`Cannot add to this Set: ${FROZEN_HINT}`);
  }
  override delete(): boolean {
    throw new TypeError(`Cannot delete from this Set: ${FROZEN_HINT}`);
  }
  override clear(): void {
    throw new TypeError(`Cannot clear this Set: ${FROZEN_HINT}`);
  }
}

// -- Frames ---------------------------------------------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Makes one frame: a big-endian u32 payload length, then the payload (the
 * message as UTF-8 JSON).
 *
 * @example Usage
 * ```ts
 * import { frame } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.deepEqual([...frame({})], [0, 0, 0, 2, 123, 125]);
 * ```
 *
 * @param message A JSON-compatible message.
 * @returns The frame's bytes.
 */
export function frame(message: unknown): Uint8Array {
  const text = JSON.stringify(message);
  // Worst case 3 bytes per UTF-16 unit.
  const out = new Uint8Array(4 + text.length * 3);
  const { written } = encoder.encodeInto(text, out.subarray(4));
  new DataView(out.buffer).setUint32(0, written);
  return out.subarray(0, 4 + written);
}

/** Why a frame reader gave up on a stream. */
export class FrameError extends Error {
  /**
   * Makes the error.
   *
   * @param message What was wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/**
 * Splits a byte stream into frames. A frame longer than `maxBytes` is a
 * fatal {@linkcode FrameError} (the stream cannot be resynchronised); a
 * payload that is not UTF-8 JSON is reported per frame, the stream goes on.
 *
 * @example Usage
 * ```ts
 * import { frame, FrameReader } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * const r = new FrameReader(1024);
 * const got: unknown[] = [];
 * r.push(frame({ a: 1 }), (m) => got.push(m), () => {});
 * assert.deepEqual(got, [{ a: 1 }]);
 * ```
 */
export class FrameReader {
  #buf = new Uint8Array(0);
  #view = new DataView(this.#buf.buffer);
  #len = 0;
  /** The largest payload accepted, in bytes. */
  maxBytes: number;

  /**
   * Makes a reader.
   *
   * @param maxBytes The largest payload accepted.
   */
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pending(): number {
    return this.#len;
  }

  /**
   * Adds received bytes and hands out every whole frame.
   *
   * @param chunk The bytes.
   * @param onMessage Gets each decoded message.
   * @param onBad Gets the error of a frame that did not decode.
   * @throws {FrameError} If a frame is longer than `maxBytes`.
   */
  push(
    chunk: Uint8Array,
    onMessage: (message: unknown) => void,
    onBad: (error: Error) => void,
  ): void {
    let data = chunk, len = chunk.length;
    if (this.#len > 0) {
      this.#append(chunk);
      data = this.#buf;
      len = this.#len;
    }
    const view = data === this.#buf
      ? this.#view
      : new DataView(data.buffer, data.byteOffset, data.byteLength);
    let at = 0;
    while (len - at >= 4) {
      const size = view.getUint32(at);
      if (size > this.maxBytes) {
        throw new FrameError(
          `Cannot read a frame: its length ${size} exceeds the limit of ${this.maxBytes} bytes`,
        );
      }
      if (len - at - 4 < size) break;
      const payload = data.subarray(at + 4, at + 4 + size);
      at += 4 + size;
      let message: unknown;
      try {
        message = JSON.parse(decoder.decode(payload));
      } catch (e) {
        onBad(
          new TypeError(
            `Cannot read a frame: its payload is not UTF-8 JSON (${
              (e as Error).message
            })`,
          ),
        );
        continue;
      }
      onMessage(message);
    }
    if (data === this.#buf) {
      if (at > 0) {
        this.#buf.copyWithin(0, at, this.#len);
        this.#len -= at;
      }
    } else if (at < len) {
      this.#append(data.subarray(at, len));
    }
  }

  #append(chunk: Uint8Array): void {
    if (this.#len + chunk.length > this.#buf.length) {
      const grown = new Uint8Array(
        Math.max(this.#len + chunk.length, this.#buf.length * 2, 4096),
      );
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
      this.#view = new DataView(grown.buffer);
    }
    this.#buf.set(chunk, this.#len);
    this.#len += chunk.length;
  }
}

// -- Authentication -------------------------------------------------------

/**
 * Checks an authkey option and returns its bytes.
 *
 * @example Usage
 * ```ts
 * import { authkeyBytes } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(authkeyBytes("abc", "serve").length, 3);
 * assert.throws(() => authkeyBytes("", "serve"), TypeError);
 * ```
 *
 * @param authkey The key as given.
 * @param what The call, for the error message.
 * @returns The key's bytes.
 * @throws {TypeError} If it is not a non-empty string or `Uint8Array`.
 */
export function authkeyBytes(authkey: unknown, what: string): Uint8Array {
  if (typeof authkey === "string" && authkey.length > 0) {
    return encoder.encode(authkey);
  }
  if (authkey instanceof Uint8Array && authkey.length > 0) {
    return new Uint8Array(authkey);
  }
  throw new TypeError(
    `Cannot ${what}: authkey must be a non-empty string or Uint8Array, received ${
      authkey instanceof Uint8Array ? "an empty Uint8Array" : describeValue(
        authkey,
      )
    }`,
  );
}

/**
 * Imports an authkey as an HMAC-SHA256 key.
 *
 * @example Usage
 * ```ts
 * import { hmacKey } from "./_manager_codec.ts";
 *
 * await hmacKey(new TextEncoder().encode("secret"));
 * ```
 *
 * @param key The key's bytes.
 * @returns The key.
 */
export function hmacKey(key: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
}

/**
 * The HMAC-SHA256 proof for one side of the handshake:
 * `HMAC(key, "dmp-manager/1 " + role + " " + first + " " + second)` over
 * the base64 nonces, as base64.
 *
 * @example Usage
 * ```ts
 * import { hmacKey, proof } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * const key = await hmacKey(new TextEncoder().encode("k"));
 * assert.equal((await proof(key, "client", "a", "b")).length, 44);
 * ```
 *
 * @param key The HMAC key.
 * @param role `"client"` or `"server"`: who proves.
 * @param first The verifier's nonce.
 * @param second The prover's nonce.
 * @returns The proof, base64.
 */
export async function proof(
  key: CryptoKey,
  role: "client" | "server",
  first: string,
  second: string,
): Promise<string> {
  const data = encoder.encode(
    `${PROTOCOL}/${PROTOCOL_VERSION} ${role} ${first} ${second}`,
  );
  const mac = await crypto.subtle.sign("HMAC", key, data);
  return toBase64(new Uint8Array(mac));
}

/**
 * A fresh random nonce (32 bytes, base64).
 *
 * @example Usage
 * ```ts
 * import { nonce } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.notEqual(nonce(), nonce());
 * ```
 *
 * @returns The nonce.
 */
export function nonce(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * Compares two strings in time that depends only on their lengths.
 *
 * @example Usage
 * ```ts
 * import { timingSafeEqual } from "./_manager_codec.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(timingSafeEqual("abc", "abc"));
 * assert.ok(!timingSafeEqual("abc", "abd"));
 * ```
 *
 * @param a One string.
 * @param b The other.
 * @returns Whether they are equal.
 */
export function timingSafeEqual(a: unknown, b: string): boolean {
  if (typeof a !== "string") return false;
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) {
    diff |= (a.charCodeAt(i % (a.length || 1)) | 0) ^ b.charCodeAt(i);
  }
  return diff === 0;
}

// -- A framed TCP socket ---------------------------------------------------

/**
 * A TCP connection that carries frames both ways: `send` queues a message
 * (frames written in the same tick go out in one write), incoming frames go
 * to `onMessage` in order. Used by both the client and the server.
 *
 * @example Usage
 * ```ts ignore
 * import { FramedSocket } from "./_manager_codec.ts";
 *
 * const socket = new FramedSocket(await Deno.connect({ port: 5000 }), 1024);
 * socket.onMessage = (m) => console.log(m);
 * socket.send({ hello: 1 });
 * await socket.close();
 * ```
 */
export class FramedSocket {
  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  #out = new Uint8Array(16 * 1024);
  #outView = new DataView(this.#out.buffer);
  #outLen = 0;
  #spare = new Uint8Array(16 * 1024);
  #flushing: Promise<void> | undefined;
  #closed = false;
  #inbox: unknown[] = [];
  #waiter: ((m: unknown) => void) | undefined;
  /** Resolves when the read loop has ended (end of stream, error or close). */
  readonly done: Promise<void>;
  /** Why the stream ended, when it ended on an error. */
  error: Error | undefined;
  /** Gets each incoming message once set (messages queue until then). */
  onMessage: ((message: unknown) => void) | undefined;
  /** Gets frames whose payload did not decode. */
  onBadFrame: ((error: Error) => void) | undefined;
  /** Called once when the stream has ended. */
  onClose: (() => void) | undefined;

  /**
   * Wraps a connection and starts reading.
   *
   * @param conn The TCP connection.
   * @param maxBytes The largest frame accepted (changeable later through
   *   {@linkcode FramedSocket.maxBytes}).
   */
  constructor(conn: Deno.Conn, maxBytes: number) {
    this.#conn = conn;
    this.#reader = new FrameReader(maxBytes);
    this.done = this.#readLoop();
  }

  /** The largest frame accepted. */
  get maxBytes(): number {
    return this.#reader.maxBytes;
  }
  set maxBytes(n: number) {
    this.#reader.maxBytes = n;
  }

  /** Lets a pending read keep the event loop alive (while calls wait). */
  ref(): void {
    try {
      this.#conn.ref();
    } catch {
      // closed
    }
  }

  /** Lets the event loop end while only this socket's read is pending. */
  unref(): void {
    try {
      this.#conn.unref();
    } catch {
      // closed
    }
  }

  /** Whether the socket was closed or the stream ended. */
  get closed(): boolean {
    return this.#closed;
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#reader.push(
          buf.subarray(0, n),
          (m) => this.#deliver(m),
          (e) => this.onBadFrame?.(e),
        );
        if (this.#closed) break;
      }
    } catch (e) {
      if (!this.#closed) this.error = e as Error;
    }
    this.#shut();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(undefined);
    this.onClose?.();
  }

  #deliver(message: unknown): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w(message);
    } else if (this.onMessage) this.onMessage(message);
    else this.#inbox.push(message);
  }

  /**
   * Waits for the next message (used during the handshake, before
   * `onMessage` is set); `undefined` when the stream ended.
   *
   * @returns The message.
   */
  next(): Promise<unknown> {
    if (this.#inbox.length > 0) return Promise.resolve(this.#inbox.shift());
    if (this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  /** Hands the messages that arrived before `onMessage` was set to it. */
  drain(): void {
    for (const m of this.#inbox.splice(0)) this.onMessage?.(m);
  }

  /**
   * Queues a message: it is written at once when no write is in flight,
   * else with the others that queue up meanwhile (one write for all).
   *
   * @param message A JSON-compatible message.
   */
  send(message: unknown): void {
    if (this.#closed) return;
    const text = JSON.stringify(message);
    this.#reserve(4 + text.length * 3);
    const at = this.#outLen;
    const { written } = encoder.encodeInto(
      text,
      this.#out.subarray(at + 4),
    );
    this.#outView.setUint32(at, written);
    this.#outLen = at + 4 + written;
    if (!this.#flushing) this.#flushing = this.#flush();
  }

  /**
   * Queues raw bytes (tests use it to send garbage).
   *
   * @param bytes The bytes.
   */
  sendRaw(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#reserve(bytes.length);
    this.#out.set(bytes, this.#outLen);
    this.#outLen += bytes.length;
    if (!this.#flushing) this.#flushing = this.#flush();
  }

  #reserve(n: number): void {
    if (this.#outLen + n <= this.#out.length) return;
    const grown = new Uint8Array(
      Math.max(this.#out.length * 2, this.#outLen + n),
    );
    grown.set(this.#out.subarray(0, this.#outLen));
    this.#out = grown;
    this.#outView = new DataView(grown.buffer);
  }

  async #flush(): Promise<void> {
    try {
      while (this.#outLen > 0 && !this.#closed) {
        // Swap buffers: frames sent while this write is in flight go into
        // the other one.
        const buf = this.#out, len = this.#outLen;
        this.#out = this.#spare;
        this.#outView = new DataView(this.#out.buffer);
        this.#outLen = 0;
        this.#spare = buf;
        let off = 0;
        while (off < len) off += await this.#conn.write(buf.subarray(off, len));
      }
    } catch {
      this.#shut();
    } finally {
      this.#flushing = undefined;
    }
  }

  /** Waits until every queued message was written. */
  async flushed(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  #shut(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /**
   * Writes what is queued, closes the connection and waits for the read
   * loop to end.
   */
  async close(): Promise<void> {
    await this.flushed();
    this.#shut();
    await this.done;
  }
}

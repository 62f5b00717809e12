/**
 * The manager's value codec for untrusted peers: values become a tagged
 * JSON tree (`{ "$t": tag, … }` for what JSON cannot say) and back. Nothing
 * here evaluates code or deserialises anything but JSON; decoding rebuilds
 * objects from own data properties only. Values read from the manager can
 * be decoded frozen (read-only copies whose `Map`/`Set` mutators throw).
 * The format is described in `docs/manager-protocol.md`.
 *
 * ```ts
 * import { decodeWire, encodeWire } from "./wire.ts";
 * import { strict as assert } from "node:assert";
 *
 * const wire = JSON.stringify(encodeWire({ n: 1n, s: new Set([1]) }));
 * assert.deepEqual(decodeWire(JSON.parse(wire)), { n: 1n, s: new Set([1]) });
 * assert.deepEqual(encodeWire([1, 2n]), [1, { $t: "big", v: "2" }]);
 * ```
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { fromBase64, toBase64 } from "./base64.ts";
import {
  MAX_DEPTH,
  MAX_OBJECT_ID,
  type ObjectId,
  type RefTag,
} from "./protocol.ts";

/** The key that marks a tagged value in the encoded tree. */
const TAG = "$t";

/** How {@linkcode encodeWire} turns a proxy into a reference. */
export type RefEncoder = (value: object) => RefTag | undefined;
/** How {@linkcode decodeWire} turns a reference into a live object. */
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

/**
 * Sets an own data property, `"__proto__"` included (a plain assignment of
 * that key would set the prototype instead).
 */
function setOwn(out: Record<string, unknown>, k: string, x: unknown): void {
  if (k === "__proto__") {
    Object.defineProperty(out, k, {
      value: x,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else out[k] = x;
}

/**
 * Encodes a value into a JSON-compatible tree: JSON's own values pass
 * through; `undefined`, `bigint`, non-finite numbers and `-0`, `Map`, `Set`,
 * `Date`, typed arrays, plain objects that use the tag key, and references
 * to managed objects become tagged objects `{ "$t": tag, … }`.
 *
 * @param value The value.
 * @param refs Turns a proxy into a reference (or returns `undefined`).
 * @param depth The current depth (internal).
 * @returns The tree.
 * @throws {TypeError} If the value holds a function, symbol, class instance
 *   or cycle that cannot cross the wire.
 */
export function encodeWire(
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
      out[i] = encodeWire(value[i], refs, d);
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
        v: Object.keys(rec).map((k) => [k, encodeWire(rec[k], refs, d)]),
      };
    }
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(rec)) {
      setOwn(out, k, encodeWire(rec[k], refs, d));
    }
    return out;
  }
  if (value instanceof Map) {
    return {
      [TAG]: "map",
      v: [...value].map((
        [k, x],
      ) => [encodeWire(k, refs, d), encodeWire(x, refs, d)]),
    };
  }
  if (value instanceof Set) {
    return { [TAG]: "set", v: [...value].map((x) => encodeWire(x, refs, d)) };
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

/**
 * Whether a value has the shape of an object id (a short base64url string);
 * whether it names a live object is the server's question.
 *
 * @param id What a peer sent.
 * @returns Whether it may be an object id.
 */
export function isObjectIdShape(id: unknown): id is ObjectId {
  return typeof id === "string" && id.length > 0 &&
    id.length <= MAX_OBJECT_ID && /^[A-Za-z0-9_-]+$/.test(id);
}

function bad(what: string): never {
  throw new TypeError(`Cannot decode a manager value: ${what}`);
}

/**
 * Decodes a tree made by {@linkcode encodeWire}. Objects are rebuilt with
 * own data properties only (a `"__proto__"` key stays a plain key), so a
 * peer cannot touch prototypes.
 *
 * @param tree The tree.
 * @param refs Turns a reference into a live object.
 * @param freeze Deep-freezes the containers it builds.
 * @param depth The current depth (internal).
 * @returns The value.
 * @throws {TypeError} If the tree is not a valid encoding.
 */
export function decodeWire(
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
      out[i] = decodeWire(tree[i], refs, freeze, d);
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
      setOwn(out, k, decodeWire(rec[k], refs, freeze, d));
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
          value: decodeWire(e[1], refs, freeze, d),
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
          decodeWire(e[0], refs, freeze, d),
          decodeWire(e[1], refs, freeze, d),
        );
      }
      return freeze ? Object.freeze(out) : out;
    }
    case "set": {
      if (!Array.isArray(v)) bad("bad set");
      const out = freeze ? new FrozenSet() : new Set();
      for (const x of v) {
        Set.prototype.add.call(out, decodeWire(x, refs, freeze, d));
      }
      return freeze ? Object.freeze(out) : out;
    }
    case "ref": {
      const id = rec.id, type = rec.type;
      if (!isObjectIdShape(id) || typeof type !== "string") {
        bad("bad reference");
      }
      if (!refs) bad("references are not accepted here");
      return refs({ id, type });
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

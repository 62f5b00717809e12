/**
 * What the server stores in place of a managed object inside a value
 * ({@linkcode Ref}), how object ids are made ({@linkcode newObjectId}:
 * unguessable capabilities), and the two walkers over stored values:
 * {@linkcode forEachRef} (reference counting) and {@linkcode deepEqual}
 * (list search and counting).
 *
 * @module
 */

import { forEachNode, MAX_DEPTH } from "../../_core/walk.ts";
import { OBJECT_ID_BYTES, type ObjectId } from "../protocol.ts";

/** A reference to a managed object inside a value held by the server. */
export class Ref {
  /**
   * Makes a reference.
   *
   * @param id The object's id.
   * @param type Its type id.
   */
  constructor(readonly id: ObjectId, readonly type: string) {}
}

const ID_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** Random bytes drawn in bulk: one `getRandomValues` per 256 ids. */
const idPool = new Uint8Array(OBJECT_ID_BYTES * 256);
let idPoolAt = idPool.length;

/**
 * A fresh object id: {@linkcode OBJECT_ID_BYTES} bytes from
 * `crypto.getRandomValues`, base64url. Ids are capabilities (whoever holds
 * one may use the object), so they must not be guessable from other ids.
 *
 * @returns The id (16 characters).
 */
export function newObjectId(): ObjectId {
  if (idPoolAt + OBJECT_ID_BYTES > idPool.length) {
    crypto.getRandomValues(idPool);
    idPoolAt = 0;
  }
  const b = idPool, A = ID_ALPHABET;
  let s = "";
  for (let i = idPoolAt; i < idPoolAt + OBJECT_ID_BYTES; i += 3) {
    const n = (b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!;
    s += A[n >> 18]! + A[(n >> 12) & 63]! + A[(n >> 6) & 63]! + A[n & 63]!;
  }
  // Each id's bytes are used once, then overwritten by the next refill.
  idPoolAt += OBJECT_ID_BYTES;
  return s;
}

/** Calls `fn` for each reference inside a stored value. */
export function forEachRef(value: unknown, fn: (r: Ref) => void): void {
  forEachNode(value, (node) => {
    if (!(node instanceof Ref)) return true;
    fn(node);
    return false;
  });
}

/**
 * Whether two stored values are equal: by structure, references by id.
 */
export function deepEqual(a: unknown, b: unknown, depth = 0): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a === "number" && typeof b === "number") return a === b;
  if (
    typeof a !== "object" || typeof b !== "object" || a === null ||
    b === null || depth > MAX_DEPTH
  ) return false;
  if (a instanceof Ref || b instanceof Ref) {
    return a instanceof Ref && b instanceof Ref && a.id === b.id;
  }
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length &&
      a.every((x, i) => deepEqual(x, b[i], depth + 1));
  }
  if (Array.isArray(b)) return false;
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) {
      return false;
    }
    for (const [k, x] of a) {
      if (!b.has(k) || !deepEqual(x, b.get(k), depth + 1)) return false;
    }
    return true;
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set && b instanceof Set) || a.size !== b.size) {
      return false;
    }
    for (const x of a) if (!b.has(x)) return false;
    return true;
  }
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date &&
      a.getTime() === b.getTime();
  }
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length &&
    ka.every((k) =>
      Object.hasOwn(b, k) &&
      deepEqual(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        depth + 1,
      )
    );
}

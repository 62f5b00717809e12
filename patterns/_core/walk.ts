/**
 * The one visitor over value trees (arrays, `Map`s, `Set`s and plain
 * objects): how shared objects are found in a message on the way out and
 * revived on the way in, how the manager finds the references inside a
 * value, and how deep any value may nest. A value referenced twice is
 * visited once, and a cycle ends the descent instead of looping.
 *
 * @module
 */

/**
 * How deep any walk of this package descends (and how deep the manager's
 * wire format lets a value nest).
 */
export const MAX_DEPTH = 200;

/**
 * Whether `v` is a plain object (its prototype is `Object.prototype` or
 * `null`), as opposed to an array, a class instance or a primitive.
 *
 * @param v Anything.
 * @returns `true` for a plain object.
 */
export function isPlainObject(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

/** Returned by a {@linkcode mapTree} visitor to descend into the node. */
export const DESCEND: unique symbol = Symbol("descend");

/**
 * Calls `visit` for every object in `value` (the root included), once per
 * object, parents first. The walk descends into arrays, `Map` keys and
 * values, `Set`s and plain objects' own enumerable string keys, unless
 * `visit` returns `false`; past {@linkcode MAX_DEPTH} levels it stops
 * descending.
 *
 * @param value The tree.
 * @param visit Called with each object.
 */
export function forEachNode(
  value: unknown,
  visit: (node: object) => boolean | void,
): void {
  if (typeof value !== "object" || value === null) return;
  const seen = new Set<object>();
  const go = (v: unknown, depth: number): void => {
    if (typeof v !== "object" || v === null || seen.has(v)) return;
    seen.add(v);
    if (visit(v) === false || depth >= MAX_DEPTH) return;
    const d = depth + 1;
    if (Array.isArray(v)) {
      for (const x of v) go(x, d);
    } else if (v instanceof Map) {
      for (const [k, x] of v) {
        go(k, d);
        go(x, d);
      }
    } else if (v instanceof Set) {
      for (const x of v) go(x, d);
    } else if (isPlainObject(v)) {
      const rec = v as Record<string, unknown>;
      for (const k of Object.keys(rec)) go(rec[k], d);
    }
  };
  go(value, 0);
}

/**
 * Maps the objects of a tree, copying only the containers on the path to a
 * replaced node (the rest is shared with the input). `visit` is called for
 * every object once: it returns the node's replacement, or
 * {@linkcode DESCEND} to keep the node and map its children. A node seen
 * twice maps to the same result both times, so identity is kept.
 *
 * @param value The tree.
 * @param visit Gives each object's replacement, or `DESCEND`.
 * @returns The mapped tree (`value` itself when nothing was replaced).
 */
export function mapTree(
  value: unknown,
  visit: (node: object, map: (v: unknown) => unknown) => unknown,
): unknown {
  if (typeof value !== "object" || value === null) return value;
  const seen = new Map<object, unknown>();
  const map = (v: unknown): unknown => {
    if (typeof v !== "object" || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    // Provisional: a cycle back to `v` maps to `v` itself.
    seen.set(v, v);
    const r = visit(v, map);
    const out = r === DESCEND ? mapChildren(v, map) : r;
    seen.set(v, out);
    return out;
  };
  return map(value);
}

function mapChildren(v: object, map: (v: unknown) => unknown): unknown {
  if (Array.isArray(v)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const w = map(v[i]);
      if (w !== v[i] && !copy) copy = v.slice(0, i);
      if (copy) copy.push(w);
    }
    return copy ?? v;
  }
  if (v instanceof Map) {
    let changed = false;
    const entries = [...v].map(([k, x]) => {
      const k2 = map(k), x2 = map(x);
      if (k2 !== k || x2 !== x) changed = true;
      return [k2, x2] as const;
    });
    return changed ? new Map(entries) : v;
  }
  if (v instanceof Set) {
    let changed = false;
    const items = [...v].map((x) => {
      const x2 = map(x);
      if (x2 !== x) changed = true;
      return x2;
    });
    return changed ? new Set(items) : v;
  }
  if (!isPlainObject(v)) return v;
  const rec = v as Record<string, unknown>;
  let copy: Record<string, unknown> | undefined;
  for (const k of Object.keys(rec)) {
    const x = rec[k];
    const w = map(x);
    if (w !== x && !copy) copy = { ...rec };
    if (copy) copy[k] = w;
  }
  return copy ?? v;
}

/**
 * Argument checks shared by the built-in objects' methods.
 *
 * @module
 */

import { describeValue } from "../../../_core/errors.ts";
import type { DictKey } from "../../protocol.ts";

/** The `i`th argument (`undefined` when missing). */
export function arg(args: unknown[], i: number): unknown {
  return args[i];
}

/** Checks a dict key. */
export function checkKey(key: unknown, what: string): DictKey {
  const t = typeof key;
  if (t === "string" || t === "number" || t === "bigint" || t === "boolean") {
    return key as DictKey;
  }
  throw new TypeError(
    `Cannot ${what}: a dict key must be a string, number, bigint or boolean, received ${
      describeValue(key)
    }`,
  );
}

/** Orders two sortable values (numbers, bigints, strings, booleans, arrays). */
export function compare(a: unknown, b: unknown): number {
  const ta = typeof a, tb = typeof b;
  if (
    (ta === "number" || ta === "bigint") && (tb === "number" || tb === "bigint")
  ) {
    return (a as number) < (b as number)
      ? -1
      : (a as number) > (b as number)
      ? 1
      : 0;
  }
  if (ta === "string" && tb === "string") {
    return (a as string) < (b as string)
      ? -1
      : (a as string) > (b as string)
      ? 1
      : 0;
  }
  if (ta === "boolean" && tb === "boolean") return Number(a) - Number(b);
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const c = compare(a[i], b[i]);
      if (c !== 0) return c;
    }
    return a.length - b.length;
  }
  throw new TypeError(
    `Cannot sort: ${describeValue(a)} and ${
      describeValue(b)
    } cannot be compared (numbers, bigints, strings, booleans and arrays of them can)`,
  );
}

/**
 * Checks a list index and resolves a negative one; `insert` clamps it to
 * `[0, length]` instead of throwing.
 */
export function index(
  i: unknown,
  length: number,
  what: string,
  insert = false,
): number {
  if (!Number.isSafeInteger(i)) {
    throw new TypeError(
      `Cannot ${what}: the index must be an integer, received ${
        describeValue(i)
      }`,
    );
  }
  let n = i as number;
  if (n < 0) n += length;
  if (insert) return Math.min(Math.max(n, 0), length);
  if (n < 0 || n >= length) {
    throw new RangeError(
      `Cannot ${what}: index ${i} is out of range for length ${length}`,
    );
  }
  return n;
}

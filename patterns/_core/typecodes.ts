/**
 * The typecodes of Python's `array` module and `multiprocessing.Value`
 * (`"i"`, `"d"`, …): one table behind value.ts, array.ts and the Manager's
 * value and array objects. Adding a typecode is one line here.
 *
 * @module
 */

import { describeValue } from "./errors.ts";

/**
 * The 64-bit typecodes: their values are `bigint`.
 *
 * @example Usage
 * ```ts
 * import { type BigTypecode, RawValue } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const code: BigTypecode = "q";
 * const v = new RawValue(code, 2n ** 40n);
 * assert.equal(v.value, 2n ** 40n);
 * ```
 */
export type BigTypecode = "l" | "L" | "q" | "Q" | "int64" | "uint64";

/**
 * A typecode of Python's `array` module, or its readable alias.
 *
 * @example Usage
 * ```ts
 * import { RawValue, type Typecode } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const codes: Typecode[] = ["i", "float64", "uint64"];
 * assert.deepEqual(codes.map((c) => new RawValue(c).value), [0, 0, 0n]);
 * ```
 */
export type Typecode =
  | "b"
  | "B"
  | "h"
  | "H"
  | "i"
  | "I"
  | "f"
  | "d"
  | "int8"
  | "uint8"
  | "int16"
  | "uint16"
  | "int32"
  | "uint32"
  | "float32"
  | "float64"
  | BigTypecode;

/**
 * The JavaScript type of one element of typecode `C`.
 *
 * @example Usage
 * ```ts
 * import type { ElementOf } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const small: ElementOf<"int32"> = 42;
 * const big: ElementOf<"uint64"> = 42n;
 * assert.equal(typeof small, "number");
 * assert.equal(typeof big, "bigint");
 * ```
 */
export type ElementOf<C extends Typecode> = C extends BigTypecode ? bigint
  : number;

/**
 * The typed array that views memory of typecode `C`.
 *
 * @example Usage
 * ```ts
 * import type { TypedArrayOf } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const view: TypedArrayOf<"int16"> = new Int16Array(new SharedArrayBuffer(4));
 * assert.equal(view.length, 2);
 * ```
 */
export type TypedArrayOf<C extends Typecode> = C extends "b" | "int8"
  ? Int8Array
  : C extends "B" | "uint8" ? Uint8Array
  : C extends "h" | "int16" ? Int16Array
  : C extends "H" | "uint16" ? Uint16Array
  : C extends "i" | "int32" ? Int32Array
  : C extends "I" | "uint32" ? Uint32Array
  : C extends "l" | "q" | "int64" ? BigInt64Array
  : C extends "L" | "Q" | "uint64" ? BigUint64Array
  : C extends "f" | "float32" ? Float32Array
  : C extends "d" | "float64" ? Float64Array
  : never;

/**
 * Any typed array a typecode can give.
 *
 * @example Usage
 * ```ts
 * import { type AnyTypedArray, typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const { ctor } = typecodeInfo("f", "make a view");
 * const view: AnyTypedArray = new ctor(new SharedArrayBuffer(8));
 * assert.ok(view instanceof Float32Array);
 * assert.equal(view.length, 2);
 * ```
 */
export type AnyTypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | Float32Array
  | Float64Array;

/**
 * What a typecode means.
 *
 * @example Usage
 * ```ts
 * import { type TypecodeInfo, typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const t: TypecodeInfo = typecodeInfo("uint8", "describe a typecode");
 * assert.equal(t.code, "B");
 * assert.equal(t.bytes, 1);
 * assert.equal(t.kind, "int");
 * assert.equal(t.max, 255);
 * ```
 */
export interface TypecodeInfo {
  /** The canonical one-letter code, e.g. `"i"`. */
  code: string;
  /** The readable alias, e.g. `"int32"`. */
  alias: string;
  /** The typed array class. */
  ctor: new (buffer: SharedArrayBuffer | ArrayBuffer) => AnyTypedArray;
  /** Bytes per element. */
  bytes: number;
  /** `"int"` (number), `"big"` (bigint) or `"float"` (number). */
  kind: "int" | "big" | "float";
  /** The smallest value (for integer kinds). */
  min: number | bigint;
  /** The largest value (for integer kinds). */
  max: number | bigint;
}

function info(
  code: string,
  alias: string,
  ctor: TypecodeInfo["ctor"],
  bytes: number,
  kind: TypecodeInfo["kind"],
  min: number | bigint,
  max: number | bigint,
): TypecodeInfo {
  return { code, alias, ctor, bytes, kind, min, max };
}

const TABLE: Record<string, TypecodeInfo> = Object.create(null);
for (
  const t of [
    info("b", "int8", Int8Array, 1, "int", -128, 127),
    info("B", "uint8", Uint8Array, 1, "int", 0, 255),
    info("h", "int16", Int16Array, 2, "int", -32768, 32767),
    info("H", "uint16", Uint16Array, 2, "int", 0, 65535),
    info("i", "int32", Int32Array, 4, "int", -(2 ** 31), 2 ** 31 - 1),
    info("I", "uint32", Uint32Array, 4, "int", 0, 2 ** 32 - 1),
    info("l", "int64", BigInt64Array, 8, "big", -(2n ** 63n), 2n ** 63n - 1n),
    info("L", "uint64", BigUint64Array, 8, "big", 0n, 2n ** 64n - 1n),
    info("q", "int64", BigInt64Array, 8, "big", -(2n ** 63n), 2n ** 63n - 1n),
    info("Q", "uint64", BigUint64Array, 8, "big", 0n, 2n ** 64n - 1n),
    info("f", "float32", Float32Array, 4, "float", -Infinity, Infinity),
    info("d", "float64", Float64Array, 8, "float", -Infinity, Infinity),
  ]
) {
  TABLE[t.code] = t;
}
for (const t of Object.values(TABLE)) {
  if (t.code !== "l" && t.code !== "L") TABLE[t.alias] = t;
}

/**
 * Every accepted typecode, codes first, then aliases.
 *
 * @example Usage
 * ```ts
 * import { TYPECODES } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(TYPECODES.includes("d"));
 * assert.ok(TYPECODES.includes("float64"));
 * assert.equal(TYPECODES.includes("x"), false);
 * ```
 */
export const TYPECODES: readonly string[] = Object.freeze(Object.keys(TABLE));

/**
 * Looks a typecode up.
 *
 * @example Usage
 * ```ts
 * import { typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(typecodeInfo("int32", "create Value").code, "i");
 * assert.throws(() => typecodeInfo("x", "create Value"), TypeError);
 * ```
 *
 * @param typecode A code or alias.
 * @param what The call, for the error message.
 * @returns What it means.
 * @throws {TypeError} If it is not a known typecode; the message lists them.
 */
export function typecodeInfo(typecode: unknown, what: string): TypecodeInfo {
  const t = typeof typecode === "string" ? TABLE[typecode] : undefined;
  if (!t) {
    throw new TypeError(
      `Cannot ${what}: unknown typecode ${
        describeValue(typecode)
      }; valid typecodes are ${TYPECODES.join(", ")}`,
    );
  }
  return t;
}

/**
 * Checks that `value` fits typecode `t`: an integer in range for the
 * integer codes, a `bigint` in range for the 64-bit codes, any `number` for
 * the float codes.
 *
 * @example Usage
 * ```ts ignore
 * import { checkElement, typecodeInfo } from "./typecodes.ts";
 * import { strict as assert } from "node:assert";
 *
 * const B = typecodeInfo("B", "test");
 * assert.equal(checkElement(B, 255, "set"), 255);
 * assert.throws(() => checkElement(B, 300, "set"), TypeError);
 * ```
 *
 * @param t The typecode's info.
 * @param value The value.
 * @param what The call, for the error message.
 * @returns The value.
 * @throws {TypeError} If it does not fit.
 */
export function checkElement(
  t: TypecodeInfo,
  value: unknown,
  what: string,
): number | bigint {
  if (t.kind === "float") {
    if (typeof value === "number") return value;
  } else if (t.kind === "int") {
    if (
      typeof value === "number" && Number.isInteger(value) &&
      value >= (t.min as number) && value <= (t.max as number)
    ) return value;
  } else if (
    typeof value === "bigint" && value >= (t.min as bigint) &&
    value <= (t.max as bigint)
  ) return value;
  throw badElement(t, value, what);
}

function badElement(t: TypecodeInfo, value: unknown, what: string): TypeError {
  let need: string;
  if (t.kind === "float") need = "a number";
  else if (t.kind === "int") {
    need = `an integer from ${t.min} to ${t.max}`;
  } else need = `a bigint from ${t.min}n to ${t.max}n`;
  const hint = t.kind === "big" && typeof value === "number"
    ? ` (write ${Number.isInteger(value) ? `${value}n` : "a bigint"})`
    : "";
  return new TypeError(
    `Cannot ${what}: typecode "${t.code}" (${t.alias}) holds ${need}, received ${
      describeValue(value)
    }${hint}`,
  );
}

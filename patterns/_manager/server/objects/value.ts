/**
 * The typed objects: a value (one cell) and an array of a typecode, as
 * Python's `Manager().Value` and `Manager().Array`.
 *
 * @module
 */

import { checkElement, type TypecodeInfo } from "../../../_core/typecodes.ts";
import { describeValue } from "../../../_core/errors.ts";
import { type Handler, type Managed, methods } from "../call.ts";
import { index } from "./args.ts";

/** A typed array of `length` zeroes for a typecode. */
function cells(
  t: TypecodeInfo,
  length: number,
): Int8Array | BigInt64Array | Float64Array {
  return new t.ctor(new ArrayBuffer(length * t.bytes)) as
    | Int8Array
    | BigInt64Array
    | Float64Array;
}

/** A value of a typecode. */
export class ValueObj implements Managed {
  readonly type = "value";
  /** The value's one cell. */
  readonly cell: Int8Array | BigInt64Array | Float64Array;
  readonly #tc: TypecodeInfo;
  /**
   * Makes a value.
   *
   * @param tc Its typecode.
   * @param initial Its initial value (default zero).
   */
  constructor(tc: TypecodeInfo, initial: unknown) {
    this.#tc = tc;
    this.cell = cells(tc, 1);
    this.cell[0] = checkElement(
      tc,
      initial ?? (tc.kind === "big" ? 0n : 0),
      "make a value",
    ) as never;
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<"value">({
    get: () => this.cell[0],
    set: (_, a) => {
      this.cell[0] = checkElement(this.#tc, a[0], "set") as never;
    },
    add: (_, a) => {
      const d = a[0];
      const big = this.#tc.kind === "big";
      if (big ? typeof d !== "bigint" : typeof d !== "number") {
        throw new TypeError(
          `Cannot add: typecode ${this.#tc.code} adds a ${
            big ? "bigint" : "number"
          }, received ${describeValue(d)}`,
        );
      }
      const next = (this.cell[0] as number) + (d as number);
      this.cell[0] = checkElement(this.#tc, next, "add") as never;
      return this.cell[0];
    },
  });
}

/** An array of a typecode. */
export class ArrayObj implements Managed {
  readonly type = "array";
  /** The cells. */
  readonly data: Int8Array | BigInt64Array | Float64Array;
  readonly #tc: TypecodeInfo;
  /**
   * Makes an array.
   *
   * @param tc Its typecode.
   * @param init Its size, or its initial values.
   */
  constructor(tc: TypecodeInfo, init: unknown) {
    this.#tc = tc;
    if (typeof init === "number") {
      if (!Number.isSafeInteger(init) || init < 0) {
        throw new RangeError(
          `Cannot make an array: the size must be a non-negative integer, received ${init}`,
        );
      }
      this.data = cells(tc, init);
    } else if (Array.isArray(init)) {
      this.data = cells(tc, init.length);
      init.forEach((v, i) =>
        this.data[i] = checkElement(tc, v, "make an array") as never
      );
    } else {
      throw new TypeError(
        `Cannot make an array: expected a size or an array of initial values, received ${
          describeValue(init)
        }`,
      );
    }
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<"array">({
    get: (_, a) => this.data[index(a[0], this.data.length, "get")],
    set: (_, a) => {
      const i = index(a[0], this.data.length, "set");
      this.data[i] = checkElement(this.#tc, a[1], "set") as never;
    },
    length: () => this.data.length,
    toArray: () => Array.from(this.data as ArrayLike<number | bigint>),
  });
}

/**
 * A fixed-length array of numbers in shared memory, as Python's
 * `multiprocessing.Array` and `RawArray`.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import Array, Process
 *
 * def add_one(a):
 *     with a.get_lock():
 *         for i in range(len(a)):
 *             a[i] += 1
 *
 * if __name__ == "__main__":
 *     a = Array("i", 3)
 *     p = Process(target=add_one, args=(a,))
 *     p.start(); p.join()
 *     print(a[:])  # [1, 1, 1]
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { SharedArray } from "@dmp/multiprocessing/array";
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const a = new SharedArray("i", 3);
 * const p = new Process({
 *   target: (a: SharedArray<"i">) => {
 *     using _ = a.getLock().holdSync();
 *     for (let i = 0; i < a.length; i++) a.set(i, a.get(i) + 1);
 *   },
 *   args: [a],
 * });
 * p.start();
 * await p.join();
 * assert.deepEqual(a.toArray(), [1, 1, 1]);
 * ```
 *
 * `get`/`set` check the index (negative indices count from the end, as in
 * Python) and that the value fits the typecode; `view` is the live typed
 * array over the same memory, for loops at full speed. Typecodes are those
 * of `value.ts`: `b B h H i I l L q Q f d` and their aliases; the 64-bit
 * codes hold `bigint`. Passed to a `Process` or `Pool` task (also nested in
 * arrays and objects), an array arrives live in the worker, with its lock.
 *
 * @module
 */

import {
  checkElement,
  type ElementOf,
  type Typecode,
  type TypecodeInfo,
  typecodeInfo,
  type TypedArrayOf,
} from "./_core/typecodes.ts";
import { describeValue } from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { kAttach, kShare, registerShareable } from "./_core/share.ts";
import type { SharedHandle } from "./_core/share.ts";
import type { Lock, RLock } from "./_sync/lock.ts";
import { lockOption, noLockError } from "./_sync/lock_option.ts";

export { kShare } from "./_core/share.ts";
export type { ShareContext, SharedHandle } from "./_core/share.ts";
export type { WaitOptions } from "./_core/deadline.ts";
export type { Lock, RLock } from "./_sync/lock.ts";
export type {
  BigTypecode,
  ElementOf,
  Typecode,
  TypedArrayOf,
} from "./_core/typecodes.ts";

/** What an array's handle carries (`lock: false`: a `RawArray`). */
interface ArrayData {
  buffer: SharedArrayBuffer;
  typecode: Typecode;
  lock: Lock | RLock | null | false;
}

/** How an array reads and writes its elements (by kind of typecode). */
const INT = 0;
const BIG = 1;
const FLOAT = 2;
type Kind = typeof INT | typeof BIG | typeof FLOAT;

function badIndex(i: unknown, length: number, what: string): Error {
  if (typeof i !== "number" || !Number.isInteger(i)) {
    return new TypeError(
      `Cannot ${what}: the index must be an integer, received ${
        describeValue(i)
      }`,
    );
  }
  return new RangeError(
    `Cannot ${what}: index ${i} is out of range for an array of length ${length}`,
  );
}

/**
 * An array of numbers in shared memory without a lock, as Python's
 * `multiprocessing.RawArray`.
 *
 * @example Usage
 * ```ts
 * import { RawArray } from "@dmp/multiprocessing/array";
 * import { strict as assert } from "node:assert";
 *
 * const a = new RawArray("d", [0.5, 1.5]);
 * a.set(-1, 2.5);
 * assert.deepEqual([...a], [0.5, 2.5]);
 * assert.equal(a.view.length, 2);
 * ```
 *
 * @typeParam C The typecode.
 */
export class RawArray<C extends Typecode = Typecode>
  implements Iterable<ElementOf<C>> {
  readonly #t: TypecodeInfo;
  readonly #view: TypedArrayOf<C>;
  readonly #length: number;
  readonly #kind: Kind;

  /**
   * Makes an array of `sizeOrInitial` zeros, or holding the given values.
   *
   * @param typecode A typecode (`"i"`, `"d"`, `"q"`, …) or alias.
   * @param sizeOrInitial A length, or the initial values (any iterable).
   * @throws {TypeError} If the typecode is unknown, or a value does not fit
   *   it.
   * @throws {RangeError} If the length is negative or not an integer.
   */
  constructor(typecode: C, sizeOrInitial: number | Iterable<ElementOf<C>>);
  /** @ignore */
  constructor(attach: typeof kAttach, data: ArrayData);
  constructor(
    typecode: C | typeof kAttach,
    sizeOrInitial: number | Iterable<ElementOf<C>> | ArrayData,
  ) {
    const what = `create ${new.target.name}`;
    const adopted = typecode === kAttach
      ? sizeOrInitial as ArrayData
      : undefined;
    const t = typecodeInfo(adopted ? adopted.typecode : typecode, what);
    this.#t = t;
    this.#kind = t.kind === "int" ? INT : t.kind === "big" ? BIG : FLOAT;
    if (adopted) {
      this.#view = new t.ctor(adopted.buffer) as TypedArrayOf<C>;
      this.#length = this.#view.length;
      return;
    }
    let values: unknown[] | undefined;
    let length: number;
    if (typeof sizeOrInitial === "number") {
      if (
        !Number.isInteger(sizeOrInitial) || sizeOrInitial < 0 ||
        sizeOrInitial * t.bytes > 2 ** 32
      ) {
        throw new RangeError(
          `Cannot ${what}: the size must be a non-negative integer, received ${sizeOrInitial}`,
        );
      }
      length = sizeOrInitial;
    } else if (
      typeof sizeOrInitial === "object" && sizeOrInitial !== null &&
      typeof (sizeOrInitial as Iterable<unknown>)[Symbol.iterator] ===
        "function"
    ) {
      values = [...(sizeOrInitial as Iterable<unknown>)];
      for (let i = 0; i < values.length; i++) {
        checkElement(t, values[i], `${what} (item ${i})`);
      }
      length = values.length;
    } else {
      throw new TypeError(
        `Cannot ${what}: expected a size or an iterable of initial values, received ${
          describeValue(sizeOrInitial)
        }`,
      );
    }
    this.#view = new t.ctor(
      new SharedArrayBuffer(length * t.bytes),
    ) as TypedArrayOf<C>;
    this.#length = length;
    if (values) (this.#view as Float64Array).set(values as number[]);
  }

  /** The canonical one-letter typecode, e.g. `"d"`. */
  get typecode(): string {
    return this.#t.code;
  }

  /** The number of elements. */
  get length(): number {
    return this.#length;
  }

  /**
   * The live typed array over the shared memory: writes through it are
   * seen by every holder; no checks, full speed.
   */
  get view(): TypedArrayOf<C> {
    return this.#view;
  }

  /**
   * Reads element `i` (negative counts from the end).
   *
   * @example Usage
   * ```ts
   * import { RawArray } from "@dmp/multiprocessing/array";
   * import { strict as assert } from "node:assert";
   *
   * const a = new RawArray("i", [1, 2, 3]);
   * assert.equal(a.get(0), 1);
   * assert.equal(a.get(-1), 3);
   * assert.throws(() => a.get(3), RangeError);
   * ```
   *
   * @param i The index.
   * @returns The element.
   * @throws {RangeError} If `i` is out of range.
   * @throws {TypeError} If `i` is not an integer.
   */
  get(i: number): ElementOf<C> {
    if (i >= 0 && i < this.#length && (i | 0) === i) {
      return this.#view[i] as ElementOf<C>;
    }
    return this.#view[this.#slowIndex(i, "get")] as ElementOf<C>;
  }

  /**
   * Writes element `i` (negative counts from the end).
   *
   * @example Usage
   * ```ts
   * import { RawArray } from "@dmp/multiprocessing/array";
   * import { strict as assert } from "node:assert";
   *
   * const a = new RawArray("B", 2);
   * a.set(1, 255);
   * assert.throws(() => a.set(0, 300), TypeError);
   * assert.deepEqual(a.toArray(), [0, 255]);
   * ```
   *
   * @param i The index.
   * @param value The value; it must fit the typecode.
   * @throws {RangeError} If `i` is out of range.
   * @throws {TypeError} If `i` is not an integer or `value` does not fit.
   */
  set(i: number, value: ElementOf<C>): void {
    if (!(i >= 0 && i < this.#length && (i | 0) === i)) {
      i = this.#slowIndex(i, "set");
    }
    const t = this.#t;
    switch (this.#kind) {
      case FLOAT:
        if (typeof value === "number") {
          (this.#view as Float64Array)[i] = value;
          return;
        }
        break;
      case INT:
        if (
          typeof value === "number" && Number.isInteger(value) &&
          value >= (t.min as number) && value <= (t.max as number)
        ) {
          (this.#view as Int32Array)[i] = value;
          return;
        }
        break;
      default:
        if (
          typeof value === "bigint" && value >= (t.min as bigint) &&
          value <= (t.max as bigint)
        ) {
          (this.#view as BigInt64Array)[i] = value;
          return;
        }
    }
    checkElement(t, value, `set item ${i}`);
  }

  #slowIndex(i: unknown, what: string): number {
    const n = this.#length;
    if (typeof i === "number" && Number.isInteger(i) && i < 0 && i >= -n) {
      return i + n;
    }
    throw badIndex(i, n, what);
  }

  /**
   * Copies the elements into a plain array (Python's `a[:]`).
   *
   * @example Usage
   * ```ts
   * import { RawArray } from "@dmp/multiprocessing/array";
   * import { strict as assert } from "node:assert";
   *
   * assert.deepEqual(new RawArray("q", [1n, 2n]).toArray(), [1n, 2n]);
   * ```
   *
   * @returns The copy.
   */
  toArray(): ElementOf<C>[] {
    return Array.from(this.#view as unknown as ArrayLike<ElementOf<C>>);
  }

  /**
   * Iterates over the elements.
   *
   * @example Usage
   * ```ts
   * import { RawArray } from "@dmp/multiprocessing/array";
   * import { strict as assert } from "node:assert";
   *
   * let sum = 0;
   * for (const x of new RawArray("i", [1, 2, 3])) sum += x;
   * assert.equal(sum, 6);
   * ```
   *
   * @returns An iterator of the elements.
   */
  *[Symbol.iterator](): Iterator<ElementOf<C>> {
    const v = this.#view as unknown as ArrayLike<ElementOf<C>>;
    for (let i = 0; i < this.#length; i++) yield v[i]!;
  }

  /**
   * Describes the array for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    const data: ArrayData = {
      buffer: this.#view.buffer as SharedArrayBuffer,
      typecode: this.#t.code as Typecode,
      lock: false,
    };
    return { type: "array.array", module: import.meta.url, data };
  }
}

/**
 * Options of {@linkcode SharedArray}.
 *
 * @example Usage
 * ```ts
 * import { SharedArray, type SharedArrayOptions } from "@dmp/multiprocessing/array";
 * import { strict as assert } from "node:assert";
 *
 * // No lock: get and set work, getLock() throws.
 * const options: SharedArrayOptions = { lock: false };
 * const a = new SharedArray("d", [0.5, 1.5], options);
 * a.set(1, 2.5);
 * assert.deepEqual(a.toArray(), [0.5, 2.5]);
 * assert.throws(() => a.getLock(), TypeError);
 * ```
 */
export interface SharedArrayOptions {
  /**
   * `true` (the default) makes a new `RLock`; a `Lock` or `RLock` is used
   * as given; `false` gives none.
   */
  lock?: boolean | Lock | RLock;
}

/**
 * An array of numbers in shared memory with a lock, as Python's
 * `multiprocessing.Array` (named so as not to shadow the global `Array`).
 *
 * @example Usage
 * ```ts
 * import { SharedArray } from "@dmp/multiprocessing/array";
 * import { strict as assert } from "node:assert";
 *
 * const a = new SharedArray("i", 3);
 * {
 *   using _ = await a.getLock().hold();
 *   for (let i = 0; i < a.length; i++) a.set(i, i * 10);
 * }
 * assert.deepEqual(a.toArray(), [0, 10, 20]);
 * ```
 *
 * @typeParam C The typecode.
 */
export class SharedArray<C extends Typecode = Typecode> extends RawArray<C> {
  readonly #lock: Lock | RLock | null;

  /**
   * Makes an array of `sizeOrInitial` zeros, or holding the given values.
   *
   * @param typecode A typecode (`"i"`, `"d"`, `"q"`, …) or alias.
   * @param sizeOrInitial A length, or the initial values (any iterable).
   * @param options The lock.
   * @throws {TypeError} If the typecode is unknown, a value does not fit
   *   it, or `lock` is not a lock.
   * @throws {RangeError} If the length is negative or not an integer.
   */
  constructor(
    typecode: C,
    sizeOrInitial: number | Iterable<ElementOf<C>>,
    options?: SharedArrayOptions,
  );
  /** @ignore */
  constructor(attach: typeof kAttach, data: ArrayData);
  constructor(
    typecode: C | typeof kAttach,
    sizeOrInitial: number | Iterable<ElementOf<C>> | ArrayData,
    options: SharedArrayOptions = {},
  ) {
    const lock = typecode === kAttach
      ? (sizeOrInitial as ArrayData).lock || null
      : lockOption(options?.lock, "create SharedArray");
    // A pass-through: (typecode, sizeOrInitial) or (kAttach, data), as
    // received.
    super(typecode as C, sizeOrInitial as number);
    this.#lock = lock;
  }

  /**
   * The lock that guards the array.
   *
   * @example Usage
   * ```ts
   * import { SharedArray } from "@dmp/multiprocessing/array";
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const lock = new Lock();
   * assert.equal(new SharedArray("i", 1, { lock }).getLock(), lock);
   * assert.throws(() => new SharedArray("i", 1, { lock: false }).getLock(), TypeError);
   * ```
   *
   * @returns The `Lock` or `RLock`.
   * @throws {TypeError} If the array was made with `lock: false`.
   */
  getLock(): Lock | RLock {
    if (this.#lock === null) throw noLockError("SharedArray");
    return this.#lock;
  }

  /**
   * Describes the array and its lock for the trip into a worker.
   *
   * @ignore
   */
  override [kShare](): SharedHandle {
    const data: ArrayData = {
      buffer: this.view.buffer as SharedArrayBuffer,
      typecode: this.typecode as Typecode,
      lock: this.#lock ?? null,
    };
    return { type: "array.array", module: import.meta.url, data };
  }
}

registerShareable("array.array", (d) => {
  const data = d as ArrayData;
  return data.lock === false
    ? new RawArray(kAttach, data)
    : new SharedArray(kAttach, data);
});

// -- Demo --------------------------------------------------------------------

if (isMainModule(import.meta)) {
  (await import("./_demo.ts")).demoStart(
    "array",
    'Makes a SharedArray("i", 3), lets a process add 1 to every element, and prints it ([1, 1, 1]).',
  );
  const { Process } = await import("./cube.ts");
  const a = new SharedArray("i", 3);
  const p = new Process({
    target: (a: SharedArray<"i">) => {
      using _ = a.getLock().holdSync();
      for (let i = 0; i < a.length; i++) a.set(i, a.get(i) + 1);
    },
    args: [a],
  });
  p.start();
  await p.join();
  console.log(`[${a.toArray().join(", ")}]`);
}

/**
 * A single number in shared memory, as Python's `multiprocessing.Value` and
 * `RawValue`, plus the atomic `add` and `compareExchange` that Python lacks.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import Process, Value
 *
 * def cube(v):
 *     with v.get_lock():
 *         v.value = v.value ** 3
 *
 * if __name__ == "__main__":
 *     v = Value("i", 4)
 *     for _ in range(2):
 *         p = Process(target=cube, args=(v,))
 *         p.start(); p.join()
 *     print(v.value)  # 262144
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { Value } from "@dmp/multiprocessing/value";
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const v = new Value("i", 4);
 * for (let k = 0; k < 2; k++) {
 *   const p = new Process({
 *     target: (v: Value<"i">) => {
 *       using _ = v.getLock().holdSync();
 *       v.value = v.value ** 3;
 *     },
 *     args: [v],
 *   });
 *   p.start();
 *   await p.join();
 * }
 * assert.equal(v.value, 262144);
 * ```
 *
 * Typecodes are those of Python's `array` module — `b B h H i I l L q Q f d`
 * — or readable aliases (`"int8"`, `"uint8"`, `"int16"`, `"uint16"`,
 * `"int32"`, `"uint32"`, `"int64"`, `"uint64"`, `"float32"`, `"float64"`).
 * The 64-bit codes `l L q Q` hold `bigint`. A value that does not fit its
 * typecode (a fraction for an integer code, 300 for `"B"`, a `number` for a
 * 64-bit code) is refused with `TypeError` rather than silently wrapped;
 * only `add` wraps around, as C integers do.
 *
 * A `Value` passed to a `Process` or `Pool` task (also nested in arrays and
 * objects) arrives live in the worker, on the same memory and with the same
 * lock.
 *
 * This module also holds the typecode table and the value checks that
 * `array.ts` uses ({@linkcode typecodeInfo}, {@linkcode checkElement}).
 *
 * @module
 */

import {
  type AnyTypedArray,
  checkElement,
  type ElementOf,
  type Typecode,
  type TypecodeInfo,
  typecodeInfo,
} from "./_core/typecodes.ts";
import { lockOption, noLockError } from "./_sync/lock_option.ts";
import { describeValue } from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { kAttach, kShare, registerShareable } from "./_core/share.ts";
import type { SharedHandle } from "./_core/share.ts";
import type { Lock, RLock } from "./_sync/lock.ts";

export { kShare } from "./_core/share.ts";
export type { ShareContext, SharedHandle } from "./_core/share.ts";
export type { WaitOptions } from "./_core/deadline.ts";
export type { Lock, RLock } from "./_sync/lock.ts";
export { typecodeInfo, TYPECODES } from "./_core/typecodes.ts";
export type {
  AnyTypedArray,
  BigTypecode,
  ElementOf,
  Typecode,
  TypecodeInfo,
  TypedArrayOf,
} from "./_core/typecodes.ts";

function checkDelta(t: TypecodeInfo, delta: unknown, what: string): void {
  if (t.kind === "big") {
    if (typeof delta === "bigint") return;
  } else if (t.kind === "int") {
    if (typeof delta === "number" && Number.isSafeInteger(delta)) return;
  } else if (typeof delta === "number") return;
  throw new TypeError(
    `Cannot ${what}: the delta for typecode "${t.code}" must be ${
      t.kind === "big"
        ? "a bigint"
        : t.kind === "int"
        ? "a safe integer"
        : "a number"
    }, received ${describeValue(delta)}`,
  );
}

// -- RawValue and Value ------------------------------------------------------

/** What a value's handle carries (`lock: false`: a `RawValue`). */
interface ValueData {
  buffer: SharedArrayBuffer;
  typecode: Typecode;
  lock: Lock | RLock | null | false;
}

/** How a value reads and writes its element (by kind of typecode). */
const INT = 0;
const BIG = 1;
const FLOAT = 2;
type Kind = typeof INT | typeof BIG | typeof FLOAT;

/** Module-private access to a value's memory. */
let bufferOf: (v: RawValue) => SharedArrayBuffer;

const f64 = new Float64Array(1);
const f64Bits = new BigInt64Array(f64.buffer);
const f32 = new Float32Array(1);
const f32Bits = new Int32Array(f32.buffer);

/**
 * One number in shared memory without a lock, as Python's
 * `multiprocessing.RawValue`. Reads and writes of `value` are single
 * atomic loads and stores; `add` and `compareExchange` are atomic
 * read-modify-writes.
 *
 * @example Usage
 * ```ts
 * import { RawValue } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const v = new RawValue("d", 1.5);
 * v.value *= 2;
 * assert.equal(v.value, 3);
 * ```
 *
 * @typeParam C The typecode.
 */
export class RawValue<C extends Typecode = Typecode> {
  readonly #t: TypecodeInfo;
  readonly #a: AnyTypedArray;
  readonly #kind: Kind;
  readonly #bits: Int32Array | BigInt64Array | undefined;
  readonly #scratch: AnyTypedArray;

  /**
   * Makes a value of typecode `typecode`, initially `initial`.
   *
   * @param typecode A typecode (`"i"`, `"d"`, `"q"`, …) or alias.
   * @param initial The first value (default `0`, or `0n` for 64-bit codes).
   * @throws {TypeError} If the typecode is unknown or `initial` does not
   *   fit it.
   */
  constructor(typecode: C, initial?: ElementOf<C>);
  /** @ignore */
  constructor(attach: typeof kAttach, data: ValueData);
  constructor(
    typecode: C | typeof kAttach,
    initial?: ElementOf<C> | ValueData,
  ) {
    const what = `create ${new.target.name}`;
    const adopted = typecode === kAttach ? initial as ValueData : undefined;
    const t = typecodeInfo(adopted ? adopted.typecode : typecode, what);
    const buffer = adopted?.buffer ?? new SharedArrayBuffer(8);
    this.#t = t;
    this.#a = new t.ctor(buffer).subarray(0, 1);
    this.#kind = t.kind === "int" ? INT : t.kind === "big" ? BIG : FLOAT;
    this.#scratch = new t.ctor(new ArrayBuffer(8)).subarray(0, 1);
    this.#bits = t.kind !== "float"
      ? undefined
      : t.bytes === 8
      ? new BigInt64Array(buffer, 0, 1)
      : new Int32Array(buffer, 0, 1);
    if (!adopted && initial !== undefined) {
      const v = checkElement(t, initial, what);
      (this.#a as Float64Array)[0] = v as number;
    }
  }

  static {
    bufferOf = (v) => v.#a.buffer as SharedArrayBuffer;
  }

  /** The canonical one-letter typecode, e.g. `"i"`. */
  get typecode(): string {
    return this.#t.code;
  }

  /** The current value (a `bigint` for 64-bit codes). */
  get value(): ElementOf<C> {
    return (this.#kind === FLOAT
      ? this.#a[0]
      : Atomics.load(this.#a as Int32Array, 0)) as ElementOf<C>;
  }

  /**
   * Stores a new value.
   *
   * @throws {TypeError} If it does not fit the typecode.
   */
  set value(v: ElementOf<C>) {
    const t = this.#t;
    switch (this.#kind) {
      case INT:
        if (
          typeof v === "number" && Number.isInteger(v) &&
          v >= (t.min as number) && v <= (t.max as number)
        ) {
          Atomics.store(this.#a as Int32Array, 0, v);
          return;
        }
        break;
      case BIG:
        if (
          typeof v === "bigint" && v >= (t.min as bigint) &&
          v <= (t.max as bigint)
        ) {
          Atomics.store(this.#a as BigInt64Array, 0, v);
          return;
        }
        break;
      default:
        if (typeof v === "number") {
          (this.#a as Float64Array)[0] = v;
          return;
        }
    }
    checkElement(t, v, "set value"); // throws: v does not fit
    throw new TypeError(`Cannot set value: received ${describeValue(v)}`);
  }

  /**
   * Adds `delta` atomically (integers wrap around as in C) and returns the
   * new value. Floats use a compare-and-swap loop on their bits.
   *
   * @example Usage
   * ```ts
   * import { RawValue } from "@dmp/multiprocessing/value";
   * import { strict as assert } from "node:assert";
   *
   * const v = new RawValue("q", 1n);
   * assert.equal(v.add(41n), 42n);
   * const f = new RawValue("d");
   * assert.equal(f.add(0.5), 0.5);
   * ```
   *
   * @param delta What to add (a `bigint` for 64-bit codes; may be negative).
   * @returns The value after the addition.
   * @throws {TypeError} If `delta` has the wrong type for the typecode.
   */
  add(delta: ElementOf<C>): ElementOf<C> {
    const s = this.#scratch;
    switch (this.#kind) {
      case INT:
        if (typeof delta !== "number" || !Number.isSafeInteger(delta)) break;
        s[0] = Atomics.add(this.#a as Int32Array, 0, delta) + delta;
        return s[0] as ElementOf<C>;
      case BIG:
        if (typeof delta !== "bigint") break;
        s[0] = Atomics.add(this.#a as BigInt64Array, 0, delta) + delta;
        return s[0] as ElementOf<C>;
      default: {
        if (typeof delta !== "number") break;
        for (;;) {
          const old = this.#loadBits();
          const next = this.#fromBits(old) + delta;
          if (this.#casBits(old, this.#toBits(next)) === old) {
            return this.#fromBits(this.#toBits(next)) as ElementOf<C>;
          }
        }
      }
    }
    checkDelta(this.#t, delta, "add to the value");
    throw new TypeError("unreachable");
  }

  /**
   * Stores `next` if the value is `expected`, atomically, and returns the
   * value found (so it succeeded when that equals `expected`). Floats are
   * compared by their bits (`NaN` matches `NaN`, `0` does not match `-0`).
   *
   * @example Usage
   * ```ts
   * import { RawValue } from "@dmp/multiprocessing/value";
   * import { strict as assert } from "node:assert";
   *
   * const v = new RawValue("i", 5);
   * assert.equal(v.compareExchange(5, 6), 5);
   * assert.equal(v.compareExchange(5, 7), 6);
   * assert.equal(v.value, 6);
   * ```
   *
   * @param expected The value to replace.
   * @param next The new value.
   * @returns The value found before.
   * @throws {TypeError} If `expected` or `next` does not fit the typecode.
   */
  compareExchange(expected: ElementOf<C>, next: ElementOf<C>): ElementOf<C> {
    const t = this.#t;
    checkElement(t, expected, "compareExchange");
    checkElement(t, next, "compareExchange");
    if (this.#kind !== FLOAT) {
      return Atomics.compareExchange(
        this.#a as Int32Array,
        0,
        expected as number,
        next as number,
      ) as ElementOf<C>;
    }
    const e = this.#toBits(expected as number);
    return this.#fromBits(
      this.#casBits(e, this.#toBits(next as number)),
    ) as ElementOf<C>;
  }

  #loadBits(): number | bigint {
    return Atomics.load(this.#bits as Int32Array, 0);
  }

  #casBits(old: number | bigint, next: number | bigint): number | bigint {
    return Atomics.compareExchange(
      this.#bits as Int32Array,
      0,
      old as number,
      next as number,
    );
  }

  #toBits(x: number): number | bigint {
    if (this.#t.bytes === 8) {
      f64[0] = x;
      return f64Bits[0]!;
    }
    f32[0] = x;
    return f32Bits[0]!;
  }

  #fromBits(b: number | bigint): number {
    if (this.#t.bytes === 8) {
      f64Bits[0] = b as bigint;
      return f64[0]!;
    }
    f32Bits[0] = b as number;
    return f32[0]!;
  }

  /**
   * The value as text, e.g. for template strings.
   *
   * @example Usage
   * ```ts
   * import { RawValue } from "@dmp/multiprocessing/value";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(`${new RawValue("i", 3)}`, "3");
   * ```
   *
   * @returns The text.
   */
  toString(): string {
    return String(this.value);
  }

  /**
   * Describes the value for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    const data: ValueData = {
      buffer: bufferOf(this),
      typecode: this.#t.code as Typecode,
      lock: false,
    };
    return { type: "value.value", module: import.meta.url, data };
  }
}

/**
 * Options of {@linkcode Value}.
 *
 * @example Usage
 * ```ts
 * import { Value, type ValueOptions } from "@dmp/multiprocessing/value";
 * import { Lock } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * // One lock guards both values.
 * const options: ValueOptions = { lock: new Lock() };
 * const a = new Value("i", 0, options);
 * const b = new Value("i", 0, options);
 * assert.equal(a.getLock(), b.getLock());
 * {
 *   using _ = await a.getLock().hold();
 *   a.value += 1;
 *   b.value -= 1;
 * }
 * assert.equal(a.value + b.value, 0);
 * ```
 */
export interface ValueOptions {
  /**
   * `true` (the default) makes a new `RLock`; a `Lock` or `RLock` is used
   * as given (so several values can share one); `false` gives none.
   */
  lock?: boolean | Lock | RLock;
}

/**
 * One number in shared memory with a lock, as Python's
 * `multiprocessing.Value`: `getLock()` guards read-modify-write sequences
 * such as `v.value += 1`; `add` does the same without a lock.
 *
 * @example Usage
 * ```ts
 * import { Value } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const v = new Value("i", 0);
 * {
 *   using _ = await v.getLock().hold();
 *   v.value += 1;
 * }
 * assert.equal(v.add(1), 2);
 * ```
 *
 * @typeParam C The typecode.
 */
export class Value<C extends Typecode = Typecode> extends RawValue<C> {
  readonly #lock: Lock | RLock | null;

  /**
   * Makes a value of typecode `typecode`, initially `initial`.
   *
   * @param typecode A typecode (`"i"`, `"d"`, `"q"`, …) or alias.
   * @param initial The first value (default `0`, or `0n` for 64-bit codes).
   * @param options The lock.
   * @throws {TypeError} If the typecode is unknown, `initial` does not fit
   *   it, or `lock` is not a lock.
   */
  constructor(typecode: C, initial?: ElementOf<C>, options?: ValueOptions);
  /** @ignore */
  constructor(attach: typeof kAttach, data: ValueData);
  constructor(
    typecode: C | typeof kAttach,
    initial?: ElementOf<C> | ValueData,
    options: ValueOptions = {},
  ) {
    const lock = typecode === kAttach
      ? (initial as ValueData).lock || null
      : lockOption(options?.lock, "create Value");
    // A pass-through: (typecode, initial) or (kAttach, data), as received.
    super(typecode as C, initial as ElementOf<C>);
    this.#lock = lock;
  }

  /**
   * The lock that guards the value.
   *
   * @example Usage
   * ```ts
   * import { Value } from "@dmp/multiprocessing/value";
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.ok(new Value("i").getLock() instanceof RLock);
   * assert.throws(() => new Value("i", 0, { lock: false }).getLock(), TypeError);
   * ```
   *
   * @returns The `Lock` or `RLock`.
   * @throws {TypeError} If the value was made with `lock: false`.
   */
  getLock(): Lock | RLock {
    if (this.#lock === null) throw noLockError("Value");
    return this.#lock;
  }

  /**
   * Describes the value and its lock for the trip into a worker.
   *
   * @ignore
   */
  override [kShare](): SharedHandle {
    const data: ValueData = {
      buffer: bufferOf(this),
      typecode: this.typecode as Typecode,
      lock: this.#lock ?? null,
    };
    return { type: "value.value", module: import.meta.url, data };
  }
}

registerShareable("value.value", (d) => {
  const data = d as ValueData;
  return data.lock === false
    ? new RawValue(kAttach, data)
    : new Value(kAttach, data);
});

// -- Demo --------------------------------------------------------------------

if (isMainModule(import.meta)) {
  (await import("./_demo.ts")).demoStart(
    "value",
    'Cubes a shared Value("i", 4) in one process, then again in another, and prints the result (262144).',
  );
  const { Process } = await import("./cube.ts");
  const v = new Value("i", 4);
  for (let k = 0; k < 2; k++) {
    const p = new Process({
      target: (v: Value<"i">) => {
        using _ = v.getLock().holdSync();
        v.value = v.value ** 3;
      },
      args: [v],
    });
    p.start();
    await p.join();
  }
  console.log(v.value);
}

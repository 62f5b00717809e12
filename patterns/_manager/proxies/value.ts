/**
 * The typed-number proxies: {@linkcode ValueProxy} and
 * {@linkcode ArrayProxy}.
 *
 * @module
 */

import { BaseProxy, invoke } from "./base.ts";

/**
 * A proxy for a manager Value of a typecode (`"i"`, `"d"`, … ; `l L q Q`
 * hold bigints). Each call is atomic in the server.
 *
 * @typeParam T `number` or `bigint`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const v = await manager.value("i", 4);
 * assert.equal(await v.add(1), 5);
 * await v.set(7);
 * assert.equal(await v.get(), 7);
 * ```
 */
export class ValueProxy<T extends number | bigint = number> extends BaseProxy {
  /** Returns the value. */
  get(): Promise<T> {
    return invoke(this, "get", []) as Promise<T>;
  }
  /**
   * Sets the value; one that does not fit the typecode → `TypeError`.
   *
   * @param value The new value.
   */
  set(value: T): Promise<void> {
    return invoke(this, "set", [value]) as Promise<void>;
  }
  /**
   * Adds `delta` atomically.
   *
   * @param delta The amount.
   * @returns The new value.
   */
  add(delta: T): Promise<T> {
    return invoke(this, "add", [delta]) as Promise<T>;
  }
}

/**
 * A proxy for a manager array of a typecode.
 *
 * @typeParam T `number` or `bigint`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const a = await manager.array("i", [1, 2, 3]);
 * await a.set(0, 9);
 * assert.deepEqual(await a.toArray(), [9, 2, 3]);
 * assert.equal(await a.length(), 3);
 * ```
 */
export class ArrayProxy<T extends number | bigint = number> extends BaseProxy {
  /**
   * The item at `index`; out of range → `RangeError`.
   *
   * @param index The position.
   * @returns The item.
   */
  get(index: number): Promise<T> {
    return invoke(this, "get", [index]) as Promise<T>;
  }
  /**
   * Sets the item at `index`.
   *
   * @param index The position.
   * @param value The value.
   */
  set(index: number, value: T): Promise<void> {
    return invoke(this, "set", [index, value]) as Promise<void>;
  }
  /** Returns the number of items. */
  length(): Promise<number> {
    return invoke(this, "length", []) as Promise<number>;
  }
  /** Returns a copy of the items. */
  toArray(): Promise<T[]> {
    return invoke(this, "toArray", []) as Promise<T[]>;
  }
}

/**
 * The container proxies: {@linkcode DictProxy}, {@linkcode ListProxy} and
 * {@linkcode NamespaceProxy}.
 *
 * @module
 */

import { isPlainObject } from "../../_core/walk.ts";
import type { DictKey } from "../protocol.ts";
import { BaseProxy, invoke } from "./base.ts";

/**
 * A proxy for a dict in the manager (Python's `DictProxy`); keys are
 * strings, numbers, bigints or booleans.
 *
 * @typeParam K The key type.
 * @typeParam V The value type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const d = await manager.dict<string, number>({ a: 1 });
 * await d.set("b", 2);
 * assert.equal(await d.get("b"), 2);
 * assert.deepEqual(await d.keys(), ["a", "b"]);
 * ```
 */
export class DictProxy<K extends DictKey = DictKey, V = unknown>
  extends BaseProxy {
  /**
   * The value at `key`, or `fallback` when absent. Containers come back
   * deep-frozen (see the module doc).
   *
   * @param key The key.
   * @param fallback The value when the key is absent.
   * @returns The value.
   */
  get(key: K, fallback?: V): Promise<V | undefined> {
    return invoke(this, "get", [key, fallback], { freeze: true }) as Promise<
      V | undefined
    >;
  }
  /**
   * Sets `key` to `value`.
   *
   * @param key The key.
   * @param value The value (a proxy stays live).
   */
  set(key: K, value: V): Promise<void> {
    return invoke(this, "set", [key, value]) as Promise<void>;
  }
  /**
   * Deletes `key`.
   *
   * @param key The key.
   * @returns Whether it was there.
   */
  delete(key: K): Promise<boolean> {
    return invoke(this, "delete", [key]) as Promise<boolean>;
  }
  /**
   * Whether `key` is there.
   *
   * @param key The key.
   * @returns `true` if present.
   */
  has(key: K): Promise<boolean> {
    return invoke(this, "has", [key]) as Promise<boolean>;
  }
  /** Returns the keys, in insertion order. */
  keys(): Promise<K[]> {
    return invoke(this, "keys", [], { freeze: true }) as Promise<K[]>;
  }
  /** Returns the values (deep-frozen). */
  values(): Promise<V[]> {
    return invoke(this, "values", [], { freeze: true }) as Promise<V[]>;
  }
  /** Returns the `[key, value]` pairs (deep-frozen). */
  entries(): Promise<[K, V][]> {
    return invoke(this, "entries", [], { freeze: true }) as Promise<[K, V][]>;
  }
  /** Returns the number of keys. */
  size(): Promise<number> {
    return invoke(this, "size", []) as Promise<number>;
  }
  /** Removes every key. */
  clear(): Promise<void> {
    return invoke(this, "clear", []) as Promise<void>;
  }
  /**
   * Sets every pair of `other`.
   *
   * @param other A plain object, a `Map` or `[key, value]` pairs.
   */
  async update(
    other: Record<string, V> | Map<K, V> | Iterable<readonly [K, V]>,
  ): Promise<void> {
    const o = other instanceof Map || isPlainObject(other)
      ? other
      : Array.from(other as Iterable<readonly [K, V]>);
    await invoke(this, "update", [o]);
  }
  /**
   * Removes `key` and returns its value; without a fallback, a missing key
   * rejects with `RangeError` (Python's `KeyError`).
   *
   * @param key The key.
   * @param fallback The value when absent.
   * @returns The removed value (a mutable copy).
   */
  pop(key: K, ...fallback: [V?]): Promise<V> {
    return invoke(this, "pop", [key, ...fallback]) as Promise<V>;
  }
  /**
   * Python's `setdefault`: the value at `key`, setting it to `value` first
   * when absent.
   *
   * @param key The key.
   * @param value The default.
   * @returns The value now at `key` (deep-frozen).
   */
  setDefault(key: K, value: V): Promise<V> {
    return invoke(this, "setDefault", [key, value], {
      freeze: true,
    }) as Promise<
      V
    >;
  }
  /** Returns a plain, mutable copy (keys as strings). */
  toObject(): Promise<Record<string, V>> {
    return invoke(this, "toObject", []) as Promise<Record<string, V>>;
  }
}

/**
 * A proxy for a list in the manager (Python's `ListProxy`). Indices may be
 * negative (from the end), as in Python.
 *
 * @typeParam T The item type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const l = await manager.list([3, 1]);
 * await l.append(2);
 * await l.sort();
 * assert.deepEqual(await l.toArray(), [1, 2, 3]);
 * assert.equal(await l.get(-1), 3);
 * ```
 */
export class ListProxy<T = unknown> extends BaseProxy {
  /**
   * Adds an item at the end.
   *
   * @param item The item.
   */
  append(item: T): Promise<void> {
    return invoke(this, "append", [item]) as Promise<void>;
  }
  /**
   * Adds items at the end.
   *
   * @param items The items.
   */
  extend(items: Iterable<T>): Promise<void> {
    return invoke(this, "extend", [Array.from(items)]) as Promise<void>;
  }
  /**
   * The item at `index` (deep-frozen); out of range → `RangeError`.
   *
   * @param index The position (negative counts from the end).
   * @returns The item.
   */
  get(index: number): Promise<T> {
    return invoke(this, "get", [index], { freeze: true }) as Promise<T>;
  }
  /**
   * Replaces the item at `index`.
   *
   * @param index The position.
   * @param item The new item.
   */
  set(index: number, item: T): Promise<void> {
    return invoke(this, "set", [index, item]) as Promise<void>;
  }
  /**
   * Inserts before `index` (clamped, as Python).
   *
   * @param index The position.
   * @param item The item.
   */
  insert(index: number, item: T): Promise<void> {
    return invoke(this, "insert", [index, item]) as Promise<void>;
  }
  /**
   * Removes and returns the item at `index` (default the last).
   *
   * @param index The position.
   * @returns The item.
   */
  pop(index?: number): Promise<T> {
    return invoke(this, "pop", index === undefined ? [] : [index]) as Promise<
      T
    >;
  }
  /**
   * Removes the first item equal (deeply) to `item`; none → `RangeError`.
   *
   * @param item The item.
   */
  remove(item: T): Promise<void> {
    return invoke(this, "remove", [item]) as Promise<void>;
  }
  /**
   * The position of the first item equal to `item`; none → `RangeError`.
   *
   * @param item The item.
   * @param start Where to start.
   * @param stop Where to stop.
   * @returns The position.
   */
  index(item: T, start?: number, stop?: number): Promise<number> {
    return invoke(this, "index", [item, start, stop]) as Promise<number>;
  }
  /**
   * How many items equal `item`.
   *
   * @param item The item.
   * @returns The count.
   */
  count(item: T): Promise<number> {
    return invoke(this, "count", [item]) as Promise<number>;
  }
  /**
   * Sorts in place: numbers and bigints numerically, strings by code
   * unit, arrays element-wise; mixing kinds → `TypeError` (as Python).
   *
   * @param options `reverse` for descending order.
   */
  sort(options: { reverse?: boolean } = {}): Promise<void> {
    return invoke(this, "sort", [{
      reverse: options.reverse === true,
    }]) as Promise<void>;
  }
  /** Reverses in place. */
  reverse(): Promise<void> {
    return invoke(this, "reverse", []) as Promise<void>;
  }
  /** Returns the number of items. */
  length(): Promise<number> {
    return invoke(this, "length", []) as Promise<number>;
  }
  /** Removes every item. */
  clear(): Promise<void> {
    return invoke(this, "clear", []) as Promise<void>;
  }
  /** Returns a mutable copy of the items. */
  toArray(): Promise<T[]> {
    return invoke(this, "toArray", []) as Promise<T[]>;
  }
}

/**
 * A proxy for a namespace (Python's `Namespace`): named attributes.
 *
 * @typeParam T The attributes' shape.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const ns = await manager.namespace<{ x: number; y?: number }>({ x: 1 });
 * await ns.set("y", 2);
 * assert.deepEqual(await ns.toObject(), { x: 1, y: 2 });
 * ```
 */
export class NamespaceProxy<
  T extends Record<string, unknown> = Record<string, unknown>,
> extends BaseProxy {
  /**
   * An attribute (`undefined` when absent; containers deep-frozen).
   *
   * @param name The attribute.
   * @returns Its value.
   */
  get<N extends keyof T & string>(name: N): Promise<T[N]> {
    return invoke(this, "get", [name], { freeze: true }) as Promise<T[N]>;
  }
  /**
   * Sets an attribute.
   *
   * @param name The attribute.
   * @param value Its value.
   */
  async set<N extends keyof T & string>(name: N, value: T[N]): Promise<void> {
    await invoke(this, "set", [name, value]);
  }
  /**
   * Deletes an attribute.
   *
   * @param name The attribute.
   * @returns Whether it was there.
   */
  delete(name: keyof T & string): Promise<boolean> {
    return invoke(this, "delete", [name]) as Promise<boolean>;
  }
  /** Returns a plain, mutable copy of the attributes. */
  toObject(): Promise<T> {
    return invoke(this, "toObject", []) as Promise<T>;
  }
}

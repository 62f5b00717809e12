/**
 * The container objects: dict, list and namespace. They hold values (and
 * so references to other objects), which they count with the host.
 *
 * @module
 */

import { describeValue } from "../../../_core/errors.ts";
import type { DictKey } from "../../protocol.ts";
import { methods } from "../call.ts";
import type { Handler, Managed, ObjectHost } from "../call.ts";
import { deepEqual, Ref } from "../ref.ts";
import { arg, checkKey, compare, index } from "./args.ts";

/** A dict: keys are strings, numbers, bigints or booleans. */
export class DictObj implements Managed {
  readonly type = "dict";
  /** The entries. */
  readonly map = new Map<DictKey, unknown>();
  /**
   * Makes an empty dict.
   *
   * @param core The host that counts references.
   */
  constructor(readonly core: ObjectHost) {}
  contents(): Iterable<unknown> {
    return this.map.values();
  }
  /** Sets an entry, holding the new value's references and dropping the old one's. */
  put(key: DictKey, value: unknown): void {
    this.core.hold(value);
    if (this.map.has(key)) this.core.drop(this.map.get(key));
    this.map.set(key, value);
  }
  /** Adds the entries of an object, a `Map` or `[key, value]` pairs. */
  update(other: unknown, what: string): void {
    if (other === undefined || other === null) return;
    if (other instanceof Map) {
      for (const [k, v] of other) this.put(checkKey(k, what), v);
    } else if (Array.isArray(other)) {
      for (const e of other) {
        if (!Array.isArray(e) || e.length !== 2) {
          throw new TypeError(
            `Cannot ${what}: entries must be [key, value] pairs, received ${
              describeValue(e)
            }`,
          );
        }
        this.put(checkKey(e[0], what), e[1]);
      }
    } else if (typeof other === "object" && !(other instanceof Ref)) {
      for (const k of Object.keys(other)) {
        this.put(k, (other as Record<string, unknown>)[k]);
      }
    } else {
      throw new TypeError(
        `Cannot ${what}: expected an object, a Map or [key, value] entries, received ${
          describeValue(other)
        }`,
      );
    }
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<"dict">({
    get: (_, a) => {
      const k = checkKey(arg(a, 0), "get");
      return this.map.has(k) ? this.map.get(k) : arg(a, 1);
    },
    set: (_, a) => {
      this.put(checkKey(arg(a, 0), "set"), arg(a, 1));
    },
    delete: (_, a) => {
      const k = checkKey(arg(a, 0), "delete");
      if (!this.map.has(k)) return false;
      this.core.drop(this.map.get(k));
      this.map.delete(k);
      return true;
    },
    has: (_, a) => this.map.has(checkKey(arg(a, 0), "has")),
    keys: () => [...this.map.keys()],
    values: () => [...this.map.values()],
    entries: () => [...this.map.entries()],
    size: () => this.map.size,
    clear: () => {
      for (const v of this.map.values()) this.core.drop(v);
      this.map.clear();
    },
    update: (_, a) => this.update(arg(a, 0), "update"),
    pop: (c, a) => {
      const k = checkKey(arg(a, 0), "pop");
      if (!this.map.has(k)) {
        if (a.length > 1) return arg(a, 1);
        throw new RangeError(
          `Cannot pop: key ${describeValue(k)} is not in the dict`,
        );
      }
      const v = this.map.get(k);
      this.map.delete(k);
      c.core.dropLater(v);
      return v;
    },
    setDefault: (_, a) => {
      const k = checkKey(arg(a, 0), "setDefault");
      if (!this.map.has(k)) this.put(k, arg(a, 1));
      return this.map.get(k);
    },
    toObject: () => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of this.map) {
        Object.defineProperty(out, String(k), {
          value: v,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    },
  });
}

/** A list. */
export class ListObj implements Managed {
  readonly type = "list";
  /** The items. */
  items: unknown[] = [];
  /**
   * Makes an empty list.
   *
   * @param core The host that counts references.
   */
  constructor(readonly core: ObjectHost) {}
  contents(): Iterable<unknown> {
    return this.items;
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<"list">({
    append: (_, a) => {
      this.core.hold(arg(a, 0));
      this.items.push(arg(a, 0));
    },
    extend: (_, a) => {
      const xs = arg(a, 0);
      if (!Array.isArray(xs)) {
        throw new TypeError(
          `Cannot extend: expected an array, received ${describeValue(xs)}`,
        );
      }
      for (const x of xs) {
        this.core.hold(x);
        this.items.push(x);
      }
    },
    get: (_, a) => this.items[index(arg(a, 0), this.items.length, "get")],
    set: (_, a) => {
      const i = index(arg(a, 0), this.items.length, "set");
      this.core.hold(arg(a, 1));
      this.core.drop(this.items[i]);
      this.items[i] = arg(a, 1);
    },
    insert: (_, a) => {
      const i = index(arg(a, 0), this.items.length, "insert", true);
      this.core.hold(arg(a, 1));
      this.items.splice(i, 0, arg(a, 1));
    },
    pop: (c, a) => {
      if (this.items.length === 0) {
        throw new RangeError("Cannot pop: the list is empty");
      }
      const i = index(
        a.length > 0 && a[0] !== undefined ? a[0] : -1,
        this.items.length,
        "pop",
      );
      const [v] = this.items.splice(i, 1);
      c.core.dropLater(v);
      return v;
    },
    remove: (_, a) => {
      const i = this.items.findIndex((x) => deepEqual(x, arg(a, 0)));
      if (i < 0) {
        throw new RangeError(
          `Cannot remove: ${describeValue(arg(a, 0))} is not in the list`,
        );
      }
      this.core.drop(this.items[i]);
      this.items.splice(i, 1);
    },
    index: (_, a) => {
      const start = a[1] === undefined
        ? 0
        : index(a[1], this.items.length, "index", true);
      const stop = a[2] === undefined
        ? this.items.length
        : index(a[2], this.items.length, "index", true);
      for (let i = start; i < stop; i++) {
        if (deepEqual(this.items[i], arg(a, 0))) return i;
      }
      throw new RangeError(
        `Cannot index: ${describeValue(arg(a, 0))} is not in the list`,
      );
    },
    count: (_, a) =>
      this.items.reduce<number>(
        (n, x) => n + (deepEqual(x, arg(a, 0)) ? 1 : 0),
        0,
      ),
    sort: (_, a) => {
      const opts = arg(a, 0);
      const reverse = typeof opts === "object" && opts !== null &&
        (opts as { reverse?: unknown }).reverse === true;
      const sorted = [...this.items].sort(compare);
      if (reverse) sorted.reverse();
      this.items = sorted;
    },
    reverse: () => {
      this.items.reverse();
    },
    length: () => this.items.length,
    clear: () => {
      for (const v of this.items) this.core.drop(v);
      this.items = [];
    },
    toArray: () => [...this.items],
  });
}

/** A namespace: attributes by name. */
export class NamespaceObj implements Managed {
  readonly type = "namespace";
  /** The attributes. */
  readonly map = new Map<string, unknown>();
  /**
   * Makes an empty namespace.
   *
   * @param core The host that counts references.
   */
  constructor(readonly core: ObjectHost) {}
  contents(): Iterable<unknown> {
    return this.map.values();
  }
  /** Checks an attribute name. */
  static checkName(name: unknown, what: string): string {
    if (typeof name !== "string") {
      throw new TypeError(
        `Cannot ${what}: a namespace attribute name must be a string, received ${
          describeValue(name)
        }`,
      );
    }
    return name;
  }
  /** Sets an attribute, holding the new value's references and dropping the old one's. */
  put(name: string, value: unknown): void {
    this.core.hold(value);
    if (this.map.has(name)) this.core.drop(this.map.get(name));
    this.map.set(name, value);
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<"namespace">({
    get: (_, a) => this.map.get(NamespaceObj.checkName(arg(a, 0), "get")),
    set: (_, a) => this.put(NamespaceObj.checkName(arg(a, 0), "set"), a[1]),
    delete: (_, a) => {
      const k = NamespaceObj.checkName(arg(a, 0), "delete");
      if (!this.map.has(k)) return false;
      this.core.drop(this.map.get(k));
      this.map.delete(k);
      return true;
    },
    toObject: () => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of this.map) {
        Object.defineProperty(out, k, {
          value: v,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    },
  });
}

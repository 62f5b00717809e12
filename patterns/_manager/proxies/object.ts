/**
 * The proxy of a registered type's instance: {@linkcode ObjectProxy}, its
 * typed view {@linkcode Remote}, and the JS `Proxy` that turns property
 * reads into method calls.
 *
 * @module
 */

import { BaseProxy, invoke, wrapped } from "./base.ts";

/**
 * A proxy for an instance of a registered type: `call(method, ...args)`,
 * and every public method as a property (through a JS `Proxy`), each
 * returning a promise.
 *
 * @example Usage
 * ```ts ignore
 * const counter = await manager.create<Counter>("Counter", 5);
 * await counter.increment(2);
 * ```
 */
export class ObjectProxy extends BaseProxy {
  /**
   * Calls a public method of the object in the server.
   *
   * @param method Its name.
   * @param args Its arguments.
   * @returns Its result.
   */
  call(method: string, ...args: unknown[]): Promise<unknown> {
    return invoke(this, method, args);
  }
}

/**
 * A registered type's public methods, each returning a promise.
 *
 * @example Usage
 * ```ts
 * import { Manager, type Remote } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * // A class the server worker can import (here: a module in a data: URL).
 * const source = "export class Counter { n = 0; add(k) { return this.n += k; } }";
 * await using manager = await Manager.start({
 *   register: {
 *     Counter: { module: `data:text/javascript,${encodeURIComponent(source)}`, export: "Counter" },
 *   },
 * });
 * const counter: Remote<{ add(k: number): number }> = await manager.create("Counter");
 * assert.equal(await counter.add(2), 2);
 * assert.equal(await counter.add(3), 5);
 * ```
 */
export type Remote<T> =
  & {
    [K in keyof T as T[K] extends (...args: never[]) => unknown ? K : never]:
      T[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<
          Awaited<R>
        >
        : never;
  }
  & ObjectProxy;

/** Wraps a registered object's proxy so its methods read as properties. */
export function wrapObject(proxy: ObjectProxy): ObjectProxy {
  const wrapper = new Proxy(proxy, {
    get(target, prop) {
      if (typeof prop !== "string" || prop in target || prop === "then") {
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      }
      return (...args: unknown[]) => target.call(prop, ...args);
    },
  });
  wrapped.set(wrapper, proxy);
  return wrapper;
}

/**
 * Registered user types (`register` in `serve` / `Manager.start`): loading
 * each class from its module, listing the methods a peer may call, and the
 * managed object that hosts one instance.
 *
 * @module
 */

import { describeValue } from "../../_core/errors.ts";
import type { Handler, Managed } from "./call.ts";

/**
 * A registered type, as given to `serve` / `Manager.start`.
 *
 * @example Usage
 * ```ts
 * import type { RegisteredType } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * const counter: RegisteredType = {
 *   module: new URL("./counter.ts", import.meta.url),
 *   export: "Counter",
 * };
 * assert.equal(counter.export, "Counter");
 * ```
 */
export interface RegisteredType {
  /** The module that exports the class (a URL or path). */
  module: string | URL;
  /** The export's name. */
  export: string;
}

/** Names never callable on a hosted instance. */
const FORBIDDEN = new Set([
  "constructor",
  "__proto__",
  "__defineGetter__",
  "__defineSetter__",
  "__lookupGetter__",
  "__lookupSetter__",
  "toString",
  "toLocaleString",
  "valueOf",
  "hasOwnProperty",
  "isPrototypeOf",
  "propertyIsEnumerable",
  "then",
]);

/** A registered user type: its class and its callable methods. */
export interface HostedType {
  /** The class. */
  ctor: new (...args: unknown[]) => object;
  /** Its public methods by name, taken from its prototype chain. */
  methods: Map<string, (...args: unknown[]) => unknown>;
}

/**
 * Loads the classes of a `register` map and lists each one's public
 * methods: own methods of its prototype chain below `Object.prototype`,
 * whose names do not start with `_` and are not `constructor`,
 * `__proto__`, `toString`-style or `then`.
 *
 * @param register Type id → module and export.
 * @returns The hosted types.
 */
export async function loadRegister(
  register: Record<string, RegisteredType> | undefined,
): Promise<Map<string, HostedType>> {
  const out = new Map<string, HostedType>();
  for (const [typeid, spec] of Object.entries(register ?? {})) {
    const mod = await import(String(spec.module)) as Record<string, unknown>;
    const ctor = Object.hasOwn(mod, spec.export) ? mod[spec.export] : undefined;
    if (typeof ctor !== "function") {
      throw new TypeError(
        `Cannot register ${
          describeValue(typeid)
        }: ${spec.module} has no class export ${describeValue(spec.export)}`,
      );
    }
    const table = new Map<string, (...args: unknown[]) => unknown>();
    for (
      let p = (ctor as { prototype: object }).prototype;
      p && p !== Object.prototype;
      p = Object.getPrototypeOf(p)
    ) {
      for (const name of Object.getOwnPropertyNames(p)) {
        if (name.startsWith("_") || FORBIDDEN.has(name) || table.has(name)) {
          continue;
        }
        const d = Object.getOwnPropertyDescriptor(p, name)!;
        if (typeof d.value === "function") table.set(name, d.value);
      }
    }
    out.set(typeid, {
      ctor: ctor as HostedType["ctor"],
      methods: table,
    });
  }
  return out;
}

/** One instance of a registered type. */
export class HostedObj implements Managed {
  readonly methods: ReadonlyMap<string, Handler>;
  /**
   * Wraps an instance.
   *
   * @param type The registered type id.
   * @param hosted The type.
   * @param instance The instance it hosts.
   */
  constructor(readonly type: string, hosted: HostedType, instance: object) {
    const table = new Map<string, Handler>();
    for (const [name, fn] of hosted.methods) {
      table.set(name, (_, a) => fn.apply(instance, a));
    }
    this.methods = table;
  }
}

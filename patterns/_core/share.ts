/**
 * How this package's shared objects travel into workers: a shareable class
 * implements `[kShare]` to describe itself as a handle, registers a reviver
 * for its type, and the receiving thread re-attaches a live object to the
 * same memory (`kAttach`).
 *
 * @module
 */

import { describeValue } from "./errors.ts";
import { perThread } from "./runtime.ts";
import { DESCEND, forEachNode, isPlainObject, mapTree } from "./walk.ts";

interface ShareState {
  /** The revivers by type name. */
  registry: Map<string, Reviver>;
  /** The modules imported to register types, by URL. */
  modules: Map<string, Promise<unknown>>;
}

let state: ShareState | undefined;

function shareState(): ShareState {
  return state ??= perThread(
    "share",
    () => ({ registry: new Map(), modules: new Map() }),
  );
}

/**
 * The symbol a shareable class implements to describe how it travels into a
 * worker; see {@linkcode Shareable}.
 *
 * @ignore
 */
export const kShare: unique symbol = Symbol.for(
  "deno-multiprocessing.share",
) as never;

/**
 * The first argument of a shareable class's hidden constructor overload: a
 * reviver passes it, followed by the memory the new object re-attaches to,
 * instead of handing the memory over through a module-level variable.
 * Declare that overload with `@ignore` so it stays out of the public docs:
 *
 * ```ts ignore
 * constructor();
 * /** @ignore *\/
 * constructor(attach: typeof kAttach, memory: Int32Array);
 * ```
 */
export const kAttach: unique symbol = Symbol("deno-multiprocessing.attach");

const HANDLE_KEY = "\u0000deno-multiprocessing.handle";

/**
 * The description of a shared object as it crosses into a worker.
 *
 * @example Usage
 * ```ts
 * import { kShare, type SharedHandle } from "@dmp/multiprocessing";
 * import { strict as assert } from "node:assert";
 *
 * const words = new Int32Array(new SharedArrayBuffer(4));
 * const shared = {
 *   [kShare]: (): SharedHandle => ({
 *     type: "example.words",
 *     module: import.meta.url,
 *     data: words.buffer,
 *   }),
 * };
 * const handle = shared[kShare]();
 * assert.equal(handle.type, "example.words");
 * assert.equal(handle.data, words.buffer);
 * ```
 *
 * @ignore
 */
export interface SharedHandle {
  /** The registered type, e.g. `"value"`. */
  type: string;
  /**
   * The module that registers the type (its `import.meta.url`), imported by
   * the receiving thread when the type is not yet known there.
   */
  module: string;
  /** Whatever the reviver needs: buffers, ports, numbers. */
  data: unknown;
}

/**
 * What a shareable object may use while it is being sent.
 *
 * @ignore
 */
export interface ShareContext {
  /** Objects to transfer (e.g. a `MessagePort`) rather than clone. */
  transfer: Transferable[];
  /** Runs once the message holding the object was posted. */
  afterSend(fn: () => void): void;
}

/**
 * What a reviver may use while it rebuilds an object in a worker.
 */
export interface ReviveContext {
  /** Runs when the task or process that received the object ends. */
  onTaskEnd(fn: () => void): void;
}

/**
 * A class of this package whose instances can be passed to workers and
 * arrive live there.
 *
 * @ignore
 */
export interface Shareable {
  /** Describes this object for the trip into another thread. */
  [kShare](context: ShareContext): SharedHandle;
}

/**
 * Rebuilds a shared object from its handle's `data` in a receiving thread.
 */
export type Reviver = (data: unknown, context: ReviveContext) => unknown;

/**
 * Registers how a shared type is rebuilt in a receiving thread. Each
 * pattern module calls it at its top level.
 *
 * @param type A unique type name.
 * @param reviver Builds the live object from the handle's data.
 */
export function registerShareable(type: string, reviver: Reviver): void {
  shareState().registry.set(type, reviver);
}

function isShareable(v: object): v is Shareable {
  return typeof (v as Partial<Shareable>)[kShare] === "function";
}

/**
 * Whether `v` is shared memory itself: a `SharedArrayBuffer`, or a view
 * over one. Structured clone (`postMessage`) shares such memory; a byte
 * encoding (`node:v8`'s serializer, a ring's record) would copy it.
 */
function isSharedMemory(v: object): boolean {
  return v instanceof SharedArrayBuffer ||
    (ArrayBuffer.isView(v) && v.buffer instanceof SharedArrayBuffer);
}

/**
 * Whether `value` is, or holds anywhere inside, one of this package's
 * shared objects or shared memory (a `SharedArrayBuffer` or a view over
 * one): what must travel by `postMessage` to stay shared.
 *
 * @param value The value to look through.
 * @returns `true` at the first one found.
 */
export function holdsShared(value: object): boolean {
  let found = false;
  forEachNode(value, (v) => {
    if (found) return false;
    if (isShareable(v) || isSharedMemory(v)) found = true;
    return !found;
  });
  return found;
}

/**
 * The result of {@linkcode encodeShared}.
 */
export interface Encoded {
  /** The value with every shared object replaced by its handle. */
  value: unknown;
  /**
   * Whether any handle, or any shared memory, was found: the message must
   * then go by `postMessage` (a byte encoding would copy the memory), and
   * the receiver decodes it (if not, decoding can be skipped).
   */
  handles: boolean;
  /** Hooks to run once the message was posted. */
  afterSend: Array<() => void>;
}

/**
 * Replaces this package's shared objects inside `value` (also nested in
 * arrays, plain objects, Maps and Sets) with handles that
 * {@linkcode decodeShared} turns back into live objects in the receiving
 * thread. Values without shared objects are returned as they are.
 *
 * @param value The value to send.
 * @param transfer Collects transferables the objects need.
 * @returns The encoded value.
 */
export function encodeShared(
  value: unknown,
  transfer: Transferable[],
): Encoded {
  const out: Encoded = { value, handles: false, afterSend: [] };
  if (typeof value !== "object" || value === null) return out;
  const context: ShareContext = {
    transfer,
    afterSend: (fn) => out.afterSend.push(fn),
  };
  out.value = mapTree(value, (v, map) => {
    if (isSharedMemory(v)) {
      out.handles = true;
      return v;
    }
    if (!isShareable(v)) return DESCEND;
    out.handles = true;
    const h = v[kShare](context);
    // The handle's data may itself hold shared objects (a Value's lock).
    return { [HANDLE_KEY]: 1, ...h, data: map(h.data) };
  });
  return out;
}

/**
 * Turns the handles made by {@linkcode encodeShared} back into live
 * objects, importing the modules that register their types when needed.
 *
 * @param value A received value.
 * @param context Hooks for the revived objects (task end).
 * @returns The value with live objects in place of handles.
 * @throws {TypeError} If a handle names an unknown type.
 */
export async function decodeShared(
  value: unknown,
  context: ReviveContext = { onTaskEnd() {} },
): Promise<unknown> {
  if (typeof value !== "object" || value === null) return value;
  const rt = shareState();
  for (const m of handleModules(value)) {
    let p = rt.modules.get(m);
    if (!p) {
      p = import(m);
      rt.modules.set(m, p);
    }
    await p;
  }
  return reviveHandles(value, context);
}

/**
 * The modules whose types the handles inside `value` name and that this
 * thread has not registered yet.
 *
 * @param value A value holding handles.
 * @returns Module URLs (empty when every type is known).
 */
export function handleModules(value: unknown): Set<string> {
  const rt = shareState();
  const modules = new Set<string>();
  forEachNode(value, (v) => {
    const rec = v as Record<string, unknown>;
    if (isPlainObject(v) && rec[HANDLE_KEY] === 1) {
      if (!rt.registry.has(String(rec.type))) modules.add(String(rec.module));
    }
  });
  return modules;
}

/**
 * The synchronous half of {@linkcode decodeShared}: every type must already
 * be registered in this thread (see {@linkcode handleModules}).
 *
 * @param value A received value.
 * @param context Hooks for the revived objects (task end).
 * @returns The value with live objects in place of handles.
 * @throws {TypeError} If a handle names a type not registered here.
 */
export function reviveHandles(
  value: unknown,
  context: ReviveContext = { onTaskEnd() {} },
): unknown {
  const rt = shareState();
  return mapTree(value, (v, map) => {
    const rec = v as Record<string, unknown>;
    if (!isPlainObject(v) || rec[HANDLE_KEY] !== 1) return DESCEND;
    const reviver = rt.registry.get(String(rec.type));
    if (!reviver) {
      throw new TypeError(
        `Cannot receive a shared object: unknown type ${
          describeValue(rec.type)
        } (module ${describeValue(rec.module)} did not register it)`,
      );
    }
    return reviver(map(rec.data), context);
  });
}

let ambient: ReviveContext | undefined;

/**
 * Sets what a shared object received through a pipe or queue is tied to
 * while a pool task or process body runs (its copy of a pipe end closes
 * when the task ends); `undefined` when nothing runs.
 *
 * @param context The running task's revive context.
 */
export function setAmbientReviveContext(
  context: ReviveContext | undefined,
): void {
  ambient = context;
}

/**
 * The revive context of the task running now, if any.
 *
 * @returns The context (a no-op one outside tasks).
 */
export function ambientReviveContext(): ReviveContext {
  return ambient ?? { onTaskEnd() {} };
}

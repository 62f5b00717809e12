/**
 * {@linkcode BaseProxy}, the base of every manager proxy: a reference to
 * one object in the server, counted per connection, given back on
 * `drop()`/`using` or by garbage collection, and shareable with workers.
 *
 * @module
 */

import { ClosedError } from "../../_core/errors.ts";
import { kShare } from "../../_core/share.ts";
import type { ShareContext, SharedHandle } from "../../_core/share.ts";
import { nonce } from "../handshake.ts";
import { allocateLink } from "../link.ts";
import type { ObjectId, RefTag } from "../protocol.ts";
import { type CallOptions, ManagerClient } from "../client.ts";

/** The share type of a proxy on its way into a worker. */
export const SHARE_TYPE = "server_process.proxy";

/** The module that registers the reviver of {@linkcode SHARE_TYPE}. */
const REVIVER_MODULE = new URL("./mod.ts", import.meta.url).href;

/** What a proxy refers to, and through which connection. */
export interface ProxyState {
  /** The connection its calls go through. */
  client: ManagerClient;
  /** The object's id in the server (a capability: keep it private). */
  id: ObjectId;
  /** The object's type id. */
  type: string;
  /** Whether its reference was given back. */
  released: boolean;
  /** Set while a proxy revived in a worker waits for its connection. */
  ready: Promise<unknown> | undefined;
}

let readState: (p: BaseProxy) => ProxyState;

/**
 * The proxies behind JS `Proxy` wrappers (a registered type's proxy, see
 * `object.ts`): a private field cannot be read through a wrapper.
 */
export const wrapped: WeakMap<object, BaseProxy> = new WeakMap();

/** The state of a proxy (its private field, for this folder). */
export function stateOf(proxy: BaseProxy): ProxyState {
  return readState(wrapped.get(proxy) ?? proxy);
}

/** Gives a collected proxy's reference back. */
export const finalizer: FinalizationRegistry<
  { client: ManagerClient; id: ObjectId }
> = new FinalizationRegistry<
  { client: ManagerClient; id: ObjectId }
>((h) => h.client.decref(h.id));

/** Calls `method` on the proxy's object (after its connection is ready). */
export function invoke(
  proxy: BaseProxy,
  method: string,
  args: unknown[],
  options?: CallOptions,
): Promise<unknown> {
  const s = stateOf(proxy);
  if (s.released) {
    return Promise.reject(
      new ClosedError(
        `Cannot call ${method}: this ${s.type} proxy was released`,
      ),
    );
  }
  if (s.ready) {
    return s.ready.then(() => s.client.call(s.id, method, args, options));
  }
  return s.client.call(s.id, method, args, options);
}

/**
 * The tag a proxy in a call's arguments is sent as (`undefined` for
 * anything else); a proxy of another server or a released one throws.
 */
export function refOf(client: ManagerClient, v: object): RefTag | undefined {
  if (!(v instanceof BaseProxy)) return undefined;
  const s = stateOf(v);
  if (s.client.serverId !== client.serverId) {
    throw new TypeError(
      `Cannot send a proxy of another manager: this ${s.type} belongs to a different server`,
    );
  }
  if (s.released) {
    throw new ClosedError(
      `Cannot send a released ${s.type} proxy`,
    );
  }
  return { id: s.id, type: s.type };
}

/**
 * The base of every manager proxy: a reference to one object in the
 * server. Proxies can be passed to `Process`/`Pool` tasks (nested anywhere
 * in the arguments) and stored in managed containers; they arrive live.
 * `using p = await manager.dict()` (or {@linkcode BaseProxy.drop})
 * gives the reference back at once; otherwise garbage collection does.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const e = await manager.event();
 * assert.equal(e.typeid, "event");
 * ```
 */
export class BaseProxy implements Disposable {
  #state: ProxyState;

  static {
    readState = (p) => p.#state;
  }

  /**
   * Wraps a reference; proxies are made by {@linkcode Manager}'s
   * factories, not by user code.
   *
   * @param client The connection (internal).
   * @param id The object's id.
   * @param type The object's type.
   */
  constructor(client: unknown, id: ObjectId, type: string) {
    if (!(client instanceof ManagerClient)) {
      throw new TypeError(
        "Cannot make a proxy directly: use a Manager factory such as manager.dict()",
      );
    }
    this.#state = { client, id, type, released: false, ready: undefined };
    finalizer.register(this, { client, id }, this);
  }

  /** The object's type in the server, e.g. `"dict"` or a registered id. */
  get typeid(): string {
    return this.#state.type;
  }

  /**
   * Gives this proxy's reference back now (the object is freed when no
   * proxy refers to it any more); later calls on it reject with
   * `ClosedError`. Idempotent.
   */
  drop(): void {
    const s = this.#state;
    if (s.released) return;
    s.released = true;
    finalizer.unregister(this);
    s.client.decref(s.id);
  }

  /** Same as {@linkcode BaseProxy.drop}, for `using`. */
  [Symbol.dispose](): void {
    this.drop();
  }

  /**
   * Describes the proxy for the trip into a worker: an embedded server's
   * proxy gets a fresh `MessagePort` to the server; a remote one carries
   * the address and key, and the worker connects itself.
   *
   * @param context The send's context.
   * @returns The handle.
   */
  [kShare](context: ShareContext): SharedHandle {
    const s = this.#state;
    if (s.released || s.client.closed) {
      throw new ClosedError(
        `Cannot send this ${s.type} proxy to a worker: it was released or its manager is closed`,
      );
    }
    const base = {
      id: s.id,
      type: s.type,
      serverId: s.client.serverId,
      serverThread: s.client.serverThread,
    };
    if (s.client.remote) {
      const token = nonce();
      s.client.post([0, 0, "pin", [token, [s.id]], 0]);
      const r = s.client.remote;
      return {
        type: SHARE_TYPE,
        module: REVIVER_MODULE,
        data: {
          ...base,
          token,
          hostname: r.hostname,
          tcpPort: r.port,
          authkey: r.authkey,
          tls: r.tls,
        },
      };
    }
    const ch = new MessageChannel();
    const mem = allocateLink();
    s.client.post({ x: "attach", port: ch.port1, mem, ids: [s.id] }, [
      ch.port1,
    ]);
    context.transfer.push(ch.port2);
    return {
      type: SHARE_TYPE,
      module: REVIVER_MODULE,
      data: { ...base, port: ch.port2, mem, bell: s.client.local!.bell },
    };
  }
}

/**
 * How proxies are made: the type id → proxy class table,
 * {@linkcode makeProxy}, the {@linkcode PROXIES} binding every
 * {@linkcode ManagerClient} is given, and the reviver of a proxy that
 * arrives in a worker (it connects the worker to the server). Re-exports
 * every proxy class.
 *
 * @module
 */

import { currentThreadId } from "../../_core/runtime.ts";
import { registerShareable } from "../../_core/share.ts";
import { isTypeId } from "../protocol.ts";
import type { LinkMemory, ObjectId, RefTag, TypeId } from "../protocol.ts";
import { ManagerClient, type ProxyBinding } from "../client.ts";
import { finalizer, refOf, SHARE_TYPE, stateOf } from "./base.ts";
import type { BaseProxy } from "./base.ts";
import * as collections from "./collections.ts";
import * as sync from "./sync.ts";
import * as queue from "./queue.ts";
import * as value from "./value.ts";
import { ObjectProxy, wrapObject } from "./object.ts";

export { BaseProxy } from "./base.ts";
export type { DictKey } from "../protocol.ts";
export * from "./collections.ts";
export * from "./sync.ts";
export * from "./queue.ts";
export * from "./value.ts";
export { ObjectProxy, type Remote } from "./object.ts";

/** A proxy class, as the table holds it. */
type ProxyClass = new (
  client: unknown,
  id: ObjectId,
  type: string,
) => BaseProxy;

/** The proxy class of each built-in type id. */
const PROXY_CLASSES = {
  dict: collections.DictProxy,
  list: collections.ListProxy,
  namespace: collections.NamespaceProxy,
  lock: sync.LockProxy,
  rlock: sync.RLockProxy,
  semaphore: sync.SemaphoreProxy,
  boundedSemaphore: sync.BoundedSemaphoreProxy,
  condition: sync.ConditionProxy,
  event: sync.EventProxy,
  barrier: sync.BarrierProxy,
  queue: queue.QueueProxy,
  joinableQueue: queue.JoinableQueueProxy,
  value: value.ValueProxy,
  array: value.ArrayProxy,
} satisfies Record<TypeId, ProxyClass>;

/** The proxy of `ref` (a registered type's gets an {@linkcode ObjectProxy}). */
export function makeProxy(client: ManagerClient, ref: RefTag): BaseProxy {
  if (isTypeId(ref.type)) {
    const Ctor: ProxyClass = PROXY_CLASSES[ref.type];
    return new Ctor(client, ref.id, ref.type);
  }
  return wrapObject(new ObjectProxy(client, ref.id, ref.type));
}

/** The proxy binding of every client. */
export const PROXIES: ProxyBinding = { refOf, make: makeProxy };

interface ShareData {
  id: ObjectId;
  type: string;
  serverId: string;
  serverThread: number;
  port?: MessagePort;
  mem?: LinkMemory;
  bell?: SharedArrayBuffer;
  token?: string;
  hostname?: string;
  tcpPort?: number;
  authkey?: Uint8Array;
  tls?: { caCerts?: string[] };
}

const remoteClients = new Map<string, Promise<ManagerClient>>();

registerShareable(SHARE_TYPE, (raw, context) => {
  const data = raw as ShareData;
  if (data.port) {
    const client = ManagerClient.local(
      PROXIES,
      data.port,
      data.mem!,
      data.bell!,
      data.serverId,
      data.serverThread,
    );
    client.post({ x: "thread", t: currentThreadId() });
    context.onTaskEnd(() => client.close());
    return makeProxy(client, data);
  }
  const key = data.serverId;
  let pc = remoteClients.get(key);
  if (!pc) {
    pc = ManagerClient.remoteClient(PROXIES, {
      hostname: data.hostname!,
      port: data.tcpPort!,
      authkey: data.authkey!,
      tls: data.tls,
    }, 10_000);
    remoteClients.set(key, pc);
    pc.catch(() => remoteClients.delete(key));
  }
  const placeholder = new ManagerClient(PROXIES, data.serverId, 0);
  const proxy = makeProxy(placeholder, data);
  const s = stateOf(proxy);
  s.ready = pc.then(async (client) => {
    client.uses++;
    context.onTaskEnd(() => {
      if (--client.uses === 0) {
        remoteClients.delete(key);
        client.close();
      }
    });
    finalizer.unregister(proxy);
    s.client = client;
    finalizer.register(proxy, { client, id: data.id }, proxy);
    await client.call(0, "claim", [data.token]);
    s.ready = undefined;
  });
  s.ready.catch(() => {});
  return proxy;
});

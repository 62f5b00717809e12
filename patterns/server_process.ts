/**
 * The server process: Python's `Manager()`. One server owns dicts, lists,
 * namespaces, locks, queues, values and arrays; the main thread, any worker
 * — or a program on another computer — uses them through proxies whose
 * methods all return promises.
 *
 * `await Manager.start()` runs the server in its own worker (no setup);
 * `await Manager.connect({ hostname, port, authkey })` reaches one started
 * with {@linkcode serve} (or `deno task manager serve`) over TCP, with a
 * mutual HMAC-SHA256 handshake. Both give the same API and `await using`.
 *
 * Python:
 *
 * ```py
 * from multiprocessing import Process, Manager
 *
 * def f(d, l):
 *     d["car"] = "ford"
 *     l.sort()
 *
 * if __name__ == "__main__":
 *     with Manager() as manager:
 *         d = manager.dict()
 *         l = manager.list([9, 3])
 *         p = Process(target=f, args=(d, l))
 *         p.start()
 *         p.join()
 *         print(d)  # {'car': 'ford'}
 *         print(l)  # [3, 9]
 * ```
 *
 * Deno (the proxies travel into the worker as they are):
 *
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const d = await manager.dict<string, string>();
 * const l = await manager.list([9, 3]);
 * await d.set("car", "ford");
 * await l.sort();
 * assert.deepEqual(await d.toObject(), { car: "ford" });
 * assert.deepEqual(await l.toArray(), [3, 9]);
 * ```
 *
 * **Nested values are read-only copies.** Python silently loses
 * `d["k"].append(x)`: the list read from the proxy is a copy. Here a
 * container read with `get`, `values`, `entries` or `setDefault` is
 * deep-frozen, so `(await d.get("k")).push(x)` throws a `TypeError` instead
 * of being lost; write the new value back with `set`, or store a manager
 * list/dict proxy in the dict — a proxy stored inside a managed container
 * comes back as a live proxy, and mutating it mutates the server's object.
 * `toObject`, `toArray`, `pop` and queue `get` hand you a detached, mutable
 * copy. (Dates and typed arrays cannot be frozen: they are copies too.)
 *
 * **Lifetimes.** An object lives while some proxy refers to it: proxies
 * are counted per connection, a proxy that is garbage-collected or
 * disposed (`using d = await m.dict()`) gives its reference back, and all
 * of a connection's references go when it disconnects (a worker's
 * connection ends with the task or process that received the proxy). A
 * lock, RLock or condition held by a client that disconnects is released;
 * the next acquirer gets it with an `AbandonedError` (semaphore permits are
 * not tracked per client and are not returned).
 *
 * @module
 */

import {
  AbandonedError,
  AuthenticationError,
  BrokenBarrierError,
  checkTimeout,
  ClosedError,
  currentThreadId,
  describeValue,
  EmptyError,
  FullError,
  holdEventLoop,
  isMainModule,
  isPlainObject,
  isThreadAlive,
  kShare,
  type ManagedWorker,
  parseCli,
  registerShareable,
  reviveError,
  type ShareContext,
  type SharedHandle,
  spawnWorker,
  throwIfAborted,
  timeoutError,
  type WaitOptions,
  WorkerCrashedError,
} from "./_util.ts";
import {
  authkeyBytes,
  decodeValue,
  DEFAULT_MAX_FRAME,
  encodeValue,
  FramedSocket,
  HANDSHAKE_MAX_FRAME,
  hmacKey,
  nonce,
  proof,
  PROTOCOL,
  PROTOCOL_VERSION,
  type RefTag,
  timingSafeEqual,
} from "./_manager_codec.ts";
import {
  allocateLink,
  Link,
  type LinkMemory,
  SEQ,
  SLEEPING,
  SpinPolicy,
} from "./_manager_ring.ts";
import {
  CANCELLED,
  loadRegister,
  type RegisteredType,
  ServerCore,
  type ServerStats,
  startTcpServer,
  type TcpServer,
} from "./_manager_server.ts";

export {
  AbandonedError,
  AuthenticationError,
  BrokenBarrierError,
  ClosedError,
  EmptyError,
  FullError,
  WorkerCrashedError,
};
export type {
  RegisteredType,
  ServerStats,
  ShareContext,
  SharedHandle,
  WaitOptions,
};

const SHARE_TYPE = "server_process.proxy";
const CLASSES = {
  ClosedError,
  EmptyError,
  FullError,
  BrokenBarrierError,
  AbandonedError,
  AuthenticationError,
  WorkerCrashedError,
};

// -- Transports (client side) ---------------------------------------------

interface Transport {
  send(message: unknown, transfer?: Transferable[]): void;
  ref(): void;
  unref(): void;
  close(): Promise<void>;
}

/** How many loads a local client spins on its reply ring before it sleeps. */
const CLIENT_SPIN = 10_000;

interface LocalTransport extends Transport {
  /** Starts reading replies (after a call was sent). */
  kick(): void;
}

function linkTransport(
  port: MessagePort,
  mem: LinkMemory,
  bellSab: SharedArrayBuffer,
  serverThread: number,
  onMessage: (m: unknown) => void,
  pending: () => number,
  onDead: () => void,
): LocalTransport {
  const bell = new Int32Array(bellSab, 0, 2);
  const link = new Link(mem, "client", port, onMessage, () => {
    Atomics.add(bell, 0, 1);
    if (Atomics.load(bell, 1) !== 0) Atomics.notify(bell, 0);
  });
  (port as MessagePort & { unref?(): void }).unref?.();
  const ctrl = link.in.ctrl;
  const spin = new SpinPolicy(CLIENT_SPIN);
  let closed = false;
  let pumping: Promise<void> | undefined;
  const pump = async (): Promise<void> => {
    let release: (() => void) | undefined;
    try {
      while (pending() > 0 && !closed) {
        if (link.service()) continue;
        const seq = Atomics.load(ctrl, SEQ);
        let got = false;
        for (let i = spin.budget; i > 0; i--) {
          if (link.in.hasData()) {
            got = true;
            break;
          }
        }
        spin.record(got);
        if (got) continue;
        Atomics.store(ctrl, SLEEPING, 1);
        if (!link.in.hasData() && !closed) {
          release ??= holdEventLoop();
          const r = Atomics.waitAsync(ctrl, SEQ, seq, 250);
          if (r.async && (await r.value) === "timed-out") {
            if (serverThread > 0 && !isThreadAlive(serverThread)) onDead();
          }
        }
        Atomics.store(ctrl, SLEEPING, 0);
      }
    } finally {
      release?.();
      pumping = undefined;
    }
  };
  return {
    send: (m, transfer) => link.send(m, transfer),
    ref: () => {},
    unref: () => {},
    kick: () => {
      if (pumping) return;
      pumping = Promise.resolve().then(pump);
    },
    close: async () => {
      if (!closed) {
        link.send({ x: "bye" });
        closed = true;
        Atomics.add(ctrl, SEQ, 1);
        Atomics.notify(ctrl, SEQ);
      }
      await pumping;
      link.close();
    },
  };
}

interface RemoteParams {
  hostname: string;
  port: number;
  authkey: Uint8Array;
}

async function connectSocket(
  params: RemoteParams,
  timeout: number,
): Promise<{ socket: FramedSocket; serverId: string }> {
  const tcp = await Deno.connect({
    hostname: params.hostname,
    port: params.port,
    transport: "tcp",
  });
  try {
    tcp.setNoDelay(true);
  } catch {
    // not fatal
  }
  const socket = new FramedSocket(tcp, HANDSHAKE_MAX_FRAME);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const next = () =>
    Promise.race([
      socket.next(),
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), timeout);
      }),
    ]).finally(() => clearTimeout(timer));
  const fail = async (error: Error): Promise<never> => {
    await socket.close().catch(() => {});
    throw error;
  };
  try {
    const key = await hmacKey(params.authkey);
    const hello = await next();
    if (hello === "timeout") {
      return await fail(timeoutError(
        `Cannot connect to ${params.hostname}:${params.port}: no handshake within ${timeout} ms`,
      ));
    }
    const h =
      (typeof hello === "object" && hello !== null ? hello : {}) as Record<
        string,
        unknown
      >;
    if (
      h.proto !== PROTOCOL || h.version !== PROTOCOL_VERSION ||
      typeof h.challenge !== "string"
    ) {
      return await fail(
        new AuthenticationError(
          `Cannot connect to ${params.hostname}:${params.port}: the peer does not speak ${PROTOCOL} version ${PROTOCOL_VERSION} (received ${
            hello === undefined ? "a closed connection" : describeValue(hello)
          })`,
        ),
      );
    }
    const mine = nonce();
    socket.send({
      proto: PROTOCOL,
      version: PROTOCOL_VERSION,
      response: await proof(key, "client", h.challenge, mine),
      challenge: mine,
    });
    const answer = await next();
    const a =
      (typeof answer === "object" && answer !== null ? answer : {}) as Record<
        string,
        unknown
      >;
    if (a.ok !== true) {
      const e = a.e as { message?: unknown } | undefined;
      return await fail(
        new AuthenticationError(
          typeof e?.message === "string"
            ? e.message
            : `Cannot connect to ${params.hostname}:${params.port}: the server closed the connection during the handshake`,
        ),
      );
    }
    const expected = await proof(key, "server", mine, h.challenge);
    if (!timingSafeEqual(a.response, expected)) {
      return await fail(
        new AuthenticationError(
          `Cannot connect to ${params.hostname}:${params.port}: the server failed to prove it knows the authkey`,
        ),
      );
    }
    socket.maxBytes = DEFAULT_MAX_FRAME;
    return { socket, serverId: `tcp:${h.challenge}` };
  } catch (e) {
    await socket.close().catch(() => {});
    throw e;
  }
}

function socketTransport(
  socket: FramedSocket,
  tcpRef: { ref(): void; unref(): void },
  onMessage: (m: unknown) => void,
  onClose: () => void,
): Transport {
  socket.onMessage = onMessage;
  socket.onClose = onClose;
  socket.drain();
  tcpRef.unref();
  return {
    send: (m) => socket.send(m),
    ref: () => tcpRef.ref(),
    unref: () => tcpRef.unref(),
    close: () => socket.close(),
  };
}

// -- The client --------------------------------------------------------------

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  freeze: boolean;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  aborted: unknown;
}

interface CallOptions extends WaitOptions {
  /** Deep-freeze the result (values read from containers). */
  freeze?: boolean;
  /** Send the timeout to the server (a call that may wait). */
  waits?: boolean;
}

const finalizer = new FinalizationRegistry<
  { client: ManagerClient; id: number }
>((h) => h.client.decref(h.id));

/** One connection to a manager server, bound to the thread that made it. */
class ManagerClient {
  #transport!: Transport;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;
  #closeReason = "the manager was shut down";
  #decrefs: number[] = [];
  readonly #thread = currentThreadId();
  /** Identifies the server (proxies of one server may be mixed). */
  readonly serverId: string;
  /** The server worker's thread id for an embedded server, else 0. */
  readonly serverThread: number;
  /** Where a remote server listens, for proxies shared with workers. */
  readonly remote: RemoteParams | undefined;
  /** Closes the clients revived for a task when it ends. */
  uses = 0;

  constructor(serverId: string, serverThread: number, remote?: RemoteParams) {
    this.serverId = serverId;
    this.serverThread = serverThread;
    this.remote = remote;
  }

  static local(
    port: MessagePort,
    mem: LinkMemory,
    bell: SharedArrayBuffer,
    serverId: string,
    serverThread: number,
  ): ManagerClient {
    const c = new ManagerClient(serverId, serverThread);
    c.local = { mem, bell };
    const t = linkTransport(
      port,
      mem,
      bell,
      serverThread,
      (m) => c.#onMessage(m),
      () => c.#pending.size,
      () => c.fail("the manager's server worker is gone"),
    );
    c.#transport = t;
    c.#kick = t.kick;
    return c;
  }

  /** The doorbell of an embedded server, for attaching more connections. */
  local: { mem: LinkMemory; bell: SharedArrayBuffer } | undefined;
  #kick: (() => void) | undefined;

  static async remoteClient(
    params: RemoteParams,
    timeout: number,
  ): Promise<ManagerClient> {
    const { socket, serverId } = await connectSocket(params, timeout);
    const c = new ManagerClient(serverId, 0, params);
    c.#transport = socketTransport(
      socket,
      socket,
      (m) => c.#onMessage(m),
      () => c.fail("the server closed the connection"),
    );
    return c;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a message that needs no answer. */
  post(message: unknown, transfer?: Transferable[]): void {
    if (!this.#closed) this.#transport?.send(message, transfer);
  }

  call(
    o: number,
    m: string,
    args: unknown[],
    options: CallOptions = {},
  ): Promise<unknown> {
    if (this.#closed) {
      return Promise.reject(
        new ClosedError(`Cannot call ${m}: ${this.#closeReason}`),
      );
    }
    if (this.serverThread > 0 && !isThreadAlive(this.serverThread)) {
      this.fail("the manager's server worker is gone");
      return Promise.reject(
        new ClosedError(`Cannot call ${m}: ${this.#closeReason}`),
      );
    }
    let timeout: number;
    let a: unknown;
    try {
      timeout = checkTimeout(options.timeout, m);
      throwIfAborted(options.signal);
      a = encodeValue(args, (v) => this.#refOf(v));
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#decrefs.length > 0) this.#flushDecrefs();
    const id = ++this.#nextId;
    const msg = options.waits && timeout !== Infinity
      ? [id, o, m, a, this.#thread, timeout]
      : [id, o, m, a, this.#thread];
    return new Promise((resolve, reject) => {
      const p: Pending = {
        resolve,
        reject,
        freeze: options.freeze === true,
        signal: options.signal,
        onAbort: undefined,
        aborted: undefined,
      };
      if (options.signal) {
        const signal = options.signal;
        p.onAbort = () => {
          p.aborted = signal.reason;
          this.post({ c: id });
        };
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.#pending.set(id, p);
      if (this.#pending.size === 1) this.#transport.ref();
      this.#transport.send(msg);
      this.#kick?.();
    });
  }

  #refOf(v: object): RefTag | undefined {
    if (!(v instanceof BaseProxy)) return undefined;
    const s = stateOf(v);
    if (s.client.serverId !== this.serverId) {
      throw new TypeError(
        `Cannot send a proxy of another manager: ${s.type} ${s.id} belongs to a different server`,
      );
    }
    if (s.released) {
      throw new ClosedError(
        `Cannot send a released proxy (${s.type} ${s.id})`,
      );
    }
    return { id: s.id, type: s.type };
  }

  #onMessage(message: unknown): void {
    if (typeof message !== "object" || message === null) return;
    const ok = Array.isArray(message);
    const msg: Record<string, unknown> = ok
      ? { i: message[0], r: message[1] }
      : message as Record<string, unknown>;
    const id = msg.i;
    if (typeof id !== "number") return;
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#transport.unref();
    if (p.onAbort) p.signal!.removeEventListener("abort", p.onAbort);
    if (!ok) {
      const info = msg.e as { name?: unknown; message?: unknown };
      if (info.name === CANCELLED && p.aborted !== undefined) {
        return p.reject(p.aborted);
      }
      return p.reject(
        reviveError({
          name: String(info.name),
          message: String(info.message),
          stack: `${info.name}: ${info.message}\n    at the manager server`,
        }, CLASSES),
      );
    }
    try {
      p.resolve(
        decodeValue(msg.r, (r) => makeProxy(this, r), p.freeze),
      );
    } catch (e) {
      p.reject(e);
    }
  }

  /** Gives a proxy's reference back (batched). */
  decref(id: number): void {
    if (this.#closed) return;
    if (this.#decrefs.push(id) === 1) {
      queueMicrotask(() => this.#flushDecrefs());
    }
  }

  #flushDecrefs(): void {
    if (this.#decrefs.length === 0) return;
    const ids = this.#decrefs.splice(0);
    this.post([0, 0, "decref", [ids], 0]);
  }

  /** Rejects everything pending and closes. */
  fail(reason: string): void {
    if (this.#closed) return;
    this.#closeReason = reason;
    this.close().catch(() => {});
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const ids = this.#decrefs.splice(0);
    if (ids.length) this.#transport.send([0, 0, "decref", [ids], 0]);
    for (const [, p] of this.#pending) {
      if (p.onAbort) p.signal!.removeEventListener("abort", p.onAbort);
      p.reject(new ClosedError(`Cannot finish the call: ${this.#closeReason}`));
    }
    this.#pending.clear();
    this.#transport.unref();
    await this.#transport.close();
  }
}

// -- Proxies -----------------------------------------------------------------

interface ProxyState {
  client: ManagerClient;
  id: number;
  type: string;
  released: boolean;
  ready: Promise<unknown> | undefined;
}

let stateOf: (p: BaseProxy) => ProxyState;

function invoke(
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
 * The base of every manager proxy: a reference to one object in the
 * server. Proxies can be passed to `Process`/`Pool` tasks (nested anywhere
 * in the arguments) and stored in managed containers; they arrive live.
 * `using p = await manager.dict()` (or {@linkcode BaseProxy.drop})
 * gives the reference back at once; otherwise garbage collection does.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
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
    stateOf = (p) => p.#state;
  }

  /**
   * Wraps a reference; proxies are made by {@linkcode Manager}'s
   * factories, not by user code.
   *
   * @param client The connection (internal).
   * @param id The object's id.
   * @param type The object's type.
   */
  constructor(client: unknown, id: number, type: string) {
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
        module: import.meta.url,
        data: {
          ...base,
          token,
          hostname: r.hostname,
          tcpPort: r.port,
          authkey: r.authkey,
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
      module: import.meta.url,
      data: { ...base, port: ch.port2, mem, bell: s.client.local!.bell },
    };
  }
}

interface ShareData {
  id: number;
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
}

const remoteClients = new Map<string, Promise<ManagerClient>>();

registerShareable(SHARE_TYPE, (raw, context) => {
  const data = raw as ShareData;
  if (data.port) {
    const client = ManagerClient.local(
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
    pc = ManagerClient.remoteClient({
      hostname: data.hostname!,
      port: data.tcpPort!,
      authkey: data.authkey!,
    }, 10_000);
    remoteClients.set(key, pc);
    pc.catch(() => remoteClients.delete(key));
  }
  const placeholder = new ManagerClient(data.serverId, 0);
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

/**
 * Keys a manager dict accepts.
 *
 * @example Usage
 * ```ts
 * import { type DictKey, Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const d = await manager.dict<DictKey, string>();
 * const keys: DictKey[] = ["1", 1, 1n, true];
 * for (const k of keys) await d.set(k, typeof k);
 * assert.equal(await d.get(1), "number");
 * assert.equal(await d.get("1"), "string");
 * assert.equal(await d.get(true), "boolean");
 * ```
 */
export type DictKey = string | number | bigint | boolean;

/**
 * A proxy for a dict in the manager (Python's `DictProxy`); keys are
 * strings, numbers, bigints or booleans.
 *
 * @typeParam K The key type.
 * @typeParam V The value type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
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
  /**
   * Returns the keys, in insertion order.
   *
   * @returns The keys, in insertion order.
   */
  keys(): Promise<K[]> {
    return invoke(this, "keys", [], { freeze: true }) as Promise<K[]>;
  }
  /**
   * Returns the values (deep-frozen).
   *
   * @returns The values (deep-frozen).
   */
  values(): Promise<V[]> {
    return invoke(this, "values", [], { freeze: true }) as Promise<V[]>;
  }
  /**
   * Returns the `[key, value]` pairs (deep-frozen).
   *
   * @returns The `[key, value]` pairs (deep-frozen).
   */
  entries(): Promise<[K, V][]> {
    return invoke(this, "entries", [], { freeze: true }) as Promise<[K, V][]>;
  }
  /**
   * Returns the number of keys.
   *
   * @returns The number of keys.
   */
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
  /**
   * Returns a plain, mutable copy (keys as strings).
   *
   * @returns A plain, mutable copy (keys as strings).
   */
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
 * import { Manager } from "./server_process.ts";
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
  /**
   * Returns the number of items.
   *
   * @returns The number of items.
   */
  length(): Promise<number> {
    return invoke(this, "length", []) as Promise<number>;
  }
  /** Removes every item. */
  clear(): Promise<void> {
    return invoke(this, "clear", []) as Promise<void>;
  }
  /**
   * Returns a mutable copy of the items.
   *
   * @returns A mutable copy of the items.
   */
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
 * import { Manager } from "./server_process.ts";
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
  /**
   * Returns a plain, mutable copy of the attributes.
   *
   * @returns A plain, mutable copy of the attributes.
   */
  toObject(): Promise<T> {
    return invoke(this, "toObject", []) as Promise<T>;
  }
}

async function holdGuard(
  proxy: LockProxy | SemaphoreProxy | ConditionProxy,
  options: WaitOptions,
): Promise<AsyncDisposable> {
  if (!(await proxy.acquire(options))) {
    throw timeoutError(`hold timed out after ${options.timeout} ms`);
  }
  return { [Symbol.asyncDispose]: () => proxy.release() };
}

/**
 * A proxy for a manager Lock: any client may release it (as Python's
 * Lock). If its holder disconnects, the next acquirer gets it with an
 * `AbandonedError`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const lock = await manager.lock();
 * assert.equal(await lock.acquire(), true);
 * assert.equal(await lock.acquire({ timeout: 0 }), false);
 * await lock.release();
 * {
 *   await using _ = await lock.hold();
 *   assert.equal(await lock.locked(), true);
 * }
 * assert.equal(await lock.locked(), false);
 * ```
 */
export class LockProxy extends BaseProxy {
  /**
   * Acquires the lock; `false` when `timeout` runs out (`timeout: 0` only
   * tries).
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether it was acquired.
   */
  acquire(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "acquire", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
  /** Releases it; an unheld lock → `RangeError`. */
  release(): Promise<void> {
    return invoke(this, "release", []) as Promise<void>;
  }
  /**
   * Returns whether someone holds it.
   *
   * @returns Whether someone holds it.
   */
  locked(): Promise<boolean> {
    return invoke(this, "locked", []) as Promise<boolean>;
  }
  /**
   * Acquires it and returns a guard for `await using` that releases it.
   *
   * @param options `timeout` (ms; running out rejects with a
   *   `TimeoutError`) and `signal`.
   * @returns The guard.
   */
  hold(options: WaitOptions = {}): Promise<AsyncDisposable> {
    return holdGuard(this, options);
  }
}

/**
 * A proxy for a manager RLock: re-entrant, owned by the client thread that
 * acquired it; releasing it from another thread → `RangeError`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const r = await manager.rlock();
 * assert.ok(await r.acquire());
 * assert.ok(await r.acquire());
 * await r.release();
 * await r.release();
 * assert.equal(await r.locked(), false);
 * ```
 */
export class RLockProxy extends LockProxy {}

/**
 * A proxy for a manager Semaphore (or BoundedSemaphore, whose `release`
 * past the initial value → `RangeError`).
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const s = await manager.semaphore(1);
 * assert.ok(await s.acquire());
 * assert.equal(await s.acquire({ timeout: 0 }), false);
 * await s.release();
 * ```
 */
export class SemaphoreProxy extends BaseProxy {
  /**
   * Takes a permit; `false` when `timeout` runs out.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether a permit was taken.
   */
  acquire(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "acquire", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
  /**
   * Gives `n` permits back.
   *
   * @param n How many (default 1).
   */
  release(n = 1): Promise<void> {
    return invoke(this, "release", [n]) as Promise<void>;
  }
  /**
   * Returns the number of free permits.
   *
   * @returns The number of free permits.
   */
  getValue(): Promise<number> {
    return invoke(this, "getValue", []) as Promise<number>;
  }
  /**
   * Takes a permit and returns a guard for `await using` that gives it
   * back.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The guard.
   */
  hold(options: WaitOptions = {}): Promise<AsyncDisposable> {
    return holdGuard(this, options);
  }
}

/**
 * A proxy for a manager BoundedSemaphore.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const s = await manager.boundedSemaphore(1);
 * await assert.rejects(s.release(), RangeError);
 * ```
 */
export class BoundedSemaphoreProxy extends SemaphoreProxy {}

/**
 * A proxy for a manager Condition (over a manager RLock owned per client
 * thread). `wait` and `notify` need the lock held by the caller.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const c = await manager.condition();
 * await c.acquire();
 * assert.equal(await c.wait({ timeout: 5 }), false);
 * await c.notifyAll();
 * await c.release();
 * ```
 */
export class ConditionProxy extends BaseProxy {
  /**
   * Acquires the underlying lock.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether it was acquired.
   */
  acquire(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "acquire", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
  /** Releases the underlying lock. */
  release(): Promise<void> {
    return invoke(this, "release", []) as Promise<void>;
  }
  /**
   * Releases the lock, waits for a notify, re-acquires the lock; `false`
   * when `timeout` ran out (the lock is re-acquired either way).
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether it was notified.
   */
  wait(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "wait", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
  /**
   * Waits until `predicate()` is truthy, checking it after each notify;
   * returns its last value (falsy when `timeout` ran out). The predicate
   * runs in the caller's thread and may be async (e.g. read a proxy).
   *
   * @typeParam T The predicate's value.
   * @param predicate The condition to wait for.
   * @param options `timeout` (ms) and `signal`.
   * @returns The predicate's last value.
   */
  async waitFor<T>(
    predicate: () => T | Promise<T>,
    options: WaitOptions = {},
  ): Promise<T> {
    const timeout = checkTimeout(options.timeout, "waitFor");
    const end = performance.now() + timeout;
    let r = await predicate();
    while (!r) {
      const left = end - performance.now();
      if (left <= 0) return r;
      await this.wait({
        timeout: left === Infinity ? undefined : left,
        signal: options.signal,
      });
      r = await predicate();
    }
    return r;
  }
  /**
   * Wakes up to `n` waiters.
   *
   * @param n How many (default 1).
   */
  notify(n = 1): Promise<void> {
    return invoke(this, "notify", [n]) as Promise<void>;
  }
  /** Wakes every waiter. */
  notifyAll(): Promise<void> {
    return invoke(this, "notifyAll", []) as Promise<void>;
  }
  /**
   * Acquires the lock and returns a guard for `await using`.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The guard.
   */
  hold(options: WaitOptions = {}): Promise<AsyncDisposable> {
    return holdGuard(this, options);
  }
}

/**
 * A proxy for a manager Event.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const e = await manager.event();
 * assert.equal(await e.wait({ timeout: 0 }), false);
 * await e.set();
 * assert.equal(await e.wait(), true);
 * ```
 */
export class EventProxy extends BaseProxy {
  /** Sets the flag and wakes every waiter. */
  set(): Promise<void> {
    return invoke(this, "set", []) as Promise<void>;
  }
  /** Clears the flag. */
  clear(): Promise<void> {
    return invoke(this, "clear", []) as Promise<void>;
  }
  /**
   * Returns whether the flag is set.
   *
   * @returns Whether the flag is set.
   */
  isSet(): Promise<boolean> {
    return invoke(this, "isSet", []) as Promise<boolean>;
  }
  /**
   * Waits for the flag; `false` when `timeout` ran out.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether the flag was set.
   */
  wait(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "wait", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
}

/**
 * A proxy for a manager Barrier. A wait that times out breaks the barrier
 * and every waiter gets `BrokenBarrierError`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const b = await manager.barrier(2);
 * const [i, j] = await Promise.all([b.wait(), b.wait()]);
 * assert.deepEqual([i, j].sort(), [0, 1]);
 * assert.equal(await b.parties(), 2);
 * ```
 */
export class BarrierProxy extends BaseProxy {
  /**
   * Waits for all parties; resolves to this party's index.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The index, `0 … parties - 1`.
   */
  wait(options: WaitOptions = {}): Promise<number> {
    return invoke(this, "wait", [], { ...options, waits: true }) as Promise<
      number
    >;
  }
  /** Breaks the barrier: waiters get `BrokenBarrierError`. */
  abort(): Promise<void> {
    return invoke(this, "abort", []) as Promise<void>;
  }
  /** Breaks the current waiters out and makes the barrier usable again. */
  reset(): Promise<void> {
    return invoke(this, "reset", []) as Promise<void>;
  }
  /**
   * Returns the number of parties.
   *
   * @returns The number of parties.
   */
  parties(): Promise<number> {
    return invoke(this, "parties", []) as Promise<number>;
  }
  /**
   * Returns how many parties wait now.
   *
   * @returns How many parties wait now.
   */
  nWaiting(): Promise<number> {
    return invoke(this, "nWaiting", []) as Promise<number>;
  }
  /**
   * Returns whether the barrier is broken.
   *
   * @returns Whether the barrier is broken.
   */
  broken(): Promise<boolean> {
    return invoke(this, "broken", []) as Promise<boolean>;
  }
}

/**
 * A proxy for a manager Queue. `get` on an empty queue → `EmptyError`
 * when `timeout` runs out; `put` on a full one → `FullError`; after
 * `close()` (for every holder) `put` → `ClosedError` and `get` drains, then
 * `ClosedError`. `for await` reads until closed and drained.
 *
 * @typeParam T The item type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const q = await manager.queue<number>();
 * await q.put(1);
 * await q.put(2);
 * await q.close();
 * const got: number[] = [];
 * for await (const x of q) got.push(x);
 * assert.deepEqual(got, [1, 2]);
 * ```
 */
export class QueueProxy<T = unknown> extends BaseProxy
  implements AsyncIterable<T> {
  /**
   * Puts an item, waiting for room in a bounded queue.
   *
   * @param item The item.
   * @param options `timeout` (ms) and `signal`.
   */
  put(item: T, options: WaitOptions = {}): Promise<void> {
    return invoke(this, "put", [item], { ...options, waits: true }) as Promise<
      void
    >;
  }
  /**
   * Takes the oldest item, waiting for one.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The item.
   */
  get(options: WaitOptions = {}): Promise<T> {
    return invoke(this, "get", [], { ...options, waits: true }) as Promise<T>;
  }
  /**
   * Puts without waiting; a full queue → `FullError`.
   *
   * @param item The item.
   */
  putNowait(item: T): Promise<void> {
    return invoke(this, "put", [item], { timeout: 0, waits: true }) as Promise<
      void
    >;
  }
  /**
   * Returns the oldest item; an empty queue → `EmptyError`.
   *
   * @returns The oldest item; an empty queue → `EmptyError`.
   */
  getNowait(): Promise<T> {
    return invoke(this, "get", [], { timeout: 0, waits: true }) as Promise<T>;
  }
  /**
   * Returns the number of items.
   *
   * @returns The number of items.
   */
  qsize(): Promise<number> {
    return invoke(this, "qsize", []) as Promise<number>;
  }
  /**
   * Returns whether it is empty.
   *
   * @returns Whether it is empty.
   */
  empty(): Promise<boolean> {
    return invoke(this, "empty", []) as Promise<boolean>;
  }
  /**
   * Returns whether it is full.
   *
   * @returns Whether it is full.
   */
  full(): Promise<boolean> {
    return invoke(this, "full", []) as Promise<boolean>;
  }
  /** Closes the queue for every holder. */
  close(): Promise<void> {
    return invoke(this, "close", []) as Promise<void>;
  }
  /**
   * Reads items until the queue is closed and drained.
   *
   * @returns The iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      try {
        yield await this.get();
      } catch (e) {
        if (e instanceof ClosedError) return;
        throw e;
      }
    }
  }
}

/**
 * A proxy for a manager JoinableQueue: `taskDone()` per item got, and
 * `join()` waits until every item was done (`false` on timeout).
 *
 * @typeParam T The item type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const q = await manager.joinableQueue<string>();
 * await q.put("job");
 * assert.equal(await q.join({ timeout: 0 }), false);
 * await q.get();
 * await q.taskDone();
 * assert.equal(await q.join(), true);
 * ```
 */
export class JoinableQueueProxy<T = unknown> extends QueueProxy<T> {
  /** Marks one item got as done; one call too many → `RangeError`. */
  taskDone(): Promise<void> {
    return invoke(this, "taskDone", []) as Promise<void>;
  }
  /**
   * Waits until every item put was marked done.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns `false` when `timeout` ran out.
   */
  join(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "join", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
}

/**
 * A proxy for a manager Value of a typecode (`"i"`, `"d"`, … ; `l L q Q`
 * hold bigints). Each call is atomic in the server.
 *
 * @typeParam T `number` or `bigint`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
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
  /**
   * Returns the value.
   *
   * @returns The value.
   */
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
 * import { Manager } from "./server_process.ts";
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
  /**
   * Returns the number of items.
   *
   * @returns The number of items.
   */
  length(): Promise<number> {
    return invoke(this, "length", []) as Promise<number>;
  }
  /**
   * Returns a copy of the items.
   *
   * @returns A copy of the items.
   */
  toArray(): Promise<T[]> {
    return invoke(this, "toArray", []) as Promise<T[]>;
  }
}

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
 * import { Manager, type Remote } from "./server_process.ts";
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

function wrapObject(proxy: ObjectProxy): ObjectProxy {
  return new Proxy(proxy, {
    get(target, prop, receiver) {
      if (typeof prop !== "string" || prop in target || prop === "then") {
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      }
      void receiver;
      return (...args: unknown[]) => target.call(prop, ...args);
    },
  });
}

const PROXY_CLASSES: Record<
  string,
  new (client: unknown, id: number, type: string) => BaseProxy
> = {
  dict: DictProxy,
  list: ListProxy,
  namespace: NamespaceProxy,
  lock: LockProxy,
  rlock: RLockProxy,
  semaphore: SemaphoreProxy,
  boundedSemaphore: BoundedSemaphoreProxy,
  condition: ConditionProxy,
  event: EventProxy,
  barrier: BarrierProxy,
  queue: QueueProxy,
  joinableQueue: JoinableQueueProxy,
  value: ValueProxy,
  array: ArrayProxy,
};

function makeProxy(client: ManagerClient, ref: RefTag): BaseProxy {
  const Ctor = Object.hasOwn(PROXY_CLASSES, ref.type)
    ? PROXY_CLASSES[ref.type]!
    : undefined;
  if (Ctor) return new Ctor(client, ref.id, ref.type);
  return wrapObject(new ObjectProxy(client, ref.id, ref.type));
}

// -- Manager -----------------------------------------------------------------

/**
 * Options of {@linkcode Manager.start}.
 *
 * @example Usage
 * ```ts
 * import { Manager, type ManagerStartOptions } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * const source = "export class Greeter { hello(name) { return `hello ${name}`; } }";
 * const options: ManagerStartOptions = {
 *   name: "greeting-server",
 *   register: {
 *     Greeter: { module: `data:text/javascript,${encodeURIComponent(source)}`, export: "Greeter" },
 *   },
 * };
 * await using manager = await Manager.start(options);
 * const greeter = await manager.create<{ hello(name: string): string }>("Greeter");
 * assert.equal(await greeter.hello("Deno"), "hello Deno");
 * ```
 */
export interface ManagerStartOptions {
  /**
   * User types the server hosts: type id → `{ module, export }` (a class
   * exported by a module the server worker imports).
   */
  register?: Record<string, RegisteredType>;
  /** The server worker's name (default `Manager-<n>`). */
  name?: string;
}

/**
 * Options of {@linkcode Manager.connect}.
 *
 * @example Usage
 * ```ts
 * import { Manager, type ManagerConnectOptions, serve } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using server = await serve({ port: 0, authkey: "secret" });
 * const options: ManagerConnectOptions = {
 *   hostname: "127.0.0.1",
 *   port: server.addr.port,
 *   authkey: "secret",
 *   timeout: 5000,
 * };
 * await using manager = await Manager.connect(options);
 * assert.deepEqual(manager.address, { hostname: "127.0.0.1", port: server.addr.port });
 * ```
 */
export interface ManagerConnectOptions {
  /** The server's host (default `"127.0.0.1"`). */
  hostname?: string;
  /** The server's port. */
  port: number;
  /** The shared secret: a non-empty string or `Uint8Array`. */
  authkey: string | Uint8Array;
  /** How long the connection and handshake may take, in ms (default 10 s). */
  timeout?: number;
}

/**
 * Options of {@linkcode Manager.barrier}.
 *
 * @example Usage
 * ```ts
 * import {
 *   BrokenBarrierError,
 *   Manager,
 *   type ManagerBarrierOptions,
 * } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const options: ManagerBarrierOptions = { timeout: 10 };
 * const barrier = await manager.barrier(2, options);
 * // Only one of the two parties arrives: its wait times out and breaks the barrier.
 * await assert.rejects(barrier.wait(), BrokenBarrierError);
 * ```
 */
export interface ManagerBarrierOptions {
  /** The default timeout of each `wait`, in ms. */
  timeout?: number;
}

let managerCount = 0;

/**
 * A handle on a manager server: an embedded one (`Manager.start()`, the
 * server runs in its own worker) or a remote one (`Manager.connect()`).
 * Its factories make objects in the server and return proxies.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * const manager = await Manager.start();
 * const v = await manager.value("d", 1.5);
 * assert.equal(await v.get(), 1.5);
 * await manager.shutdown();
 * await assert.rejects(v.get(), { name: "ClosedError" });
 * ```
 */
export class Manager implements AsyncDisposable {
  readonly #client: ManagerClient;
  readonly #worker: ManagedWorker | undefined;
  #down = false;

  private constructor(client: ManagerClient, worker?: ManagedWorker) {
    this.#client = client;
    this.#worker = worker;
  }

  /**
   * Starts a manager server in its own worker.
   *
   * @param options Registered types and the worker's name.
   * @returns The manager.
   */
  static async start(options: ManagerStartOptions = {}): Promise<Manager> {
    const name = options.name ?? `Manager-${++managerCount}`;
    const register: Record<string, RegisteredType> = {};
    for (const [k, v] of Object.entries(options.register ?? {})) {
      register[k] = { module: String(v.module), export: v.export };
    }
    const ch = new MessageChannel();
    const mem = allocateLink();
    const bell = new SharedArrayBuffer(8);
    let settle!: (e?: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      settle = (e) => e ? reject(e) : resolve();
    });
    const holder: { client?: ManagerClient } = {};
    const worker = spawnWorker(
      new URL("./_server_process_worker.ts", import.meta.url),
      {
        name,
        onMessage(data) {
          const d = data as { ready?: boolean; error?: unknown };
          if (d.ready) settle();
          else if (d.error) {
            settle(
              reviveError(
                d.error as { name: string; message: string; stack: string },
                CLASSES,
              ),
            );
          }
        },
        onDeath(death) {
          settle(new WorkerCrashedError(death.reason));
          holder.client?.fail(
            `the manager's server worker is gone (${death.reason})`,
          );
        },
      },
    );
    worker.postMessage({
      port: ch.port2,
      mem,
      bell,
      threadId: currentThreadId(),
      register,
    }, [ch.port2]);
    try {
      await ready;
    } catch (e) {
      worker.terminate();
      ch.port1.close();
      throw e;
    }
    const client = ManagerClient.local(
      ch.port1,
      mem,
      bell,
      `local:${worker.threadId}:${crypto.randomUUID()}`,
      worker.threadId,
    );
    holder.client = client;
    return new Manager(client, worker);
  }

  /**
   * Connects to a manager server started with {@linkcode serve}.
   *
   * @param options Where, and the authkey.
   * @returns The manager.
   * @throws {AuthenticationError} If either side refused the other's key.
   * @throws {TypeError} If `authkey` is not a non-empty string or bytes.
   */
  static async connect(options: ManagerConnectOptions): Promise<Manager> {
    const authkey = authkeyBytes(options.authkey, "connect");
    const port = options.port;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(
        `Cannot connect: port must be an integer in 1..65535, received ${
          describeValue(port)
        }`,
      );
    }
    const client = await ManagerClient.remoteClient({
      hostname: options.hostname ?? "127.0.0.1",
      port,
      authkey,
    }, checkTimeout(options.timeout ?? 10_000, "connect"));
    return new Manager(client);
  }

  /** Where the remote server is, or `null` for an embedded one. */
  get address(): { hostname: string; port: number } | null {
    const r = this.#client.remote;
    return r ? { hostname: r.hostname, port: r.port } : null;
  }

  async #new<P>(type: string, args: unknown[]): Promise<P> {
    if (this.#down) {
      throw new ClosedError(`Cannot make a ${type}: the manager is shut down`);
    }
    return await this.#client.call(0, "new", [type, ...args]) as P;
  }

  /**
   * Makes a dict.
   *
   * @typeParam K The key type.
   * @typeParam V The value type.
   * @param init Initial pairs: a plain object, a `Map` or `[key, value]`
   *   pairs.
   * @returns Its proxy.
   */
  dict<K extends DictKey = string, V = unknown>(
    init?: Record<string, V> | Map<K, V> | Iterable<readonly [K, V]>,
  ): Promise<DictProxy<K, V>> {
    const i = init === undefined || init instanceof Map || isPlainObject(init)
      ? init
      : Array.from(init as Iterable<readonly [K, V]>);
    return this.#new("dict", [i]);
  }

  /**
   * Makes a list.
   *
   * @typeParam T The item type.
   * @param init Initial items.
   * @returns Its proxy.
   */
  list<T = unknown>(init?: Iterable<T>): Promise<ListProxy<T>> {
    return this.#new("list", [init === undefined ? undefined : [...init]]);
  }

  /**
   * Makes a namespace.
   *
   * @typeParam T The attributes' shape.
   * @param init Initial attributes.
   * @returns Its proxy.
   */
  namespace<T extends Record<string, unknown> = Record<string, unknown>>(
    init?: Partial<T>,
  ): Promise<NamespaceProxy<T>> {
    return this.#new("namespace", [init]);
  }

  /**
   * Returns a new Lock's proxy.
   *
   * @returns A new Lock's proxy.
   */
  lock(): Promise<LockProxy> {
    return this.#new("lock", []);
  }

  /**
   * Returns a new RLock's proxy.
   *
   * @returns A new RLock's proxy.
   */
  rlock(): Promise<RLockProxy> {
    return this.#new("rlock", []);
  }

  /**
   * Makes a Semaphore.
   *
   * @param value The initial number of permits (default 1).
   * @returns Its proxy.
   */
  semaphore(value = 1): Promise<SemaphoreProxy> {
    return this.#new("semaphore", [value]);
  }

  /**
   * Makes a BoundedSemaphore.
   *
   * @param value The initial (and largest) number of permits.
   * @returns Its proxy.
   */
  boundedSemaphore(value = 1): Promise<BoundedSemaphoreProxy> {
    return this.#new("boundedSemaphore", [value]);
  }

  /**
   * Returns a new Condition's proxy.
   *
   * @returns A new Condition's proxy.
   */
  condition(): Promise<ConditionProxy> {
    return this.#new("condition", []);
  }

  /**
   * Returns a new Event's proxy.
   *
   * @returns A new Event's proxy.
   */
  event(): Promise<EventProxy> {
    return this.#new("event", []);
  }

  /**
   * Makes a Barrier.
   *
   * @param parties How many parties it waits for.
   * @param options The default `timeout` of each wait.
   * @returns Its proxy.
   */
  barrier(
    parties: number,
    options: ManagerBarrierOptions = {},
  ): Promise<BarrierProxy> {
    return this.#new("barrier", [parties, options.timeout]);
  }

  /**
   * Makes a Queue.
   *
   * @typeParam T The item type.
   * @param maxsize Its bound (≤ 0: unbounded).
   * @returns Its proxy.
   */
  queue<T = unknown>(maxsize = 0): Promise<QueueProxy<T>> {
    return this.#new("queue", [maxsize]);
  }

  /**
   * Makes a JoinableQueue.
   *
   * @typeParam T The item type.
   * @param maxsize Its bound (≤ 0: unbounded).
   * @returns Its proxy.
   */
  joinableQueue<T = unknown>(maxsize = 0): Promise<JoinableQueueProxy<T>> {
    return this.#new("joinableQueue", [maxsize]);
  }

  /**
   * Makes a Value.
   *
   * @typeParam T `number`, or `bigint` for `l L q Q`.
   * @param typecode One of `b B h H i I l L q Q f d` (or `int8` … `float64`).
   * @param value The initial value.
   * @returns Its proxy.
   */
  value<T extends number | bigint = number>(
    typecode: string,
    value?: T,
  ): Promise<ValueProxy<T extends number ? number : bigint>> {
    return this.#new("value", [typecode, value]);
  }

  /**
   * Makes an array.
   *
   * @typeParam T `number`, or `bigint` for `l L q Q`.
   * @param typecode The typecode.
   * @param init A size (zero-filled) or the initial items.
   * @returns Its proxy.
   */
  array<T extends number | bigint = number>(
    typecode: string,
    init: number | Iterable<T>,
  ): Promise<ArrayProxy<T extends number ? number : bigint>> {
    return this.#new("array", [
      typecode,
      typeof init === "number" ? init : [...init],
    ]);
  }

  /**
   * Makes an instance of a registered type.
   *
   * @typeParam T The class's instance type.
   * @param typeid The registered type id.
   * @param args The constructor's arguments.
   * @returns Its proxy.
   */
  async create<T = Record<string, unknown>>(
    typeid: string,
    ...args: unknown[]
  ): Promise<Remote<T>> {
    if (this.#down) {
      throw new ClosedError(`Cannot create: the manager is shut down`);
    }
    return await this.#client.call(0, "create", [typeid, ...args]) as Remote<
      T
    >;
  }

  /**
   * Returns the server's live object and connection counts.
   *
   * @returns The server's live object and connection counts.
   */
  stats(): Promise<ServerStats> {
    return this.#client.call(0, "stats", []) as Promise<ServerStats>;
  }

  /**
   * Stops an embedded server (or disconnects from a remote one); later
   * calls on its proxies reject with `ClosedError`. Idempotent.
   */
  async shutdown(): Promise<void> {
    if (this.#down) return;
    this.#down = true;
    await this.#client.close();
    this.#worker?.terminate();
  }

  /** Same as {@linkcode Manager.shutdown}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }
}

// -- serve --------------------------------------------------------------------

/**
 * Options of {@linkcode serve}.
 *
 * @example Usage
 * ```ts
 * import { Manager, serve, type ServeOptions } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * const options: ServeOptions = {
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   authkey: new TextEncoder().encode("secret"),
 *   maxFrameBytes: 1 << 20,
 * };
 * await using server = await serve(options);
 * await using manager = await Manager.connect({ port: server.addr.port, authkey: "secret" });
 * const l = await manager.list([1, 2]);
 * assert.deepEqual(await l.toArray(), [1, 2]);
 * ```
 */
export interface ServeOptions {
  /** The interface to bind (default `"127.0.0.1"`: loopback only). */
  hostname?: string;
  /** The port; `0` picks a free one. */
  port: number;
  /** The shared secret: a non-empty string or `Uint8Array`. */
  authkey: string | Uint8Array;
  /** User types to host: type id → `{ module, export }`. */
  register?: Record<string, RegisteredType>;
  /** The largest frame accepted, in bytes (default 16 MiB). */
  maxFrameBytes?: number;
}

/**
 * A manager server listening on TCP, made by {@linkcode serve}.
 *
 * @example Usage
 * ```ts
 * import { Manager, serve } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * await using server = await serve({ port: 0, authkey: "secret" });
 * await using m = await Manager.connect({ port: server.addr.port, authkey: "secret" });
 * const d = await m.dict({ a: 1 });
 * assert.equal(await d.get("a"), 1);
 * ```
 */
export class ManagerServer implements AsyncDisposable {
  readonly #core: ServerCore;
  readonly #tcp: TcpServer;

  /**
   * Wraps a running server (made by {@linkcode serve}).
   *
   * @param core The core (internal).
   * @param tcp The listener (internal).
   */
  constructor(core: unknown, tcp: unknown) {
    if (!(core instanceof ServerCore)) {
      throw new TypeError("Cannot make a ManagerServer directly: use serve()");
    }
    this.#core = core;
    this.#tcp = tcp as TcpServer;
  }

  /** Where it listens. */
  get addr(): { hostname: string; port: number } {
    return this.#tcp.addr;
  }

  /**
   * Returns the live object and connection counts.
   *
   * @returns The live object and connection counts.
   */
  stats(): ServerStats {
    return this.#core.stats();
  }

  /** Resolves when the server has stopped. */
  get finished(): Promise<void> {
    return this.#tcp.finished;
  }

  /** Stops listening, disconnects every client and frees every object. */
  shutdown(): Promise<void> {
    return this.#tcp.shutdown();
  }

  /** Same as {@linkcode ManagerServer.shutdown}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}

/**
 * Starts a manager server on TCP in this thread. Clients authenticate with
 * a mutual HMAC-SHA256 challenge-response (see `docs/manager-protocol.md`);
 * a client with a wrong key gets `AuthenticationError`; a peer that sends
 * anything malformed gets an error or loses its connection, and every
 * other client is served on.
 *
 * @example Usage
 * ```ts
 * import { serve } from "./server_process.ts";
 * import { strict as assert } from "node:assert";
 *
 * const server = await serve({ port: 0, authkey: "secret" });
 * assert.equal(server.addr.hostname, "127.0.0.1");
 * await server.shutdown();
 * ```
 *
 * @param options Where, the key, and user types.
 * @returns The running server.
 * @throws {TypeError} If `authkey` is not a non-empty string or bytes.
 */
export async function serve(options: ServeOptions): Promise<ManagerServer> {
  const authkey = authkeyBytes(options?.authkey, "serve");
  const port = options.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(
      `Cannot serve: port must be an integer in 0..65535, received ${
        describeValue(port)
      }`,
    );
  }
  const core = new ServerCore();
  core.hosted = await loadRegister(options.register);
  const tcp = startTcpServer(core, {
    hostname: options.hostname ?? "127.0.0.1",
    port,
    authkey,
    maxFrameBytes: options.maxFrameBytes,
  });
  return new ManagerServer(core, tcp);
}

// -- Demo ---------------------------------------------------------------------

async function demo(connect: string | undefined): Promise<void> {
  const { Process } = await import("./cube.ts");
  let manager: Manager;
  if (connect) {
    const m = /^(.*):(\d+)$/.exec(connect);
    const authkey = Deno.env.get("MP_AUTHKEY");
    if (!m || !authkey) {
      console.error(
        !m
          ? `--connect must be host:port, received ${describeValue(connect)}`
          : "Set the MP_AUTHKEY environment variable to the server's authkey",
      );
      Deno.exit(2);
    }
    manager = await Manager.connect({
      hostname: m[1] || "127.0.0.1",
      port: Number(m[2]),
      authkey,
    });
  } else manager = await Manager.start();
  try {
    const d = await manager.dict<string, string>();
    const l = await manager.list([9, 3]);
    const p = new Process({
      target: async (d: DictProxy<string, string>, l: ListProxy<number>) => {
        await d.set("car", "ford");
        await l.sort();
      },
      args: [d, l],
    });
    p.start();
    await p.join();
    console.log(await d.toObject());
    console.log(await l.toArray());
  } finally {
    await manager.shutdown();
  }
}

async function serveCli(
  port: string | undefined,
  hostname: string | undefined,
) {
  const authkey = Deno.env.get("MP_AUTHKEY");
  if (!authkey) {
    console.error(
      "Set the MP_AUTHKEY environment variable to the authkey (it is never read from the command line)",
    );
    Deno.exit(2);
  }
  const n = Number(port ?? 0);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`--port must be an integer in 0..65535, received ${port}`);
    Deno.exit(2);
  }
  const server = await serve({ hostname, port: n, authkey });
  console.log(
    `Manager serving on ${server.addr.hostname}:${server.addr.port}`,
  );
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
}

if (isMainModule(import.meta)) {
  const args = parseCli(
    Deno.args,
    "deno task manager [demo | serve]",
    "demo: a process sets d.car and sorts a list held by a manager, then the main thread prints them. serve: runs a manager server on TCP (authkey from MP_AUTHKEY).",
    {
      port: {
        type: "string",
        description: "serve: the port (0 picks a free one)",
        placeholder: "P",
      },
      hostname: {
        type: "string",
        description: "serve: the interface to bind (default 127.0.0.1)",
        placeholder: "H",
      },
      connect: {
        type: "string",
        description: "demo: use the server at host:port",
        placeholder: "HOST:PORT",
      },
    },
  );
  const command = args.positionals[0] ?? "demo";
  if (command === "serve") {
    await serveCli(
      args.values.port as string | undefined,
      args.values.hostname as string | undefined,
    );
  } else if (command === "demo") {
    await demo(args.values.connect as string | undefined);
  } else {
    console.error(
      `Unknown command ${describeValue(command)}: use demo or serve`,
    );
    Deno.exit(2);
  }
}

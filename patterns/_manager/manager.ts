/**
 * {@linkcode Manager}: the handle on a manager server, embedded
 * (`Manager.start()` runs the server in its own worker) or remote
 * (`Manager.connect()`), with the factories that make objects there.
 *
 * @module
 */

import { checkTimeout } from "../_core/deadline.ts";
import {
  ClosedError,
  describeValue,
  reviveError,
  WorkerCrashedError,
} from "../_core/errors.ts";
import { currentThreadId } from "../_core/runtime.ts";
import { isPlainObject } from "../_core/walk.ts";
import { type ManagedWorker, spawnWorker } from "../_core/worker.ts";
import { authkeyBytes } from "./handshake.ts";
import { checkClientTls } from "./transports.ts";
import { allocateLink } from "./link.ts";
import { checkName, type DictKey, type TypeId } from "./protocol.ts";
import { ERROR_CLASSES, ManagerClient } from "./client.ts";
import { checkPort } from "./serve.ts";
import type { ServerStats } from "./server/core.ts";
import type { RegisteredType } from "./server/hosted.ts";
import { stateOf } from "./proxies/base.ts";
import {
  type ArrayProxy,
  type BarrierProxy,
  BaseProxy,
  type BoundedSemaphoreProxy,
  type ConditionProxy,
  type DictProxy,
  type EventProxy,
  type JoinableQueueProxy,
  type ListProxy,
  type LockProxy,
  type NamespaceProxy,
  PROXIES,
  type QueueProxy,
  type Remote,
  type RLockProxy,
  type SemaphoreProxy,
  type ValueProxy,
} from "./proxies/mod.ts";

/**
 * Options of {@linkcode Manager.start}.
 *
 * @example Usage
 * ```ts
 * import { Manager, type ManagerStartOptions } from "@dmp/multiprocessing/server-process";
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
 * import { Manager, type ManagerConnectOptions, serve } from "@dmp/multiprocessing/server-process";
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
  /**
   * Connect over TLS (to `serve({ tls })`); `caCerts` (PEM) are trusted
   * besides the system's roots, e.g. a self-signed server certificate.
   */
  tls?: { caCerts?: string[] };
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
 * } from "@dmp/multiprocessing/server-process";
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
 * import { Manager } from "@dmp/multiprocessing/server-process";
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

  // The one `private` of the package: a constructor cannot be `#private`,
  // and managers are made only by `Manager.start()` and `Manager.connect()`.
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
      new URL("./server/worker.ts", import.meta.url),
      {
        name,
        onMessage(data) {
          const d = data as { ready?: boolean; error?: unknown };
          if (d.ready) settle();
          else if (d.error) {
            settle(
              reviveError(
                d.error as { name: string; message: string; stack: string },
                ERROR_CLASSES,
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
    // As Python's manager process, the server is a daemon once started: it
    // does not keep the program alive (a pending call does, through its
    // link).
    worker.keepAlive(false);
    const client = ManagerClient.local(
      PROXIES,
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
   * @throws {AuthenticationError} If either side refused the other's key,
   *   or TLS failed (a plain server, an untrusted certificate).
   * @throws {ClosedError} If the server is full (`maxConnections`).
   * @throws {TypeError} If `authkey` is not a non-empty string or bytes.
   */
  static async connect(options: ManagerConnectOptions): Promise<Manager> {
    const authkey = authkeyBytes(options.authkey, "connect");
    const port = checkPort(options.port, 1, "connect");
    const client = await ManagerClient.remoteClient(PROXIES, {
      hostname: options.hostname ?? "127.0.0.1",
      port,
      authkey,
      tls: checkClientTls(options.tls, "connect"),
    }, checkTimeout(options.timeout ?? 10_000, "connect"));
    return new Manager(client);
  }

  /** Where the remote server is, or `null` for an embedded one. */
  get address(): { hostname: string; port: number } | null {
    const r = this.#client.remote;
    return r ? { hostname: r.hostname, port: r.port } : null;
  }

  async #new<P>(type: TypeId, args: unknown[]): Promise<P> {
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
   * Makes a Lock.
   *
   * @returns Its proxy.
   */
  lock(): Promise<LockProxy> {
    return this.#new("lock", []);
  }

  /**
   * Makes an RLock.
   *
   * @returns Its proxy.
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
   * Makes a Condition.
   *
   * @returns Its proxy.
   */
  condition(): Promise<ConditionProxy> {
    return this.#new("condition", []);
  }

  /**
   * Makes an Event.
   *
   * @returns Its proxy.
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
   * The object bound to `name` on the server, made by `factory` only if the
   * name is free: how programs — on one machine or many — share one object
   * (Python's `register("get_queue", callable=lambda: queue)`). It is
   * atomic: any number of clients racing on one name all get proxies to one
   * object. A named object lives while it is named, even with no client
   * connected ({@linkcode Manager.unname} lets it go).
   *
   * `factory` should make a fresh object of this manager (e.g.
   * `() => manager.queue()`); `named` takes its proxy over: that proxy is
   * returned when its object got the name, and dropped when another
   * client's object had it first. A factory that throws makes `named`
   * reject with its error and leaves the name free. The proxy returned is of
   * the class of the object the name is bound to.
   *
   * @example Two clients share a queue by name
   * ```ts
   * import { Manager, serve } from "@dmp/multiprocessing/server-process";
   * import { strict as assert } from "node:assert";
   *
   * await using server = await serve({ port: 0, authkey: "secret" });
   * const where = { port: server.addr.port, authkey: "secret" };
   * await using producer = await Manager.connect(where);
   * await using consumer = await Manager.connect(where);
   * const jobs = await producer.named("jobs", () => producer.queue<string>());
   * await jobs.put("job 1");
   * const same = await consumer.named("jobs", () => consumer.queue<string>());
   * assert.equal(await same.get(), "job 1");
   * ```
   *
   * @typeParam P The proxy's class.
   * @param name The name (1 to 1024 characters).
   * @param factory Makes the object if the name is free.
   * @returns The proxy of the object bound to `name`.
   * @throws {TypeError} If `name` is not a valid name, or `factory` does
   *   not give a proxy of this manager.
   */
  async named<P extends BaseProxy>(
    name: string,
    factory: () => P | Promise<P>,
  ): Promise<P> {
    this.#checkUp("name an object");
    checkName(name, "name an object");
    if (typeof factory !== "function") {
      throw new TypeError(
        `Cannot name an object ${
          describeValue(name)
        }: expected a factory function such as () => manager.queue(), received ${
          describeValue(factory)
        }`,
      );
    }
    const found = await this.#client.call(0, "lookup", [name]);
    if (found !== undefined) return found as P;
    const fresh = await factory();
    if (
      !(fresh instanceof BaseProxy) ||
      stateOf(fresh).client.serverId !== this.#client.serverId
    ) {
      throw new TypeError(
        `Cannot name an object ${
          describeValue(name)
        }: the factory must give a proxy of this manager (e.g. () => manager.queue()), it gave ${
          describeValue(fresh)
        }`,
      );
    }
    let bound: unknown;
    try {
      // `null`: ours got the name; else the proxy of the object that has it.
      bound = await this.#client.call(0, "name", [name, fresh]);
    } catch (e) {
      fresh.drop();
      throw e;
    }
    if (bound === null) return fresh;
    fresh.drop();
    return bound as P;
  }

  /**
   * The object bound to `name` (see {@linkcode Manager.named}).
   *
   * @example Usage
   * ```ts
   * import { Manager, type ValueProxy } from "@dmp/multiprocessing/server-process";
   * import { strict as assert } from "node:assert";
   *
   * await using manager = await Manager.start();
   * assert.equal(await manager.lookup("hits"), undefined);
   * await manager.named("hits", () => manager.value("i", 0));
   * const hits = await manager.lookup<ValueProxy<number>>("hits");
   * assert.equal(await hits!.add(1), 1);
   * ```
   *
   * @typeParam P The proxy's class.
   * @param name The name.
   * @returns Its proxy (of the bound object's class), or `undefined` if the
   *   name is not bound.
   */
  async lookup<P extends BaseProxy = BaseProxy>(
    name: string,
  ): Promise<P | undefined> {
    this.#checkUp("look up a name");
    checkName(name, "look up a name");
    return await this.#client.call(0, "lookup", [name]) as P | undefined;
  }

  /**
   * The names bound on the server, oldest first.
   *
   * @example Usage
   * ```ts
   * import { Manager } from "@dmp/multiprocessing/server-process";
   * import { strict as assert } from "node:assert";
   *
   * await using manager = await Manager.start();
   * await manager.named("jobs", () => manager.queue());
   * await manager.named("results", () => manager.dict());
   * assert.deepEqual(await manager.names(), ["jobs", "results"]);
   * ```
   *
   * @returns The names.
   */
  async names(): Promise<string[]> {
    this.#checkUp("list names");
    return await this.#client.call(0, "names", []) as string[];
  }

  /**
   * Unbinds `name`. The object lives on while proxies or containers refer
   * to it, and is freed when nothing does.
   *
   * @example Usage
   * ```ts
   * import { Manager } from "@dmp/multiprocessing/server-process";
   * import { strict as assert } from "node:assert";
   *
   * await using manager = await Manager.start();
   * const jobs = await manager.named("jobs", () => manager.queue());
   * assert.equal(await manager.unname("jobs"), true);
   * assert.equal(await manager.unname("jobs"), false);
   * assert.equal(await manager.lookup("jobs"), undefined);
   * jobs.drop();
   * ```
   *
   * @param name The name.
   * @returns Whether it was bound.
   */
  async unname(name: string): Promise<boolean> {
    this.#checkUp("unname");
    checkName(name, "unname");
    return await this.#client.call(0, "unname", [name]) as boolean;
  }

  #checkUp(what: string): void {
    if (this.#down) {
      throw new ClosedError(`Cannot ${what}: the manager is shut down`);
    }
  }

  /** Returns the server's live object and connection counts. */
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

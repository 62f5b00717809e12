/**
 * {@linkcode ManagerClient}: one connection to a manager server, bound to
 * the thread that made it. It numbers calls, encodes their arguments,
 * matches replies to them, revives errors, batches reference drops and
 * rejects everything pending when the connection is lost. How proxies are
 * recognised and made is handed in ({@linkcode ProxyBinding}), so this
 * layer knows no proxy class.
 *
 * @module
 */

import * as errors from "../_core/errors.ts";
import { ClosedError, reviveError } from "../_core/errors.ts";
import { checkTimeout, throwIfAborted } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { currentThreadId, isThreadAlive } from "../_core/runtime.ts";
import { CANCELLED, type LinkMemory, type RefTag } from "./protocol.ts";
import { decodeWire, encodeWire } from "./wire.ts";
import { connectSocket, linkTransport, socketTransport } from "./transports.ts";
import type { RemoteParams, Transport } from "./transports.ts";

/** The error classes a server's error replies are revived as. */
export const ERROR_CLASSES = {
  ClosedError,
  EmptyError: errors.EmptyError,
  FullError: errors.FullError,
  BrokenBarrierError: errors.BrokenBarrierError,
  AbandonedError: errors.AbandonedError,
  AuthenticationError: errors.AuthenticationError,
  WorkerCrashedError: errors.WorkerCrashedError,
};

/** How a client tells proxies in arguments and makes proxies of replies. */
export interface ProxyBinding {
  /**
   * The tag of `value` if it is a proxy (checked to belong to `client`'s
   * server), else `undefined`.
   */
  refOf(client: ManagerClient, value: object): RefTag | undefined;
  /** A live proxy for a reference the server sent. */
  make(client: ManagerClient, ref: RefTag): unknown;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  freeze: boolean;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  aborted: unknown;
}

/** Options of {@linkcode ManagerClient.call}. */
export interface CallOptions extends WaitOptions {
  /** Deep-freeze the result (values read from containers). */
  freeze?: boolean;
  /** Send the timeout to the server (a call that may wait). */
  waits?: boolean;
}

/** One connection to a manager server, bound to the thread that made it. */
export class ManagerClient {
  #transport!: Transport;
  readonly #proxies: ProxyBinding;
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

  /**
   * A client with no transport yet (the factories below attach one; a
   * bare one only stands in until a remote connection is made).
   */
  constructor(
    proxies: ProxyBinding,
    serverId: string,
    serverThread: number,
    remote?: RemoteParams,
  ) {
    this.#proxies = proxies;
    this.serverId = serverId;
    this.serverThread = serverThread;
    this.remote = remote;
  }

  /** A client of an embedded server, over a port and shared rings. */
  static local(
    proxies: ProxyBinding,
    port: MessagePort,
    mem: LinkMemory,
    bell: SharedArrayBuffer,
    serverId: string,
    serverThread: number,
  ): ManagerClient {
    const c = new ManagerClient(proxies, serverId, serverThread);
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

  /** Connects to a remote server (handshake included). */
  static async remoteClient(
    proxies: ProxyBinding,
    params: RemoteParams,
    timeout: number,
  ): Promise<ManagerClient> {
    const { socket, serverId } = await connectSocket(params, timeout);
    const c = new ManagerClient(proxies, serverId, 0, params);
    c.#transport = socketTransport(
      socket,
      socket,
      (m) => c.#onMessage(m),
      () => c.fail("the server closed the connection"),
    );
    return c;
  }

  /** Whether the connection is closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a message that needs no answer. */
  post(message: unknown, transfer?: Transferable[]): void {
    if (!this.#closed) this.#transport?.send(message, transfer);
  }

  /** Calls method `m` of object `o` (0: the server itself). */
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
      a = encodeWire(args, (v) => this.#proxies.refOf(this, v));
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
        }, ERROR_CLASSES),
      );
    }
    try {
      p.resolve(
        decodeWire(msg.r, (r) => this.#proxies.make(this, r), p.freeze),
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

  /** Gives back batched references, rejects what is pending and closes. */
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

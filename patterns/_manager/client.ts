/**
 * {@linkcode ManagerClient}: one connection to a manager server, bound to
 * the thread that made it. It numbers calls, encodes their arguments,
 * matches replies to them, revives errors, batches reference drops and
 * rejects everything pending when the connection is lost. How proxies are
 * recognised and made is handed in ({@linkcode ProxyBinding}), so this
 * layer knows no proxy class.
 *
 * Deadlines are the caller's: a call with a `timeout` or a `signal` settles
 * by its own timer or abort listener even when the server has stopped
 * answering. Such a call stays on the books until the server's answer comes
 * (a "late" reply), so that what the server granted meanwhile (a lock, a
 * permit, a queue item) is undone. A connection with calls in flight is
 * pinged; a ping left unanswered for too long ends the connection.
 *
 * @module
 */

import * as errors from "../_core/errors.ts";
import { ClosedError, reviveError, timeoutError } from "../_core/errors.ts";
import { checkTimeout, throwIfAborted, timerFor } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { currentThreadId, isThreadAlive } from "../_core/runtime.ts";
import type { LinkMemory, RefTag } from "./protocol.ts";
import type { Request } from "./protocol.ts";
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

/** The object a call goes to: the root (0) or an object's id. */
export type Target = Request[1];

/**
 * How long past its timeout a waiting call still gives the server to
 * answer (the round trip, and the server's own timer) before the client
 * settles it itself, in ms. The server, timing from the call's arrival,
 * normally answers first; the client's timer only decides when the server
 * is slow or gone. It also lets `timeout: 0` calls hear the server's
 * answer.
 */
export const CLIENT_GRACE_MS = 250;

/**
 * How long a closing client waits for the late replies that may carry a
 * grant to undo (an item handed out just before the close goes back
 * instead of being lost with the connection), in ms. A live server
 * answers within a round trip; a frozen one does not delay the close more.
 */
const LATE_DRAIN_MS = 1_000;

/**
 * How often a connection with calls in flight is pinged, and how long a
 * ping may stay unanswered (with nothing else heard from the server)
 * before the connection counts as dead, in ms.
 */
const ping = { interval: 5_000, deadline: 15_000 };

/**
 * Changes the ping's interval and deadline for every client (tests shorten
 * them); not part of the public API.
 *
 * @param times The new interval and deadline, in ms.
 * @returns The previous ones, to put back.
 */
export function setPingTimes(
  times: { interval: number; deadline: number },
): { interval: number; deadline: number } {
  const old = { ...ping };
  if (!(times.interval > 0) || !(times.deadline > 0)) {
    throw new RangeError(
      `Cannot set the ping times: both must be positive, received ${times.interval} and ${times.deadline}`,
    );
  }
  ping.interval = times.interval;
  ping.deadline = times.deadline;
  return old;
}

/** A reply that came after its call was settled on the client. */
export type LateReply =
  | { ok: true; value: unknown }
  | { ok: false; name: string };

/**
 * The call that gives a late grant back, on the same object: a method
 * and its arguments (`["release", []]`, `["putBack", [item]]`).
 */
export type UndoCall = [method: string, args: unknown[]];

interface Pending {
  /** The object the call went to (a late grant is given back to it). */
  target: Target;
  resolve(v: unknown): void;
  reject(e: unknown): void;
  freeze: boolean;
  /** The client's own deadline for the call. */
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** Settled on the client already: its reply, when it comes, is late. */
  gaveUp: boolean;
  undo: ((late: LateReply) => UndoCall | undefined) | undefined;
  onGiveUp: (() => void) | undefined;
}

/** Options of {@linkcode ManagerClient.call}. */
export interface CallOptions extends WaitOptions {
  /** Deep-freeze the result (values read from containers). */
  freeze?: boolean;
  /** Send the timeout to the server (a call that may wait). */
  waits?: boolean;
  /**
   * What the call gives when the client's own deadline passes before the
   * server answered: returns the value, or throws the error (default: a
   * `TimeoutError`).
   */
  expired?: () => unknown;
  /**
   * Undoes what the server granted after the client had settled the call
   * (by its timeout or signal): releases a late lock, puts a late item
   * back. Given the late reply (an error named `ManagerCallCancelled`
   * when the server dropped the call; one named `ClosedError` when the
   * connection closed before the reply came); returns the call that gives
   * the grant back to the same object, or nothing when nothing was granted.
   */
  undo?: (late: LateReply) => UndoCall | undefined;
  /** Called when the client settles the call itself (before it settles). */
  onGiveUp?: () => void;
}

/** One connection to a manager server, bound to the thread that made it. */
export class ManagerClient {
  #transport!: Transport;
  readonly #proxies: ProxyBinding;
  /** Calls waiting for their reply: live ones, late ones and the ping. */
  readonly #pending = new Map<number, Pending>();
  /** How many of `#pending` a caller still awaits (they hold the loop). */
  #live = 0;
  #nextId = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** The connection is dead (no late reply will come). */
  #dead = false;
  /** Wakes a closing client that waits for late replies. */
  #wakeDrain: (() => void) | undefined;
  #closeReason = "the manager was shut down";
  #decrefs: RefTag["id"][] = [];
  readonly #thread = currentThreadId();
  /** The next ping, or the deadline of the one in flight. */
  #pingTimer: ReturnType<typeof setTimeout> | undefined;
  /** The call id of the ping in flight (0: none). */
  #pingId = 0;
  /** When something last came from the server (`performance.now()`). */
  #heard = 0;
  /** Identifies the server (proxies of one server may be mixed). */
  readonly serverId: string;
  /** The server worker's thread id for an embedded server, else 0. */
  readonly serverThread: number;
  /** Where a remote server listens, for proxies shared with workers. */
  readonly remote: RemoteParams | undefined;
  /** Closes the clients revived for a task when it ends. */
  uses = 0;
  /** How many late grants this client undid (for tests). */
  undone = 0;

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
    o: Target,
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
    const waits = options.waits === true && timeout !== Infinity;
    const msg = waits
      ? [id, o, m, a, this.#thread, timeout]
      : [id, o, m, a, this.#thread];
    return new Promise((resolve, reject) => {
      const p: Pending = {
        target: o,
        resolve,
        reject,
        freeze: options.freeze === true,
        timer: undefined,
        signal: options.signal,
        onAbort: undefined,
        gaveUp: false,
        undo: options.undo,
        onGiveUp: options.onGiveUp,
      };
      if (options.signal) {
        const signal = options.signal;
        p.onAbort = () => this.#giveUp(id, p, () => reject(signal.reason));
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
      if (waits) {
        const expired = options.expired;
        p.timer = timerFor(timeout + CLIENT_GRACE_MS, () => {
          p.timer = undefined;
          this.#giveUp(id, p, () => {
            if (!expired) {
              return reject(timeoutError(`${m} timed out after ${timeout} ms`));
            }
            try {
              resolve(expired());
            } catch (e) {
              reject(e);
            }
          });
        });
      }
      this.#pending.set(id, p);
      if (++this.#live === 1) this.#transport.ref();
      this.#transport.send(msg);
      this.#kick?.();
      if (this.#pingTimer === undefined) this.#armPing();
    });
  }

  /**
   * Settles a call on the client (its timeout or signal came first): tells
   * the server to drop it and keeps it on the books for its late reply.
   */
  #giveUp(id: number, p: Pending, settle: () => void): void {
    if (p.gaveUp || this.#closed) return;
    p.gaveUp = true;
    this.#clearDeadline(p);
    if (--this.#live === 0) this.#transport.unref();
    this.post({ c: id });
    p.onGiveUp?.();
    settle();
  }

  #clearDeadline(p: Pending): void {
    if (p.timer !== undefined) clearTimeout(p.timer);
    p.timer = undefined;
    if (p.onAbort) p.signal!.removeEventListener("abort", p.onAbort);
    p.onAbort = undefined;
  }

  #onMessage(message: unknown): void {
    if (typeof message !== "object" || message === null) return;
    if (this.#pingId !== 0) this.#heard = performance.now();
    const ok = Array.isArray(message);
    const msg: Record<string, unknown> = ok
      ? { i: message[0], r: message[1] }
      : message as Record<string, unknown>;
    const id = msg.i;
    if (typeof id !== "number") return;
    if (id === this.#pingId && id !== 0) return this.#pinged();
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    if (p.gaveUp) {
      this.#late(p, ok, msg);
      this.#wakeDrain?.();
    } else {
      if (--this.#live === 0) this.#transport.unref();
      this.#clearDeadline(p);
      this.#settle(p, ok, msg);
    }
  }

  #settle(p: Pending, ok: boolean, msg: Record<string, unknown>): void {
    if (!ok) {
      const info = msg.e as { name?: unknown; message?: unknown };
      return p.reject(
        reviveError({
          name: String(info?.name),
          message: String(info?.message),
          stack: `${info?.name}: ${info?.message}\n    at the manager server`,
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

  /** The reply of a call settled on the client: undo what it granted. */
  #late(p: Pending, ok: boolean, msg: Record<string, unknown>): void {
    if (!p.undo) return;
    let late: LateReply;
    if (ok) {
      try {
        late = {
          ok: true,
          value: decodeWire(msg.r, (r) => this.#proxies.make(this, r)),
        };
      } catch (e) {
        // Nothing to give back that could be read; the hook still hears
        // that the answer came.
        late = { ok: false, name: (e as Error).name };
      }
    } else {
      late = { ok: false, name: String((msg.e as { name?: unknown })?.name) };
    }
    const back = p.undo(late);
    if (!back) return;
    this.undone++;
    // Straight through the connection: the proxy may have been dropped
    // meanwhile, and its reference is still the connection's.
    this.call(p.target, back[0], back[1]).catch(() => {});
  }

  /** Whether a call given up on may still bring a grant to undo. */
  #awaitsUndo(): boolean {
    for (const p of this.#pending.values()) {
      if (p.gaveUp && p.undo) return true;
    }
    return false;
  }

  // -- Liveness ---------------------------------------------------------------

  /**
   * Schedules the next ping. The timer stays armed while calls come and go
   * (one timer per interval, not one per call); when it fires with nothing
   * in flight, pinging stops until the next call.
   */
  #armPing(): void {
    this.#pingTimer = setTimeout(() => this.#sendPing(), ping.interval);
    Deno.unrefTimer(this.#pingTimer);
  }

  #sendPing(): void {
    this.#pingTimer = undefined;
    if (this.#closed || this.#pending.size === 0) return;
    const id = ++this.#nextId;
    this.#pingId = id;
    const sent = performance.now();
    this.#transport.send([id, 0, "ping", [], this.#thread]);
    this.#kick?.();
    const check = (wait: number) => {
      this.#pingTimer = setTimeout(() => {
        this.#pingTimer = undefined;
        if (this.#pending.size === 0) {
          // Nothing waits on the connection any more: no verdict needed.
          this.#pingId = 0;
          return;
        }
        const quiet = performance.now() - Math.max(sent, this.#heard);
        if (quiet < ping.deadline) return check(ping.deadline - quiet);
        this.fail(
          `the server did not answer a ping for ${ping.deadline} ms (it is frozen, or the network is down)`,
        );
      }, wait);
      Deno.unrefTimer(this.#pingTimer);
    };
    check(ping.deadline);
  }

  /** The ping's reply came: schedule the next one if calls are in flight. */
  #pinged(): void {
    this.#stopPing();
    if (this.#pending.size > 0) this.#armPing();
  }

  /** Stops pinging (the connection closes). */
  #stopPing(): void {
    this.#pingId = 0;
    if (this.#pingTimer !== undefined) clearTimeout(this.#pingTimer);
    this.#pingTimer = undefined;
  }

  // -- References and closing ---------------------------------------------------

  /** Gives a proxy's reference back (batched). */
  decref(id: RefTag["id"]): void {
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

  /** Rejects everything pending and closes at once (the link is dead). */
  fail(reason: string): void {
    if (this.#closed) return;
    this.#closeReason = reason;
    this.#dead = true;
    this.#wakeDrain?.();
    this.close().catch(() => {});
  }

  /**
   * Waits briefly for late replies that may need undoing, then gives back
   * batched references, rejects what is pending and closes; resolves once
   * the transport is closed (a second call waits for the same).
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const end = performance.now() + LATE_DRAIN_MS;
    while (!this.#dead && this.#awaitsUndo()) {
      const left = end - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        let timer: ReturnType<typeof setTimeout> | undefined = undefined;
        const wake = () => {
          clearTimeout(timer);
          this.#wakeDrain = undefined;
          resolve();
        };
        this.#wakeDrain = wake;
        timer = setTimeout(wake, left);
      });
    }
    this.#closed = true;
    this.#stopPing();
    const ids = this.#decrefs.splice(0);
    if (ids.length) this.#transport.send([0, 0, "decref", [ids], 0]);
    for (const [, p] of this.#pending) {
      this.#clearDeadline(p);
      if (p.gaveUp) {
        // No reply will come (the drain above waited for a live server):
        // whatever the server granted stays with the closed connection
        // (and no call could give it back now).
        p.undo?.({ ok: false, name: "ClosedError" });
        continue;
      }
      p.reject(new ClosedError(`Cannot finish the call: ${this.#closeReason}`));
    }
    this.#pending.clear();
    this.#live = 0;
    this.#transport.unref();
    await this.#transport.close();
  }
}

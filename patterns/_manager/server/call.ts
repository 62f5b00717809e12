/**
 * One call as the server handles it: the connection it came on
 * ({@linkcode Conn}), its context for a method handler
 * ({@linkcode ServerCall}), and the parked form it takes while it waits for
 * a lock, an item or an event ({@linkcode Waiter}), plus the shape every
 * managed object has ({@linkcode Managed}).
 *
 * @module
 */

import { timerFor } from "../../_core/deadline.ts";
import {
  CANCELLED,
  type MethodName,
  type ObjectId,
  type TypeId,
} from "../protocol.ts";

/** A call waiting in the server (for a lock, an item, an event…). */
export interface ParkedCall {
  /** Whether it was answered (or dropped). */
  readonly settled: boolean;
  /** The client aborted it: leave the queue and answer "cancelled". */
  cancel(): void;
  /** The client is gone: leave the queue, answer nothing. */
  drop(): void;
}

/** One client connection as the core sees it. */
export interface Conn {
  /** `"L"` for local (worker) clients, `"R<n>"` for each TCP client. */
  readonly ownerBase: string;
  /** The client thread's id for local clients (checked for liveness), else 0. */
  threadId: number;
  /** Sends a message to the client. */
  send(message: unknown): void;
  /** Closes the transport. */
  closeTransport(): void;
  /** References held by this connection, by object id. */
  readonly refs: Map<ObjectId, number>;
  /** Calls parked on the server, by call id. */
  readonly waiters: Map<number, ParkedCall>;
  /** Whether the connection is gone. */
  closed: boolean;
}

/** What managed objects and parked calls need from the server core. */
export interface ObjectHost {
  /** Counts the references inside a value that a container now holds. */
  hold(value: unknown): void;
  /** Releases the references inside a value a container let go of. */
  drop(value: unknown): void;
  /** Drops a value's references after the current reply was encoded. */
  dropLater(value: unknown): void;
  /** Sends a call's result. */
  reply(conn: Conn, id: number, value: unknown): void;
  /** Sends a call's error. */
  replyError(conn: Conn, id: number, error: unknown): void;
}

/** A call parked until something happens (a lock release, an item…). */
export class Waiter implements ParkedCall {
  settled = false;
  /** The pending timeout, if any. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Takes the waiter out of whatever queue holds it. */
  remove: () => void = () => {};
  /** What a timeout resolves or throws. */
  onTimeout: () => unknown = () => false;
  /** What a cancel does (default: remove and answer "cancelled"). */
  onCancel: (() => void) | undefined;

  /**
   * Parks a call.
   *
   * @param core The server that answers it.
   * @param conn The connection it came on.
   * @param callId Its id on that connection.
   * @param owner The calling thread (`<ownerBase>:<thread>`).
   */
  constructor(
    readonly core: ObjectHost,
    readonly conn: Conn,
    readonly callId: number,
    readonly owner: string,
  ) {}

  /** Answers the call with a result. */
  resolve(value: unknown): void {
    if (this.settled) return;
    this.#end();
    this.core.reply(this.conn, this.callId, value);
  }

  /** Answers the call with an error. */
  reject(error: unknown): void {
    if (this.settled) return;
    this.#end();
    this.core.replyError(this.conn, this.callId, error);
  }

  #end(): void {
    this.settled = true;
    this.clearTimer();
    this.conn.waiters.delete(this.callId);
  }

  /** Stops the timeout. */
  clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The timeout fired: leave the queue, answer what `onTimeout` gives. */
  expire(): void {
    this.timer = undefined;
    if (this.settled) return;
    this.remove();
    try {
      this.resolve(this.onTimeout());
    } catch (e) {
      this.reject(e);
    }
  }

  cancel(): void {
    if (this.settled) return;
    if (this.onCancel) return this.onCancel();
    this.remove();
    this.reject(cancelledError());
  }

  /** The client is gone: leave every queue, answer nothing. */
  drop(): void {
    if (this.settled) return;
    this.remove();
    this.#end();
  }
}

/** The error a cancelled call is answered with. */
export function cancelledError(): Error {
  const e = new Error("The call was cancelled");
  e.name = CANCELLED;
  return e;
}

/** What a handler returns when the call was parked (answered later). */
export const PENDING: unique symbol = Symbol("pending");

/** What a method handler gets besides its arguments. */
export class ServerCall {
  /**
   * Wraps one request.
   *
   * @param core The server.
   * @param conn The connection it came on.
   * @param id Its id (0: no answer wanted).
   * @param owner The calling thread (`<ownerBase>:<thread>`).
   * @param timeout How long it may wait, in ms.
   */
  constructor(
    readonly core: ObjectHost,
    readonly conn: Conn,
    readonly id: number,
    readonly owner: string,
    readonly timeout: number,
  ) {}

  /**
   * Parks the call: `enqueue` puts the waiter in a queue and returns how
   * to take it out; `onTimeout` gives the answer when time runs out (also
   * right away for `timeout: 0`).
   */
  wait(
    enqueue: (w: Waiter) => () => void,
    onTimeout: () => unknown,
  ): typeof PENDING | unknown {
    if (this.timeout <= 0 || this.id === 0) return onTimeout();
    const w = new Waiter(this.core, this.conn, this.id, this.owner);
    w.onTimeout = onTimeout;
    w.remove = enqueue(w);
    this.conn.waiters.set(this.id, w);
    w.timer = timerFor(this.timeout, () => w.expire());
    return PENDING;
  }
}

/** A method of a managed type: gets the call's context and arguments. */
export type Handler = (call: ServerCall, args: unknown[]) => unknown;

/** A managed object as the core sees it. */
export interface Managed {
  /** Its type: a built-in type id or a registered type's id. */
  readonly type: string;
  /** The methods a peer may call, by name. */
  readonly methods: ReadonlyMap<string, Handler>;
  /** The values it holds (their references are dropped when freed). */
  contents?(): Iterable<unknown>;
  /** A connection went away. */
  disconnected?(conn: Conn): void;
  /** It is being freed. */
  freed?(): void;
}

/**
 * A built-in type's method table. The type argument is required: the table
 * must hold exactly the methods `METHODS` (in `protocol.ts`) lists for the
 * type.
 */
export function methods<T extends TypeId>(
  table: Record<MethodName<T>, Handler>,
): ReadonlyMap<string, Handler> {
  return new Map(Object.entries(table));
}

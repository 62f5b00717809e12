/**
 * The out-of-band exchange that lets this package's shared objects (a
 * Lock, a Value, a Queue, a pipe end) travel inside a queue item or a pipe
 * message. A ring carries bytes, and a `SharedArrayBuffer` cannot be
 * written into bytes: the sender deposits the object's handle (which holds
 * the buffers) with the exchange under a fresh id and writes only the id
 * into the ring; the thread that reads the record withdraws the handle by
 * that id, once.
 *
 * The main thread keeps the deposits. Every worker has two ports to it (a
 * nested worker's are handed up by its spawner):
 *
 * - the **deposit** port carries deposits, and the ports of the workers it
 *   spawns. The main thread never listens on it: it drains it at once
 *   (`receiveMessageOnPort`) when it needs a deposit. A listener's pending
 *   receive would take a message off the port before the event loop hands
 *   it over, and a synchronous drain would then miss it; without one, a
 *   deposit posted before its record was written is always found.
 * - the **request** port carries withdrawals: the id, and a word to wake
 *   the worker on. The main thread listens there, drains the deposit ports
 *   and answers on the same port; the worker waits on its word, blocking,
 *   and takes the answer with `receiveMessageOnPort`.
 *
 * So the main thread never waits on itself, and a worker-to-worker hand-over
 * costs one turn of the main thread's event loop. A deposit is kept until it
 * is withdrawn: an item nobody reads keeps its objects' memory.
 *
 * @module
 */

import {
  MessageChannel,
  type MessagePort,
  receiveMessageOnPort,
} from "node:worker_threads";
import { perThread } from "./runtime.ts";

/** How long a withdrawal waits for the main thread to answer. */
const WITHDRAW_WAIT_MS = 60_000;

/** On a deposit port. */
type DepositMessage =
  | { d: string; v: unknown } // a deposit
  | { x: string } // a deposit whose record was never written
  | { a: MessagePort; b: MessagePort; k: string }; // a nested worker's ports

/** On a request port. */
type RequestMessage =
  | { w: string; s: Int32Array } // a withdrawal
  | { g: string } // the nested worker `g` has ended
  | { r: string; v: unknown; ok: boolean }; // the main thread's answer

/** Main thread: a worker's ports, and those of the workers it spawned. */
interface Adopted {
  deposit: MessagePort;
  request: MessagePort;
  children: Map<string, Adopted>;
}

/** A worker's two ports to the main thread. */
interface Up {
  deposit: MessagePort;
  request: MessagePort;
}

interface Want {
  port: MessagePort;
  signal: Int32Array;
}

interface ExchangeState {
  /** In a worker: its ports to the main thread. */
  up: Up | undefined;
  /** In the main thread: the deposits by id. */
  deposits: Map<string, unknown>;
  /** In the main thread: every worker's ports, by its deposit port. */
  ports: Map<MessagePort, Adopted>;
  /** The word this thread is woken on when its withdrawal is answered. */
  signal: Int32Array | undefined;
  counter: number;
  prefix: string;
}

let state: ExchangeState | undefined;

function exchange(): ExchangeState {
  return state ??= perThread("exchange", () => {
    const r = new Uint32Array(2);
    crypto.getRandomValues(r);
    return {
      up: undefined,
      deposits: new Map(),
      ports: new Map(),
      signal: undefined,
      counter: 0,
      prefix: `${r[0]!.toString(36)}${r[1]!.toString(36)}.`,
    };
  });
}

/** A new worker's exchange ports, made by {@linkcode childExchangePort}. */
export interface ChildExchange {
  /** Go to the new worker (in `workerData`, transferred). */
  ports: [deposit: MessagePort, request: MessagePort];
  /** Closes this side once the worker has ended. */
  close(): void;
}

/**
 * Makes the exchange ports of a worker about to be spawned by this thread.
 * Their other ends are adopted by the main thread (handed up when this
 * thread is a worker itself).
 *
 * @returns The ports for the child and how to close this side.
 */
export function childExchangePort(): ChildExchange {
  const ex = exchange();
  const dep = new MessageChannel(), req = new MessageChannel();
  const ports: [MessagePort, MessagePort] = [dep.port2, req.port2];
  let open = true;
  const up = ex.up;
  if (up) {
    const k = `${ex.prefix}w${(ex.counter++).toString(36)}`;
    up.deposit.postMessage(
      { a: dep.port1, b: req.port1, k } satisfies DepositMessage,
      [dep.port1, req.port1],
    );
    return {
      ports,
      close() {
        if (!open) return;
        open = false;
        // The main thread closes its side once it has taken the deposits.
        up.request.postMessage({ g: k } satisfies RequestMessage);
      },
    };
  }
  const adopted = adopt(dep.port1, req.port1);
  return {
    ports,
    close() {
      if (!open) return;
      open = false;
      release(adopted);
    },
  };
}

/**
 * Called once in a new worker with the ports its spawner made for it
 * ({@linkcode childExchangePort}).
 *
 * @param ports The worker's deposit and request ports.
 */
export function joinExchange(ports: [MessagePort, MessagePort]): void {
  exchange().up = { deposit: ports[0], request: ports[1] };
}

/** Main thread: starts serving a worker's ports. */
function adopt(deposit: MessagePort, request: MessagePort): Adopted {
  const adopted: Adopted = { deposit, request, children: new Map() };
  exchange().ports.set(deposit, adopted);
  request.on("message", (m: RequestMessage) => {
    if ("w" in m) {
      answer({ port: request, signal: m.s }, m.w);
    } else if ("g" in m) {
      // Its adoption may still wait on the spawner's deposit port.
      drainPort(adopted);
      const child = adopted.children.get(m.g);
      adopted.children.delete(m.g);
      if (child) release(child);
    }
  });
  // The exchange never keeps a program alive.
  (request as MessagePort & { unref?(): void }).unref?.();
  return adopted;
}

/**
 * Main thread: closes a worker's ports (and its children's) once it has
 * ended, keeping what it deposited.
 */
function release(adopted: Adopted): void {
  drainPort(adopted);
  for (const child of adopted.children.values()) release(child);
  adopted.children.clear();
  exchange().ports.delete(adopted.deposit);
  adopted.deposit.close();
  adopted.request.close();
}

/** Main thread: takes what one deposit port holds now. */
function drainPort(adopted: Adopted): boolean {
  const ex = exchange();
  let any = false;
  for (let got; (got = receiveMessageOnPort(adopted.deposit));) {
    any = true;
    const m = got.message as DepositMessage;
    if ("d" in m) ex.deposits.set(m.d, m.v);
    else if ("x" in m) ex.deposits.delete(m.x);
    else adopted.children.set(m.k, adopt(m.a, m.b));
  }
  return any;
}

/** Main thread: takes what every deposit port holds (until `id` is seen). */
function drainPorts(id: string): void {
  const ex = exchange();
  for (let progress = true; progress && !ex.deposits.has(id);) {
    progress = false;
    // A nested worker's ports arrive on its spawner's port: go round again.
    for (const a of [...ex.ports.values()]) progress = drainPort(a) || progress;
  }
}

/** Main thread: answers a worker's withdrawal. */
function answer(want: Want, id: string): void {
  const ex = exchange();
  if (!ex.deposits.has(id)) drainPorts(id);
  // An unknown id is answered too (with nothing): the worker must not wait
  // a minute for a deposit that cannot come.
  const found = ex.deposits.has(id);
  const v = ex.deposits.get(id);
  ex.deposits.delete(id);
  want.port.postMessage({ r: id, v, ok: found } satisfies RequestMessage);
  Atomics.store(want.signal, 0, 1);
  Atomics.notify(want.signal, 0);
}

/**
 * Keeps `value` (a handle tree holding shared buffers) under a new id.
 *
 * @param value What to keep; it is cloned to the main thread.
 * @returns The id to write into the record.
 */
export function deposit(value: unknown): string {
  const ex = exchange();
  const id = `${ex.prefix}${(ex.counter++).toString(36)}`;
  if (ex.up) {
    ex.up.deposit.postMessage({ d: id, v: value } satisfies DepositMessage);
  } else {
    ex.deposits.set(id, value);
  }
  return id;
}

/**
 * Drops a deposit whose record was never written (the put failed).
 *
 * @param id What {@linkcode deposit} returned.
 */
export function forget(id: string): void {
  const ex = exchange();
  if (ex.up) ex.up.deposit.postMessage({ x: id } satisfies DepositMessage);
  else ex.deposits.delete(id);
}

/**
 * Takes back what was deposited under `id` (once: the deposit is gone
 * afterwards). In a worker this waits, blocking the thread, for the main
 * thread's answer.
 *
 * @param id The id read from the record.
 * @returns The deposited value.
 * @throws {Error} If nothing was deposited under `id`, or the main thread
 *   does not answer within a minute (it is blocked).
 */
export function withdraw(id: string): unknown {
  const ex = exchange();
  if (!ex.up) {
    if (!ex.deposits.has(id)) drainPorts(id);
    if (!ex.deposits.has(id)) throw lost(id, "it was never deposited");
    const v = ex.deposits.get(id);
    ex.deposits.delete(id);
    return v;
  }
  const port = ex.up.request;
  const signal = ex.signal ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.store(signal, 0, 0);
  port.postMessage({ w: id, s: signal } satisfies RequestMessage);
  const end = Date.now() + WITHDRAW_WAIT_MS;
  for (;;) {
    const got = receiveMessageOnPort(port);
    if (got) {
      const m = got.message as { r: string; v: unknown; ok: boolean };
      // An answer to an earlier withdrawal that gave up is dropped.
      if (m.r !== id) continue;
      if (!m.ok) throw lost(id, "it was never deposited");
      return m.v;
    }
    const left = end - Date.now();
    if (left <= 0) {
      throw lost(
        id,
        `the main thread did not answer within ${
          WITHDRAW_WAIT_MS / 1000
        } s (is it blocked?)`,
      );
    }
    Atomics.wait(signal, 0, 0, Math.min(left, 50));
    Atomics.store(signal, 0, 0);
  }
}

function lost(id: string, why: string): Error {
  return new Error(
    `Cannot receive the shared object inside the message (exchange id ${id}): ${why}`,
  );
}

/**
 * How many deposits the main thread keeps (for tests).
 *
 * @returns The count.
 */
export function depositCount(): number {
  return exchange().deposits.size;
}

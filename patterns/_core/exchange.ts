/**
 * The out-of-band exchange that lets this package's shared objects (a
 * Lock, a Value, a Queue, a pipe end) travel inside a queue item or a pipe
 * message. A ring carries bytes, and a `SharedArrayBuffer` cannot be
 * written into bytes: the sender deposits the object's handle (which holds
 * the buffers) with the exchange under a fresh id and writes only the id
 * into the ring; the thread that reads the record withdraws the handle by
 * that id, once.
 *
 * The main thread keeps the deposits. Every worker has a port to it (a
 * nested worker's port is handed up by its spawner), posts its deposits
 * there, and asks for a withdrawal by posting the id with a word to be
 * woken on; the main thread answers from its port listener or, when it
 * reads a record itself, by draining the ports at once
 * (`receiveMessageOnPort`), so it never waits on itself. A deposit is kept
 * until it is withdrawn: an item nobody reads keeps its objects' memory.
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

type HubMessage =
  | { d: string; v: unknown } // deposit
  | { w: string; s: Int32Array } // want (withdraw)
  | { a: MessagePort } // adopt a nested worker's port
  | { r: string; v: unknown }; // reply to a want

interface Want {
  port: MessagePort;
  signal: Int32Array;
}

interface ExchangeState {
  /** In a worker: its port to the main thread. */
  up: MessagePort | undefined;
  /** In the main thread: the deposits by id. */
  deposits: Map<string, unknown>;
  /** In the main thread: withdrawals asked for before their deposit came. */
  wants: Map<string, Want>;
  /** In the main thread: every worker's port. */
  ports: Set<MessagePort>;
  /** The word this thread is woken on when its withdrawal is answered. */
  signal: Int32Array | undefined;
  /** A reply that came for another id while draining (kept for later). */
  replies: Map<string, unknown>;
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
      wants: new Map(),
      ports: new Set(),
      signal: undefined,
      replies: new Map(),
      counter: 0,
      prefix: `${r[0]!.toString(36)}${r[1]!.toString(36)}.`,
    };
  });
}

/** A new worker's exchange port, made by {@linkcode childExchangePort}. */
export interface ChildExchange {
  /** Goes to the new worker (in `workerData`, transferred). */
  port: MessagePort;
  /** Closes this side once the worker has ended. */
  close(): void;
}

/**
 * Makes the exchange port of a worker about to be spawned by this thread.
 * Its other end is adopted by the main thread (handed up when this thread
 * is a worker itself, and then closed by the main thread when the worker's
 * end goes away).
 *
 * @returns The port for the child and how to close this side.
 */
export function childExchangePort(): ChildExchange {
  const ex = exchange();
  const { port1, port2 } = new MessageChannel();
  if (ex.up) {
    ex.up.postMessage({ a: port1 } satisfies HubMessage, [port1]);
    return { port: port2, close() {} };
  }
  adopt(port1);
  let open = true;
  return {
    port: port2,
    close() {
      if (!open) return;
      open = false;
      // What the worker posted before it ended is still taken.
      for (let got; (got = receiveMessageOnPort(port1));) {
        onHubMessage(port1, got.message as HubMessage);
      }
      ex.ports.delete(port1);
      port1.close();
    },
  };
}

/**
 * Called once in a new worker with the port its spawner made for it
 * ({@linkcode childExchangePort}).
 *
 * @param port The worker's port to the main thread's exchange.
 */
export function joinExchange(port: MessagePort): void {
  exchange().up = port;
}

function adopt(port: MessagePort): void {
  const ex = exchange();
  ex.ports.add(port);
  port.on("message", (m: HubMessage) => onHubMessage(port, m));
  port.on("close", () => ex.ports.delete(port));
  // The exchange never keeps a program alive.
  (port as MessagePort & { unref?(): void }).unref?.();
}

/** Handles a worker's message in the main thread. */
function onHubMessage(port: MessagePort, m: HubMessage): void {
  const ex = exchange();
  if ("a" in m) {
    adopt(m.a);
  } else if ("d" in m) {
    const want = ex.wants.get(m.d);
    if (want) {
      ex.wants.delete(m.d);
      answer(want, m.d, m.v);
    } else {
      ex.deposits.set(m.d, m.v);
    }
  } else if ("w" in m) {
    const want = { port, signal: m.s };
    if (!ex.deposits.has(m.w)) drainPorts(m.w);
    if (ex.deposits.has(m.w)) {
      const v = ex.deposits.get(m.w);
      ex.deposits.delete(m.w);
      answer(want, m.w, v);
    } else {
      ex.wants.set(m.w, want);
    }
  }
}

function answer(want: Want, id: string, value: unknown): void {
  want.port.postMessage({ r: id, v: value } satisfies HubMessage);
  Atomics.store(want.signal, 0, 1);
  Atomics.notify(want.signal, 0);
}

/** Main thread: takes what the workers posted, now (until `id` is seen). */
function drainPorts(id: string): void {
  const ex = exchange();
  for (let progress = true; progress && !ex.deposits.has(id);) {
    progress = false;
    for (const port of [...ex.ports]) {
      for (let got; (got = receiveMessageOnPort(port));) {
        progress = true;
        onHubMessage(port, got.message as HubMessage);
      }
    }
  }
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
    ex.up.postMessage({ d: id, v: value } satisfies HubMessage);
  } else {
    const want = ex.wants.get(id);
    if (want) {
      ex.wants.delete(id);
      answer(want, id, value);
    } else {
      ex.deposits.set(id, value);
    }
  }
  return id;
}

/**
 * Takes back what was deposited under `id` (once: the deposit is gone
 * afterwards). In a worker this waits, blocking the thread, for the main
 * thread's answer.
 *
 * @param id The id read from the record.
 * @returns The deposited value.
 * @throws {Error} If the main thread does not answer within a minute (it
 *   is blocked, or the id was never deposited).
 */
export function withdraw(id: string): unknown {
  const ex = exchange();
  if (!ex.up) {
    if (!ex.deposits.has(id)) drainPorts(id);
    if (!ex.deposits.has(id)) throw lost(id);
    const v = ex.deposits.get(id);
    ex.deposits.delete(id);
    return v;
  }
  if (ex.replies.has(id)) {
    const v = ex.replies.get(id);
    ex.replies.delete(id);
    return v;
  }
  const signal = ex.signal ??= new Int32Array(new SharedArrayBuffer(4));
  Atomics.store(signal, 0, 0);
  ex.up.postMessage({ w: id, s: signal } satisfies HubMessage);
  const end = Date.now() + WITHDRAW_WAIT_MS;
  for (;;) {
    for (let got; (got = receiveMessageOnPort(ex.up));) {
      const m = got.message as HubMessage;
      if ("r" in m) {
        if (m.r === id) return m.v;
        ex.replies.set(m.r, m.v);
      }
    }
    const left = end - Date.now();
    if (left <= 0) throw lost(id);
    Atomics.wait(signal, 0, 0, Math.min(left, 50));
    Atomics.store(signal, 0, 0);
  }
}

function lost(id: string): Error {
  return new Error(
    `Cannot receive the shared object inside the message (exchange id ${id}): the main thread did not hand it over within ${
      WITHDRAW_WAIT_MS / 1000
    } s (is it blocked?)`,
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

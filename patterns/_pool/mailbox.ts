/**
 * A one-way, single-producer single-consumer mailbox in shared memory: how
 * a pool hands jobs to a worker and gets results back without a
 * `postMessage` (whose round trip between `node:worker_threads` threads is
 * 30–60 µs here). Records use the channel codec (`_shm/codec.ts`). A message
 * that does not fit, or carries transfers or shared handles, goes by
 * `postMessage` instead; both paths number their messages so the receiver
 * keeps their order.
 *
 * Waiting: the reader spins briefly (adaptively), may then poll from
 * `setImmediate` for a short while (the main thread, whose `waitAsync`
 * wake-up is slow), and then sleeps in `Atomics.waitAsync`, which does not
 * keep the event loop alive: the pool holds it while work is in flight.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { SpinPolicy } from "../_core/wait.ts";
import {
  decodePayload,
  encodeRecord,
  MAX_PAYLOAD,
  pendingLength,
  readPayload,
  storedSize,
  writePending,
} from "../_shm/codec.ts";

const HEAD = 0;
const TAIL = 1;
const USED = 2;
const SEQ = 3;
const SLEEPING = 4;
const CLOSED_FLAG = 5;
const HEADER_BYTES = 32;

/** What {@linkcode Mailbox.recv} returns once the mailbox is closed. */
export const CLOSED: unique symbol = Symbol("closed");
/** What {@linkcode Mailbox.tryRecv} returns when nothing is there. */
export const NOTHING: unique symbol = Symbol("nothing");

/** How a reader waits; see the module doc. */
export interface MailboxWait {
  /** The spin before polling or sleeping. */
  spin: SpinPolicy;
  /** How long to poll from `setImmediate` before sleeping, in ms (0: never). */
  pollMs: number;
  /**
   * Polls in a row that ended with nothing: after 2, polling is tried only
   * every 16th wait, as the spin policy probes (the reader's own state).
   */
  misses: number;
}

/** A one-way mailbox over a `SharedArrayBuffer`. */
export class Mailbox {
  readonly #c: Int32Array;
  readonly #data: Uint8Array;
  readonly #d32: Int32Array;
  readonly #cap: number;
  /** The mailbox's memory, to hand to the other thread. */
  readonly buffer: SharedArrayBuffer;

  /**
   * Allocates a mailbox's memory.
   *
   * @param capacity Data bytes (a multiple of 8).
   * @returns The buffer for {@linkcode Mailbox}'s constructor.
   */
  static allocate(capacity: number = 256 * 1024): SharedArrayBuffer {
    return new SharedArrayBuffer(HEADER_BYTES + capacity);
  }

  /**
   * Attaches to a mailbox's memory.
   *
   * @param buffer Memory from {@linkcode Mailbox.allocate}.
   */
  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#c = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.#cap = buffer.byteLength - HEADER_BYTES;
    this.#data = new Uint8Array(buffer, HEADER_BYTES, this.#cap);
    this.#d32 = new Int32Array(buffer, HEADER_BYTES, this.#cap / 4);
  }

  /** Whether the mailbox was closed. */
  get closed(): boolean {
    return Atomics.load(this.#c, CLOSED_FLAG) !== 0;
  }

  /**
   * Puts a message in, if it fits now (the producer side only).
   *
   * @param value A structured-clone value.
   * @returns `false` if it does not fit (now or ever), cannot be encoded or
   *   the mailbox is closed: send it another way.
   */
  trySend(value: unknown): boolean {
    const c = this.#c;
    if (c[CLOSED_FLAG] !== 0) return false;
    let size: number;
    try {
      size = encodeRecord(value, "send");
    } catch {
      return false;
    }
    if (pendingLength() > MAX_PAYLOAD) return false;
    if (Atomics.load(c, USED) + size > this.#cap) return false;
    const tail = c[TAIL]!;
    writePending(this.#data, this.#d32, tail, this.#cap);
    let next = tail + size;
    if (next >= this.#cap) next -= this.#cap;
    c[TAIL] = next;
    Atomics.add(c, USED, size);
    if (Atomics.load(c, SLEEPING) !== 0) {
      Atomics.add(c, SEQ, 1);
      Atomics.notify(c, SEQ);
    }
    return true;
  }

  /**
   * Takes the oldest message, if any (the consumer side only).
   *
   * @returns The message, or {@linkcode NOTHING}.
   */
  tryRecv(): unknown {
    const c = this.#c;
    if (Atomics.load(c, USED) === 0) return NOTHING;
    const head = c[HEAD]!;
    const hdr = this.#d32[head >> 2]!;
    const raw = readPayload(this.#data, this.#d32, hdr, head, this.#cap);
    const size = storedSize(hdr);
    let next = head + size;
    if (next >= this.#cap) next -= this.#cap;
    c[HEAD] = next;
    Atomics.sub(c, USED, size);
    return decodePayload(hdr, raw);
  }

  /**
   * Waits for the next message (the consumer side only); see the module doc.
   *
   * @param wait How to wait.
   * @param polling Whether polling may pay off now (e.g. work is in flight).
   * @returns The message, or {@linkcode CLOSED}.
   */
  async recv(wait: MailboxWait, polling: () => boolean): Promise<unknown> {
    const c = this.#c;
    let yielded = false;
    for (;;) {
      const v = this.tryRecv();
      if (v !== NOTHING) return v;
      if (c[CLOSED_FLAG] !== 0) return CLOSED;
      if (!yielded) {
        // Let what the last message set off run first (the caller's next
        // call, say), so the spin overlaps the other side's work.
        yielded = true;
        await new Promise((r) => setImmediate(r));
        continue;
      }
      if (wait.spin.spinWhile(c, USED, 0)) continue;
      if (
        wait.pollMs > 0 && polling() &&
        (wait.misses < 2 || (wait.misses++ & 15) === 0)
      ) {
        const end = performance.now() + wait.pollMs;
        while (Atomics.load(c, USED) === 0 && performance.now() < end) {
          await new Promise((r) => setImmediate(r));
          if (c[CLOSED_FLAG] !== 0) return CLOSED;
        }
        if (Atomics.load(c, USED) !== 0) {
          wait.misses = 0;
          continue;
        }
        if (wait.misses < 2) wait.misses++;
      }
      const seq = Atomics.load(c, SEQ);
      Atomics.store(c, SLEEPING, 1);
      if (Atomics.load(c, USED) === 0 && c[CLOSED_FLAG] === 0) {
        const r = Atomics.waitAsync(c, SEQ, seq);
        if (r.async) await r.value;
      }
      Atomics.store(c, SLEEPING, 0);
    }
  }

  /** Closes the mailbox: a waiting reader gets {@linkcode CLOSED}. */
  close(): void {
    Atomics.store(this.#c, CLOSED_FLAG, 1);
    Atomics.add(this.#c, SEQ, 1);
    Atomics.notify(this.#c, SEQ);
  }
}

/**
 * The receiver's side of the two paths: puts messages numbered `m` (1, 2,
 * ... by the sender) that came by the mailbox or by `postMessage` back in
 * the order they were sent.
 */
export class InOrder<T extends { m: number }> {
  #next = 1;
  readonly #early = new Map<number, T>();

  /**
   * Takes a message: hands it, and those that came early behind it, to
   * `take` in order; keeps it for later if one sent before it is missing.
   *
   * @param msg The message.
   * @param take Gets each message in order.
   * @returns Whether any message was handed over.
   */
  accept(msg: T, take: (msg: T) => void): boolean {
    if (msg.m !== this.#next) {
      this.#early.set(msg.m, msg);
      return false;
    }
    for (let next: T | undefined = msg; next;) {
      this.#early.delete(this.#next);
      take(next);
      next = this.#early.get(++this.#next);
    }
    return true;
  }
}

/**
 * The fast path between a local manager client and the embedded server: a
 * pair of single-producer, single-consumer rings of UTF-8 JSON records in a
 * `SharedArrayBuffer` (one per direction), with a `MessagePort` beside them
 * for what does not fit (big messages, `MessagePort`s to attach). A record
 * that went by the port leaves a marker in the ring, so the reader keeps
 * the order of everything one side sent. Waking is by `Atomics.notify` on
 * a sequence word, only when the reader said it sleeps; readers spin
 * briefly before they sleep.
 *
 * ```ts
 * import { MARKER, TextRing } from "./link.ts";
 * import { strict as assert } from "node:assert";
 *
 * const ring = new TextRing(TextRing.allocate(1024));
 * assert.ok(ring.write('{"a":1}'));
 * assert.ok(ring.writeMarker());
 * assert.equal(ring.read(), '{"a":1}');
 * assert.equal(ring.read(), MARKER);
 * assert.equal(ring.read(), undefined);
 * ```
 *
 * @module
 */

import type { SpinPolicy } from "../_core/wait.ts";
import type { LinkMemory } from "./protocol.ts";

export type { LinkMemory };

/** Control words: write position, read position, wake sequence, sleeping. */
const TAIL = 0;
const HEAD = 1;
/** Bumped after each write; the reader sleeps on it. */
export const SEQ = 2;
/** Set by the reader before it sleeps. */
export const SLEEPING = 3;
const CTRL_BYTES = 16;
const MARK = 0xffffffff;

/** What {@linkcode TextRing.read} returns for a record that went by the port. */
export const MARKER: unique symbol = Symbol("marker");

const encoder = new TextEncoder();
const decoder = new TextDecoder();
let scratch = new Uint8Array(4096);

/** One direction of a local connection. */
export class TextRing {
  /** The control words. */
  readonly ctrl: Int32Array;
  readonly #data: Uint8Array;
  readonly #cap: number;
  readonly #mask: number;
  readonly #u32: Uint32Array;

  /**
   * Allocates a ring's memory.
   *
   * @param capacity Data bytes, a power of two.
   * @returns The buffer.
   */
  static allocate(capacity: number): SharedArrayBuffer {
    return new SharedArrayBuffer(CTRL_BYTES + capacity);
  }

  /**
   * Attaches to a ring's memory.
   *
   * @param sab The buffer from {@linkcode TextRing.allocate}.
   * @param offset Where the ring starts in it.
   * @param length Its size in bytes (default: to the end).
   */
  constructor(sab: SharedArrayBuffer, offset = 0, length?: number) {
    const size = length ?? sab.byteLength - offset;
    this.ctrl = new Int32Array(sab, offset, 4);
    this.#cap = size - CTRL_BYTES;
    this.#mask = this.#cap - 1;
    this.#data = new Uint8Array(sab, offset + CTRL_BYTES, this.#cap);
    this.#u32 = new Uint32Array(sab, offset + CTRL_BYTES, this.#cap / 4);
  }

  /** The largest record that goes through the ring (bigger ones use the port). */
  get maxRecord(): number {
    return this.#cap / 2;
  }

  /** Whether a record is waiting. */
  hasData(): boolean {
    return Atomics.load(this.ctrl, TAIL) !== Atomics.load(this.ctrl, HEAD);
  }

  /**
   * Spins, as `policy` allows, until the writer adds data.
   *
   * @param policy The reader's spin policy.
   * @returns Whether there is data now.
   */
  spinForData(policy: SpinPolicy): boolean {
    return policy.spinWhile(this.ctrl, TAIL, Atomics.load(this.ctrl, HEAD));
  }

  #free(): number {
    const tail = Atomics.load(this.ctrl, TAIL) >>> 0;
    const head = Atomics.load(this.ctrl, HEAD) >>> 0;
    return this.#cap - ((tail - head) >>> 0);
  }

  #commit(tail: number, size: number): void {
    Atomics.store(this.ctrl, TAIL, (tail + size) | 0);
    Atomics.add(this.ctrl, SEQ, 1);
    if (Atomics.load(this.ctrl, SLEEPING) !== 0) Atomics.notify(this.ctrl, SEQ);
  }

  /**
   * Writes a record if it fits now.
   *
   * @param text The record.
   * @returns `false` when there is no room (or it is too big for the ring).
   */
  write(text: string): boolean {
    if (text.length * 3 > scratch.length) {
      scratch = new Uint8Array(Math.max(text.length * 3, scratch.length * 2));
    }
    const n = encoder.encodeInto(text, scratch).written;
    if (n > this.maxRecord) return false;
    const size = 4 + ((n + 3) & ~3);
    if (size > this.#free()) return false;
    const tail = Atomics.load(this.ctrl, TAIL) >>> 0;
    const at = tail & this.#mask;
    this.#u32[at >>> 2] = n;
    const start = (at + 4) & this.#mask;
    const first = Math.min(n, this.#cap - start);
    this.#data.set(scratch.subarray(0, first), start);
    if (first < n) this.#data.set(scratch.subarray(first, n), 0);
    this.#commit(tail, size);
    return true;
  }

  /**
   * Writes a marker: "the next message is on the port".
   *
   * @returns `false` when there is no room.
   */
  writeMarker(): boolean {
    if (this.#free() < 4) return false;
    const tail = Atomics.load(this.ctrl, TAIL) >>> 0;
    this.#u32[(tail & this.#mask) >>> 2] = MARK;
    this.#commit(tail, 4);
    return true;
  }

  /**
   * Reads the next record.
   *
   * @returns Its text, {@linkcode MARKER}, or `undefined` when empty.
   */
  read(): string | typeof MARKER | undefined {
    const head = Atomics.load(this.ctrl, HEAD) >>> 0;
    if (head === (Atomics.load(this.ctrl, TAIL) >>> 0)) return undefined;
    const at = head & this.#mask;
    const n = this.#u32[at >>> 2]!;
    if (n === MARK) {
      Atomics.store(this.ctrl, HEAD, (head + 4) | 0);
      return MARKER;
    }
    const start = (at + 4) & this.#mask;
    // Decoding straight from shared memory is slow in Deno (it copies
    // through a slower path); copy to a private buffer first.
    if (n > scratch.length) scratch = new Uint8Array(n * 2);
    if (n <= 256) {
      const data = this.#data, mask = this.#mask;
      for (let j = 0; j < n; j++) scratch[j] = data[(start + j) & mask]!;
    } else if (start + n <= this.#cap) {
      scratch.set(this.#data.subarray(start, start + n), 0);
    } else {
      const first = this.#cap - start;
      scratch.set(this.#data.subarray(start, this.#cap), 0);
      scratch.set(this.#data.subarray(0, n - first), first);
    }
    const text = decoder.decode(scratch.subarray(0, n));
    Atomics.store(this.ctrl, HEAD, (head + 4 + ((n + 3) & ~3)) | 0);
    return text;
  }
}

/**
 * Allocates a connection's two rings.
 *
 * @param capacity Data bytes per ring (a power of two).
 * @returns The memory.
 */
export function allocateLink(capacity = 32 * 1024): LinkMemory {
  const ringBytes = CTRL_BYTES + capacity;
  return { sab: new SharedArrayBuffer(2 * ringBytes), ringBytes };
}

/**
 * Opens one side of a connection's rings.
 *
 * @param mem The memory.
 * @param side `"client"` writes the first ring, `"server"` the second.
 * @returns The ring it reads and the ring it writes.
 */
export function openLink(
  mem: LinkMemory,
  side: "client" | "server",
): { in: TextRing; out: TextRing } {
  const a = new TextRing(mem.sab, 0, mem.ringBytes);
  const b = new TextRing(mem.sab, mem.ringBytes, mem.ringBytes);
  return side === "client" ? { out: a, in: b } : { out: b, in: a };
}

/**
 * One side of a local connection: sends through the ring when the message
 * fits, else through the port with a marker in the ring; reads the ring and
 * the port in the order the other side sent.
 *
 * @example Usage
 * ```ts
 * import { allocateLink, Link } from "./link.ts";
 * import { strict as assert } from "node:assert";
 *
 * const mem = allocateLink(1024);
 * const ch = new MessageChannel();
 * const got: unknown[] = [];
 * const a = new Link(mem, "client", ch.port1, () => {}, () => {});
 * const b = new Link(mem, "server", ch.port2, (m) => got.push(m), () => {});
 * a.send({ n: 1 });
 * b.service();
 * assert.deepEqual(got, [{ n: 1 }]);
 * a.close();
 * b.close();
 * ```
 */
export class Link {
  /** The ring this side reads. */
  readonly in: TextRing;
  /** The ring this side writes. */
  readonly out: TextRing;
  readonly #port: MessagePort;
  readonly #onMessage: (m: unknown) => void;
  readonly #onSent: () => void;
  #outbox: Array<string | typeof MARKER> = [];
  #inbox: unknown[] = [];
  #awaitPort = 0;
  #closed = false;

  /**
   * Opens one side.
   *
   * @param mem The rings' memory.
   * @param side Which side this is.
   * @param port This side's port.
   * @param onMessage Gets each message, in order.
   * @param onSent Called after each send (to wake the other side).
   */
  constructor(
    mem: LinkMemory,
    side: "client" | "server",
    port: MessagePort,
    onMessage: (m: unknown) => void,
    onSent: () => void,
  ) {
    const rings = openLink(mem, side);
    this.in = rings.in;
    this.out = rings.out;
    this.#port = port;
    this.#onMessage = onMessage;
    this.#onSent = onSent;
    port.onmessage = (e: MessageEvent) => {
      this.#inbox.push(e.data);
      this.service();
    };
  }

  /** The port (for ref/unref). */
  get port(): MessagePort {
    return this.#port;
  }

  /** Whether messages wait for room in the ring. */
  get backlog(): boolean {
    return this.#outbox.length > 0;
  }

  /**
   * Sends a message.
   *
   * @param message A JSON-compatible message, or anything structured-clonable
   *   when `transfer` is given.
   * @param transfer Transferables: the message goes by the port.
   */
  send(message: unknown, transfer?: Transferable[]): void {
    if (this.#closed) return;
    if (!transfer) {
      const text = JSON.stringify(message);
      if (this.#outbox.length === 0 && this.out.write(text)) {
        this.#onSent();
        return;
      }
      if (text.length * 3 <= this.out.maxRecord) {
        this.#outbox.push(text);
        this.#flush();
        return;
      }
    }
    this.#port.postMessage(message, transfer ?? []);
    this.#outbox.push(MARKER);
    this.#flush();
  }

  #flush(): boolean {
    let sent = false;
    while (this.#outbox.length > 0) {
      const next = this.#outbox[0]!;
      const ok = next === MARKER
        ? this.out.writeMarker()
        : this.out.write(next);
      if (!ok) break;
      this.#outbox.shift();
      sent = true;
    }
    if (sent) this.#onSent();
    return sent;
  }

  /**
   * Handles everything that arrived, in order.
   *
   * @returns Whether anything was handled or sent.
   */
  service(): boolean {
    let did = this.#outbox.length > 0 && this.#flush();
    while (!this.#closed) {
      if (this.#awaitPort > 0) {
        if (this.#inbox.length === 0) break;
        this.#awaitPort--;
        did = true;
        this.#onMessage(this.#inbox.shift());
        continue;
      }
      const r = this.in.read();
      if (r === undefined) break;
      did = true;
      if (r === MARKER) {
        this.#awaitPort++;
        continue;
      }
      let m: unknown;
      try {
        m = JSON.parse(r);
      } catch {
        continue;
      }
      this.#onMessage(m);
    }
    return did;
  }

  /** Closes the port. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#port.close();
  }
}

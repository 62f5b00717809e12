/**
 * `Pipe` and `Connection`: Python's `multiprocessing.Pipe`, a two-ended
 * channel between threads, on a ring buffer in shared memory.
 *
 * Python, the original:
 *
 * ```py
 * from multiprocessing import Pipe, Process
 *
 * def cube_sender(conn, x):
 *     conn.send(x ** 3)
 *     conn.close()
 *
 * def cube_receiver(conn):
 *     print(conn.recv())
 *
 * if __name__ == "__main__":
 *     parent_conn, child_conn = Pipe()
 *     p1 = Process(target=cube_sender, args=(parent_conn, 5))
 *     p2 = Process(target=cube_receiver, args=(child_conn,))
 *     p1.start(); p2.start(); p1.join(); p2.join()
 * ```
 *
 * Deno, this module (the ends work the same in the main thread and in
 * workers; passed to a `Process` or `Pool` task, an end is shared with it,
 * as a file descriptor is with a child process):
 *
 * ```ts
 * import { Pipe } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [a, b] = Pipe();
 * a.send(5 ** 3);
 * assert.equal(await b.recv(), 125);
 * b.send({ reply: "thanks" });
 * assert.deepEqual(await a.recv(), { reply: "thanks" });
 * a.close();
 * b.close();
 * ```
 *
 * How it works: each direction is a ring of records in a
 * `SharedArrayBuffer` (see `_shm/ring.ts`). Numbers and strings skip
 * structured-clone serialization; a round trip between two threads that wait
 * for each other costs microseconds, not a `postMessage`. A message larger
 * than the ring is streamed through it in pieces and arrives whole (a
 * 16 MiB `sendBytes` or a 100 MB string with the default capacity): a
 * reader never sees part of a message, messages never interleave, and a
 * message whose writer stopped midway is dropped whole.
 *
 * Between programs and machines, Python's `multiprocessing.connection`:
 *
 * ```py
 * from multiprocessing.connection import Listener, Client
 *
 * with Listener(("127.0.0.1", 6000), authkey=b"secret") as listener:
 *     with listener.accept() as conn:      # another program: Client(...)
 *         conn.send(conn.recv() ** 3)
 * ```
 *
 * Deno: `listen`, `connect` and `wait`, with the same `Connection` API
 * (`wire: "python"` talks to Python's own `Client` and `Listener`):
 *
 * ```ts
 * import { connect, listen } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * await using listener = await listen({ port: 0, authkey: "secret" });
 * const client = await connect({ port: listener.addr.port, authkey: "secret" });
 * const server = await listener.accept({ timeout: 10_000 });
 * client.send(5);
 * const n = await server.recv() as number;
 * server.send(n ** 3);
 * assert.equal(await client.recv(), 125);
 * client.close();
 * server.close();
 * ```
 *
 * @module
 */

import {
  encodeBytesRecord,
  type EncodedRecord,
  encodeRecord,
  failPut,
  restorePending,
  savePending,
  settleReceived,
  takeDeposit,
} from "./_shm/codec.ts";
import {
  checkCapacity,
  DRAINED,
  EMPTY,
  FULL,
  MISMATCH,
  OK,
  type RecordKind,
  RecordRing,
} from "./_shm/ring.ts";
import { getAsync, getSync, putStreamAsync, putSync } from "./_shm/wait.ts";
import { checkTimeout, throwIfAborted } from "./_core/deadline.ts";
import type { WaitOptions } from "./_core/deadline.ts";
import {
  ClosedError,
  describeValue,
  EOFError,
  timeoutError,
} from "./_core/errors.ts";
import { isMainModule, isWorkerThread } from "./_core/runtime.ts";
import { kShare, registerShareable } from "./_core/share.ts";
import type { Shareable, ShareContext, SharedHandle } from "./_core/share.ts";
import type { ConnectOptions } from "./_conn/connect.ts";
import type { Listener, ListenOptions } from "./_conn/listener.ts";
import type { Waitable } from "./_conn/wait.ts";

export { ClosedError, EOFError } from "./_core/errors.ts";
export { kShare } from "./_core/share.ts";
export type { Shareable, ShareContext, SharedHandle } from "./_core/share.ts";
export type { WaitOptions } from "./_core/deadline.ts";
export { AuthenticationError } from "./_core/errors.ts";
export type { ConnectOptions } from "./_conn/connect.ts";
export type { Listener, ListenOptions, Wire } from "./_conn/listener.ts";
export type { ProcessLike, Waitable } from "./_conn/wait.ts";

const PIPE_TYPE = "pipe.connection";
/** Bytes of each direction's ring. */
const PIPE_CAPACITY = 256 * 1024;

const OPEN = 0;
const CLOSED_HERE = 1;

/**
 * Options of {@linkcode Connection.poll}.
 *
 * @example Usage
 * ```ts
 * import { Pipe, type PollOptions } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [a, b] = Pipe();
 * const options: PollOptions = { signal: AbortSignal.abort() };
 * await assert.rejects(b.poll(1000, options), { name: "AbortError" });
 * a.close();
 * b.close();
 * ```
 */
export interface PollOptions {
  /** Aborting it rejects the wait with the signal's `reason`. */
  signal?: AbortSignal;
}

/**
 * Options of {@linkcode Pipe}.
 *
 * @example Usage
 * ```ts
 * import { Pipe, type PipeOptions } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const options: PipeOptions = { capacityBytes: 1024 };
 * const [a, b] = Pipe(true, options);
 * a.send("fits");
 * assert.equal(await b.recv(), "fits");
 * a.send("x".repeat(4096)); // larger than the ring: streamed in pieces
 * assert.equal(await b.recv(), "x".repeat(4096));
 * a.close();
 * b.close();
 * ```
 */
export interface PipeOptions {
  /**
   * Bytes each direction holds before a worker's `send` waits (and the main
   * thread's starts queueing): the memory of the ring, not a limit on a
   * message (a larger one is streamed through in pieces).
   *
   * @default {262144}
   */
  capacityBytes?: number;
}

/**
 * The shared memory of one end, as it travels into another thread.
 * Internal: make ends with {@linkcode Pipe}.
 *
 * @ignore
 */
export interface ConnectionInit {
  /** The ring this end reads from, or `null` for a send-only end. */
  rx: SharedArrayBuffer | null;
  /** The ring this end writes to, or `null` for a receive-only end. */
  tx: SharedArrayBuffer | null;
}

/**
 * One end of a {@linkcode Pipe}. Values are anything structured clone can
 * carry; `sendBytes`/`recvBytes` carry raw bytes.
 *
 * - `send` never blocks the main thread: when the pipe is full, the values
 *   wait in order in this thread and flow as the reader makes room (the
 *   program stays alive until they are delivered, or the reader closes its
 *   end). In a worker, `send` blocks until there is room, as Python's does.
 * - An end is **shared** when passed to a `Process` or `Pool` task, as a
 *   file descriptor is with a child: the sender's copy stays usable, the
 *   task's copy closes when the task or process ends, and the other end sees
 *   `EOFError` only once every copy is closed — Python's behaviour, including
 *   its idiom of closing the parent's copy after starting the child. An end
 *   with values still queued for room cannot be passed (`RangeError`).
 * - Concurrent use: every operation is guarded by a lock in shared memory,
 *   so several threads (or several `recv` calls pending at once) using one
 *   end each get a different message, and no message is ever torn or
 *   duplicated (unlike Python's pipe, which two processes reading one end
 *   can corrupt).
 * - `recv` after the other end closed and everything was read throws
 *   {@linkcode EOFError}; `send` after it closed throws `ClosedError`;
 *   anything on one's own closed end throws `ClosedError`.
 *
 * @example Usage
 * ```ts
 * import { EOFError, Pipe } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [a, b] = Pipe();
 * a.send("hello");
 * a.sendBytes(new Uint8Array([1, 2, 3]));
 * a.close();
 * assert.equal(await b.poll(), true);
 * assert.equal(await b.recv(), "hello");
 * assert.deepEqual(await b.recvBytes(), new Uint8Array([1, 2, 3]));
 * await assert.rejects(b.recv(), EOFError);
 * b.close();
 * ```
 */
export class Connection<T = unknown> implements Shareable, Disposable {
  readonly #rx: RecordRing | null;
  readonly #tx: RecordRing | null;
  #state = OPEN;
  #pending: EncodedRecord[] = [];
  #pendingHead = 0;
  #flushing = false;
  #closeAfterFlush = false;

  /**
   * Attaches to the shared memory of one end. Internal: use
   * {@linkcode Pipe}.
   *
   * @param init The end's rings.
   * @ignore
   */
  constructor(init: ConnectionInit) {
    this.#rx = init.rx ? new RecordRing(init.rx) : null;
    this.#tx = init.tx ? new RecordRing(init.tx) : null;
  }

  /**
   * Whether this copy of the end is closed (by `close()`).
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * a.close();
   * assert.equal(a.closed, true);
   * assert.equal(b.closed, false);
   * b.close();
   * ```
   *
   * @returns `true` once this copy is closed.
   */
  get closed(): boolean {
    return this.#state !== OPEN;
  }

  /** Whether this end can receive (`false` for the sending end of a one-way pipe). */
  get readable(): boolean {
    return this.#rx !== null;
  }

  /** Whether this end can send (`false` for the receiving end of a one-way pipe). */
  get writable(): boolean {
    return this.#tx !== null;
  }

  #gone(what: string): ClosedError {
    return new ClosedError(`Cannot ${what}: this end of the pipe is closed`);
  }

  #reader(what: string): RecordRing {
    if (this.#state !== OPEN) throw this.#gone(what);
    if (!this.#rx) {
      throw new TypeError(
        `Cannot ${what}: this end of a one-way pipe only sends`,
      );
    }
    return this.#rx;
  }

  #writer(what: string): RecordRing {
    if (this.#state !== OPEN) throw this.#gone(what);
    if (!this.#tx) {
      throw new TypeError(
        `Cannot ${what}: this end of a one-way pipe only receives`,
      );
    }
    if (this.#tx.readerClosed) {
      throw new ClosedError(`Cannot ${what}: the other end is closed`);
    }
    return this.#tx;
  }

  #checkOpen = (): void => {
    if (this.#state !== OPEN) throw this.#gone("recv");
  };

  /**
   * Sends a value to the other end. In the main thread it never blocks; in
   * a worker it waits for room when the pipe is full.
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * a.send([1, "two", { three: 3n }]);
   * assert.deepEqual(await b.recv(), [1, "two", { three: 3n }]);
   * a.close();
   * b.close();
   * ```
   *
   * @param value Anything structured clone can carry, of any size (one
   *   larger than the pipe's capacity is streamed through it in pieces).
   * @param options Where a send may wait (a worker's send into a full
   *   pipe): `timeout` (ms) and an already aborted `signal`. The main
   *   thread's send never waits and ignores them.
   * @throws {TypeError} If the value cannot be cloned (nothing is sent), or
   *   this is the receiving end of a one-way pipe.
   * @throws {RangeError} If the value encodes to more than 2^31 − 1 bytes.
   * @throws {ClosedError} If either end is closed.
   * @throws {DOMException} Named `TimeoutError` when a worker's send finds
   *   no room in time (a message cut off midway is dropped whole).
   */
  send(value: T, options?: WaitOptions): void {
    const tx = this.#writer("send");
    const timeout = options ? sendTimeout(options, "send") : Infinity;
    encodeRecord(value, "send");
    const deposited = takeDeposit();
    try {
      this.#write(tx, "send", timeout);
    } catch (e) {
      failPut(deposited, e);
    }
  }

  /**
   * Sends raw bytes (a copy is taken at once).
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * a.sendBytes(new TextEncoder().encode("raw"));
   * assert.equal(new TextDecoder().decode(await b.recvBytes()), "raw");
   * a.close();
   * b.close();
   * ```
   *
   * @param bytes A typed array, `DataView` or `ArrayBuffer`, of any size
   *   (more than the pipe's capacity is streamed through it in pieces).
   * @param options As for {@linkcode Connection.send}.
   * @throws {TypeError} If `bytes` is none of those, or this end only
   *   receives.
   * @throws {RangeError} If they are more than 2^31 − 1 bytes.
   * @throws {ClosedError} If either end is closed.
   * @throws {DOMException} Named `TimeoutError` when a worker's send finds
   *   no room in time.
   */
  sendBytes(
    bytes: ArrayBufferView | ArrayBufferLike,
    options?: WaitOptions,
  ): void {
    let view: Uint8Array;
    if (bytes instanceof Uint8Array) {
      view = bytes;
    } else if (ArrayBuffer.isView(bytes)) {
      view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } else if (
      bytes instanceof ArrayBuffer || bytes instanceof SharedArrayBuffer
    ) {
      view = new Uint8Array(bytes);
    } else {
      throw new TypeError(
        `Cannot sendBytes: expected a typed array, DataView or ArrayBuffer, received ${
          describeValue(bytes)
        }`,
      );
    }
    const tx = this.#writer("sendBytes");
    const timeout = options ? sendTimeout(options, "sendBytes") : Infinity;
    encodeBytesRecord(view, "sendBytes");
    this.#write(tx, "sendBytes", timeout);
  }

  #write(tx: RecordRing, what: string, timeout: number): void {
    if (this.#pendingHead < this.#pending.length) {
      this.#pending.push(savePending());
      return;
    }
    if (isWorkerThread()) {
      const r = putSync(tx, timeout);
      if (r === OK) return;
      if (r === FULL) {
        throw timeoutError(
          timeout === 0
            ? `${what} found no room in the pipe (timeout 0)`
            : `${what} timed out after ${timeout} ms`,
        );
      }
      throw new ClosedError(`Cannot ${what}: the other end is closed`);
    }
    const r = tx.tryPut(false);
    if (r === OK) return;
    if (r !== FULL) {
      throw new ClosedError(`Cannot ${what}: the other end is closed`);
    }
    this.#pending.push(savePending());
    if (!this.#flushing) this.#flush(tx);
  }

  async #flush(tx: RecordRing): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#pendingHead < this.#pending.length) {
        restorePending(this.#pending[this.#pendingHead]!);
        const stream = tx.needsStream();
        const r = stream
          ? await putStreamAsync(tx, Infinity, undefined, undefined, false)
          : tx.tryPut(true);
        if (r === OK) {
          this.#pending[this.#pendingHead++] = undefined as never;
          continue;
        }
        if (r !== FULL) break; // the reader closed: nobody will read them
        if (!stream) await tx.waitPut(Infinity, undefined);
      }
    } catch {
      // A wait cannot fail without a signal; drop the values if it does.
    } finally {
      this.#pending = [];
      this.#pendingHead = 0;
      this.#flushing = false;
      if (this.#closeAfterFlush) tx.closeWriter();
    }
  }

  /**
   * Receives the next value, waiting without blocking the event loop.
   * Bytes sent with `sendBytes` arrive as a `Uint8Array`.
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * await assert.rejects(b.recv({ timeout: 1 }), { name: "TimeoutError" });
   * a.send(1);
   * assert.equal(await b.recv({ timeout: 1000 }), 1);
   * a.close();
   * b.close();
   * ```
   *
   * @param options `timeout` (ms; `0` only tries) and `signal`.
   * @returns The value.
   * @throws {EOFError} If the other end is closed and everything was read.
   * @throws {ClosedError} If this end is closed.
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  recv(options: WaitOptions = {}): Promise<T> {
    return this.#recv(options, "any", "recv") as Promise<T>;
  }

  #recv(
    options: WaitOptions,
    kind: RecordKind,
    what: string,
  ): Promise<unknown> {
    let rx: RecordRing, timeout: number;
    try {
      rx = this.#reader(what);
      timeout = checkTimeout(options.timeout, what);
      if (!options.signal?.aborted) {
        // Fast path: something is there; no async machinery.
        const v = rx.tryGet(false, kind);
        if (v !== EMPTY || timeout <= 0) {
          return Promise.resolve(this.#received(v, what, timeout, false));
        }
      }
    } catch (e) {
      return Promise.reject(e);
    }
    return getAsync(rx, kind, timeout, options.signal, this.#checkOpen).then(
      (v) => this.#received(v, what, timeout, false),
    );
  }

  /**
   * Receives the next value, blocking the thread (for worker code).
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * a.send("x");
   * assert.equal(b.recvSync({ timeout: 0 }), "x");
   * a.close();
   * b.close();
   * ```
   *
   * @param options `timeout` (ms; `0` only tries); an already aborted
   *   `signal` throws its reason.
   * @returns The value.
   * @throws {EOFError} If the other end is closed and everything was read.
   * @throws {ClosedError} If this end is closed.
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  recvSync(options: WaitOptions = {}): T {
    const rx = this.#reader("recvSync");
    const timeout = checkTimeout(options.timeout, "recvSync");
    throwIfAborted(options.signal);
    const v = getSync(rx, "any", timeout, this.#checkOpen);
    return this.#received(v, "recvSync", timeout, true) as T;
  }

  /**
   * Receives the next message sent with `sendBytes`, waiting without
   * blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * a.sendBytes(new Uint8Array(1024));
   * assert.equal((await b.recvBytes()).length, 1024);
   * a.close();
   * b.close();
   * ```
   *
   * @param options `timeout` (ms; `0` only tries) and `signal`.
   * @returns The bytes.
   * @throws {TypeError} If the next message was sent with `send` (it is
   *   left in the pipe for `recv`).
   * @throws {EOFError} If the other end is closed and everything was read.
   * @throws {ClosedError} If this end is closed.
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  recvBytes(options: WaitOptions = {}): Promise<Uint8Array> {
    return this.#recv(options, "bytes", "recvBytes") as Promise<Uint8Array>;
  }

  /**
   * Receives the next message sent with `sendBytes`, blocking the thread.
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * a.sendBytes(new Uint8Array([7]));
   * assert.deepEqual(b.recvBytesSync(), new Uint8Array([7]));
   * a.close();
   * b.close();
   * ```
   *
   * @param options `timeout` (ms; `0` only tries); an already aborted
   *   `signal` throws its reason.
   * @returns The bytes.
   * @throws {TypeError} If the next message was sent with `send`.
   * @throws {EOFError} If the other end is closed and everything was read.
   * @throws {ClosedError} If this end is closed.
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  recvBytesSync(options: WaitOptions = {}): Uint8Array {
    const rx = this.#reader("recvBytesSync");
    const timeout = checkTimeout(options.timeout, "recvBytesSync");
    throwIfAborted(options.signal);
    const v = getSync(rx, "bytes", timeout, this.#checkOpen);
    return this.#received(v, "recvBytesSync", timeout, true) as Uint8Array;
  }

  #received(
    v: unknown,
    what: string,
    timeout: number,
    sync: boolean,
  ): unknown {
    if (v === EMPTY) {
      throw timeoutError(
        timeout === 0
          ? `${what} found nothing to read (timeout 0)`
          : `${what} timed out after ${timeout} ms`,
      );
    }
    if (v === DRAINED) {
      throw new EOFError(
        `Cannot ${what}: the other end is closed and everything it sent was read`,
      );
    }
    if (v === MISMATCH) {
      throw new TypeError(
        `Cannot ${what}: the next message was sent with send(), not sendBytes(); read it with recv()`,
      );
    }
    return settleReceived(v, what, sync);
  }

  /**
   * Whether there is something to read (or the other end closed, so `recv`
   * would not wait), waiting up to `timeout` ms for it.
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * assert.equal(await b.poll(), false);
   * a.send(1);
   * assert.equal(await b.poll(10), true);
   * a.close();
   * b.close();
   * ```
   *
   * @param timeout Milliseconds to wait (`Infinity` for ever).
   * @param options `signal` aborts the wait with its reason.
   * @returns `true` when `recv` would not wait.
   * @throws {ClosedError} If this end is closed.
   */
  async poll(timeout: number = 0, options: PollOptions = {}): Promise<boolean> {
    const rx = this.#reader("poll");
    const ms = checkTimeout(timeout, "poll");
    throwIfAborted(options.signal);
    if (rx.readable(false)) return true;
    if (ms <= 0) return false;
    const end = performance.now() + ms;
    for (;;) {
      if (rx.readable(true)) return true;
      await rx.waitGet(Math.max(0, end - performance.now()), options.signal);
      if (this.#state !== OPEN) throw this.#gone("poll");
      if (performance.now() >= end) return rx.readable(false);
    }
  }

  /**
   * Closes this end: the other end's `recv` gets {@linkcode EOFError} once it
   * read everything sent, its `send` gets {@linkcode ClosedError}. Values
   * sent from the main thread that still wait for room keep flowing. An end
   * passed to other threads closes with its last copy. Idempotent.
   *
   * @example Usage
   * ```ts
   * import { ClosedError, Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * b.close();
   * assert.throws(() => a.send(1), ClosedError);
   * a.close();
   * a.close();
   * ```
   */
  close(): void {
    if (this.#state !== OPEN) return;
    this.#state = CLOSED_HERE;
    // The end is shared like a file descriptor: its side of the pipe closes
    // with its last copy (the peer then sees EOFError once drained).
    if (this.#rx?.dropCopy("r")) this.#rx.closeReader();
    if (this.#tx?.dropCopy("w")) {
      if (this.#flushing) this.#closeAfterFlush = true;
      else this.#tx.closeWriter();
    }
  }

  /**
   * Closes this end (`using conn = …`).
   *
   * @example Usage
   * ```ts
   * import { Pipe } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const [a, b] = Pipe();
   * {
   *   using _a = a;
   * }
   * assert.equal(a.closed, true);
   * b.close();
   * ```
   */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Shares this end with another thread (used by `Process` and `Pool`), as
   * a file descriptor is shared with a child: both copies stay usable, and
   * the peer sees `EOFError` only once every copy of this end is closed (a
   * task's or process's copy closes when it ends).
   *
   * @ignore
   */
  [kShare](_ctx: ShareContext): SharedHandle {
    if (this.#state !== OPEN) throw this.#gone("pass the connection on");
    if (this.#flushing) {
      throw new RangeError(
        `Cannot pass the connection on: ${
          this.#pending.length - this.#pendingHead
        } value(s) sent from this thread still wait for room in the pipe`,
      );
    }
    this.#tx?.addCopy("w");
    this.#rx?.addCopy("r");
    const data: ConnectionInit = {
      rx: this.#rx?.buffer ?? null,
      tx: this.#tx?.buffer ?? null,
    };
    return { type: PIPE_TYPE, module: import.meta.url, data };
  }
}

/** Checks a send's options: its timeout (an aborted signal throws). */
function sendTimeout(options: WaitOptions, what: string): number {
  const timeout = checkTimeout(options.timeout, what);
  throwIfAborted(options.signal);
  return timeout;
}

registerShareable(PIPE_TYPE, (data, ctx) => {
  const conn = new Connection(data as ConnectionInit);
  ctx.onTaskEnd(() => conn.close());
  return conn;
});

/**
 * Makes a pipe: two connected ends. With `duplex` (the default) both ends
 * send and receive; otherwise the first end only receives and the second
 * only sends, as Python's `Pipe(duplex=False)`.
 *
 * @example Usage
 * ```ts
 * import { Pipe } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [reader, writer] = Pipe(false);
 * writer.send("one way");
 * assert.equal(await reader.recv(), "one way");
 * assert.throws(() => reader.send(1), TypeError);
 * reader.close();
 * writer.close();
 * ```
 *
 * @example Typed ends
 * ```ts
 * import { Pipe } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [a, b] = Pipe<{ cube: number }>();
 * a.send({ cube: 5 ** 3 }); // a.send("125") does not type-check
 * const { cube } = await b.recv(); // typed { cube: number }
 * assert.equal(cube, 125);
 * a.close();
 * b.close();
 * ```
 *
 * @typeParam T What the pipe carries (both ways).
 * @param duplex Whether both ends send and receive.
 * @param options The capacity of each direction.
 * @returns The two ends.
 * @throws {RangeError} If `capacityBytes` is not an integer from 64 to 2^30.
 */
export function Pipe<T = unknown>(
  duplex: boolean = true,
  options: PipeOptions = {},
): [Connection<T>, Connection<T>] {
  const cap = checkCapacity(options.capacityBytes, PIPE_CAPACITY, "Pipe");
  const ab = RecordRing.allocate(cap, 0);
  if (!duplex) {
    return [
      new Connection({ rx: ab, tx: null }),
      new Connection({ rx: null, tx: ab }),
    ];
  }
  const ba = RecordRing.allocate(cap, 0);
  return [
    new Connection({ rx: ba, tx: ab }),
    new Connection({ rx: ab, tx: ba }),
  ];
}

// -- Between programs: listen, connect, wait --------------------------------
// The socket code loads on first use: a program that only uses pipes never
// loads it, and the socket connection (a subclass of Connection) loads
// after this module.

/**
 * Listens for connections from other programs or machines, authenticated
 * both ways with `authkey`: Python's
 * `multiprocessing.connection.Listener`. `accept()` hands out only peers
 * that proved they know the key (others are dropped, and accepting goes
 * on); each is a {@linkcode Connection} with the pipe's API, whose
 * `recv` throws {@linkcode EOFError} once the peer is gone.
 *
 * With `wire: "python"` it speaks Python's own format, so a Python
 * program's `Client((host, port), authkey=b"...")` connects to it:
 * `sendBytes`/`recvBytes` carry raw bytes (`send_bytes`/`recv_bytes`) and
 * `send`/`recv` carry plain data as pickles — None ↔ `null`, bool ↔
 * `boolean`, int ↔ `number` (a `bigint` beyond safe integers), float →
 * `number`, str ↔ `string`, bytes ↔ `Uint8Array`, list ↔ `Array`, tuple →
 * `Array`, dict with str keys ↔ plain object, other dicts ↔ `Map`, set and
 * frozenset ↔ `Set`. A pickle that names a class or a function is refused
 * with a `TypeError`, and nothing in it is run.
 *
 * ```py
 * from multiprocessing.connection import Client
 *
 * with Client(("127.0.0.1", 6000), authkey=b"secret") as conn:
 *     conn.send({"job": [1, 2, 3]})
 *     print(conn.recv())
 * ```
 *
 * @example Usage
 * ```ts
 * import { connect, listen } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * await using listener = await listen({ port: 0, authkey: "secret" });
 * const [client, server] = await Promise.all([
 *   connect({ port: listener.addr.port, authkey: "secret" }),
 *   listener.accept(),
 * ]);
 * client.send({ job: [1, 2, 3] });
 * const { job } = await server.recv() as { job: number[] };
 * server.send(job.map((x) => x ** 3));
 * assert.deepEqual(await client.recv(), [1, 8, 27]);
 * client.close();
 * server.close();
 * ```
 *
 * @example Python's wire
 * ```ts
 * import { connect, listen } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * // What a Python Client sends and reads, here from both sides.
 * await using listener = await listen({
 *   port: 0,
 *   authkey: "secret",
 *   wire: "python",
 * });
 * const [client, server] = await Promise.all([
 *   connect({ port: listener.addr.port, authkey: "secret", wire: "python" }),
 *   listener.accept(),
 * ]);
 * client.send(new Map([[1, "one"]])); // a dict with an int key
 * assert.deepEqual(await server.recv(), new Map([[1, "one"]]));
 * client.close();
 * server.close();
 * ```
 *
 * @param options Where to listen (`port: 0` picks a free one), the
 *   authkey, `tls: { cert, key }` and the wire.
 * @returns The listener; it keeps the program alive until closed.
 * @throws {TypeError} If the authkey is not a non-empty string or
 *   `Uint8Array`, or `wire` is unknown.
 * @throws {RangeError} If the port is not an integer from 0 to 65535.
 */
export async function listen(options: ListenOptions): Promise<Listener> {
  return (await import("./_conn/listener.ts")).listen(options);
}

/**
 * Connects to a listener made with {@linkcode listen} (or, with `wire:
 * "python"`, to a Python `multiprocessing.connection.Listener`) and
 * authenticates both ways: Python's `multiprocessing.connection.Client`
 * (the module's doc shows the Python original).
 *
 * @example Usage
 * ```ts
 * import { AuthenticationError, connect, listen } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * await using listener = await listen({ port: 0, authkey: "secret" });
 * await assert.rejects(
 *   connect({ port: listener.addr.port, authkey: "wrong" }),
 *   AuthenticationError,
 * );
 * const client = await connect({ port: listener.addr.port, authkey: "secret" });
 * const server = await listener.accept();
 * server.sendBytes(new TextEncoder().encode("raw"));
 * assert.equal(new TextDecoder().decode(await client.recvBytes()), "raw");
 * client.close();
 * server.close();
 * ```
 *
 * @typeParam T What the connection carries.
 * @param options Where to connect, the authkey, `tls: { caCerts? }`,
 *   `timeout` (ms, for connecting and the handshake; default 10 s),
 *   `signal` and the wire.
 * @returns The connection.
 * @throws {AuthenticationError} If either side does not know the key, or
 *   the peer speaks another protocol.
 * @throws {DOMException} Named `TimeoutError` past the timeout.
 */
export async function connect<T = unknown>(
  options: ConnectOptions,
): Promise<Connection<T>> {
  return (await (await import("./_conn/connect.ts")).connect(
    options,
  )) as Connection<T>;
}

/**
 * Of some connections (pipe ends and socket connections) and processes,
 * the ones ready now, waiting up to `timeout` ms for at least one: a
 * connection whose `recv` would not wait (a message is there, or its peer
 * closed) and a `Process` that ended. Python's
 * `multiprocessing.connection.wait`.
 *
 * @example Usage
 * ```ts
 * import { Pipe, wait } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [a1, b1] = Pipe();
 * const [a2, b2] = Pipe();
 * assert.deepEqual(await wait([b1, b2], { timeout: 0 }), []);
 * a2.send("ready");
 * assert.deepEqual(await wait([b1, b2]), [b2]);
 * setTimeout(() => a1.send("later"), 10);
 * assert.deepEqual(await wait([b1], { timeout: 5000 }), [b1]);
 * for (const c of [a1, b1, a2, b2]) c.close();
 * ```
 *
 * @typeParam T The objects' type.
 * @param objects Connections and processes.
 * @param options `timeout` (ms; `0` only checks; none waits for ever) and
 *   `signal`.
 * @returns The ready ones, in the order given (empty at the timeout).
 * @throws {TypeError} If an object is neither, or a process was never
 *   started.
 * @throws {ClosedError} If a connection is closed.
 */
export async function wait<T extends Waitable>(
  objects: Iterable<T>,
  options: WaitOptions = {},
): Promise<T[]> {
  return (await import("./_conn/wait.ts")).waitReady(objects, options);
}

if (isMainModule(import.meta)) {
  (await import("./_demo.ts")).demoStart(
    "pipe",
    "Process 1 sends 5 ** 3 into one end of a pipe; process 2 receives it and prints 125.",
  );
  const { Process } = await import("./cube.ts");
  const [parentConn, childConn] = Pipe();
  const sender = new Process({
    name: "cube_sender",
    target: (conn: Connection, x: number) => {
      conn.send(x ** 3);
      conn.close();
    },
    args: [parentConn, 5],
  });
  const receiver = new Process({
    name: "cube_receiver",
    target: async (conn: Connection) => {
      console.log(await conn.recv());
    },
    args: [childConn],
  });
  sender.start();
  receiver.start();
  await sender.join();
  await receiver.join();
}

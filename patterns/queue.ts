/**
 * `Queue`, `SimpleQueue` and `JoinableQueue`: Python's
 * `multiprocessing` queues, many producers and many consumers in any
 * threads, on a ring buffer in shared memory.
 *
 * Python, the original:
 *
 * ```py
 * from multiprocessing import Process, Queue
 *
 * def cube(q, x):
 *     q.put(x ** 3)
 *
 * if __name__ == "__main__":
 *     q = Queue()
 *     procs = [Process(target=cube, args=(q, i)) for i in range(1, 11)]
 *     for p in procs: p.start()
 *     for p in procs: p.join()
 *     print(sorted(q.get() for _ in range(10)))
 * ```
 *
 * Deno, this module (a queue passed to a `Process` or `Pool` task is the
 * same queue there):
 *
 * ```ts
 * import { Queue } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const q = new Queue<number>({ maxsize: 10 });
 * for (let i = 1; i <= 3; i++) await q.put(i ** 3);
 * q.close();
 * const got: number[] = [];
 * for await (const x of q) got.push(x);
 * assert.deepEqual(got, [1, 8, 27]);
 * ```
 *
 * Every item is delivered exactly once, in order per producer. Items of any
 * size work: one larger than the ring (`capacityBytes`) is streamed through
 * it in pieces, and one consumer takes it whole. Numbers,
 * strings and plain JSON-shaped data skip structured-clone serialization;
 * anything else structured clone carries works too. Unlike Python's,
 * `close()` closes the queue for every holder: later puts fail with
 * {@linkcode ClosedError} and gets drain what is left, then fail with it.
 *
 * @module
 */

import {
  encodeRecord,
  failPut,
  settleReceived,
  takeDeposit,
} from "./_shm/codec.ts";
import {
  checkCapacity,
  CLOSED,
  DRAINED,
  EMPTY,
  OK,
  type PutResult,
  RecordRing,
} from "./_shm/ring.ts";
import { getAsync, getSync, putAsync, putSync } from "./_shm/wait.ts";
import { checkTimeout, throwIfAborted } from "./_core/deadline.ts";
import type { WaitOptions } from "./_core/deadline.ts";
import {
  ClosedError,
  describeValue,
  EmptyError,
  FullError,
} from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { kAttach, kShare, registerShareable } from "./_core/share.ts";
import type { Shareable, ShareContext, SharedHandle } from "./_core/share.ts";

export { ClosedError, EmptyError, FullError } from "./_core/errors.ts";
export { kShare } from "./_core/share.ts";
export type { Shareable, ShareContext, SharedHandle } from "./_core/share.ts";
export type { WaitOptions } from "./_core/deadline.ts";

const QUEUE_TYPE = "queue.queue";
/** Default bytes of a queue's ring. */
const QUEUE_CAPACITY = 1 << 20;

/**
 * Options of {@linkcode Queue} and {@linkcode JoinableQueue}.
 *
 * @example Usage
 * ```ts
 * import { FullError, Queue, type QueueOptions } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const options: QueueOptions = { maxsize: 2, capacityBytes: 4096 };
 * const q = new Queue<number>(options);
 * q.putNowait(1);
 * q.putNowait(2);
 * assert.throws(() => q.putNowait(3), FullError);
 * assert.equal(q.maxsize, 2);
 * q.close();
 * ```
 */
export interface QueueOptions {
  /**
   * The most items the queue holds; `put` waits while it is full. `0` or
   * less: no limit in items (as Python), only in bytes.
   *
   * @default {0}
   */
  maxsize?: number;
  /**
   * The bytes of shared memory that hold the items (each item takes a few
   * bytes more than its encoding). `put` waits while they are used up. It
   * bounds the ring's memory, not an item: a larger item is streamed
   * through the ring in pieces by `put` and `putSync` (one consumer takes
   * it whole); `putNowait` refuses it with `RangeError`.
   *
   * @default {1048576}
   */
  capacityBytes?: number;
}

/**
 * Options of {@linkcode SimpleQueue}.
 *
 * @example Usage
 * ```ts
 * import { SimpleQueue, type SimpleQueueOptions } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const options: SimpleQueueOptions = { capacityBytes: 1024 };
 * const q = new SimpleQueue<string>(options);
 * await q.put("fits");
 * assert.equal(await q.get(), "fits");
 * // Larger than the ring: streamed through it while a get takes it.
 * const [, big] = await Promise.all([q.put("x".repeat(4096)), q.get()]);
 * assert.equal(big, "x".repeat(4096));
 * q.close();
 * ```
 */
export interface SimpleQueueOptions {
  /**
   * The bytes of shared memory that hold the items (larger items are
   * streamed through them, as for {@linkcode QueueOptions.capacityBytes}).
   *
   * @default {1048576}
   */
  capacityBytes?: number;
}

type Kind = "queue" | "joinable" | "simple";

interface QueueData {
  kind: Kind;
  buffer: SharedArrayBuffer;
}

/** Reads a queue's ring (set once, by `Queue`'s static block). */
let ringOf: (q: Queue<unknown>) => RecordRing;

function checkMaxsize(value: unknown): number {
  if (value === undefined) return 0;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new TypeError(
      `Cannot create a queue: maxsize must be an integer, received ${
        describeValue(value)
      }`,
    );
  }
  if (value > 0x3fffffff) {
    throw new RangeError(
      `Cannot create a queue: maxsize must be at most ${0x3fffffff}, received ${value}`,
    );
  }
  return value;
}

function putError(r: PutResult, what: string, timeout: number): Error {
  if (r === CLOSED) {
    return new ClosedError(`Cannot ${what}: the queue is closed`);
  }
  return new FullError(
    timeout === 0
      ? `Cannot ${what}: the queue is full`
      : `Cannot ${what}: the queue is still full after ${timeout} ms`,
  );
}

function getError(
  v: typeof EMPTY | typeof DRAINED,
  what: string,
  timeout: number,
): Error {
  if (v === DRAINED) {
    return new ClosedError(`Cannot ${what}: the queue is closed and empty`);
  }
  return new EmptyError(
    timeout === 0
      ? `Cannot ${what}: the queue is empty`
      : `Cannot ${what}: the queue is still empty after ${timeout} ms`,
  );
}

/** The async put of every queue type: encodes, then waits for room. */
async function putItem(
  ring: RecordRing,
  item: unknown,
  options: WaitOptions,
): Promise<void> {
  const timeout = checkTimeout(options.timeout, "put");
  throwIfAborted(options.signal);
  encodeRecord(item, "put");
  const deposited = takeDeposit();
  const r = await putAsync(ring, timeout, options.signal).catch((e) =>
    failPut(deposited, e)
  );
  if (r !== OK) failPut(deposited, putError(r, "put", timeout));
}

function getResult(v: unknown, timeout: number): unknown {
  if (v === EMPTY || v === DRAINED) throw getError(v, "get", timeout);
  return settleReceived(v, "get", false);
}

function getPromise(ring: RecordRing, options: WaitOptions): Promise<unknown> {
  let timeout: number;
  try {
    timeout = checkTimeout(options.timeout, "get");
    if (!options.signal?.aborted) {
      // Fast path: an item is there; no async machinery.
      const v = ring.tryGet(false);
      if (v !== EMPTY || timeout <= 0) {
        return Promise.resolve(getResult(v, timeout));
      }
    }
  } catch (e) {
    return Promise.reject(e);
  }
  return getAsync(ring, "any", timeout, options.signal).then((v) =>
    getResult(v, timeout)
  );
}

/**
 * A FIFO queue shared by every thread it is passed to, as Python's
 * `multiprocessing.Queue`. Any number of producers and consumers, in the
 * main thread and in workers; every item is delivered exactly once, in order
 * per producer.
 *
 * The promise methods (`put`, `get`) never block the event loop; the `…Sync`
 * twins block the thread (for worker code); the `…Nowait` methods never
 * wait. A consumer worker that dies while it waits in `get` takes nothing
 * with it.
 *
 * @typeParam T The items' type.
 *
 * @example Usage
 * ```ts
 * import { EmptyError, Queue } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const q = new Queue<string>();
 * q.putNowait("a");
 * await q.put("b");
 * assert.equal(q.qsize(), 2);
 * assert.equal(await q.get(), "a");
 * assert.equal(q.getNowait(), "b");
 * await assert.rejects(q.get({ timeout: 1 }), EmptyError);
 * q.close();
 * ```
 */
export class Queue<T = unknown> implements AsyncIterable<T>, Shareable {
  readonly #ring: RecordRing;
  readonly #joinable: boolean;

  static {
    ringOf = (q) => q.#ring;
  }

  /**
   * Makes a queue.
   *
   * @param options `maxsize` and `capacityBytes`.
   * @throws {TypeError} If `maxsize` is not an integer.
   * @throws {RangeError} If `capacityBytes` is out of range.
   */
  constructor(options?: QueueOptions);
  /** @ignore */
  constructor(attach: typeof kAttach, buffer: SharedArrayBuffer);
  constructor(
    options: QueueOptions | typeof kAttach = {},
    buffer?: SharedArrayBuffer,
  ) {
    // A JoinableQueue's ring counts each item as unfinished in the commit
    // that makes it visible, so no consumer's taskDone() can come first.
    this.#joinable = this instanceof JoinableQueue;
    if (options === kAttach) {
      this.#ring = new RecordRing(buffer!, this.#joinable);
    } else {
      const maxsize = checkMaxsize(options.maxsize);
      const capacity = checkCapacity(
        options.capacityBytes,
        QUEUE_CAPACITY,
        "create a queue",
      );
      this.#ring = new RecordRing(
        RecordRing.allocate(capacity, maxsize),
        this.#joinable,
      );
    }
  }

  /**
   * The most items the queue holds (`0`: no limit in items).
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Queue({ maxsize: 3 }).maxsize, 3);
   * ```
   *
   * @returns The limit.
   */
  get maxsize(): number {
    return this.#ring.maxsize;
  }

  /**
   * Whether `close()` was called by any holder.
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue();
   * q.close();
   * assert.equal(q.closed, true);
   * ```
   *
   * @returns `true` once closed.
   */
  get closed(): boolean {
    return this.#ring.writerClosed;
  }

  /**
   * Puts an item, waiting without blocking the event loop while the queue is
   * full.
   *
   * @example Usage
   * ```ts
   * import { FullError, Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue({ maxsize: 1 });
   * await q.put(1);
   * await assert.rejects(q.put(2, { timeout: 1 }), FullError);
   * q.close();
   * ```
   *
   * @param item Anything structured clone can carry, of any size (one
   *   larger than `capacityBytes` is streamed through the ring).
   * @param options `timeout` (ms; `0` only tries) and `signal`; a put that
   *   times out or aborts while streaming leaves nothing in the queue.
   * @throws {TypeError} If the item cannot be cloned (the queue is
   *   unchanged).
   * @throws {RangeError} If the item encodes to more than 2^31 − 1 bytes.
   * @throws {FullError} If the timeout passes while the queue is full.
   * @throws {ClosedError} If the queue is closed.
   */
  put(item: T, options: WaitOptions = {}): Promise<void> {
    return putItem(this.#ring, item, options);
  }

  /**
   * Puts an item, blocking the thread while the queue is full (for worker
   * code).
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue();
   * q.putSync({ id: 1 });
   * assert.deepEqual(q.getSync(), { id: 1 });
   * q.close();
   * ```
   *
   * @param item Anything structured clone can carry, of any size.
   * @param options `timeout` (ms; `0` only tries); an already aborted
   *   `signal` throws its reason.
   * @throws {TypeError} If the item cannot be cloned.
   * @throws {RangeError} If the item encodes to more than 2^31 − 1 bytes.
   * @throws {FullError} If the timeout passes while the queue is full.
   * @throws {ClosedError} If the queue is closed.
   */
  putSync(item: T, options: WaitOptions = {}): void {
    const timeout = checkTimeout(options.timeout, "putSync");
    throwIfAborted(options.signal);
    encodeRecord(item, "putSync");
    const deposited = takeDeposit();
    let r: PutResult;
    try {
      r = putSync(this.#ring, timeout);
    } catch (e) {
      failPut(deposited, e);
    }
    if (r !== OK) failPut(deposited, putError(r, "putSync", timeout));
  }

  /**
   * Puts an item if there is room now.
   *
   * @example Usage
   * ```ts
   * import { FullError, Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue({ maxsize: 1 });
   * q.putNowait(1);
   * assert.throws(() => q.putNowait(2), FullError);
   * q.close();
   * ```
   *
   * @param item Anything structured clone can carry.
   * @throws {TypeError} If the item cannot be cloned.
   * @throws {RangeError} If the item is larger than `capacityBytes` (it
   *   can only be streamed, which waits: use `put` or `putSync`).
   * @throws {FullError} If the queue is full.
   * @throws {ClosedError} If the queue is closed.
   */
  putNowait(item: T): void {
    const ring = this.#ring;
    const size = encodeRecord(item, "putNowait");
    if (ring.needsStream()) {
      throw new RangeError(
        `Cannot putNowait: the item needs ${size} bytes, more than the queue's ${ring.capacity} (capacityBytes) hold at once; put() and putSync() stream it`,
      );
    }
    const deposited = takeDeposit();
    const r = ring.tryPut(false);
    if (r !== OK) failPut(deposited, putError(r, "putNowait", 0));
  }

  /**
   * Takes the oldest item, waiting without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { ClosedError, Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue<number>();
   * await q.put(7);
   * q.close();
   * assert.equal(await q.get(), 7);
   * await assert.rejects(q.get(), ClosedError);
   * ```
   *
   * @param options `timeout` (ms; `0` only tries) and `signal`.
   * @returns The item.
   * @throws {EmptyError} If the timeout passes while the queue is empty.
   * @throws {ClosedError} If the queue is closed and empty.
   */
  get(options: WaitOptions = {}): Promise<T> {
    return getPromise(this.#ring, options) as Promise<T>;
  }

  /**
   * Takes the oldest item, blocking the thread while the queue is empty
   * (for worker code).
   *
   * @example Usage
   * ```ts
   * import { EmptyError, Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue();
   * assert.throws(() => q.getSync({ timeout: 1 }), EmptyError);
   * q.close();
   * ```
   *
   * @param options `timeout` (ms; `0` only tries); an already aborted
   *   `signal` throws its reason.
   * @returns The item.
   * @throws {EmptyError} If the timeout passes while the queue is empty.
   * @throws {ClosedError} If the queue is closed and empty.
   */
  getSync(options: WaitOptions = {}): T {
    const timeout = checkTimeout(options.timeout, "getSync");
    throwIfAborted(options.signal);
    const v = getSync(this.#ring, "any", timeout);
    if (v === EMPTY || v === DRAINED) throw getError(v, "getSync", timeout);
    return settleReceived(v, "getSync", true) as T;
  }

  /**
   * Takes the oldest item if there is one now.
   *
   * @example Usage
   * ```ts
   * import { EmptyError, Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue();
   * assert.throws(() => q.getNowait(), EmptyError);
   * q.close();
   * ```
   *
   * @returns The item.
   * @throws {EmptyError} If the queue is empty.
   * @throws {ClosedError} If the queue is closed and empty.
   */
  getNowait(): T {
    const v = this.#ring.tryGet(false);
    if (v === EMPTY || v === DRAINED) throw getError(v, "getNowait", 0);
    return settleReceived(v, "getNowait", true) as T;
  }

  /**
   * How many items are in the queue now (others may change it at once).
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue();
   * q.putNowait("x");
   * assert.equal(q.qsize(), 1);
   * q.close();
   * ```
   *
   * @returns The count.
   */
  qsize(): number {
    return this.#ring.count;
  }

  /**
   * Whether the queue is empty now.
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Queue().empty(), true);
   * ```
   *
   * @returns `true` when it holds no item.
   */
  empty(): boolean {
    return this.#ring.count === 0;
  }

  /**
   * Whether the queue holds `maxsize` items now (always `false` without a
   * `maxsize`).
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue({ maxsize: 1 });
   * q.putNowait(1);
   * assert.equal(q.full(), true);
   * q.close();
   * ```
   *
   * @returns `true` when a put would wait for an item to leave.
   */
  full(): boolean {
    const max = this.#ring.maxsize;
    return max > 0 && this.#ring.count >= max;
  }

  /**
   * Closes the queue for every holder: puts fail with
   * {@linkcode ClosedError}, waiting puts and gets wake, gets drain the items
   * left and then fail with `ClosedError` (and `for await` ends).
   * Idempotent.
   *
   * @example Usage
   * ```ts
   * import { ClosedError, Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue();
   * q.close();
   * await assert.rejects(q.put(1), ClosedError);
   * ```
   */
  close(): void {
    if (!this.#ring.writerClosed) this.#ring.closeWriter();
  }

  /**
   * Yields the items as they come until the queue is closed and drained.
   *
   * @example Usage
   * ```ts
   * import { Queue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new Queue<number>();
   * q.putNowait(1);
   * q.putNowait(2);
   * q.close();
   * assert.deepEqual(await Array.fromAsync(q), [1, 2]);
   * ```
   *
   * @returns The iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      const v = await getAsync(this.#ring, "any", Infinity, undefined);
      if (v === DRAINED) return;
      yield (await settleReceived(v, "iterate", false)) as T;
    }
  }

  /**
   * Describes the queue for the trip into a worker (used by `Process` and
   * `Pool`); it arrives there as the same queue.
   *
   * @ignore
   */
  [kShare](_context?: ShareContext): SharedHandle {
    const data: QueueData = {
      kind: this.#joinable ? "joinable" : "queue",
      buffer: this.#ring.buffer,
    };
    return { type: QUEUE_TYPE, module: import.meta.url, data };
  }
}

/**
 * A {@linkcode Queue} that counts unfinished tasks, as Python's
 * `JoinableQueue`: every `put` adds one, every `taskDone()` removes one, and
 * `join()` waits until none is left.
 *
 * @typeParam T The items' type.
 *
 * @example Usage
 * ```ts
 * import { JoinableQueue } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const q = new JoinableQueue<string>();
 * await q.put("job");
 * assert.equal(await q.join({ timeout: 1 }), false);
 * await q.get();
 * q.taskDone();
 * assert.equal(await q.join(), true);
 * q.close();
 * ```
 */
export class JoinableQueue<T = unknown> extends Queue<T> {
  /**
   * Makes a joinable queue.
   *
   * @param options `maxsize` and `capacityBytes`.
   * @throws {TypeError} If `maxsize` is not an integer.
   * @throws {RangeError} If `capacityBytes` is out of range.
   */
  constructor(options?: QueueOptions);
  /** @ignore */
  constructor(attach: typeof kAttach, buffer: SharedArrayBuffer);
  constructor(
    options: QueueOptions | typeof kAttach = {},
    buffer?: SharedArrayBuffer,
  ) {
    // Queue's own constructor tells the two forms apart.
    super(options as typeof kAttach, buffer as SharedArrayBuffer);
  }
  /**
   * Marks one item taken with `get` as processed.
   *
   * @example Usage
   * ```ts
   * import { JoinableQueue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new JoinableQueue();
   * assert.throws(() => q.taskDone(), RangeError);
   * q.close();
   * ```
   *
   * @throws {RangeError} If called more times than items were put.
   */
  taskDone(): void {
    if (!ringOf(this).taskDone()) {
      throw new RangeError(
        "Cannot mark a task done: taskDone() was called more times than items were put",
      );
    }
  }

  /**
   * Waits, without blocking the event loop, until every item put was marked
   * done with `taskDone()`.
   *
   * @example Usage
   * ```ts
   * import { JoinableQueue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new JoinableQueue();
   * assert.equal(await q.join(), true);
   * q.close();
   * ```
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns `true` when all tasks are done, `false` on timeout.
   */
  async join(options: WaitOptions = {}): Promise<boolean> {
    const timeout = checkTimeout(options.timeout, "join");
    throwIfAborted(options.signal);
    return await ringOf(this).join(timeout, options.signal);
  }
}

/**
 * An unbounded queue with just `put`, `get`, `empty` and `close`, as
 * Python's `SimpleQueue`.
 *
 * @typeParam T The items' type.
 *
 * @example Usage
 * ```ts
 * import { SimpleQueue } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const q = new SimpleQueue<number>();
 * await q.put(1);
 * assert.equal(q.empty(), false);
 * assert.equal(await q.get(), 1);
 * q.close();
 * ```
 */
export class SimpleQueue<T = unknown> implements Shareable {
  readonly #ring: RecordRing;

  /**
   * Makes a simple queue.
   *
   * @param options `capacityBytes`.
   * @throws {RangeError} If `capacityBytes` is out of range.
   */
  constructor(options?: SimpleQueueOptions);
  /** @ignore */
  constructor(attach: typeof kAttach, buffer: SharedArrayBuffer);
  constructor(
    options: SimpleQueueOptions | typeof kAttach = {},
    buffer?: SharedArrayBuffer,
  ) {
    this.#ring = new RecordRing(
      options === kAttach ? buffer! : RecordRing.allocate(
        checkCapacity(options.capacityBytes, QUEUE_CAPACITY, "create a queue"),
        0,
      ),
    );
  }

  /**
   * Puts an item (waiting only while the queue's bytes are used up).
   *
   * @example Usage
   * ```ts
   * import { SimpleQueue } from "@dmp/multiprocessing/queue";
   *
   * const q = new SimpleQueue();
   * await q.put({ any: "value" });
   * q.close();
   * ```
   *
   * @param item Anything structured clone can carry, of any size.
   * @param options `timeout` (ms) and `signal`.
   * @throws {TypeError} If the item cannot be cloned.
   * @throws {RangeError} If the item encodes to more than 2^31 − 1 bytes.
   * @throws {FullError} If the timeout passes while there is no room.
   * @throws {ClosedError} If the queue is closed.
   */
  put(item: T, options: WaitOptions = {}): Promise<void> {
    return putItem(this.#ring, item, options);
  }

  /**
   * Takes the oldest item, waiting without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { SimpleQueue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * const q = new SimpleQueue<string>();
   * await q.put("x");
   * assert.equal(await q.get(), "x");
   * q.close();
   * ```
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The item.
   * @throws {EmptyError} If the timeout passes while the queue is empty.
   * @throws {ClosedError} If the queue is closed and empty.
   */
  get(options: WaitOptions = {}): Promise<T> {
    return getPromise(this.#ring, options) as Promise<T>;
  }

  /**
   * Whether the queue is empty now.
   *
   * @example Usage
   * ```ts
   * import { SimpleQueue } from "@dmp/multiprocessing/queue";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new SimpleQueue().empty(), true);
   * ```
   *
   * @returns `true` when it holds no item.
   */
  empty(): boolean {
    return this.#ring.count === 0;
  }

  /**
   * Closes the queue for every holder (see {@linkcode Queue.close}).
   *
   * @example Usage
   * ```ts
   * import { SimpleQueue } from "@dmp/multiprocessing/queue";
   *
   * new SimpleQueue().close();
   * ```
   */
  close(): void {
    if (!this.#ring.writerClosed) this.#ring.closeWriter();
  }

  /**
   * Describes the queue for the trip into a worker.
   *
   * @ignore
   */
  [kShare](_context?: ShareContext): SharedHandle {
    const data: QueueData = { kind: "simple", buffer: this.#ring.buffer };
    return { type: QUEUE_TYPE, module: import.meta.url, data };
  }
}

registerShareable(QUEUE_TYPE, (raw) => {
  const { kind, buffer } = raw as QueueData;
  switch (kind) {
    case "joinable":
      return new JoinableQueue(kAttach, buffer);
    case "simple":
      return new SimpleQueue(kAttach, buffer);
    default:
      return new Queue(kAttach, buffer);
  }
});

if (isMainModule(import.meta)) {
  (await import("./_demo.ts")).demoStart(
    "queue",
    "Ten processes put the cubes of 1..10 on a queue; each is read back and a process puts it plus one; prints both lists in ascending order.",
  );
  const { Process } = await import("./cube.ts");
  const runAll = async (
    target: (q: Queue<number>, x: number) => void,
    q: Queue<number>,
    xs: number[],
  ): Promise<void> => {
    const procs = xs.map((x) => new Process({ target, args: [q, x] }));
    for (const p of procs) p.start();
    for (const p of procs) await p.join();
  };
  const readAll = async (q: Queue<number>, n: number): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(await q.get());
    return out.sort((a, b) => a - b);
  };
  const q = new Queue<number>();
  await runAll((q, x) => q.putSync(x ** 3), q, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const initial = await readAll(q, 10);
  console.log("INITIAL VALUES");
  for (const v of initial) console.log(v);
  await runAll((q, x) => q.putSync(x + 1), q, initial);
  const final = await readAll(q, 10);
  console.log("FINAL VALUES");
  for (const v of final) console.log(v);
  q.close();
}

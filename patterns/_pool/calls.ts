/**
 * The calls on a pool (`map`, `starmap`, `apply`, `imap`,
 * `imapUnordered`): each is a source of jobs, taken in chunks from its
 * input, and a sink of their results. A {@linkcode PromiseCall} collects
 * results into an array; an {@linkcode IterCall} hands them to a
 * `for await` loop with a bounded window of items in flight.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { CALL_SPREAD, type CallMode } from "./protocol.ts";

/**
 * Options of the map-like calls of {@linkcode Pool}.
 *
 * @example Usage
 * ```ts
 * import { type MapOptions, Pool } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 2 });
 * const seen: number[] = [];
 * const options: MapOptions = { chunksize: 2, onProgress: (done) => seen.push(done) };
 * assert.deepEqual(await pool.map((x: number) => x * 2, [1, 2, 3, 4], options), [2, 4, 6, 8]);
 * assert.equal(seen.at(-1), 4);
 * ```
 */
export interface MapOptions {
  /**
   * Items per message to a worker. Default: automatic — chunks grow until
   * each takes about half a millisecond, and a known-length input is cut
   * into at least four chunks per worker.
   */
  chunksize?: number;
  /** Aborting it rejects the call (or ends the iteration) with its reason. */
  signal?: AbortSignal;
  /**
   * Called as items complete with the count done and, when the input's
   * length is known, the total.
   */
  onProgress?: (done: number, total: number | undefined) => void;
}

/**
 * Options of {@linkcode Pool.apply}.
 *
 * @example Usage
 * ```ts
 * import { type ApplyOptions, Pool } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 1 });
 * const options: ApplyOptions = { signal: AbortSignal.timeout(30_000) };
 * assert.equal(await pool.apply((a: number, b: number) => a + b, [2, 3], options), 5);
 * ```
 */
export interface ApplyOptions {
  /** Aborting it rejects the call with its reason. */
  signal?: AbortSignal;
}

/** Items per job at most when chunking automatically. */
const MAX_AUTO_CHUNK = 4096;
/** Items dispatched but not yet consumed, per lazy call, at most. */
const WINDOW = 65536;
/** The work an automatic chunk aims at, in ms. */
const CHUNK_MS = 0.5;
/** "No value ready" (`undefined` is a valid result). */
const NONE: unique symbol = Symbol("none");

/** What a call needs of its pool. */
export interface CallHost {
  /** The number of workers, which sizes automatic chunks. */
  readonly size: number;
  /** Asks the pool to dispatch (input became ready or window room freed). */
  pump(): void;
  /** Tells the pool the call ended (done, failed or closed). */
  callEnded(call: PoolCall): void;
}

/**
 * What every call is opened with, before its own last argument: the pool,
 * the task's id, how items are passed, the input and the options.
 */
type CallOpening = [
  pool: CallHost,
  fnId: number,
  mode: CallMode,
  items: Iterable<unknown> | AsyncIterable<unknown>,
  options: MapOptions,
];

/** One call on the pool: a source of jobs and a sink of results. */
export abstract class PoolCall {
  /** The task's id in the pool. */
  readonly fnId: number;
  /** How each item is passed to the task. */
  readonly mode: CallMode;
  /** The caller's `chunksize`, if given. */
  readonly fixedChunk: number | undefined;
  /** The input's length, when known (array, set, map). */
  readonly total: number | undefined;
  /** The largest automatic chunk. */
  readonly maxChunk: number;
  /** The caller's signal. */
  readonly signal: AbortSignal | undefined;
  /** The caller's progress callback. */
  readonly onProgress: MapOptions["onProgress"];
  /** The running average time per item, in ms (`-1` before the first). */
  avgItemMs: number = -1;
  /** Items taken from the input and given to jobs. */
  dispatched: number = 0;
  /** Items whose results came back. */
  completed: number = 0;
  /** Results the caller has taken. */
  consumed: number = 0;
  /** Whether the call ended (it then takes no more items). */
  done: boolean = false;
  /** Whether it waits for the consumer to free window room. */
  blocked: boolean = false;
  #iter: Iterator<unknown> | AsyncIterator<unknown> | undefined;
  #sync: boolean;
  #buffer: unknown[] = [];
  #pulling = false;
  #exhausted = false;
  #inputError: { error: unknown } | undefined;
  #onAbort: (() => void) | undefined;
  /** The pool the call runs on. */
  readonly pool: CallHost;

  /**
   * Checks the options and opens the input.
   *
   * @param pool The pool.
   * @param fnId The task's id.
   * @param mode How items are passed to the task.
   * @param items The input.
   * @param options `chunksize`, `signal`, `onProgress`.
   * @param lazy Whether the input may be endless (no up-front chunk cap).
   * @throws {RangeError} If `chunksize` is not a positive integer.
   * @throws {TypeError} If `items` is not iterable.
   */
  constructor(
    pool: CallHost,
    fnId: number,
    mode: CallMode,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions,
    lazy: boolean,
  ) {
    this.pool = pool;
    this.fnId = fnId;
    this.mode = mode;
    this.signal = options.signal;
    this.onProgress = options.onProgress;
    const chunk = options.chunksize;
    if (chunk !== undefined) {
      if (!Number.isSafeInteger(chunk) || chunk < 1) {
        throw new RangeError(
          `Cannot map: chunksize must be a positive integer, received ${
            describeValue(chunk)
          }`,
        );
      }
    }
    this.fixedChunk = chunk;
    if (
      items === null || typeof items !== "object" && typeof items !== "string"
    ) {
      throw new TypeError(
        `Cannot map: items must be an iterable or async iterable, received ${
          describeValue(items)
        }`,
      );
    }
    if (Array.isArray(items)) this.total = items.length;
    else if (items instanceof Set || items instanceof Map) {
      this.total = items.size;
    }
    const workers = pool.size;
    this.maxChunk = this.total !== undefined && !lazy
      ? Math.max(
        1,
        Math.min(MAX_AUTO_CHUNK, Math.ceil(this.total / (workers * 4))),
      )
      : MAX_AUTO_CHUNK;
    if (Symbol.asyncIterator in (items as object)) {
      this.#iter = (items as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      this.#sync = false;
    } else if (Symbol.iterator in (items as object)) {
      this.#iter = (items as Iterable<unknown>)[Symbol.iterator]();
      this.#sync = true;
    } else {
      throw new TypeError(
        `Cannot map: items must be an iterable or async iterable, received ${
          describeValue(items)
        }`,
      );
    }
    if (this.signal) {
      this.#onAbort = () => this.fail(this.signal!.reason);
      this.signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  /** Whether every item was taken from the input and dispatched. */
  get drained(): boolean {
    return this.#exhausted && this.#buffer.length === 0;
  }

  #chunkSize(): number {
    if (this.fixedChunk !== undefined) return this.fixedChunk;
    if (this.avgItemMs < 0) return 1;
    const want = Math.floor(CHUNK_MS / Math.max(this.avgItemMs, 1e-5));
    return Math.max(1, Math.min(this.maxChunk, want));
  }

  /**
   * Whether {@linkcode PoolCall.take} may have items to give now.
   *
   * @returns `false` when the input is spent, waits, or the window is full.
   */
  hasWork(): boolean {
    if (this.done || WINDOW - (this.dispatched - this.consumed) <= 0) {
      return false;
    }
    return this.#buffer.length > 0 || (this.#sync && !this.#exhausted);
  }

  /** Takes the next chunk of items, or `undefined` when none is ready. */
  take(): unknown[] | undefined {
    if (this.done) return undefined;
    const room = WINDOW - (this.dispatched - this.consumed);
    if (room <= 0) {
      this.blocked = true;
      return undefined;
    }
    const size = Math.min(this.#chunkSize(), room);
    if (this.#sync) {
      if (this.#exhausted) {
        this.#checkEnd();
        return undefined;
      }
      const it = this.#iter as Iterator<unknown>;
      const chunk: unknown[] = [];
      try {
        while (chunk.length < size) {
          const r = it.next();
          if (r.done) {
            this.#exhausted = true;
            break;
          }
          chunk.push(r.value);
        }
      } catch (e) {
        this.#exhausted = true;
        this.#inputError = { error: e };
      }
      if (chunk.length === 0) {
        this.#checkEnd();
        return undefined;
      }
      return chunk;
    }
    if (!this.#exhausted && !this.#pulling && this.#buffer.length < size) {
      void this.#pull(size);
    }
    if (this.#buffer.length === 0) {
      this.#checkEnd();
      return undefined;
    }
    if (this.#pulling && this.#buffer.length < size) return undefined;
    return this.#buffer.length <= size
      ? this.#buffer.splice(0)
      : this.#buffer.splice(0, size);
  }

  async #pull(size: number): Promise<void> {
    this.#pulling = true;
    const it = this.#iter as AsyncIterator<unknown>;
    try {
      while (!this.done && this.#buffer.length < size) {
        const r = await it.next();
        if (r.done) {
          this.#exhausted = true;
          break;
        }
        this.#buffer.push(r.value);
      }
    } catch (e) {
      this.#exhausted = true;
      this.#inputError = { error: e };
    } finally {
      this.#pulling = false;
    }
    this.pool.pump();
    this.#checkEnd();
  }

  /** Ends the call when everything is dispatched, completed and consumed. */
  #checkEnd(): void {
    if (this.done || !this.drained || this.#pulling) return;
    if (this.completed < this.dispatched) return;
    if (this.#inputError) {
      this.inputFailed(this.#inputError.error);
      return;
    }
    this.finish();
  }

  /** Called by the pool with a job's values. */
  deliver(start: number, values: unknown[], ms: number): void {
    const n = values.length;
    const per = ms / Math.max(1, n);
    this.avgItemMs = this.avgItemMs < 0
      ? per
      : this.avgItemMs * 0.7 + per * 0.3;
    if (this.done) return;
    this.completed += n;
    this.accept(start, values);
    this.onProgress?.(this.completed, this.total);
    this.#checkEnd();
  }

  /** Stops taking items and releases the input and the signal listener. */
  close(): void {
    if (this.done) return;
    this.done = true;
    if (this.#onAbort) this.signal!.removeEventListener("abort", this.#onAbort);
    this.#buffer = [];
    if (!this.#exhausted) {
      this.#exhausted = true;
      try {
        const r = this.#iter?.return?.();
        if (r && typeof (r as Promise<unknown>).catch === "function") {
          (r as Promise<unknown>).catch(() => {});
        }
      } catch {
        // Closing the input is best effort.
      }
    }
    this.pool.callEnded(this);
  }

  /** Delivers values to the caller. */
  abstract accept(start: number, values: unknown[]): void;
  /** Ends the call successfully. */
  abstract finish(): void;
  /** Ends the call with a task's error. */
  abstract fail(error: unknown): void;
  /** Ends the call with the input's own error, after earlier items. */
  abstract inputFailed(error: unknown): void;

  /** Called when a consumer took values, freeing window room. */
  consumedSome(n: number): void {
    this.consumed += n;
    if (
      this.blocked && WINDOW - (this.dispatched - this.consumed) >= WINDOW / 4
    ) {
      this.blocked = false;
      this.pool.pump();
    }
  }
}

/** A call whose results are collected into an array (`map`, `starmap`). */
export class PromiseCall extends PoolCall {
  /** The results, by input index. */
  readonly results: unknown[] = [];
  /** Resolves to `results` or rejects with the call's error. */
  readonly promise: Promise<unknown[]>;
  #resolve!: (v: unknown[]) => void;
  #reject!: (e: unknown) => void;

  /** Opens the input; the results come through `promise`. */
  constructor(...opening: CallOpening) {
    super(...opening, false);
    this.promise = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  /** Stores values at their input indices. */
  accept(start: number, values: unknown[]): void {
    for (let i = 0; i < values.length; i++) this.results[start + i] = values[i];
    this.consumed += values.length;
  }

  /** Resolves `promise` with the results. */
  finish(): void {
    this.close();
    this.#resolve(this.results);
  }

  /** Rejects `promise` with `error`. */
  fail(error: unknown): void {
    if (this.done) return;
    this.close();
    this.#reject(error);
  }

  /** Rejects `promise` with the input's error. */
  inputFailed(error: unknown): void {
    this.fail(error);
  }
}

/** A lazy call, iterated with `for await` (`imap`, `imapUnordered`). */
export class IterCall extends PoolCall
  implements AsyncIterableIterator<unknown> {
  readonly #ordered: boolean;
  readonly #ready = new Map<number, unknown>();
  readonly #fifo: unknown[] = [];
  #fifoHead = 0;
  #next = 0;
  #end: { error: unknown } | { error?: undefined; ok: true } | undefined;
  #waiter: (() => void) | undefined;

  /** Opens the input; `ordered` keeps the input's order. */
  constructor(
    ...[pool, fnId, mode, items, options, ordered]: [
      ...CallOpening,
      ordered: boolean,
    ]
  ) {
    super(pool, fnId, mode, items, options, true);
    this.#ordered = ordered;
  }

  /** Queues values for `next()` and wakes a waiting one. */
  accept(start: number, values: unknown[]): void {
    if (this.#ordered) {
      for (let i = 0; i < values.length; i++) {
        this.#ready.set(start + i, values[i]);
      }
    } else {
      for (const v of values) this.#fifo.push(v);
    }
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** Ends the iteration after the values already queued. */
  finish(): void {
    this.#end ??= { ok: true };
    this.close();
    this.#wake();
  }

  /** Ends the iteration with `error`, thrown by a `next()`. */
  fail(error: unknown): void {
    if (this.done) return;
    // A task's error ends the iteration where it happened: for ordered
    // iteration, after the results before it.
    this.#end = { error };
    this.close();
    this.#wake();
  }

  /** Ends the iteration with the input's error. */
  inputFailed(error: unknown): void {
    this.fail(error);
  }

  /** Takes the next value, or returns `NONE`. */
  #take(): unknown {
    if (this.#ordered) {
      const ready = this.#ready;
      if (ready.has(this.#next)) {
        const value = ready.get(this.#next);
        ready.delete(this.#next++);
        return value;
      }
      return NONE;
    }
    const fifo = this.#fifo;
    if (this.#fifoHead < fifo.length) {
      const value = fifo[this.#fifoHead];
      fifo[this.#fifoHead++] = undefined;
      if (this.#fifoHead > 4096 && this.#fifoHead * 2 > fifo.length) {
        fifo.splice(0, this.#fifoHead);
        this.#fifoHead = 0;
      }
      return value;
    }
    return NONE;
  }

  /**
   * Takes the next result, waiting for one if none is ready.
   *
   * @returns The result, or done once the call ended.
   */
  next(): Promise<IteratorResult<unknown>> {
    const value = this.#take();
    if (value !== NONE) {
      this.consumedSome(1);
      return Promise.resolve({ value, done: false });
    }
    return this.#nextSlow();
  }

  async #nextSlow(): Promise<IteratorResult<unknown>> {
    for (;;) {
      const value = this.#take();
      if (value !== NONE) {
        this.consumedSome(1);
        return { value, done: false };
      }
      if (this.#end) {
        if (this.#end.error !== undefined) {
          const e = this.#end.error;
          this.#end = { ok: true };
          throw e;
        }
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => this.#waiter = resolve);
    }
  }

  /**
   * Stops the iteration (`break` out of `for await`): no more items are
   * taken and the results not yet taken are dropped.
   *
   * @returns Done.
   */
  return(): Promise<IteratorResult<unknown>> {
    this.#end = { ok: true };
    this.#ready.clear();
    this.#fifo.length = 0;
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /**
   * The call is its own iterator.
   *
   * @returns This call.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<unknown> {
    return this;
  }
}

/** A one-task call (`apply`): its errors carry no item index. */
export class ApplyCall extends PromiseCall {
  /** Opens the one argument list. */
  constructor(
    pool: CallHost,
    fnId: number,
    argLists: unknown[][],
    options: ApplyOptions,
  ) {
    super(pool, fnId, CALL_SPREAD, argLists, options);
  }
}

/**
 * An iterator whose first `next()` rejects with `error`, then is done.
 *
 * @param error The error.
 * @returns The iterator.
 */
export function failedIterator(error: unknown): AsyncIterableIterator<unknown> {
  let thrown = false;
  const it: AsyncIterableIterator<unknown> = {
    next() {
      if (thrown) return Promise.resolve({ value: undefined, done: true });
      thrown = true;
      return Promise.reject(error);
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}

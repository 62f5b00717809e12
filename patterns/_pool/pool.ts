/**
 * `Pool`: a pool of workers running tasks in parallel, as Python's
 * `multiprocessing.Pool`. This file checks the options and holds the public
 * calls; `slots.ts` dispatches their jobs to the workers.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { throwIfAborted, withDeadline } from "../_core/deadline.ts";
import { ApplyCall, failedIterator, IterCall, PromiseCall } from "./calls.ts";
import type { ApplyOptions, MapOptions } from "./calls.ts";
import { argList, checkMemoryLimit, type JoinOptions } from "./process.ts";
import { CALL_ITEM, CALL_SPREAD } from "./protocol.ts";
import type { CallMode, TaskDef } from "./protocol.ts";
import { Dispatcher, type PoolStats } from "./slots.ts";
import { BrokerDispatcher } from "../_broker/dispatcher.ts";
import { brokerDispatcher } from "../_broker/options.ts";
import {
  type ArgOf,
  type ArgsOf,
  checkModule,
  encodeArgs,
  type ResultOf,
  taskDef,
  type TaskFunction,
  type TaskName,
} from "./task.ts";

/**
 * Returns the number of CPU cores available to Deno, as Python's
 * `os.cpu_count()`; the default size of a {@linkcode Pool}.
 *
 * @example Usage
 * ```ts
 * import { cpuCount } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(cpuCount() >= 1);
 * ```
 *
 * @returns The number of logical cores, at least 1.
 */
export function cpuCount(): number {
  return Math.max(1, navigator.hardwareConcurrency || 1);
}

/**
 * Options of {@linkcode Pool}.
 *
 * @typeParam M The type of `module`, e.g. `typeof import("./tasks.ts")`.
 *
 * @example Usage
 * ```ts
 * import { Pool, type PoolOptions } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const options: PoolOptions = {
 *   workers: 2,
 *   maxTasksPerWorker: 100,
 *   initializer: (f: number) => {
 *     (globalThis as { factor?: number }).factor = f;
 *   },
 *   initArgs: [10],
 *   taskTimeout: 5_000,
 * };
 * await using pool = new Pool(options);
 * assert.equal(
 *   await pool.apply((x: number) => x * (globalThis as { factor?: number }).factor!, [4]),
 *   40,
 * );
 * ```
 *
 * @example Usage
 * ```ts
 * import { type MapOptions, Pool } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 2 });
 * let done = 0;
 * const options: MapOptions = {
 *   chunksize: 10,
 *   signal: AbortSignal.timeout(10_000),
 *   onProgress: (n) => done = n,
 * };
 * await pool.map((x: number) => x, Array.from({ length: 100 }, (_, i) => i), options);
 * assert.equal(done, 100);
 * ```
 *
 * @example Usage
 * ```ts
 * import { type ApplyOptions, Pool } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 1 });
 * const options: ApplyOptions = { signal: AbortSignal.abort(new Error("cancelled")) };
 * await assert.rejects(pool.apply(() => 1, [], options), /cancelled/);
 * ```
 *
 * @example A pool on Redis
 * ```ts
 * import { Pool } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * // Its tasks go through Redis to `deno task worker` processes; it
 * // connects on its first call.
 * await using pool = new Pool({ broker: "redis://127.0.0.1:6379", queue: "images" });
 * // Tasks are export names: a function's source is not sent over a network.
 * await assert.rejects(pool.map((x: number) => x, [1]), TypeError);
 * ```
 */
export interface PoolOptions<M = Record<string, never>> {
  /** How many workers; defaults to {@linkcode cpuCount}. */
  workers?: number;
  /** The module whose exports tasks may name (an absolute URL). */
  module?: string | URL;
  /**
   * Replace a worker after it has run this many tasks (chunks), as Python's
   * `maxtasksperchild`. Default: never.
   */
  maxTasksPerWorker?: number;
  /** Runs once in each worker before its first task. */
  initializer?: TaskFunction | TaskName<M>;
  /** The arguments of `initializer`. */
  initArgs?: readonly unknown[];
  /**
   * A task (one item) running longer than this many ms fails with a
   * `TimeoutError`; its worker is stopped (even when busy in a synchronous
   * loop: it no longer holds the program, though Deno 2.9.6 leaves a thread
   * that never yields spinning until the program ends) and replaced.
   */
  taskTimeout?: number;
  /**
   * Each worker's heap cap in MB. A task that takes its worker over it
   * fails with a `WorkerCrashedError` naming the limit; the worker is
   * replaced and the pool goes on. Default: the heap limit V8 gives the main
   * thread, so one task's runaway allocation cannot end the program. It
   * caps the JS heap only: `ArrayBuffer` memory is not counted.
   */
  memoryLimitMb?: number;
  /**
   * A Redis URL (`redis://user:password@host:port/db`, or `rediss://` for
   * TLS): the pool's tasks then go through Redis and are run by worker
   * processes on any machine (`deno task worker`, `runWorker` from
   * "@dmp/multiprocessing/worker"). Tasks are export names of the workers'
   * module only; `workers`, `module`, `initializer`, `initArgs`,
   * `maxTasksPerWorker` and `memoryLimitMb` belong to the workers and are
   * refused here. The Redis client is loaded only when this is given.
   */
  broker?: string | URL;
  /**
   * With `broker`: the queue's name (letters, digits, `_ . : -`), shared
   * by the pool and the workers that serve it. Default: `"default"`.
   */
  queue?: string;
}

let poolCounter = 0;

/**
 * A pool of workers running tasks in parallel, as Python's
 * `multiprocessing.Pool`.
 *
 * Results keep the input's order (`map`, `imap`, `starmap`) or come as
 * they finish (`imapUnordered`). A task that throws rejects its call with a
 * {@linkcode RemoteError} and the pool stays usable; a worker that dies
 * (`WorkerCrashedError`) or a task past `taskTimeout` (`TimeoutError`) fails
 * only the task it was running — the tasks queued behind it on that worker
 * are given to others — and the worker is replaced.
 *
 * Close it when done (`await using` does). As Python's daemonic pool
 * workers, idle workers do not keep the program alive; work in flight (a
 * pending `map`) does.
 *
 * @example Usage
 * ```ts
 * import { Pool } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 2 });
 * const cubes = await pool.map((x: number) => x ** 3, [1, 2, 3]);
 * assert.deepEqual(cubes, [1, 8, 27]);
 * ```
 *
 * @typeParam M The type of the `module` option, e.g.
 *   `typeof import("./tasks.ts")`, which types tasks given by name.
 */
export class Pool<M = Record<string, never>> implements AsyncDisposable {
  readonly #size: number;
  readonly #dispatch: Dispatcher | BrokerDispatcher;

  /**
   * Starts the workers.
   *
   * @param options Size, module, initializer, recycling and timeouts.
   * @throws {RangeError} If `workers`, `maxTasksPerWorker` or `taskTimeout`
   *   is not a positive number.
   * @throws {TypeError} If `module` or `initializer` has the wrong type.
   */
  constructor(options: PoolOptions<M> = {}) {
    const { workers = cpuCount(), maxTasksPerWorker, taskTimeout } = options;
    if (!Number.isSafeInteger(workers) || workers < 1) {
      throw new RangeError(
        `Cannot create Pool: workers must be a positive integer, received ${
          describeValue(workers)
        }`,
      );
    }
    if (
      maxTasksPerWorker !== undefined &&
      (!Number.isSafeInteger(maxTasksPerWorker) || maxTasksPerWorker < 1)
    ) {
      throw new RangeError(
        `Cannot create Pool: maxTasksPerWorker must be a positive integer, received ${
          describeValue(maxTasksPerWorker)
        }`,
      );
    }
    if (
      taskTimeout !== undefined &&
      (typeof taskTimeout !== "number" || !(taskTimeout > 0))
    ) {
      throw new RangeError(
        `Cannot create Pool: taskTimeout must be a positive number of milliseconds, received ${
          describeValue(taskTimeout)
        }`,
      );
    }
    if (options.broker !== undefined) {
      this.#size = 0;
      this.#dispatch = brokerDispatcher(options, taskTimeout ?? Infinity);
      return;
    }
    const memoryLimitMb = checkMemoryLimit(
      options.memoryLimitMb,
      "create Pool",
    );
    const module = checkModule(options.module, "create Pool");
    let initializer: TaskDef | undefined;
    if (options.initializer !== undefined) {
      if (typeof options.initializer === "string" && !module) {
        throw new TypeError(
          `Cannot create Pool: initializer ${
            JSON.stringify(options.initializer)
          } names an export, but no module was given`,
        );
      }
      initializer = taskDef(options.initializer, 0, "create Pool");
    }
    const initArgs = argList(options.initArgs, "initArgs", "create Pool");
    this.#size = workers;
    this.#dispatch = new Dispatcher({
      id: ++poolCounter,
      size: workers,
      module,
      maxTasks: maxTasksPerWorker ?? Infinity,
      taskTimeout: taskTimeout ?? Infinity,
      initializer,
      initArgs: encodeArgs(initArgs),
      memoryLimitMb,
    });
  }

  /**
   * The number of workers (of a broker pool: the live remote workers last
   * seen on its queue).
   */
  get size(): number {
    return this.#dispatch instanceof BrokerDispatcher
      ? this.#dispatch.stats().workers
      : this.#size;
  }

  /**
   * Where the pool stands: live workers, workers running a task, tasks
   * waiting, tasks done, tasks that failed.
   *
   * @example Usage
   * ```ts
   * import { Pool } from "@dmp/multiprocessing/cube";
   * import { strict as assert } from "node:assert";
   *
   * await using pool = new Pool({ workers: 2 });
   * await pool.map((x: number) => x * 2, [1, 2, 3, 4]);
   * const { workers, busy, completed, failed } = pool.stats();
   * assert.deepEqual([workers, busy, completed, failed], [2, 0, 4, 0]);
   * ```
   *
   * @returns The counts.
   */
  stats(): PoolStats {
    return this.#dispatch.stats();
  }

  #promiseCall(
    what: "map" | "starmap" | "apply",
    task: unknown,
    mode: CallMode,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions,
  ): Promise<unknown[]> {
    try {
      throwIfAborted(options.signal);
      const fnId = this.#dispatch.fnId(task, what);
      const call = what === "apply"
        ? new ApplyCall(
          this.#dispatch.host,
          fnId,
          items as unknown[][],
          options,
        )
        : new PromiseCall(this.#dispatch.host, fnId, mode, items, options);
      this.#dispatch.submit(call);
      return call.promise;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Applies `task` to every item, in parallel, keeping the order of the
   * input. `items` may be any iterable or async iterable.
   *
   * @example Usage
   * ```ts
   * import { Pool } from "@dmp/multiprocessing/cube";
   * import { strict as assert } from "node:assert";
   *
   * await using pool = new Pool({ workers: 2 });
   * assert.deepEqual(await pool.map((x: number) => x * 2, [1, 2, 3]), [2, 4, 6]);
   * ```
   *
   * @typeParam A The item type.
   * @typeParam R The task's result type.
   * @param task A self-contained function, or the name of a module export.
   * @param items The inputs.
   * @param options `chunksize`, `signal`, `onProgress`.
   * @returns The results in input order.
   */
  map<K extends TaskName<M>>(
    task: K,
    items: Iterable<ArgOf<M[K]>> | AsyncIterable<ArgOf<M[K]>>,
    options?: MapOptions,
  ): Promise<ResultOf<M[K]>[]>;
  /** Applies a self-contained function to every item; see the overload above. */
  map<A, R>(
    task: (item: A) => R | Promise<R>,
    items: Iterable<A> | AsyncIterable<A>,
    options?: MapOptions,
  ): Promise<Awaited<R>[]>;
  map(
    task: unknown,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions = {},
  ): Promise<unknown[]> {
    return this.#promiseCall("map", task, CALL_ITEM, items, options);
  }

  /**
   * Like {@linkcode Pool.map}, but each item is a list of arguments, as
   * Python's `starmap`.
   *
   * @example Usage
   * ```ts
   * import { Pool } from "@dmp/multiprocessing/cube";
   * import { strict as assert } from "node:assert";
   *
   * await using pool = new Pool({ workers: 2 });
   * assert.deepEqual(await pool.starmap((a: number, b: number) => a + b, [[1, 2], [3, 4]]), [3, 7]);
   * ```
   *
   * @typeParam A The argument list type.
   * @typeParam R The task's result type.
   * @param task A self-contained function, or the name of a module export.
   * @param argLists The argument lists.
   * @param options `chunksize`, `signal`, `onProgress`.
   * @returns The results in input order.
   */
  starmap<K extends TaskName<M>>(
    task: K,
    argLists: Iterable<ArgsOf<M[K]>> | AsyncIterable<ArgsOf<M[K]>>,
    options?: MapOptions,
  ): Promise<ResultOf<M[K]>[]>;
  /** Applies a self-contained function to every argument list; see the overload above. */
  starmap<A extends unknown[], R>(
    task: (...args: A) => R | Promise<R>,
    argLists: Iterable<A> | AsyncIterable<A>,
    options?: MapOptions,
  ): Promise<Awaited<R>[]>;
  starmap(
    task: unknown,
    argLists: Iterable<unknown[]> | AsyncIterable<unknown[]>,
    options: MapOptions = {},
  ): Promise<unknown[]> {
    return this.#promiseCall("starmap", task, CALL_SPREAD, argLists, options);
  }

  /**
   * Runs one task with the given arguments, as Python's `apply_async`
   * (this promise is the async result).
   *
   * @example Usage
   * ```ts
   * import { Pool } from "@dmp/multiprocessing/cube";
   * import { strict as assert } from "node:assert";
   *
   * await using pool = new Pool({ workers: 1 });
   * assert.equal(await pool.apply((a: number, b: number) => a * b, [6, 7]), 42);
   * ```
   *
   * @typeParam A The argument list type.
   * @typeParam R The task's result type.
   * @param task A self-contained function, or the name of a module export.
   * @param args The arguments.
   * @param options `signal`.
   * @returns The task's result.
   */
  apply<K extends TaskName<M>>(
    task: K,
    args?: ArgsOf<M[K]>,
    options?: ApplyOptions,
  ): Promise<ResultOf<M[K]>>;
  /** Runs a self-contained function once; see the overload above. */
  apply<A extends unknown[], R>(
    task: (...args: A) => R | Promise<R>,
    args?: A,
    options?: ApplyOptions,
  ): Promise<Awaited<R>>;
  apply(
    task: unknown,
    args: unknown[] = [],
    options: ApplyOptions = {},
  ): Promise<unknown> {
    if (!Array.isArray(args)) {
      return Promise.reject(
        new TypeError(
          `Cannot apply: args must be an array, received ${
            describeValue(args)
          }`,
        ),
      );
    }
    return this.#promiseCall("apply", task, CALL_SPREAD, [args], options).then((
      r,
    ) => r[0]);
  }

  /**
   * Lazily applies `task` to every item, yielding results in input order.
   * At most a bounded number of items is in flight, so an endless input
   * works; breaking out of the loop stops taking items.
   *
   * @example Usage
   * ```ts
   * import { Pool } from "@dmp/multiprocessing/cube";
   * import { strict as assert } from "node:assert";
   *
   * await using pool = new Pool({ workers: 2 });
   * const out: number[] = [];
   * for await (const y of pool.imap((x: number) => x + 1, [1, 2, 3])) out.push(y);
   * assert.deepEqual(out, [2, 3, 4]);
   * ```
   *
   * @typeParam A The item type.
   * @typeParam R The task's result type.
   * @param task A self-contained function, or the name of a module export.
   * @param items The inputs.
   * @param options `chunksize`, `signal`, `onProgress`.
   * @returns The results, in input order.
   */
  imap<K extends TaskName<M>>(
    task: K,
    items: Iterable<ArgOf<M[K]>> | AsyncIterable<ArgOf<M[K]>>,
    options?: MapOptions,
  ): AsyncIterableIterator<ResultOf<M[K]>>;
  /** Lazily applies a self-contained function, in order; see the overload above. */
  imap<A, R>(
    task: (item: A) => R | Promise<R>,
    items: Iterable<A> | AsyncIterable<A>,
    options?: MapOptions,
  ): AsyncIterableIterator<Awaited<R>>;
  imap(
    task: unknown,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions = {},
  ): AsyncIterableIterator<unknown> {
    return this.#iter(task, items, options, true, "imap");
  }

  /**
   * Like {@linkcode Pool.imap}, but yields results as they finish.
   *
   * @example Usage
   * ```ts
   * import { Pool } from "@dmp/multiprocessing/cube";
   * import { strict as assert } from "node:assert";
   *
   * await using pool = new Pool({ workers: 2 });
   * const out: number[] = [];
   * for await (const y of pool.imapUnordered((x: number) => x * 10, [1, 2, 3])) out.push(y);
   * assert.deepEqual(out.sort((a, b) => a - b), [10, 20, 30]);
   * ```
   *
   * @typeParam A The item type.
   * @typeParam R The task's result type.
   * @param task A self-contained function, or the name of a module export.
   * @param items The inputs.
   * @param options `chunksize`, `signal`, `onProgress`.
   * @returns The results, in completion order.
   */
  imapUnordered<K extends TaskName<M>>(
    task: K,
    items: Iterable<ArgOf<M[K]>> | AsyncIterable<ArgOf<M[K]>>,
    options?: MapOptions,
  ): AsyncIterableIterator<ResultOf<M[K]>>;
  /** Lazily applies a self-contained function, in completion order; see the overload above. */
  imapUnordered<A, R>(
    task: (item: A) => R | Promise<R>,
    items: Iterable<A> | AsyncIterable<A>,
    options?: MapOptions,
  ): AsyncIterableIterator<Awaited<R>>;
  imapUnordered(
    task: unknown,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions = {},
  ): AsyncIterableIterator<unknown> {
    return this.#iter(task, items, options, false, "imapUnordered");
  }

  #iter(
    task: unknown,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions,
    ordered: boolean,
    what: string,
  ): AsyncIterableIterator<unknown> {
    let call: IterCall;
    try {
      call = new IterCall(
        this.#dispatch.host,
        this.#dispatch.fnId(task, what),
        CALL_ITEM,
        items,
        options,
        ordered,
      );
    } catch (e) {
      return failedIterator(e);
    }
    if (options.signal?.aborted) {
      call.fail(options.signal.reason);
      return call;
    }
    // Submitted on the first `next()`, so an unused iterator costs nothing.
    let submitted = false;
    const next = call.next.bind(call);
    call.next = () => {
      if (!submitted) {
        submitted = true;
        this.#dispatch.submit(call);
      }
      return next();
    };
    return call;
  }

  /** Prevents new work; queued and running work still completes. */
  close(): void {
    this.#dispatch.close();
  }

  /**
   * Waits for all queued and running work to finish after
   * {@linkcode Pool.close}, then stops the workers.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns `true` once joined, `false` if the timeout passed first.
   * @throws {TypeError} If the pool is still running (call `close()` first).
   */
  async join(options: JoinOptions = {}): Promise<boolean> {
    const state = this.#dispatch.state;
    if (state === "running") {
      throw new TypeError(
        "Cannot join the pool: it is still running (call close() or terminate() first)",
      );
    }
    if (state === "closed") {
      const ok = await withDeadline<boolean>(
        this.#dispatch.whenIdle().then(() => true),
        options,
        "join the pool",
        () => ({ value: false }),
      );
      if (!ok) return false;
    }
    // A broker pool removes its keys from Redis before it is joined.
    await this.#dispatch.stopWorkers();
    return true;
  }

  /**
   * Stops the workers now, busy or not; pending calls reject with
   * {@linkcode ClosedError}.
   */
  terminate(): void {
    this.#dispatch.terminate();
  }

  /** Closes the pool and waits for its work (`await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#dispatch.state === "terminated") {
      await this.#dispatch.stopWorkers();
      return;
    }
    this.close();
    await this.join();
  }
}

/**
 * Process and Pool: Python's `multiprocessing.Process` and
 * `multiprocessing.Pool` on Deno workers, with the "cube" example as demo.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import Pool, Process
 *
 * def cube(x):
 *     return x ** 3
 *
 * if __name__ == "__main__":
 *     p = Process(target=print, args=("hello",))
 *     p.start(); p.join()
 *     with Pool(2) as pool:
 *         print(pool.map(cube, range(10)))
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { Pool, Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: (s: string) => console.log(s), args: ["hello"] });
 * p.start();
 * assert.equal(await p.join(), 0);
 *
 * await using pool = new Pool({ workers: 2 });
 * assert.deepEqual(
 *   await pool.map((x: number) => x ** 3, [0, 1, 2, 3]),
 *   [0, 1, 8, 27],
 * );
 * ```
 *
 * Tasks are either self-contained functions, whose source is sent to the
 * worker and compiled there once (they must not use variables from their
 * enclosing scope), or the names of exports of the pool's `module`, typed
 * from `typeof import("./tasks.ts")`.
 *
 * What Python's pool lacks: a worker that dies or a task that runs past
 * `taskTimeout` fails only its own task (`WorkerCrashedError`,
 * `TimeoutError`) and the worker is replaced, so the pool never hangs. Deno
 * cannot stop a thread busy in a synchronous loop: such a worker is
 * abandoned (no longer counted, its task rejected, a replacement started)
 * and keeps its core busy until it yields or the program exits.
 *
 * @module
 */

import {
  ClosedError,
  decodeShared,
  describeValue,
  encodeShared,
  type ErrorInfo,
  formatDuration,
  formatNumber,
  intOption,
  isMainModule,
  type ManagedWorker,
  parseCli,
  ProgressBar,
  RemoteError,
  spawnWorker,
  taskSource,
  throwIfAborted,
  timeoutError,
  withDeadline,
  WorkerCrashedError,
  type WorkerDeath,
} from "./_util.ts";
import type {
  DoneMsg,
  FromWorker,
  RunMsg,
  TaskDef,
  ToWorker,
} from "./_cube_worker.ts";

export { ClosedError, RemoteError, WorkerCrashedError };

const WORKER_URL = new URL("./_cube_worker.ts", import.meta.url);

/**
 * Any function: what a task given as a function may be (it must be
 * self-contained: its source is compiled again in the worker).
 *
 * @example Usage
 * ```ts
 * import type { TaskFunction } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const cube: TaskFunction = (x: number) => x ** 3;
 * assert.equal(cube(2), 8);
 * ```
 */
// deno-lint-ignore no-explicit-any
export type TaskFunction = (...args: any[]) => unknown;

/**
 * The names of a module's exported functions: what a task may be when the
 * pool or process is given that module.
 *
 * @typeParam M The module's type, e.g. `typeof import("./tasks.ts")`.
 *
 * @example Usage
 * ```ts
 * import type { TaskName } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * type Tasks = { cube(x: number): number; version: string };
 * const name: TaskName<Tasks> = "cube"; // "version" is not a function: refused
 * assert.equal(name, "cube");
 * ```
 */
export type TaskName<M> =
  & {
    [K in keyof M]: M[K] extends TaskFunction ? K : never;
  }[keyof M]
  & string;

/**
 * The awaited result of a module export or function.
 *
 * @typeParam F The function's type.
 *
 * @example Usage
 * ```ts
 * import type { ResultOf } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const r: ResultOf<(x: number) => Promise<string>> = "awaited";
 * assert.equal(typeof r, "string");
 * ```
 */
export type ResultOf<F> = F extends TaskFunction ? Awaited<ReturnType<F>>
  : never;
/**
 * The first parameter of a module export or function: a map item.
 *
 * @typeParam F The function's type.
 *
 * @example Usage
 * ```ts
 * import type { ArgOf } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const item: ArgOf<(x: number) => number> = 3;
 * assert.equal(item, 3);
 * ```
 */
export type ArgOf<F> = F extends (arg: infer A, ...rest: never[]) => unknown ? A
  : never;
/**
 * The parameters of a module export or function: a starmap argument list.
 *
 * @typeParam F The function's type.
 *
 * @example Usage
 * ```ts
 * import type { ArgsOf } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const args: ArgsOf<(a: number, b: string) => void> = [1, "x"];
 * assert.equal(args.length, 2);
 * ```
 */
export type ArgsOf<F> = F extends (...args: infer A) => unknown ? A : never;

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

function taskDef(
  task: unknown,
  id: number,
  what: string,
): TaskDef {
  if (typeof task === "string") {
    if (task === "") {
      throw new TypeError(`Cannot ${what}: the task name is empty`);
    }
    return [id, "export", task];
  }
  return [id, "src", taskSource(task, what)];
}

function checkModule(module: unknown, what: string): string | undefined {
  if (module === undefined) return undefined;
  if (module instanceof URL) return module.href;
  if (typeof module === "string") {
    try {
      return new URL(module).href;
    } catch {
      throw new TypeError(
        `Cannot ${what}: module must be an absolute URL (e.g. new URL("./tasks.ts", import.meta.url)), received ${
          describeValue(module)
        }`,
      );
    }
  }
  throw new TypeError(
    `Cannot ${what}: module must be a string or URL, received ${
      describeValue(module)
    }`,
  );
}

function encodeArgs(
  value: unknown,
): {
  value: unknown;
  handles: boolean;
  transfer: Transferable[];
  after: Array<() => void>;
} {
  const transfer: Transferable[] = [];
  const e = encodeShared(value, transfer);
  return { value: e.value, handles: e.handles, transfer, after: e.afterSend };
}

// -- Process ---------------------------------------------------------------

/**
 * Options of {@linkcode Process}.
 *
 * @typeParam M The type of `module`, e.g. `typeof import("./tasks.ts")`.
 *
 * @example Usage
 * ```ts
 * import { Process, type ProcessOptions } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const options: ProcessOptions = {
 *   target: (a: number, b: number) => console.log(a + b),
 *   args: [1, 2],
 *   name: "adder",
 * };
 * const p = new Process(options);
 * p.start();
 * assert.equal(await p.join(), 0);
 * ```
 *
 * @example Usage
 * ```ts
 * import { type JoinOptions, Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: () => new Promise((r) => setTimeout(r, 5_000)) });
 * p.start();
 * const options: JoinOptions = { timeout: 10 };
 * assert.equal(await p.join(options), null);
 * p.terminate();
 * assert.equal(await p.join(), -15);
 * ```
 */
export interface ProcessOptions<M = Record<string, never>> {
  /**
   * What to run: a self-contained function, or the name of an export of
   * `module`.
   */
  target: TaskFunction | TaskName<M>;
  /** The arguments (structured-clone values or this package's shared objects). */
  args?: readonly unknown[];
  /** The module whose export `target` names (an absolute URL). */
  module?: string | URL;
  /** The process's name; defaults to `Process-N`. */
  name?: string;
}

/** Options of {@linkcode Process.join}. */
export interface JoinOptions {
  /** How long to wait, in ms; on timeout `join` resolves to `null`. */
  timeout?: number;
  /** Aborting it rejects `join` with the signal's reason. */
  signal?: AbortSignal;
}

let processCounter = 0;

/**
 * A task run in its own worker, as Python's `multiprocessing.Process`.
 *
 * `exitCode` is `null` while running, `0` when the target returned, `1` when
 * it threw (the error is printed to stderr with the worker's stack, as
 * Python prints the traceback) or the worker died, the code given to
 * `Deno.exit(code)` by the target, and `-15` after `terminate()`.
 *
 * @example Usage
 * ```ts
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: (x: number) => console.log(x ** 3), args: [3] });
 * p.start();
 * assert.equal(await p.join(), 0);
 * assert.equal(p.exitCode, 0);
 * ```
 *
 * @typeParam M The type of the `module` option.
 */
export class Process<M = Record<string, never>> {
  readonly #name: string;
  readonly #target: TaskDef;
  readonly #module: string | undefined;
  readonly #args: readonly unknown[];
  #worker: ManagedWorker | undefined;
  #exitCode: number | null = null;
  #started = false;
  readonly #exited: Promise<number>;
  #resolveExit!: (code: number) => void;

  /**
   * Describes the process; nothing runs before {@linkcode Process.start}.
   *
   * @param options The target, its arguments, the module and the name.
   * @throws {TypeError} If the target is neither a function nor a name.
   */
  constructor(options: ProcessOptions<M>) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(
        `Cannot create Process: options must be an object, received ${
          describeValue(options)
        }`,
      );
    }
    processCounter++;
    this.#name = options.name ?? `Process-${processCounter}`;
    this.#module = checkModule(options.module, "create Process");
    if (typeof options.target === "string" && !this.#module) {
      throw new TypeError(
        `Cannot create Process: target ${
          JSON.stringify(options.target)
        } names an export, but no module was given`,
      );
    }
    this.#target = taskDef(options.target, 0, "create Process");
    const args = options.args ?? [];
    if (!Array.isArray(args)) {
      throw new TypeError(
        `Cannot create Process: args must be an array, received ${
          describeValue(args)
        }`,
      );
    }
    this.#args = args;
    this.#exited = new Promise((resolve) => this.#resolveExit = resolve);
  }

  /** The process's name, e.g. `"Process-1"`. */
  get name(): string {
    return this.#name;
  }

  /**
   * The exit code: `null` while running (or before start), `0` success,
   * `1` error or crash, `-15` terminated.
   */
  get exitCode(): number | null {
    return this.#exitCode;
  }

  /**
   * Whether the process was started and has not ended.
   *
   * @returns `true` while it runs.
   */
  isAlive(): boolean {
    return this.#started && this.#exitCode === null;
  }

  /**
   * Starts the process in a new worker.
   *
   * @throws {TypeError} If it was already started, or an argument cannot be
   *   sent to a worker.
   */
  start(): void {
    if (this.#started) {
      throw new TypeError(
        `Cannot start ${this.#name}: a process can be started only once`,
      );
    }
    const enc = encodeArgs(this.#args);
    this.#started = true;
    const worker = spawnWorker(WORKER_URL, {
      name: this.#name,
      onMessage: (data) => {
        const msg = data as FromWorker;
        if (msg.t === "exit") {
          this.#finish({ kind: "exit", code: msg.code, reason: "" });
        }
      },
      onDeath: (death) => this.#finish(death),
    });
    this.#worker = worker;
    const msg: ToWorker = {
      t: "process",
      target: this.#target,
      args: enc.value as unknown[],
      handles: enc.handles,
      ...(this.#module ? { module: this.#module } : {}),
    };
    try {
      worker.postMessage(msg, enc.transfer);
    } catch (e) {
      worker.terminate({ kind: "error", code: 1 });
      throw new TypeError(
        `Cannot start ${this.#name}: an argument cannot be sent to a worker: ${
          (e as Error).message
        }`,
      );
    }
    for (const hook of enc.after) hook();
  }

  #finish(death: WorkerDeath): void {
    if (this.#exitCode !== null) return;
    this.#exitCode = death.kind === "terminated"
      ? -15
      : death.kind === "error"
      ? 1
      : death.code;
    if (death.kind === "error" && death.error) {
      console.error(`Process ${this.#name}:\n${death.error.stack}`);
    }
    this.#worker?.terminate({ kind: "exit", code: this.#exitCode });
    this.#resolveExit(this.#exitCode);
  }

  /**
   * Waits for the process to end.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The exit code, or `null` if the timeout passed first.
   * @throws {TypeError} If the process was never started.
   */
  join(options: JoinOptions = {}): Promise<number | null> {
    if (!this.#started) {
      return Promise.reject(
        new TypeError(`Cannot join ${this.#name}: it was never started`),
      );
    }
    return withDeadline<number | null>(
      this.#exited,
      options,
      `join ${this.#name}`,
      () => ({ value: null }),
    );
  }

  /**
   * Stops the process: its exit code becomes `-15` and `join()` resolves at
   * once. A worker busy in a synchronous loop cannot be stopped by Deno; it
   * is then abandoned and keeps running until it yields.
   */
  terminate(): void {
    if (!this.#started || this.#exitCode !== null) return;
    this.#worker!.terminate();
  }
}

// -- Pool ------------------------------------------------------------------

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
   * `TimeoutError`; its worker is replaced.
   */
  taskTimeout?: number;
}

/** Options of the map-like calls of {@linkcode Pool}. */
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

/** Options of {@linkcode Pool.apply}. */
export interface ApplyOptions {
  /** Aborting it rejects the call with its reason. */
  signal?: AbortSignal;
}

/** Items per job at most when chunking automatically. */
const MAX_AUTO_CHUNK = 4096;
/** Items dispatched but not yet consumed, per lazy call, at most. */
const WINDOW = 65536;
/** The work to keep queued in each worker, in ms. */
const QUEUE_MS = 2;
/** The work an automatic chunk aims at, in ms. */
const CHUNK_MS = 0.5;
const NO_TRANSFER: Transferable[] = [];
/** "No value ready" (`undefined` is a valid result). */
const NONE: unique symbol = Symbol("none");
const NO_HOOKS: Array<() => void> = [];

interface Job {
  seq: number;
  call: Call;
  fnId: number;
  mode: 0 | 1;
  start: number;
  items: unknown[];
  handles: boolean;
  transfer: Transferable[];
  after: Array<() => void>;
}

interface Slot {
  worker: ManagedWorker;
  state: Int32Array;
  started: Float64Array;
  /** Jobs sent and not yet answered, in dispatch order, from `head`. */
  inflight: Job[];
  head: number;
  defined: Set<number>;
  jobs: number;
  avgJobMs: number;
  retiring: boolean;
  dead: boolean;
  /** Whether the worker finished its setup (module, initializer). */
  ready: boolean;
  /** Whether the watchdog stopped it for running past `taskTimeout`. */
  timedOut: boolean;
}

function pending(slot: Slot): number {
  return slot.inflight.length - slot.head;
}

/** What a call needs of its pool. */
interface CallHost {
  readonly size: number;
  pump(): void;
  callEnded(call: Call): void;
}

/** One call on the pool: a source of jobs and a sink of results. */
abstract class Call {
  readonly fnId: number;
  readonly mode: 0 | 1;
  readonly fixedChunk: number | undefined;
  readonly total: number | undefined;
  readonly maxChunk: number;
  readonly signal: AbortSignal | undefined;
  readonly onProgress: MapOptions["onProgress"];
  avgItemMs = -1;
  dispatched = 0;
  completed = 0;
  consumed = 0;
  done = false;
  blocked = false;
  #iter: Iterator<unknown> | AsyncIterator<unknown> | undefined;
  #sync: boolean;
  #buffer: unknown[] = [];
  #pulling = false;
  #exhausted = false;
  #inputError: { error: unknown } | undefined;
  #onAbort: (() => void) | undefined;
  readonly pool: CallHost;

  constructor(
    pool: CallHost,
    fnId: number,
    mode: 0 | 1,
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

class PromiseCall extends Call {
  readonly results: unknown[] = [];
  readonly promise: Promise<unknown[]>;
  #resolve!: (v: unknown[]) => void;
  #reject!: (e: unknown) => void;

  constructor(
    pool: CallHost,
    fnId: number,
    mode: 0 | 1,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions,
  ) {
    super(pool, fnId, mode, items, options, false);
    this.promise = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  accept(start: number, values: unknown[]): void {
    for (let i = 0; i < values.length; i++) this.results[start + i] = values[i];
    this.consumed += values.length;
  }

  finish(): void {
    this.close();
    this.#resolve(this.results);
  }

  fail(error: unknown): void {
    if (this.done) return;
    this.close();
    this.#reject(error);
  }

  inputFailed(error: unknown): void {
    this.fail(error);
  }
}

class IterCall extends Call implements AsyncIterableIterator<unknown> {
  readonly #ordered: boolean;
  readonly #ready = new Map<number, unknown>();
  readonly #fifo: unknown[] = [];
  #fifoHead = 0;
  #next = 0;
  #end: { error: unknown } | { error?: undefined; ok: true } | undefined;
  #waiter: (() => void) | undefined;

  constructor(
    pool: CallHost,
    fnId: number,
    mode: 0 | 1,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions,
    ordered: boolean,
  ) {
    super(pool, fnId, mode, items, options, true);
    this.#ordered = ordered;
  }

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

  finish(): void {
    this.#end ??= { ok: true };
    this.close();
    this.#wake();
  }

  fail(error: unknown): void {
    if (this.done) return;
    // A task's error ends the iteration where it happened: for ordered
    // iteration, after the results before it.
    this.#end = { error };
    this.close();
    this.#wake();
  }

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

  return(): Promise<IteratorResult<unknown>> {
    this.#end = { ok: true };
    this.#ready.clear();
    this.#fifo.length = 0;
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<unknown> {
    return this;
  }
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
 * Close it when done (`await using` does): idle workers keep a Deno
 * program alive.
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
  readonly #id: number;
  readonly #size: number;
  readonly #module: string | undefined;
  readonly #maxTasks: number;
  readonly #taskTimeout: number;
  readonly #initializer: TaskDef | undefined;
  readonly #initArgs: {
    value: unknown;
    handles: boolean;
    transfer: Transferable[];
  };
  readonly #slots: Slot[] = [];
  readonly #calls: Call[] = [];
  readonly #retry: Job[] = [];
  /** Task ids by `kind:text`; a task's id indexes `#defs`. */
  readonly #fnIds = new Map<string, number>();
  readonly #defs: TaskDef[] = [];
  #seq = 0;
  #workerCounter = 0;
  #state: "running" | "closed" | "terminated" = "running";
  #broken: Error | undefined;
  #startFailures = 0;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #idle: Array<() => void> = [];
  readonly #host: CallHost = {
    size: 0,
    pump: () => this.#pump(),
    callEnded: (call) => this.#callEnded(call),
  };

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
    this.#module = checkModule(options.module, "create Pool");
    this.#size = workers;
    this.#maxTasks = maxTasksPerWorker ?? Infinity;
    this.#taskTimeout = taskTimeout ?? Infinity;
    if (options.initializer !== undefined) {
      if (typeof options.initializer === "string" && !this.#module) {
        throw new TypeError(
          `Cannot create Pool: initializer ${
            JSON.stringify(options.initializer)
          } names an export, but no module was given`,
        );
      }
      this.#initializer = taskDef(options.initializer, 0, "create Pool");
    }
    const initArgs = options.initArgs ?? [];
    if (!Array.isArray(initArgs)) {
      throw new TypeError(
        `Cannot create Pool: initArgs must be an array, received ${
          describeValue(initArgs)
        }`,
      );
    }
    const enc = encodeArgs(initArgs);
    this.#initArgs = enc;
    this.#id = ++poolCounter;
    (this.#host as { size: number }).size = workers;
    for (let i = 0; i < workers; i++) this.#spawn();
  }

  /** The number of workers. */
  get size(): number {
    return this.#size;
  }

  #spawn(): void {
    const name = `Pool-${this.#id}-worker-${++this.#workerCounter}`;
    const sab = new SharedArrayBuffer(16);
    const slot: Slot = {
      worker: undefined as unknown as ManagedWorker,
      state: new Int32Array(sab, 0, 2),
      started: new Float64Array(sab, 8, 1),
      inflight: [],
      head: 0,
      defined: new Set(),
      jobs: 0,
      avgJobMs: -1,
      retiring: false,
      dead: false,
      ready: false,
      timedOut: false,
    };
    Atomics.store(slot.state, 0, -1);
    slot.worker = spawnWorker(WORKER_URL, {
      name,
      onMessage: (data) => this.#onMessage(slot, data as FromWorker),
      onDeath: (death) => this.#onDeath(slot, death),
    });
    this.#slots.push(slot);
    const setup: ToWorker = {
      t: "setup",
      state: sab,
      timed: this.#taskTimeout !== Infinity,
      ...(this.#module ? { module: this.#module } : {}),
      ...(this.#initializer
        ? {
          initializer: this.#initializer,
          initArgs: this.#initArgs.value as unknown[],
          handles: this.#initArgs.handles,
        }
        : {}),
    };
    slot.worker.postMessage(setup);
  }

  #fnId(task: unknown, what: string): number {
    if (this.#state !== "running") {
      throw new ClosedError(`Cannot ${what}: the pool is ${this.#state}`);
    }
    if (typeof task === "string" && !this.#module) {
      throw new TypeError(
        `Cannot ${what}: task ${
          JSON.stringify(task)
        } names an export, but the pool has no module`,
      );
    }
    const def = taskDef(task, this.#defs.length, what);
    const key = `${def[1]}:${def[2]}`;
    const known = this.#fnIds.get(key);
    if (known !== undefined) return known;
    this.#fnIds.set(key, def[0]);
    this.#defs.push(def);
    return def[0];
  }

  #submit(call: Call): void {
    if (this.#broken) {
      call.fail(this.#broken);
      return;
    }
    if (call.signal?.aborted) {
      call.fail(call.signal.reason);
      return;
    }
    this.#calls.push(call);
    this.#pump();
  }

  #callEnded(call: Call): void {
    const i = this.#calls.indexOf(call);
    if (i >= 0) this.#calls.splice(i, 1);
    this.#checkIdle();
  }

  #cap(slot: Slot): number {
    if (slot.avgJobMs < 0) return 2;
    return Math.max(
      2,
      Math.min(512, Math.ceil(QUEUE_MS / Math.max(slot.avgJobMs, 1e-4))),
    );
  }

  /** Gives queued work to workers with room. */
  #pump(): void {
    if (this.#state === "terminated") return;
    let any = false;
    // Round robin, one batch of at most half a worker's window per worker
    // and round, until no worker has room or no work is left: a worker
    // always has its next job queued, and a few heavy jobs spread out.
    for (let sent = true; sent;) {
      sent = false;
      for (const slot of this.#slots) {
        if (slot.retiring || slot.dead) continue;
        const cap = this.#cap(slot);
        const room = Math.min(
          cap - pending(slot),
          Math.ceil(cap / 2),
          this.#maxTasks - slot.jobs,
        );
        if (room <= 0) continue;
        const jobs: Job[] = [];
        while (jobs.length < room) {
          const job = this.#nextJob();
          if (!job) break;
          jobs.push(job);
        }
        if (jobs.length === 0) break;
        slot.jobs += jobs.length;
        if (slot.jobs >= this.#maxTasks) slot.retiring = true;
        for (const j of jobs) slot.inflight.push(j);
        this.#send(slot, jobs);
        sent = any = true;
      }
    }
    if (any) this.#startWatchdog();
  }

  #nextJob(): Job | undefined {
    while (this.#retry.length > 0) {
      const retry = this.#retry.shift()!;
      if (!retry.call.done) return retry;
    }
    for (const call of this.#calls) {
      const items = call.take();
      if (!items) continue;
      const start = call.dispatched;
      call.dispatched += items.length;
      let handles = false;
      let transfer: Transferable[] = NO_TRANSFER;
      let after: Array<() => void> = NO_HOOKS;
      let payload = items;
      for (const it of items) {
        if (typeof it === "object" && it !== null) {
          const enc = encodeArgs(items);
          payload = enc.value as unknown[];
          handles = enc.handles;
          transfer = enc.transfer;
          after = enc.after;
          break;
        }
      }
      return {
        seq: ++this.#seq,
        call,
        fnId: call.fnId,
        mode: call.mode,
        start,
        items: payload,
        handles,
        transfer,
        after,
      };
    }
    return undefined;
  }

  #message(slot: Slot, jobs: Job[]): { msg: RunMsg; transfer: Transferable[] } {
    const msg: RunMsg = {
      t: "run",
      defs: [],
      handles: false,
      seqs: [],
      fns: [],
      modes: [],
      lens: [],
      items: [],
    };
    const transfer: Transferable[] = [];
    for (const j of jobs) {
      if (!slot.defined.has(j.fnId)) {
        slot.defined.add(j.fnId);
        msg.defs.push(this.#defs[j.fnId]!);
      }
      if (j.handles) msg.handles = true;
      for (const t of j.transfer) transfer.push(t);
      msg.seqs.push(j.seq);
      msg.fns.push(j.fnId);
      msg.modes.push(j.mode);
      msg.lens.push(j.items.length);
      for (const item of j.items) msg.items.push(item);
    }
    return { msg, transfer };
  }

  #send(slot: Slot, jobs: Job[]): void {
    const { msg, transfer } = this.#message(slot, jobs);
    try {
      slot.worker.postMessage(msg, transfer);
      for (const j of jobs) for (const hook of j.after) hook();
      return;
    } catch (e) {
      if (!(e instanceof DOMException) || e.name !== "DataCloneError") throw e;
    }
    // Some item cannot be cloned: send the jobs one by one so that only the
    // calls with such items fail.
    for (const def of msg.defs) slot.defined.delete(def[0]);
    const kept: Job[] = [];
    for (const j of jobs) {
      const one = this.#message(slot, [j]);
      try {
        slot.worker.postMessage(one.msg, one.transfer);
        for (const hook of j.after) hook();
        kept.push(j);
      } catch (err) {
        for (const def of one.msg.defs) slot.defined.delete(def[0]);
        slot.jobs--;
        queueMicrotask(() =>
          j.call.fail(
            new TypeError(
              `Cannot send the task's arguments to a worker: ${
                (err as Error).message
              }`,
            ),
          )
        );
      }
    }
    slot.inflight.splice(
      slot.inflight.length - jobs.length,
      jobs.length,
      ...kept,
    );
  }

  #onMessage(slot: Slot, msg: FromWorker): void {
    switch (msg.t) {
      case "done":
        this.#done(slot, msg);
        if (slot.retiring && pending(slot) === 0) {
          this.#replace(slot, { kind: "exit", code: 0, reason: "" });
        }
        this.#pump();
        this.#checkIdle();
        break;
      case "setup-error":
        this.#breakPool(
          new RemoteError(msg.error, { worker: slot.worker.name }),
        );
        break;
      case "ready":
        slot.ready = true;
        this.#startFailures = 0;
        break;
      case "exit":
        break;
    }
  }

  #done(slot: Slot, msg: DoneMsg): void {
    const jobs = msg.seqs.length;
    if (jobs === 0) return;
    const perJob = msg.ms / jobs;
    slot.avgJobMs = slot.avgJobMs < 0
      ? perJob
      : slot.avgJobMs * 0.7 + perJob * 0.3;
    const perItem = msg.ms / Math.max(1, msg.n);
    const errors = msg.errors.length > 0
      ? new Map(msg.errors.map((e) => [e[0], e]))
      : undefined;
    const values = msg.values;
    let decoded: Promise<unknown[]> | undefined;
    if (msg.handles) decoded = decodeShared(values) as Promise<unknown[]>;
    let at = 0;
    for (const seq of msg.seqs) {
      const job = slot.inflight[slot.head];
      if (!job || job.seq !== seq) continue;
      slot.inflight[slot.head++] = undefined as unknown as Job;
      const call = job.call;
      const err = errors?.get(seq);
      if (err) {
        const [, info, index, bad] = err;
        call.fail(
          bad
            ? (info.name === "TypeError"
              ? new TypeError(info.message)
              : new RemoteError(info, { worker: slot.worker.name }))
            : this.#remoteError(info, slot, job, index),
        );
        continue;
      }
      const n = job.items.length;
      if (decoded) {
        const from = at;
        decoded.then(
          (v) => call.deliver(job.start, v.slice(from, from + n), perItem),
          (e) => call.fail(e),
        );
      } else if (at === 0 && n === values.length) {
        call.deliver(job.start, values, perItem);
      } else {
        call.deliver(job.start, values.slice(at, at + n), perItem);
      }
      at += n;
    }
    if (slot.head > 1024 && slot.head * 2 > slot.inflight.length) {
      slot.inflight = slot.inflight.slice(slot.head);
      slot.head = 0;
    }
  }

  #remoteError(
    info: ErrorInfo,
    slot: Slot,
    job: Job,
    index: number,
  ): RemoteError {
    return new RemoteError(info, {
      worker: slot.worker.name,
      ...(job.call instanceof ApplyCall ? {} : { index: job.start + index }),
    });
  }

  /** Fails every pending and future call with `error`. */
  #breakPool(error: Error): void {
    this.#broken = error;
    for (const call of [...this.#calls]) call.fail(error);
    for (const s of this.#slots) {
      for (let i = s.head; i < s.inflight.length; i++) {
        s.inflight[i]!.call.fail(error);
      }
      s.inflight = [];
      s.head = 0;
    }
    for (const job of this.#retry.splice(0)) job.call.fail(error);
    this.#checkIdle();
  }

  #onDeath(slot: Slot, death: WorkerDeath): void {
    slot.dead = true;
    if (this.#state === "terminated") return;
    if (!slot.ready && death.kind === "error" && ++this.#startFailures >= 3) {
      // Workers die before they are set up (their module cannot load, e.g.
      // no read permission): replacing them again would never end.
      this.#breakPool(
        new WorkerCrashedError(
          `Cannot start the pool's workers: ${death.reason}`,
        ),
      );
      this.#replace(slot, death);
      return;
    }
    const running = Atomics.load(slot.state, 0);
    const item = slot.state[1]!;
    const jobs = slot.inflight.slice(slot.head);
    slot.inflight = [];
    slot.head = 0;
    for (const job of jobs) {
      if (job.seq === running) {
        const index = job.call instanceof ApplyCall ? {} : {
          index: job.start + item,
        };
        const e = slot.timedOut
          ? Object.assign(timeoutError(death.reason), index)
          : new WorkerCrashedError(
            `${death.reason} while running a task${
              "index" in index ? ` (item ${index.index})` : ""
            }`,
          );
        job.call.fail(e);
      } else {
        // Never started, or finished with its result lost: run it again.
        this.#retry.push(job);
      }
    }
    this.#replace(slot, death);
    this.#pump();
    this.#checkIdle();
  }

  #replace(slot: Slot, death: WorkerDeath): void {
    const i = this.#slots.indexOf(slot);
    if (i < 0) return;
    this.#slots.splice(i, 1);
    if (!slot.worker.death) slot.worker.terminate(death);
    if (this.#state === "terminated" || this.#startFailures >= 3) return;
    if (
      this.#state === "closed" && this.#inflightCount() === 0 &&
      this.#calls.length === 0 && this.#retry.length === 0
    ) {
      return;
    }
    this.#spawn();
  }

  #inflightCount(): number {
    let n = 0;
    for (const s of this.#slots) n += pending(s);
    return n;
  }

  #startWatchdog(): void {
    // Only timeouts need a timer: a worker that exits or crashes says so
    // itself (its runtime posts the exit before closing; crashes fire
    // `error`).
    if (this.#watchdog !== undefined || this.#taskTimeout === Infinity) return;
    const period = Math.max(
      5,
      Math.min(50, this.#taskTimeout / 4),
    );
    this.#watchdog = setInterval(() => this.#watch(), period);
  }

  #watch(): void {
    if (this.#inflightCount() === 0) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
      return;
    }
    const now = performance.timeOrigin + performance.now();
    for (const slot of [...this.#slots]) {
      // Reading `death` also notices a worker that marked itself dead in
      // the thread table before its last message arrived.
      if (slot.dead || slot.worker.death) continue;
      if (Atomics.load(slot.state, 0) < 0) continue;
      const ran = now - slot.started[0]!;
      if (ran > this.#taskTimeout) {
        slot.timedOut = true;
        slot.worker.terminate({
          kind: "terminated",
          code: -15,
          reason:
            `Task timed out after ${this.#taskTimeout} ms on ${slot.worker.name}`,
        });
      }
    }
  }

  #checkIdle(): void {
    if (this.#calls.length > 0 || this.#retry.length > 0) return;
    if (this.#inflightCount() > 0) return;
    const waiters = this.#idle.splice(0);
    for (const w of waiters) w();
  }

  #promiseCall(
    what: "map" | "starmap" | "apply",
    task: unknown,
    mode: 0 | 1,
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: MapOptions,
  ): Promise<unknown[]> {
    try {
      throwIfAborted(options.signal);
      const fnId = this.#fnId(task, what);
      const call = what === "apply"
        ? new ApplyCall(this.#host, fnId, items as unknown[][], options)
        : new PromiseCall(this.#host, fnId, mode, items, options);
      this.#submit(call);
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
    return this.#promiseCall("map", task, 0, items, options);
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
    return this.#promiseCall("starmap", task, 1, argLists, options);
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
    return this.#promiseCall("apply", task, 1, [args], options).then((r) =>
      r[0]
    );
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
        this.#host,
        this.#fnId(task, what),
        0,
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
        this.#submit(call);
      }
      return next();
    };
    return call;
  }

  /** Prevents new work; queued and running work still completes. */
  close(): void {
    if (this.#state === "running") this.#state = "closed";
    this.#checkIdle();
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
    if (this.#state === "running") {
      throw new TypeError(
        "Cannot join the pool: it is still running (call close() or terminate() first)",
      );
    }
    if (this.#state === "closed") {
      const idle = new Promise<void>((resolve) => {
        this.#idle.push(resolve);
        this.#checkIdle();
      });
      const ok = await withDeadline<boolean>(
        idle.then(() => true),
        options,
        "join the pool",
        () => ({ value: false }),
      );
      if (!ok) return false;
    }
    this.#stopWorkers();
    return true;
  }

  /**
   * Stops the workers now; pending calls reject with
   * {@linkcode ClosedError}. A worker busy in a synchronous loop cannot be
   * stopped by Deno and is abandoned.
   */
  terminate(): void {
    if (this.#state === "terminated") return;
    this.#state = "terminated";
    const e = new ClosedError(
      "Cannot finish the call: the pool was terminated",
    );
    for (const call of [...this.#calls]) call.fail(e);
    for (const s of this.#slots) {
      for (let i = s.head; i < s.inflight.length; i++) {
        s.inflight[i]!.call.fail(e);
      }
      s.inflight = [];
      s.head = 0;
    }
    for (const j of this.#retry.splice(0)) j.call.fail(e);
    this.#stopWorkers();
    for (const w of this.#idle.splice(0)) w();
  }

  #stopWorkers(): void {
    this.#state = "terminated";
    if (this.#watchdog !== undefined) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
    }
    const slots = this.#slots.splice(0);
    for (const s of slots) s.worker.terminate();
  }

  /** Closes the pool and waits for its work (`await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#state === "terminated") return;
    this.close();
    await this.join();
  }
}

class ApplyCall extends PromiseCall {
  constructor(
    pool: CallHost,
    fnId: number,
    argLists: unknown[][],
    options: ApplyOptions,
  ) {
    super(pool, fnId, 1, argLists, options);
  }
}

function failedIterator(error: unknown): AsyncIterableIterator<unknown> {
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

// -- Demo ------------------------------------------------------------------

async function demo(): Promise<void> {
  const { values } = parseCli(
    Deno.args,
    "deno task cube",
    "Five processes each compute a cube and wait 1 s (the seed's example); with --pool, a Pool map with a progress bar and the speedup over a serial run.",
    {
      pool: {
        type: "string",
        description: "run a Pool map with N workers instead",
        placeholder: "N",
      },
      items: {
        type: "string",
        description: "how many items the Pool map computes (default 64)",
        placeholder: "K",
      },
    },
  );
  if (values.pool === undefined) {
    const t0 = performance.now();
    const processes = [1, 2, 3, 4, 5].map((i) =>
      new Process({
        target: async (n: number) => {
          console.log(`starting process ${n}`);
          console.log(`calculating cube of ${n}... result: ${n ** 3}`);
          await new Promise((r) => setTimeout(r, 1000));
          console.log(`end process ${n}`);
        },
        args: [i],
      })
    );
    for (const p of processes) p.start();
    for (const p of processes) await p.join();
    console.log(`all done in ${formatDuration(performance.now() - t0)}`);
    return;
  }
  const workers = intOption(values.pool, "pool", cpuCount());
  const n = intOption(values.items, "items", 64);
  // A CPU-heavy cube: the sum of i³ over a long range, for each item.
  const heavy = (x: number) => {
    let s = 0;
    for (let i = 0; i < 200_000; i++) s += (i + x) ** 3 % 7;
    return s;
  };
  const items = Array.from({ length: n }, (_, i) => i);
  const t0 = performance.now();
  const serial = items.map(heavy);
  const serialMs = performance.now() - t0;
  await using pool = new Pool({ workers });
  await pool.apply(() => 0); // wait for the workers to be up
  const bar = new ProgressBar(n, "items");
  const t1 = performance.now();
  const parallel = await pool.map(heavy, items, {
    onProgress: (done) => bar.update(done),
  });
  const poolMs = performance.now() - t1;
  bar.done();
  if (parallel.some((v, i) => v !== serial[i])) {
    throw new Error("the pool's results differ from the serial run");
  }
  console.log(
    `serial: ${formatDuration(serialMs)}, pool of ${workers}: ${
      formatDuration(poolMs)
    }, speedup ${formatNumber(serialMs / poolMs)}× on ${formatNumber(n)} items`,
  );
}

if (isMainModule(import.meta)) await demo();

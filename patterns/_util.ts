/**
 * The shared floor of deno-multiprocessing: errors, worker spawning and
 * supervision, the thread table behind abandoned-lock detection, Atomics wait
 * helpers, the mechanism that carries this package's shared objects into
 * workers, task compilation, and small CLI helpers.
 *
 * It holds no pattern logic and imports no pattern; patterns plug into it (a
 * shared type registers how it travels with {@linkcode registerShareable}).
 * Everything here is internal: the public names are re-exported by the
 * pattern modules and `mod.ts`.
 *
 * ```ts
 * import { liveWorkerCount } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(liveWorkerCount(), 0);
 * ```
 *
 * @module
 */

import { parseArgs, styleText } from "node:util";

// -- Errors --------------------------------------------------------------

/**
 * The serialisable description of an error thrown in another thread.
 *
 * @example Usage
 * ```ts
 * import { type ErrorInfo, explainTaskError, RemoteError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const info: ErrorInfo = explainTaskError(new RangeError("too big"), false);
 * assert.equal(info.name, "RangeError");
 * assert.equal(info.message, "too big");
 * assert.equal(new RemoteError(info).remoteName, "RangeError");
 * ```
 */
export interface ErrorInfo {
  /** The error's `name`, e.g. `"TypeError"`. */
  name: string;
  /** The error's message. */
  message: string;
  /** The stack text as the throwing thread saw it. */
  stack: string;
}

/**
 * Options of {@linkcode RemoteError}.
 *
 * @example Usage
 * ```ts
 * import { RemoteError, type RemoteErrorOptions } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const options: RemoteErrorOptions = { worker: "Pool-1-worker-2", index: 7 };
 * const e = new RemoteError({ name: "Error", message: "failed", stack: "" }, options);
 * assert.equal(e.worker, "Pool-1-worker-2");
 * assert.equal(e.index, 7);
 * ```
 */
export interface RemoteErrorOptions {
  /** The name of the worker the error was thrown in. */
  worker?: string;
  /** The position of the item in a map-like call. */
  index?: number;
  /** The original error value, when it could be cloned. */
  cause?: unknown;
}

/**
 * An error thrown by a task in a worker, re-raised in the caller's thread.
 *
 * `message` is the original message; `remoteName` the original error's name;
 * `remoteStack` the worker's stack text; `worker` the worker's name and, for
 * map-like calls, `index` the item's position.
 *
 * @example Usage
 * ```ts
 * import { RemoteError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const e = new RemoteError(
 *   { name: "TypeError", message: "bad", stack: "TypeError: bad" },
 *   { worker: "Pool-1-worker-1", index: 3 },
 * );
 * assert.equal(e.name, "RemoteError");
 * assert.equal(e.remoteName, "TypeError");
 * assert.equal(e.index, 3);
 * ```
 */
export class RemoteError extends Error {
  /** The name of the error thrown in the worker, e.g. `"TypeError"`. */
  readonly remoteName: string;
  /** The stack of the error as printed in the worker. */
  readonly remoteStack: string;
  /** The name of the worker that threw, e.g. `"Pool-1-worker-2"`. */
  readonly worker: string;
  /** The position of the failed item in a map-like call. */
  readonly index: number | undefined;

  /**
   * Wraps the description of a remote error.
   *
   * @param info What the worker reported.
   * @param options Where it came from.
   */
  constructor(info: ErrorInfo, options: RemoteErrorOptions = {}) {
    super(
      info.message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "RemoteError";
    this.remoteName = info.name;
    this.remoteStack = info.stack;
    this.worker = options.worker ?? "";
    this.index = options.index;
  }
}

/**
 * A worker died (it closed itself, exited, crashed or was terminated) while
 * it still owed the caller a result.
 *
 * @example Usage
 * ```ts
 * import { WorkerCrashedError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const e = new WorkerCrashedError("Worker Pool-1-worker-1 died: it called self.close()");
 * assert.equal(e.name, "WorkerCrashedError");
 * ```
 */
export class WorkerCrashedError extends Error {
  /**
   * Makes the error.
   *
   * @param message What happened.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WorkerCrashedError";
  }
}

/**
 * An operation was attempted on something closed: a closed pool, queue,
 * connection or manager.
 *
 * @example Usage
 * ```ts
 * import { ClosedError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new ClosedError("Cannot map: the pool is closed").name, "ClosedError");
 * ```
 */
export class ClosedError extends Error {
  /**
   * Makes the error.
   *
   * @param message What was attempted on what.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ClosedError";
  }
}

/**
 * A lock (or semaphore permit) was held by a thread that died. The caller
 * that receives this error now holds the lock; the data the lock protects may
 * be inconsistent.
 *
 * @example Usage
 * ```ts
 * import { AbandonedError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new AbandonedError("Lock was abandoned").name, "AbandonedError");
 * ```
 */
export class AbandonedError extends Error {
  /**
   * Makes the error.
   *
   * @param message What was abandoned by whom.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AbandonedError";
  }
}

/**
 * `recv` found the peer's end of a pipe closed and nothing left to read.
 *
 * @example Usage
 * ```ts
 * import { EOFError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new EOFError("Cannot recv: the other end is closed").name, "EOFError");
 * ```
 */
export class EOFError extends Error {
  /**
   * Makes the error.
   *
   * @param message What happened.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EOFError";
  }
}

/**
 * `get` on an empty queue timed out, or `getNowait` found it empty.
 *
 * @example Usage
 * ```ts
 * import { EmptyError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new EmptyError("Cannot get: the queue is empty").name, "EmptyError");
 * ```
 */
export class EmptyError extends Error {
  /**
   * Makes the error.
   *
   * @param message What happened.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EmptyError";
  }
}

/**
 * `put` on a full queue timed out, or `putNowait` found it full.
 *
 * @example Usage
 * ```ts
 * import { FullError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new FullError("Cannot put: the queue is full").name, "FullError");
 * ```
 */
export class FullError extends Error {
  /**
   * Makes the error.
   *
   * @param message What happened.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FullError";
  }
}

/**
 * A barrier was broken (aborted, reset, or a wait timed out) while a party waited on it, or was already broken.
 *
 * @example Usage
 * ```ts
 * import { BrokenBarrierError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new BrokenBarrierError("Cannot wait: the barrier is broken").name, "BrokenBarrierError");
 * ```
 */
export class BrokenBarrierError extends Error {
  /**
   * Makes the error.
   *
   * @param message What happened.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BrokenBarrierError";
  }
}

/**
 * The manager handshake failed: a wrong or missing authkey on either side.
 *
 * @example Usage
 * ```ts
 * import { AuthenticationError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new AuthenticationError("Cannot connect: the server refused the authkey").name, "AuthenticationError");
 * ```
 */
export class AuthenticationError extends Error {
  /**
   * Makes the error.
   *
   * @param message What happened.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AuthenticationError";
  }
}

/**
 * Makes the error a timed-out call rejects with: a `DOMException` named
 * `"TimeoutError"`, the same kind `AbortSignal.timeout()` uses.
 *
 * @example Usage
 * ```ts
 * import { timeoutError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(timeoutError("recv timed out after 5 ms").name, "TimeoutError");
 * ```
 *
 * @param message What timed out after how long.
 * @returns The error to throw.
 */
export function timeoutError(message: string): DOMException {
  return new DOMException(message, "TimeoutError");
}

/**
 * Describes any thrown value as {@linkcode ErrorInfo}, for sending it to
 * another thread.
 *
 * @example Usage
 * ```ts
 * import { errorInfo } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(errorInfo(new RangeError("x")).name, "RangeError");
 * assert.equal(errorInfo("plain").message, "plain");
 * ```
 *
 * @param error The thrown value.
 * @returns Its name, message and stack.
 */
export function errorInfo(error: unknown): ErrorInfo {
  if (error instanceof Error || error instanceof DOMException) {
    return {
      name: error.name,
      message: error.message,
      stack: error.stack ?? `${error.name}: ${error.message}`,
    };
  }
  const message = typeof error === "string" ? error : describeValue(error);
  return { name: "Error", message, stack: `Uncaught ${message}` };
}

/**
 * Re-creates an error from its {@linkcode ErrorInfo} in this thread, as the
 * built-in class of the same name where there is one (`TypeError`,
 * `RangeError`, …), or as the package error of that name given in `classes`.
 * Used where an error crosses a thread but is not a task failure (a `Barrier`
 * action, a manager call).
 *
 * @example Usage
 * ```ts
 * import { ClosedError, reviveError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const e = reviveError({ name: "ClosedError", message: "closed", stack: "" }, { ClosedError });
 * assert.ok(e instanceof ClosedError);
 * assert.ok(reviveError({ name: "TypeError", message: "t", stack: "" }) instanceof TypeError);
 * ```
 *
 * @param info The description.
 * @param classes Error classes by name, beyond the built-ins.
 * @returns A local error with the same name and message.
 */
export function reviveError(
  info: ErrorInfo,
  classes: Record<string, new (message: string) => Error> = {},
): Error {
  const builtins: Record<string, new (message: string) => Error> = {
    Error,
    TypeError,
    RangeError,
    SyntaxError,
    ReferenceError,
    EvalError,
    URIError,
    ClosedError,
    WorkerCrashedError,
    AbandonedError,
    EOFError,
    EmptyError,
    FullError,
    BrokenBarrierError,
    AuthenticationError,
  };
  const Ctor = Object.hasOwn(classes, info.name)
    ? classes[info.name]
    : Object.hasOwn(builtins, info.name)
    ? builtins[info.name]
    : undefined;
  if (Ctor) {
    const e = new Ctor(info.message);
    e.stack = info.stack;
    return e;
  }
  if (info.name === "TimeoutError" || info.name === "AbortError") {
    return new DOMException(info.message, info.name) as unknown as Error;
  }
  const e = new Error(info.message);
  e.name = info.name;
  e.stack = info.stack;
  return e;
}

/**
 * A short, safe description of a value for error messages: its type and, for
 * primitives, the value itself.
 *
 * @example Usage
 * ```ts
 * import { describeValue } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(describeValue(-1), "-1");
 * assert.equal(describeValue("x"), '"x"');
 * assert.equal(describeValue([1]), "an array");
 * ```
 *
 * @param value Anything.
 * @returns A description such as `-1`, `"abc"`, `a function`, `an object`.
 */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(
        value.length > 60 ? value.slice(0, 57) + "..." : value,
      );
    case "number":
    case "boolean":
    case "undefined":
      return String(value);
    case "bigint":
      return `${value}n`;
    case "symbol":
      return value.toString();
    case "function":
      return "a function";
    default:
      if (value === null) return "null";
      if (Array.isArray(value)) return "an array";
      if (value instanceof Error) return `${value.name}: ${value.message}`;
      return `an object (${
        (value as object).constructor?.name ?? "null prototype"
      })`;
  }
}

// -- Options: timeouts and signals ---------------------------------------

/**
 * The options every call that may wait takes.
 *
 * @example Usage
 * ```ts
 * import { waitAsync, type WaitOptions } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const word = new Int32Array(new SharedArrayBuffer(4));
 * const controller = new AbortController();
 * const options: WaitOptions = { timeout: 5, signal: controller.signal };
 * assert.equal(await waitAsync(word, 0, 0, options), "timed-out");
 * controller.abort(new Error("stop"));
 * await assert.rejects(waitAsync(word, 0, 0, options), /stop/);
 * ```
 */
export interface WaitOptions {
  /**
   * How long to wait, in milliseconds. `undefined` or `Infinity` waits
   * forever; `0` only tries.
   */
  timeout?: number;
  /** Aborting it rejects the call with the signal's `reason`. */
  signal?: AbortSignal;
}

/**
 * Checks a `timeout` option and turns it into a number of milliseconds
 * (`Infinity` when absent).
 *
 * @example Usage
 * ```ts
 * import { checkTimeout } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(checkTimeout(undefined, "get"), Infinity);
 * assert.throws(() => checkTimeout(-1, "get"), RangeError);
 * ```
 *
 * @param timeout The option as given.
 * @param what The call, for the error message.
 * @returns The timeout in milliseconds.
 * @throws {TypeError} If it is not a number.
 * @throws {RangeError} If it is negative or NaN.
 */
export function checkTimeout(timeout: unknown, what: string): number {
  if (timeout === undefined || timeout === null) return Infinity;
  if (typeof timeout !== "number") {
    throw new TypeError(
      `Cannot ${what}: timeout must be a number of milliseconds, received ${
        describeValue(timeout)
      }`,
    );
  }
  if (!(timeout >= 0)) {
    throw new RangeError(
      `Cannot ${what}: timeout must be a non-negative number of milliseconds, received ${timeout}`,
    );
  }
  return timeout;
}

/**
 * Throws the signal's reason when it is aborted.
 *
 * @example Usage
 * ```ts
 * import { throwIfAborted } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.throws(() => throwIfAborted(AbortSignal.abort(new Error("stop"))), /stop/);
 * throwIfAborted(undefined);
 * ```
 *
 * @param signal The signal, if any.
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/**
 * Races `promise` against a timeout and an abort signal. On timeout it
 * rejects with `onTimeout()` (or a `TimeoutError`); on abort with the
 * signal's reason. Timers and listeners are removed when it settles.
 *
 * @example Usage
 * ```ts
 * import { withDeadline } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * await assert.rejects(
 *   withDeadline(new Promise(() => {}), { timeout: 5 }, "wait"),
 *   { name: "TimeoutError" },
 * );
 * ```
 *
 * @typeParam T The promise's value.
 * @param promise What to wait for.
 * @param options `timeout` and `signal`.
 * @param what The operation, for the timeout message.
 * @param onTimeout Makes the timeout's rejection value, or a value to
 *   resolve with when it returns `{ value }`.
 * @returns The promise's value.
 */
export function withDeadline<T>(
  promise: Promise<T>,
  options: WaitOptions,
  what: string,
  onTimeout?: () => { value: T } | unknown,
): Promise<T> {
  const timeout = checkTimeout(options.timeout, what);
  const signal = options.signal;
  if (timeout === Infinity && !signal) return promise;
  return new Promise<T>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      done();
      reject(signal!.reason);
    };
    if (signal?.aborted) return reject(signal.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeout !== Infinity) {
      timer = setTimeout(() => {
        done();
        const r = onTimeout?.();
        if (r && typeof r === "object" && "value" in r) resolve(r.value as T);
        else {
          reject(
            r ?? timeoutError(`${what} timed out after ${timeout} ms`),
          );
        }
      }, timeout);
    }
    promise.then(
      (v) => {
        done();
        resolve(v);
      },
      (e) => {
        done();
        reject(e);
      },
    );
  });
}

// -- The runtime: per-thread state shared by every copy of this module ---

const RUNTIME = Symbol.for("deno-multiprocessing.runtime.v1");
/** How many threads can be alive at once (slots in the thread table). */
const TABLE_SLOTS = 4096;
/**
 * Table layout: [0] the id counter; [1 + id % TABLE_SLOTS] the id of the
 * live thread in that slot, or 0. A thread is alive while its slot holds its
 * id: marking it dead clears the slot, which a new thread may then claim, so
 * one word says both "alive" and "told to stop" with no race between them.
 */
const IDS_OFFSET = 1;

interface Runtime {
  table: Int32Array;
  threadId: number;
  threadName: string;
  isWorker: boolean;
  registry: Map<string, Reviver>;
  modules: Map<string, Promise<unknown>>;
  spawned: number;
  live: Set<ManagedWorker>;
  keepAlive: {
    count: number;
    timer: ReturnType<typeof setInterval> | undefined;
  };
}

function inWorkerScope(): boolean {
  return typeof (globalThis as { WorkerGlobalScope?: unknown })
    .WorkerGlobalScope !== "undefined";
}

function allocateThreadId(table: Int32Array): number {
  for (let tries = 0; tries < TABLE_SLOTS * 2; tries++) {
    let id = Atomics.add(table, 0, 1) + 1;
    if (id >= 0x7fff0000) id = (id % 0x7fff0000) + 1;
    const slot = IDS_OFFSET + (id % TABLE_SLOTS);
    const occupant = Atomics.load(table, slot);
    if (occupant !== 0) continue;
    if (Atomics.compareExchange(table, slot, 0, id) === 0) return id;
  }
  throw new RangeError(
    `Cannot start a worker: more than ${TABLE_SLOTS} threads are alive`,
  );
}

function runtime(): Runtime {
  const g = globalThis as unknown as { [RUNTIME]?: Runtime };
  let rt = g[RUNTIME];
  if (!rt) {
    const table = new Int32Array(
      new SharedArrayBuffer(4 * (1 + TABLE_SLOTS)),
    );
    rt = {
      table,
      threadId: 0,
      threadName: inWorkerScope()
        ? ((globalThis as { name?: string }).name || "worker")
        : "MainThread",
      isWorker: inWorkerScope(),
      registry: new Map(),
      modules: new Map(),
      spawned: 0,
      live: new Set(),
      keepAlive: { count: 0, timer: undefined },
    };
    rt.threadId = allocateThreadId(table);
    g[RUNTIME] = rt;
  }
  return rt;
}

/**
 * The id of the calling thread (the main thread or a worker), unique among
 * the threads alive in this process tree. Lock owners are recorded by it.
 *
 * @example Usage
 * ```ts
 * import { currentThreadId, isThreadAlive } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(isThreadAlive(currentThreadId()));
 * ```
 *
 * @returns A positive integer.
 */
export function currentThreadId(): number {
  return runtime().threadId;
}

/**
 * The calling thread's name: `"MainThread"`, or the worker's name (e.g.
 * `"Pool-1-worker-2"`), as Python's `current_process().name`.
 *
 * @example Usage
 * ```ts
 * import { currentThreadName } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(currentThreadName(), "MainThread");
 * ```
 *
 * @returns The name.
 */
export function currentThreadName(): string {
  return runtime().threadName;
}

/**
 * Whether the thread with this id is still alive: not exited, crashed,
 * terminated or told to stop. A lock owned by a thread that is not alive is
 * abandoned.
 *
 * @example Usage
 * ```ts
 * import { currentThreadId, isThreadAlive } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(isThreadAlive(currentThreadId()));
 * assert.ok(!isThreadAlive(0));
 * ```
 *
 * @param id A thread id from {@linkcode currentThreadId}.
 * @returns `true` while it runs.
 */
export function isThreadAlive(id: number): boolean {
  if (id <= 0) return false;
  const t = runtime().table;
  return Atomics.load(t, IDS_OFFSET + (id % TABLE_SLOTS)) === id;
}

function markThreadDead(id: number): void {
  const t = runtime().table;
  Atomics.compareExchange(t, IDS_OFFSET + (id % TABLE_SLOTS), id, 0);
}

/**
 * Whether the calling thread has been asked to stop (its pool or process
 * was terminated). Timed waits in worker code check this and throw, so a
 * terminated worker unwinds instead of waiting forever.
 *
 * @example Usage
 * ```ts
 * import { stopRequested } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(stopRequested(), false);
 * ```
 *
 * @returns `true` once a stop was requested.
 */
export function stopRequested(): boolean {
  const rt = runtime();
  return Atomics.load(rt.table, IDS_OFFSET + (rt.threadId % TABLE_SLOTS)) !==
    rt.threadId;
}

/**
 * Throws when the calling thread was told to stop (see
 * {@linkcode stopRequested}): every wait of this package calls it after each
 * sleep, so a terminated worker unwinds instead of taking another item or
 * lock it could not hand on.
 *
 * @example Usage
 * ```ts
 * import { throwIfStopRequested } from "./_util.ts";
 *
 * throwIfStopRequested(); // the main thread is never told to stop
 * ```
 *
 * @throws {WorkerCrashedError} If this thread was told to stop.
 */
export function throwIfStopRequested(): void {
  if (stopRequested()) {
    throw new WorkerCrashedError(
      `Worker ${currentThreadName()} was told to stop while waiting`,
    );
  }
}

/**
 * Whether the calling code runs in a worker rather than the main thread.
 *
 * @example Usage
 * ```ts
 * import { isWorkerThread } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(isWorkerThread(), false);
 * ```
 *
 * @returns `true` in a worker.
 */
export function isWorkerThread(): boolean {
  return runtime().isWorker;
}

/**
 * Whether a module runs as a program's entry point in the main thread: the
 * demo guard (`import.meta.main` alone is also `true` in a worker's entry).
 *
 * @example Usage
 * ```ts
 * import { isMainModule } from "./_util.ts";
 *
 * if (isMainModule(import.meta)) console.log("run as a program");
 * ```
 *
 * @param meta The module's `import.meta`.
 * @returns `true` when the module should run its demo.
 */
export function isMainModule(meta: ImportMeta): boolean {
  return meta.main && !inWorkerScope();
}

// -- Keeping the event loop alive while waiting on shared memory ---------

/**
 * Holds Deno's event loop open while a promise waits on shared memory (a
 * pending `Atomics.waitAsync` alone does not). Call the returned function
 * when the wait ends.
 *
 * @example Usage
 * ```ts
 * import { holdEventLoop } from "./_util.ts";
 *
 * const release = holdEventLoop();
 * release();
 * ```
 *
 * @returns A function that lets go; calling it twice is harmless.
 */
export function holdEventLoop(): () => void {
  const ka = runtime().keepAlive;
  if (ka.count++ === 0) ka.timer = setInterval(() => {}, 0x3fffffff);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--ka.count === 0) {
      clearInterval(ka.timer);
      ka.timer = undefined;
    }
  };
}

// -- Atomics wait helpers ------------------------------------------------

/** How many loads to spin before sleeping in a wait. */
const SPIN = 4000;
/** The longest single sleep of a blocking wait, so stop requests are seen. */
const SLICE_MS = 50;

/**
 * The result of a wait on a shared word: woken (`"ok"`), the word already
 * differed (`"not-equal"`), or the time ran out (`"timed-out"`).
 *
 * @example Usage
 * ```ts
 * import { type WaitResult, waitSync } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const word = new Int32Array(new SharedArrayBuffer(4));
 * Atomics.store(word, 0, 1);
 * const result: WaitResult = waitSync(word, 0, 0, 10);
 * assert.equal(result, "not-equal");
 * ```
 */
export type WaitResult = "ok" | "not-equal" | "timed-out";

/**
 * Blocks the calling thread while `array[index] === expected`, for at most
 * `timeout` ms: spins briefly, then sleeps in `Atomics.wait` slices so that a
 * stop request for this thread is noticed.
 *
 * @example Usage
 * ```ts
 * import { waitSync } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const word = new Int32Array(new SharedArrayBuffer(4));
 * assert.equal(waitSync(word, 0, 1, 10), "not-equal");
 * assert.equal(waitSync(word, 0, 0, 1), "timed-out");
 * ```
 *
 * @param array A shared `Int32Array`.
 * @param index The word to watch.
 * @param expected The value to wait while it holds.
 * @param timeout Milliseconds; `Infinity` for ever.
 * @returns How the wait ended.
 * @throws {WorkerCrashedError} If this thread was told to stop meanwhile.
 */
export function waitSync(
  array: Int32Array,
  index: number,
  expected: number,
  timeout: number = Infinity,
): WaitResult {
  if (Atomics.load(array, index) !== expected) return "not-equal";
  for (let i = 0; i < SPIN; i++) {
    if (Atomics.load(array, index) !== expected) return "ok";
  }
  if (timeout <= 0) return "timed-out";
  const end = timeout === Infinity ? Infinity : performance.now() + timeout;
  for (;;) {
    throwIfStopRequested();
    const left = end - performance.now();
    if (left <= 0) return "timed-out";
    const r = Atomics.wait(array, index, expected, Math.min(left, SLICE_MS));
    if (r !== "timed-out") return r;
  }
}

/**
 * Waits without blocking the event loop while `array[index] === expected`:
 * spins briefly, then awaits `Atomics.waitAsync` while holding the event
 * loop open. Honours `timeout` and `signal`.
 *
 * @example Usage
 * ```ts
 * import { waitAsync } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const word = new Int32Array(new SharedArrayBuffer(4));
 * assert.equal(await waitAsync(word, 0, 0, { timeout: 5 }), "timed-out");
 * setTimeout(() => { Atomics.store(word, 0, 1); Atomics.notify(word, 0); }, 1);
 * assert.equal(await waitAsync(word, 0, 0), "ok");
 * ```
 *
 * @param array A shared `Int32Array`.
 * @param index The word to watch.
 * @param expected The value to wait while it holds.
 * @param options `timeout` (ms) and `signal`.
 * @returns How the wait ended; rejects with the signal's reason on abort.
 */
export async function waitAsync(
  array: Int32Array,
  index: number,
  expected: number,
  options: WaitOptions = {},
): Promise<WaitResult> {
  const timeout = options.timeout ?? Infinity;
  const signal = options.signal;
  throwIfAborted(signal);
  if (Atomics.load(array, index) !== expected) return "not-equal";
  for (let i = 0; i < SPIN; i++) {
    if (Atomics.load(array, index) !== expected) return "ok";
  }
  if (timeout <= 0) return "timed-out";
  const r = Atomics.waitAsync(
    array,
    index,
    expected,
    timeout === Infinity ? undefined : timeout,
  );
  if (!r.async) return r.value;
  const release = holdEventLoop();
  try {
    if (!signal) return await r.value;
    let onAbort!: () => void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([r.value, aborted]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  } finally {
    release();
  }
}

// -- Shared objects travelling into workers -------------------------------

/**
 * The symbol a shareable class implements to describe how it travels into a
 * worker; see {@linkcode Shareable}.
 *
 * @example Usage
 * ```ts
 * import { encodeShared, kShare } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(kShare, Symbol.for("deno-multiprocessing.share"));
 * const point = {
 *   [kShare]: () => ({ type: "example.point", module: import.meta.url, data: [1, 2] }),
 * };
 * assert.equal(encodeShared([point], []).handles, true);
 * ```
 */
export const kShare: unique symbol = Symbol.for(
  "deno-multiprocessing.share",
) as never;

const HANDLE_KEY = "\u0000deno-multiprocessing.handle";

/**
 * The description of a shared object as it crosses into a worker.
 *
 * @example Usage
 * ```ts
 * import { kShare, type SharedHandle } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const words = new Int32Array(new SharedArrayBuffer(4));
 * const shared = {
 *   [kShare]: (): SharedHandle => ({
 *     type: "example.words",
 *     module: import.meta.url,
 *     data: words.buffer,
 *   }),
 * };
 * const handle = shared[kShare]();
 * assert.equal(handle.type, "example.words");
 * assert.equal(handle.data, words.buffer);
 * ```
 */
export interface SharedHandle {
  /** The registered type, e.g. `"value"`. */
  type: string;
  /**
   * The module that registers the type (its `import.meta.url`), imported by
   * the receiving thread when the type is not yet known there.
   */
  module: string;
  /** Whatever the reviver needs: buffers, ports, numbers. */
  data: unknown;
}

/**
 * What a shareable object may use while it is being sent.
 *
 * @example Usage
 * ```ts
 * import { encodeShared, kShare, type ShareContext } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const log: string[] = [];
 * const thing = {
 *   [kShare](context: ShareContext) {
 *     context.afterSend(() => log.push("posted"));
 *     return { type: "example.thing", module: import.meta.url, data: null };
 *   },
 * };
 * const transfer: Transferable[] = [];
 * const encoded = encodeShared(thing, transfer);
 * for (const fn of encoded.afterSend) fn();
 * assert.deepEqual(log, ["posted"]);
 * ```
 */
export interface ShareContext {
  /** Objects to transfer (e.g. a `MessagePort`) rather than clone. */
  transfer: Transferable[];
  /** Runs once the message holding the object was posted. */
  afterSend(fn: () => void): void;
}

/**
 * What a reviver may use while it rebuilds an object in a worker.
 *
 * @example Usage
 * ```ts
 * import {
 *   decodeShared,
 *   encodeShared,
 *   kShare,
 *   registerShareable,
 *   type ReviveContext,
 * } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * registerShareable("example.ticket", (data, context) => {
 *   const ticket = { id: data as number, open: true };
 *   context.onTaskEnd(() => (ticket.open = false));
 *   return ticket;
 * });
 * const endHooks: Array<() => void> = [];
 * const context: ReviveContext = { onTaskEnd: (fn) => endHooks.push(fn) };
 * const sent = {
 *   [kShare]: () => ({ type: "example.ticket", module: import.meta.url, data: 7 }),
 * };
 * const ticket = await decodeShared(encodeShared(sent, []).value, context) as {
 *   id: number;
 *   open: boolean;
 * };
 * assert.equal(ticket.id, 7);
 * for (const fn of endHooks) fn();
 * assert.equal(ticket.open, false);
 * ```
 */
export interface ReviveContext {
  /** Runs when the task or process that received the object ends. */
  onTaskEnd(fn: () => void): void;
}

/**
 * A class of this package whose instances can be passed to workers and
 * arrive live there.
 *
 * @example Usage
 * ```ts
 * import {
 *   decodeShared,
 *   encodeShared,
 *   kShare,
 *   registerShareable,
 *   type Shareable,
 *   type SharedHandle,
 * } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * class Counter implements Shareable {
 *   constructor(readonly words: Int32Array = new Int32Array(new SharedArrayBuffer(4))) {}
 *   [kShare](): SharedHandle {
 *     return { type: "example.counter", module: import.meta.url, data: this.words };
 *   }
 * }
 * registerShareable("example.counter", (data) => new Counter(data as Int32Array));
 *
 * const counter = new Counter();
 * const encoded = encodeShared({ counter }, []);
 * // What a worker would do with the message: rebuild a live Counter.
 * const received = await decodeShared(structuredClone(encoded.value)) as {
 *   counter: Counter;
 * };
 * Atomics.add(received.counter.words, 0, 1);
 * assert.equal(Atomics.load(counter.words, 0), 1);
 * ```
 */
export interface Shareable {
  /** Describes this object for the trip into another thread. */
  [kShare](context: ShareContext): SharedHandle;
}

/**
 * Rebuilds a shared object from its handle's `data` in a receiving thread.
 *
 * @example Usage
 * ```ts
 * import { registerShareable, type Reviver } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const revive: Reviver = (data) => new Int32Array(data as SharedArrayBuffer);
 * registerShareable("example.int32", revive);
 * const words = revive(new SharedArrayBuffer(8), { onTaskEnd() {} });
 * assert.ok(words instanceof Int32Array);
 * ```
 */
export type Reviver = (data: unknown, context: ReviveContext) => unknown;

/**
 * Registers how a shared type is rebuilt in a receiving thread. Each
 * pattern module calls it at its top level.
 *
 * @example Usage
 * ```ts
 * import { registerShareable } from "./_util.ts";
 *
 * registerShareable("example.counter", (data) => new Int32Array(data as SharedArrayBuffer));
 * ```
 *
 * @param type A unique type name.
 * @param reviver Builds the live object from the handle's data.
 */
export function registerShareable(type: string, reviver: Reviver): void {
  runtime().registry.set(type, reviver);
}

function isShareable(v: object): v is Shareable {
  return typeof (v as Partial<Shareable>)[kShare] === "function";
}

/**
 * Whether `v` is a plain object (its prototype is `Object.prototype` or
 * `null`), as opposed to an array, a class instance or a primitive.
 *
 * @example Usage
 * ```ts
 * import { isPlainObject } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(isPlainObject({ a: 1 }));
 * assert.ok(!isPlainObject([1]));
 * assert.ok(!isPlainObject(new Date()));
 * ```
 *
 * @param v Anything.
 * @returns `true` for a plain object.
 */
export function isPlainObject(v: unknown): boolean {
  if (typeof v !== "object" || v === null) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}

/**
 * The result of {@linkcode encodeShared}.
 *
 * @example Usage
 * ```ts
 * import { type Encoded, encodeShared } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const encoded: Encoded = encodeShared({ n: 1 }, []);
 * assert.deepEqual(encoded.value, { n: 1 });
 * assert.equal(encoded.handles, false);
 * assert.deepEqual(encoded.afterSend, []);
 * ```
 */
export interface Encoded {
  /** The value with every shared object replaced by its handle. */
  value: unknown;
  /** Whether any handle was found (if not, decoding can be skipped). */
  handles: boolean;
  /** Hooks to run once the message was posted. */
  afterSend: Array<() => void>;
}

/**
 * Replaces this package's shared objects inside `value` (also nested in
 * arrays, plain objects, Maps and Sets) with handles that
 * {@linkcode decodeShared} turns back into live objects in the receiving
 * thread. Values without shared objects are returned as they are.
 *
 * @example Usage
 * ```ts
 * import { encodeShared } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const transfer: Transferable[] = [];
 * const e = encodeShared([1, { a: 2 }], transfer);
 * assert.equal(e.handles, false);
 * ```
 *
 * @param value The value to send.
 * @param transfer Collects transferables the objects need.
 * @returns The encoded value.
 */
export function encodeShared(
  value: unknown,
  transfer: Transferable[],
): Encoded {
  const out: Encoded = { value, handles: false, afterSend: [] };
  if (typeof value !== "object" || value === null) return out;
  const seen = new Map<object, unknown>();
  const context: ShareContext = {
    transfer,
    afterSend: (fn) => out.afterSend.push(fn),
  };
  const walk = (v: unknown): unknown => {
    if (typeof v !== "object" || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (isShareable(v)) {
      out.handles = true;
      const h = v[kShare](context);
      const marked: Record<string, unknown> = { [HANDLE_KEY]: 1, ...h };
      seen.set(v, marked);
      // The handle's data may itself hold shared objects (a Value's lock).
      marked.data = walk(h.data);
      return marked;
    }
    if (Array.isArray(v)) {
      seen.set(v, v);
      let copy: unknown[] | undefined;
      for (let i = 0; i < v.length; i++) {
        const w = walk(v[i]);
        if (w !== v[i] && !copy) copy = v.slice(0, i);
        if (copy) copy.push(w);
      }
      if (copy) seen.set(v, copy);
      return copy ?? v;
    }
    if (v instanceof Map) {
      seen.set(v, v);
      let changed = false;
      const entries = [...v].map(([k, x]) => {
        const k2 = walk(k), x2 = walk(x);
        if (k2 !== k || x2 !== x) changed = true;
        return [k2, x2] as const;
      });
      const r = changed ? new Map(entries) : v;
      seen.set(v, r);
      return r;
    }
    if (v instanceof Set) {
      seen.set(v, v);
      let changed = false;
      const items = [...v].map((x) => {
        const x2 = walk(x);
        if (x2 !== x) changed = true;
        return x2;
      });
      const r = changed ? new Set(items) : v;
      seen.set(v, r);
      return r;
    }
    if (!isPlainObject(v)) return v;
    seen.set(v, v);
    let copy: Record<string, unknown> | undefined;
    for (const k of Object.keys(v)) {
      const x = (v as Record<string, unknown>)[k];
      const w = walk(x);
      if (w !== x && !copy) copy = { ...(v as Record<string, unknown>) };
      if (copy) copy[k] = w;
    }
    if (copy) seen.set(v, copy);
    return copy ?? v;
  };
  out.value = walk(value);
  return out;
}

function collectModules(v: unknown, into: Set<string>, seen: Set<object>) {
  if (typeof v !== "object" || v === null || seen.has(v)) return;
  seen.add(v);
  if (Array.isArray(v)) {
    for (const x of v) collectModules(x, into, seen);
  } else if (v instanceof Map) {
    for (const [k, x] of v) {
      collectModules(k, into, seen);
      collectModules(x, into, seen);
    }
  } else if (v instanceof Set) {
    for (const x of v) collectModules(x, into, seen);
  } else if (isPlainObject(v)) {
    const rec = v as Record<string, unknown>;
    if (rec[HANDLE_KEY] === 1) {
      into.add(String(rec.module));
      collectModules(rec.data, into, seen);
      return;
    }
    for (const k of Object.keys(rec)) collectModules(rec[k], into, seen);
  }
}

/**
 * Turns the handles made by {@linkcode encodeShared} back into live
 * objects, importing the modules that register their types when needed.
 *
 * @example Usage
 * ```ts
 * import { decodeShared } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.deepEqual(await decodeShared([1, { a: 2 }]), [1, { a: 2 }]);
 * ```
 *
 * @param value A received value.
 * @param context Hooks for the revived objects (task end).
 * @returns The value with live objects in place of handles.
 * @throws {TypeError} If a handle names an unknown type.
 */
export async function decodeShared(
  value: unknown,
  context: ReviveContext = { onTaskEnd() {} },
): Promise<unknown> {
  if (typeof value !== "object" || value === null) return value;
  const rt = runtime();
  const modules = new Set<string>();
  collectModules(value, modules, new Set());
  for (const m of modules) {
    let p = rt.modules.get(m);
    if (!p) {
      p = import(m);
      rt.modules.set(m, p);
    }
    await p;
  }
  const seen = new Map<object, unknown>();
  const walk = (v: unknown): unknown => {
    if (typeof v !== "object" || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (Array.isArray(v)) {
      seen.set(v, v);
      for (let i = 0; i < v.length; i++) v[i] = walk(v[i]);
      return v;
    }
    if (v instanceof Map) {
      seen.set(v, v);
      const entries = [...v].map(([k, x]) => [walk(k), walk(x)] as const);
      v.clear();
      for (const [k, x] of entries) v.set(k, x);
      return v;
    }
    if (v instanceof Set) {
      seen.set(v, v);
      const items = [...v].map(walk);
      v.clear();
      for (const x of items) v.add(x);
      return v;
    }
    if (!isPlainObject(v)) return v;
    const rec = v as Record<string, unknown>;
    if (rec[HANDLE_KEY] === 1) {
      const reviver = rt.registry.get(String(rec.type));
      if (!reviver) {
        throw new TypeError(
          `Cannot receive a shared object: unknown type ${
            describeValue(rec.type)
          } (module ${describeValue(rec.module)} did not register it)`,
        );
      }
      const live = reviver(walk(rec.data), context);
      seen.set(v, live);
      return live;
    }
    seen.set(v, v);
    for (const k of Object.keys(rec)) rec[k] = walk(rec[k]);
    return v;
  };
  return walk(value);
}

// -- Typecodes (value.ts and array.ts) -------------------------------------------------------------

/**
 * The 64-bit typecodes: their values are `bigint`.
 *
 * @example Usage
 * ```ts
 * import { type BigTypecode, RawValue } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const code: BigTypecode = "q";
 * const v = new RawValue(code, 2n ** 40n);
 * assert.equal(v.value, 2n ** 40n);
 * ```
 */
export type BigTypecode = "l" | "L" | "q" | "Q" | "int64" | "uint64";

/**
 * A typecode of Python's `array` module, or its readable alias.
 *
 * @example Usage
 * ```ts
 * import { RawValue, type Typecode } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const codes: Typecode[] = ["i", "float64", "uint64"];
 * assert.deepEqual(codes.map((c) => new RawValue(c).value), [0, 0, 0n]);
 * ```
 */
export type Typecode =
  | "b"
  | "B"
  | "h"
  | "H"
  | "i"
  | "I"
  | "f"
  | "d"
  | "int8"
  | "uint8"
  | "int16"
  | "uint16"
  | "int32"
  | "uint32"
  | "float32"
  | "float64"
  | BigTypecode;

/**
 * The JavaScript type of one element of typecode `C`.
 *
 * @example Usage
 * ```ts
 * import type { ElementOf } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const small: ElementOf<"int32"> = 42;
 * const big: ElementOf<"uint64"> = 42n;
 * assert.equal(typeof small, "number");
 * assert.equal(typeof big, "bigint");
 * ```
 */
export type ElementOf<C extends Typecode> = C extends BigTypecode ? bigint
  : number;

/**
 * The typed array that views memory of typecode `C`.
 *
 * @example Usage
 * ```ts
 * import type { TypedArrayOf } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const view: TypedArrayOf<"int16"> = new Int16Array(new SharedArrayBuffer(4));
 * assert.equal(view.length, 2);
 * ```
 */
export type TypedArrayOf<C extends Typecode> = C extends "b" | "int8"
  ? Int8Array
  : C extends "B" | "uint8" ? Uint8Array
  : C extends "h" | "int16" ? Int16Array
  : C extends "H" | "uint16" ? Uint16Array
  : C extends "i" | "int32" ? Int32Array
  : C extends "I" | "uint32" ? Uint32Array
  : C extends "l" | "q" | "int64" ? BigInt64Array
  : C extends "L" | "Q" | "uint64" ? BigUint64Array
  : C extends "f" | "float32" ? Float32Array
  : C extends "d" | "float64" ? Float64Array
  : never;

/**
 * Any typed array a typecode can give.
 *
 * @example Usage
 * ```ts
 * import { type AnyTypedArray, typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const { ctor } = typecodeInfo("f", "make a view");
 * const view: AnyTypedArray = new ctor(new SharedArrayBuffer(8));
 * assert.ok(view instanceof Float32Array);
 * assert.equal(view.length, 2);
 * ```
 */
export type AnyTypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | Float32Array
  | Float64Array;

/**
 * What a typecode means.
 *
 * @example Usage
 * ```ts
 * import { type TypecodeInfo, typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const t: TypecodeInfo = typecodeInfo("uint8", "describe a typecode");
 * assert.equal(t.code, "B");
 * assert.equal(t.bytes, 1);
 * assert.equal(t.kind, "int");
 * assert.equal(t.max, 255);
 * ```
 */
export interface TypecodeInfo {
  /** The canonical one-letter code, e.g. `"i"`. */
  code: string;
  /** The readable alias, e.g. `"int32"`. */
  alias: string;
  /** The typed array class. */
  ctor: new (buffer: SharedArrayBuffer | ArrayBuffer) => AnyTypedArray;
  /** Bytes per element. */
  bytes: number;
  /** `"int"` (number), `"big"` (bigint) or `"float"` (number). */
  kind: "int" | "big" | "float";
  /** The smallest value (for integer kinds). */
  min: number | bigint;
  /** The largest value (for integer kinds). */
  max: number | bigint;
}

function info(
  code: string,
  alias: string,
  ctor: TypecodeInfo["ctor"],
  bytes: number,
  kind: TypecodeInfo["kind"],
  min: number | bigint,
  max: number | bigint,
): TypecodeInfo {
  return { code, alias, ctor, bytes, kind, min, max };
}

const TABLE: Record<string, TypecodeInfo> = Object.create(null);
for (
  const t of [
    info("b", "int8", Int8Array, 1, "int", -128, 127),
    info("B", "uint8", Uint8Array, 1, "int", 0, 255),
    info("h", "int16", Int16Array, 2, "int", -32768, 32767),
    info("H", "uint16", Uint16Array, 2, "int", 0, 65535),
    info("i", "int32", Int32Array, 4, "int", -(2 ** 31), 2 ** 31 - 1),
    info("I", "uint32", Uint32Array, 4, "int", 0, 2 ** 32 - 1),
    info("l", "int64", BigInt64Array, 8, "big", -(2n ** 63n), 2n ** 63n - 1n),
    info("L", "uint64", BigUint64Array, 8, "big", 0n, 2n ** 64n - 1n),
    info("q", "int64", BigInt64Array, 8, "big", -(2n ** 63n), 2n ** 63n - 1n),
    info("Q", "uint64", BigUint64Array, 8, "big", 0n, 2n ** 64n - 1n),
    info("f", "float32", Float32Array, 4, "float", -Infinity, Infinity),
    info("d", "float64", Float64Array, 8, "float", -Infinity, Infinity),
  ]
) {
  TABLE[t.code] = t;
}
for (const t of Object.values(TABLE)) {
  if (t.code !== "l" && t.code !== "L") TABLE[t.alias] = t;
}

/**
 * Every accepted typecode, codes first, then aliases.
 *
 * @example Usage
 * ```ts
 * import { TYPECODES } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(TYPECODES.includes("d"));
 * assert.ok(TYPECODES.includes("float64"));
 * assert.equal(TYPECODES.includes("x"), false);
 * ```
 */
export const TYPECODES: readonly string[] = Object.freeze(Object.keys(TABLE));

/**
 * Looks a typecode up.
 *
 * @example Usage
 * ```ts
 * import { typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(typecodeInfo("int32", "create Value").code, "i");
 * assert.throws(() => typecodeInfo("x", "create Value"), TypeError);
 * ```
 *
 * @param typecode A code or alias.
 * @param what The call, for the error message.
 * @returns What it means.
 * @throws {TypeError} If it is not a known typecode; the message lists them.
 */
export function typecodeInfo(typecode: unknown, what: string): TypecodeInfo {
  const t = typeof typecode === "string" ? TABLE[typecode] : undefined;
  if (!t) {
    throw new TypeError(
      `Cannot ${what}: unknown typecode ${
        describeValue(typecode)
      }; valid typecodes are ${TYPECODES.join(", ")}`,
    );
  }
  return t;
}

/**
 * Checks that `value` fits typecode `t`: an integer in range for the
 * integer codes, a `bigint` in range for the 64-bit codes, any `number` for
 * the float codes.
 *
 * @example Usage
 * ```ts
 * import { checkElement, typecodeInfo } from "@dmp/multiprocessing/value";
 * import { strict as assert } from "node:assert";
 *
 * const B = typecodeInfo("B", "test");
 * assert.equal(checkElement(B, 255, "set"), 255);
 * assert.throws(() => checkElement(B, 300, "set"), TypeError);
 * ```
 *
 * @param t The typecode's info.
 * @param value The value.
 * @param what The call, for the error message.
 * @returns The value.
 * @throws {TypeError} If it does not fit.
 */
export function checkElement(
  t: TypecodeInfo,
  value: unknown,
  what: string,
): number | bigint {
  if (t.kind === "float") {
    if (typeof value === "number") return value;
  } else if (t.kind === "int") {
    if (
      typeof value === "number" && Number.isInteger(value) &&
      value >= (t.min as number) && value <= (t.max as number)
    ) return value;
  } else if (
    typeof value === "bigint" && value >= (t.min as bigint) &&
    value <= (t.max as bigint)
  ) return value;
  throw badElement(t, value, what);
}

function badElement(t: TypecodeInfo, value: unknown, what: string): TypeError {
  let need: string;
  if (t.kind === "float") need = "a number";
  else if (t.kind === "int") {
    need = `an integer from ${t.min} to ${t.max}`;
  } else need = `a bigint from ${t.min}n to ${t.max}n`;
  const hint = t.kind === "big" && typeof value === "number"
    ? ` (write ${Number.isInteger(value) ? `${value}n` : "a bigint"})`
    : "";
  return new TypeError(
    `Cannot ${what}: typecode "${t.code}" (${t.alias}) holds ${need}, received ${
      describeValue(value)
    }${hint}`,
  );
}

// -- Tasks: self-contained functions sent as source ----------------------

/**
 * A task function as sent to a worker: its source text.
 *
 * @example Usage
 * ```ts
 * import { compileTask, type TaskSource, taskSource } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const source: TaskSource = taskSource((x: number) => x + 1);
 * assert.equal(compileTask(source)(1), 2);
 * ```
 */
export type TaskSource = string;

/**
 * Turns a self-contained function into the source text a worker compiles.
 *
 * @example Usage
 * ```ts
 * import { taskSource } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.match(taskSource((x: number) => x ** 3), /x \*\* 3/);
 * ```
 *
 * @param fn The function.
 * @param what The call, for the error message.
 * @returns Its source.
 * @throws {TypeError} If `fn` is not a function or is a native/bound one.
 */
export function taskSource(fn: unknown, what = "run task"): TaskSource {
  if (typeof fn !== "function") {
    throw new TypeError(
      `Cannot ${what}: the task must be a function or the name of an export of the module, received ${
        describeValue(fn)
      }`,
    );
  }
  const src = Function.prototype.toString.call(fn);
  if (/\{\s*\[native code\]\s*\}\s*$/.test(src)) {
    throw new TypeError(
      `Cannot ${what}: a native or bound function cannot be sent to a worker, received ${
        fn.name || "an anonymous function"
      }`,
    );
  }
  return src;
}

/**
 * Compiles a task's source in the current thread, as a function expression
 * or, failing that, as a method written in shorthand (`m(x) {…}`).
 *
 * @example Usage
 * ```ts
 * import { compileTask } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(compileTask("(x) => x * 2")(21), 42);
 * assert.equal(compileTask("double(x) { return x * 2; }")(4), 8);
 * ```
 *
 * @param source The function's source text.
 * @returns The function.
 * @throws {SyntaxError} If the source is not a function.
 */
export function compileTask(
  source: TaskSource,
): (...args: unknown[]) => unknown {
  let fn: unknown;
  try {
    fn = new Function(`"use strict"; return (${source});`)();
  } catch {
    try {
      const holder = new Function(`"use strict"; return ({ ${source} });`)();
      fn = Object.values(holder)[0];
    } catch {
      throw new SyntaxError(
        `Cannot compile the task in the worker: its source is not a function expression: ${
          source.slice(0, 80)
        }`,
      );
    }
  }
  if (typeof fn !== "function") {
    throw new SyntaxError(
      `Cannot compile the task in the worker: its source did not evaluate to a function`,
    );
  }
  return fn as (...args: unknown[]) => unknown;
}

/**
 * Adds the likely cause to an error thrown by a task sent as source: a
 * `ReferenceError` there almost always means the function used a variable
 * from its enclosing scope, which does not exist in the worker.
 *
 * @example Usage
 * ```ts
 * import { explainTaskError } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const info = explainTaskError(new ReferenceError("factor is not defined"), true);
 * assert.match(info.message, /enclosing scope/);
 * ```
 *
 * @param error What the task threw.
 * @param fromSource Whether the task was a function sent as source.
 * @returns The error's description, explained where that helps.
 */
export function explainTaskError(
  error: unknown,
  fromSource: boolean,
): ErrorInfo {
  const info = errorInfo(error);
  if (
    fromSource && info.name === "ReferenceError" &&
    / is not defined$/.test(info.message)
  ) {
    const name = info.message.replace(/ is not defined$/, "");
    info.message =
      `${info.message}: a task function is sent to the worker as ` +
      `source text and must not use variables from its enclosing scope ` +
      `(pass ${name} as an argument, or import it inside the task)`;
  }
  return info;
}

// -- Workers -------------------------------------------------------------

const INIT = "\u0000mp.init";
const EXITED = "\u0000mp.exit";
const FATAL = "\u0000mp.fatal";

/**
 * Why a managed worker is gone.
 *
 * @example Usage
 * ```ts
 * import { spawnWorker, type WorkerDeath } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const deaths: WorkerDeath[] = [];
 * const worker = spawnWorker("data:text/javascript,", {
 *   name: "example",
 *   onMessage() {},
 *   onDeath: (death) => deaths.push(death),
 * });
 * worker.terminate({ reason: "no longer needed" });
 * assert.equal(deaths.length, 1);
 * assert.equal(deaths[0]!.kind, "terminated");
 * assert.equal(deaths[0]!.code, -15);
 * assert.equal(worker.death, deaths[0]);
 * ```
 */
export interface WorkerDeath {
  /** How it ended. */
  kind: "exit" | "error" | "terminated";
  /** The exit code for `"exit"`; 1 for errors; -15 when terminated. */
  code: number;
  /** The error that killed it, for `"error"`. */
  error?: ErrorInfo;
  /** A sentence saying what happened, for error messages. */
  reason: string;
}

/**
 * Options of {@linkcode spawnWorker}.
 *
 * @example Usage
 * ```ts
 * import { spawnWorker, type SpawnOptions } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const { promise, resolve } = Promise.withResolvers<unknown>();
 * const options: SpawnOptions = { name: "greeter", onMessage: resolve };
 * const worker = spawnWorker('data:text/javascript,postMessage("ready")', options);
 * assert.equal(await promise, "ready");
 * worker.terminate();
 * ```
 */
export interface SpawnOptions {
  /** The worker's name (shown in errors and `currentThreadName()`). */
  name: string;
  /** Called with each message the worker posts. */
  onMessage(data: unknown): void;
  /** Called once when the worker is gone, however that happened. */
  onDeath?(death: WorkerDeath): void;
}

/**
 * A worker spawned by this package: counted while alive, told its thread id
 * and the shared thread table, and watched so that a silent death (the
 * worker calling `self.close()` or `Deno.exit()`) or a crash is reported
 * exactly once through `onDeath`.
 *
 * @example Usage
 * ```ts
 * import { liveWorkerCount, ManagedWorker } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * // A worker that cubes the numbers it receives (the first message it gets
 * // is this package's init message, which it ignores).
 * const source = "onmessage = (e) => {" +
 *   " if (typeof e.data === 'number') postMessage(e.data ** 3); };";
 * const { promise, resolve } = Promise.withResolvers<unknown>();
 * const worker = new ManagedWorker(`data:text/javascript,${encodeURIComponent(source)}`, {
 *   name: "cuber",
 *   onMessage: resolve,
 * });
 * assert.equal(worker.name, "cuber");
 * assert.equal(liveWorkerCount(), 1);
 * worker.postMessage(5);
 * assert.equal(await promise, 125);
 * worker.terminate();
 * assert.equal(worker.death?.kind, "terminated");
 * assert.equal(liveWorkerCount(), 0);
 * ```
 */
export class ManagedWorker {
  readonly #worker: Worker;
  readonly #options: SpawnOptions;
  readonly #threadId: number;
  #dead: WorkerDeath | undefined;
  #fatal: ErrorInfo | undefined;

  /**
   * Spawns the worker module at `url`.
   *
   * @param url The worker module, e.g. `new URL("./_x_worker.ts", import.meta.url)`.
   * @param options Name and handlers.
   */
  constructor(url: URL | string, options: SpawnOptions) {
    const rt = runtime();
    this.#options = options;
    this.#threadId = allocateThreadId(rt.table);
    try {
      this.#worker = new Worker(url, { type: "module", name: options.name });
    } catch (e) {
      markThreadDead(this.#threadId);
      throw e;
    }
    rt.spawned++;
    rt.live.add(this);
    this.#worker.onmessage = (e: MessageEvent) => this.#onMessage(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const error = this.#fatal ?? {
        name: "Error",
        message: e.message || "uncaught error",
        stack: e.message || "",
      };
      this.#die({
        kind: "error",
        code: 1,
        error,
        reason:
          `Worker ${options.name} crashed: ${error.name}: ${error.message}`,
      });
    };
    this.#worker.onmessageerror = () => {
      this.#die({
        kind: "error",
        code: 1,
        reason: `Worker ${options.name} sent a message that could not be read`,
      });
    };
    this.#worker.postMessage({
      [INIT]: { table: rt.table, threadId: this.#threadId, name: options.name },
    });
  }

  #onMessage(data: unknown): void {
    if (typeof data === "object" && data !== null) {
      const rec = data as Record<string, unknown>;
      if (EXITED in rec) {
        const code = Number(rec[EXITED]) | 0;
        this.#die({
          kind: "exit",
          code,
          reason: `Worker ${this.#options.name} exited (code ${code})`,
        });
        return;
      }
      if (FATAL in rec) {
        this.#fatal = rec[FATAL] as ErrorInfo;
        return;
      }
    }
    if (!this.#dead) this.#options.onMessage(data);
  }

  #die(death: WorkerDeath): void {
    if (this.#dead) return;
    this.#dead = death;
    markThreadDead(this.#threadId);
    this.#worker.terminate();
    runtime().live.delete(this);
    this.#options.onDeath?.(death);
  }

  /** The worker's name. */
  get name(): string {
    return this.#options.name;
  }

  /** The worker's thread id (lock owners are recorded by it). */
  get threadId(): number {
    return this.#threadId;
  }

  /** How the worker ended, or `undefined` while it runs. */
  get death(): WorkerDeath | undefined {
    if (!this.#dead && !isThreadAlive(this.#threadId)) {
      // It marked itself dead (self.close / Deno.exit) but its last message
      // has not arrived yet: report the death now.
      this.#die({
        kind: "exit",
        code: 0,
        reason: `Worker ${this.#options.name} exited`,
      });
    }
    return this.#dead;
  }

  /**
   * Posts a message to the worker.
   *
   * @param data The message.
   * @param transfer Objects to transfer.
   */
  postMessage(data: unknown, transfer: Transferable[] = []): void {
    if (this.#dead) {
      throw new ClosedError(
        `Cannot post to worker ${this.#options.name}: it is gone`,
      );
    }
    this.#worker.postMessage(data, transfer);
  }

  /**
   * Stops the worker: sets its stop flag (so timed waits inside it unwind),
   * then terminates it. A worker busy in a synchronous loop cannot be
   * stopped by Deno; it is then abandoned, no longer counted, and its locks
   * count as abandoned.
   *
   * @param death How to report the end (default: terminated, code -15).
   */
  terminate(death?: Partial<WorkerDeath>): void {
    this.#die({
      kind: "terminated",
      code: -15,
      reason: `Worker ${this.#options.name} was terminated`,
      ...death,
    });
  }
}

/**
 * Spawns a worker module and supervises it; see {@linkcode ManagedWorker}.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnWorker } from "./_util.ts";
 *
 * const w = spawnWorker(new URL("./_cube_worker.ts", import.meta.url), {
 *   name: "example",
 *   onMessage(data) { console.log(data); },
 * });
 * w.terminate();
 * ```
 *
 * @param url The worker module's URL.
 * @param options Name and handlers.
 * @returns The supervised worker.
 */
export function spawnWorker(
  url: URL | string,
  options: SpawnOptions,
): ManagedWorker {
  return new ManagedWorker(url, options);
}

/**
 * How many workers spawned by this package (in this thread) are still
 * alive. Tests assert it is back to zero at the end of each test: Deno's
 * sanitizers do not report a leaked worker.
 *
 * @example Usage
 * ```ts
 * import { liveWorkerCount } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(liveWorkerCount(), 0);
 * ```
 *
 * @returns The number of live workers.
 */
export function liveWorkerCount(): number {
  return runtime().live.size;
}

/**
 * Sets up the worker side of a worker spawned with
 * {@linkcode spawnWorker}. Call it synchronously at the top of a worker
 * entry module: it installs `self.onmessage`, takes the init message (thread
 * id, thread table), wraps `self.close` and `Deno.exit` so a silent exit is
 * recorded, and reports uncaught errors with their stack. Every later
 * message goes to `onMessage`.
 *
 * @example Usage
 * ```ts ignore
 * import { installWorkerRuntime } from "./_util.ts";
 *
 * installWorkerRuntime((data) => postMessage(data));
 * ```
 *
 * @param onMessage Handles the messages after the init message.
 * @param beforeExit Runs when the worker code calls `self.close()` or
 *   `Deno.exit()`, before the exit is reported (e.g. to flush results).
 */
export function installWorkerRuntime(
  onMessage: (data: unknown) => void,
  beforeExit?: () => void,
): void {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent) => void) | null;
    close(): void;
    postMessage(data: unknown): void;
    addEventListener(type: string, fn: (e: Event) => void): void;
  };
  const pending: unknown[] = [];
  let ready = false;
  scope.onmessage = (e: MessageEvent) => {
    const data = e.data;
    if (!ready) {
      if (typeof data === "object" && data !== null && INIT in data) {
        const init = (data as Record<string, {
          table: Int32Array;
          threadId: number;
          name: string;
        }>)[INIT]!;
        const g = globalThis as unknown as { [RUNTIME]?: Runtime };
        const previous = g[RUNTIME];
        g[RUNTIME] = {
          table: init.table,
          threadId: init.threadId,
          threadName: init.name,
          isWorker: true,
          registry: previous?.registry ?? new Map(),
          modules: previous?.modules ?? new Map(),
          spawned: 0,
          live: new Set(),
          keepAlive: previous?.keepAlive ?? { count: 0, timer: undefined },
        };
        ready = true;
        for (const p of pending.splice(0)) onMessage(p);
        return;
      }
      pending.push(data);
      return;
    }
    onMessage(data);
  };
  const realClose = scope.close.bind(globalThis);
  const realExit = Deno.exit.bind(Deno);
  let exiting = false;
  const exit = (code: number, really: () => void): never => {
    if (!exiting) {
      exiting = true;
      try {
        beforeExit?.();
      } catch {
        // The worker is going away regardless.
      }
      const rt = runtime();
      for (const w of [...rt.live]) w.terminate();
      scope.postMessage({ [EXITED]: code });
      markThreadDead(rt.threadId);
    }
    really();
    throw new Error("unreachable: the worker is closing");
  };
  scope.close = () => {
    exit(0, realClose);
  };
  (Deno as { exit: (code?: number) => never }).exit = (code?: number) =>
    exit(code ?? 0, () => realExit(code));
  scope.addEventListener("error", (e: Event) => {
    const err = (e as ErrorEvent).error;
    scope.postMessage({ [FATAL]: errorInfo(err ?? (e as ErrorEvent).message) });
  });
  scope.addEventListener("unhandledrejection", (e: Event) => {
    const reason = (e as PromiseRejectionEvent).reason;
    scope.postMessage({ [FATAL]: errorInfo(reason) });
  });
}

// -- CLI helpers ---------------------------------------------------------

/**
 * One option of a demo's command line.
 *
 * @example Usage
 * ```ts
 * import { type CliOption, parseCli } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const verbose: CliOption = { type: "boolean", short: "v", description: "print more" };
 * const args = parseCli(["-v", "input.txt"], "demo", "Runs the demo.", { verbose });
 * assert.equal(args.values.verbose, true);
 * assert.deepEqual(args.positionals, ["input.txt"]);
 * ```
 */
export interface CliOption {
  /** `"string"` takes a value; `"boolean"` is a flag. */
  type: "string" | "boolean";
  /** A one-letter alias. */
  short?: string;
  /** What it does, for `--help`. */
  description: string;
  /** The value's placeholder in `--help`, e.g. `N`. */
  placeholder?: string;
}

/**
 * What {@linkcode parseCli} returns.
 *
 * @example Usage
 * ```ts
 * import { type CliArgs, intOption, parseCli } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const args: CliArgs = parseCli(["--items", "8", "extra"], "demo", "Runs the demo.", {
 *   items: { type: "string", description: "how many items", placeholder: "N" },
 * });
 * assert.equal(intOption(args.values.items, "items", 1), 8);
 * assert.deepEqual(args.positionals, ["extra"]);
 * ```
 */
export interface CliArgs {
  /** Option values by name. */
  values: Record<string, string | boolean | undefined>;
  /** Positional arguments. */
  positionals: string[];
}

/**
 * Parses a demo's command line with `node:util`'s `parseArgs`; prints the
 * usage and exits on `--help`, and exits with code 2 on a bad option.
 *
 * @example Usage
 * ```ts
 * import { parseCli } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * const args = parseCli(["--pool", "2"], "demo", "Runs the demo.", {
 *   pool: { type: "string", description: "use a pool", placeholder: "N" },
 * });
 * assert.equal(args.values.pool, "2");
 * ```
 *
 * @param argv The arguments (usually `Deno.args`).
 * @param command How the demo is run, for the usage line.
 * @param summary One sentence on what it does.
 * @param options The options it takes.
 * @returns The parsed values and positionals.
 */
export function parseCli(
  argv: string[],
  command: string,
  summary: string,
  options: Record<string, CliOption> = {},
): CliArgs {
  const all: Record<string, CliOption> = {
    ...options,
    help: { type: "boolean", short: "h", description: "show this help" },
  };
  const usage = () => {
    const lines = [`Usage: ${command} [options]`, "", summary, "", "Options:"];
    for (const [name, o] of Object.entries(all)) {
      const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${
        o.type === "string" ? ` ${o.placeholder ?? "VALUE"}` : ""
      }`;
      lines.push(`  ${flag.padEnd(26)} ${o.description}`);
    }
    return lines.join("\n");
  };
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: Object.fromEntries(
        Object.entries(all).map((
          [k, o],
        ) => [
          k,
          o.short ? { type: o.type, short: o.short } : { type: o.type },
        ]),
      ),
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${usage()}`);
    Deno.exit(2);
  }
  if (parsed.values.help) {
    console.log(usage());
    Deno.exit(0);
  }
  return {
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

/**
 * Reads a positive integer option of a demo, exiting with a clear message
 * when it is not one.
 *
 * @example Usage
 * ```ts
 * import { intOption } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(intOption("8", "items", 1), 8);
 * assert.equal(intOption(undefined, "items", 1), 1);
 * ```
 *
 * @param raw The option's text.
 * @param name The option's name.
 * @param fallback The value when absent.
 * @returns The integer.
 */
export function intOption(
  raw: string | boolean | undefined,
  name: string,
  fallback: number,
): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(
      `--${name} must be a positive integer, received ${describeValue(raw)}`,
    );
    Deno.exit(2);
  }
  return n;
}

const numberFormat = new Intl.NumberFormat("en-US", {
  maximumFractionDigits: 1,
});
const compactFormat = new Intl.NumberFormat("en-US", {
  notation: "compact",
  maximumFractionDigits: 2,
});

/**
 * Formats a count for people: `1,234.5`, or compact (`1.23M`).
 *
 * @example Usage
 * ```ts
 * import { formatNumber } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(formatNumber(1234.56), "1,234.6");
 * assert.equal(formatNumber(1234567, true), "1.23M");
 * ```
 *
 * @param n The number.
 * @param compact Whether to use a suffix (k, M, B).
 * @returns The text.
 */
export function formatNumber(n: number, compact = false): string {
  return (compact ? compactFormat : numberFormat).format(n);
}

/**
 * Formats a duration given in milliseconds: `850 µs`, `12.3 ms`, `1.25 s`.
 *
 * @example Usage
 * ```ts
 * import { formatDuration } from "./_util.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(formatDuration(1250), "1.25 s");
 * assert.equal(formatDuration(0.85), "850 µs");
 * ```
 *
 * @param ms Milliseconds.
 * @returns The text.
 */
export function formatDuration(ms: number): string {
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/**
 * A progress bar on stderr for long demo runs; redraws at most every 50 ms
 * and only when stderr is a terminal (otherwise it prints one final line).
 *
 * @example Usage
 * ```ts
 * import { ProgressBar } from "./_util.ts";
 *
 * const bar = new ProgressBar(10, "cubes");
 * for (let i = 1; i <= 10; i++) bar.update(i);
 * bar.done();
 * ```
 */
export class ProgressBar {
  readonly #total: number;
  readonly #label: string;
  readonly #tty: boolean;
  readonly #start = performance.now();
  #last = 0;
  #current = 0;
  #finished = false;

  /**
   * Starts a bar.
   *
   * @param total The number of steps.
   * @param label What is counted.
   */
  constructor(total: number, label: string) {
    this.#total = total;
    this.#label = label;
    this.#tty = Deno.stderr.isTerminal();
  }

  /**
   * Records progress.
   *
   * @param current Steps done so far.
   */
  update(current: number): void {
    this.#current = current;
    const now = performance.now();
    if (!this.#tty || now - this.#last < 50) return;
    this.#last = now;
    this.#draw();
  }

  #draw(): void {
    const width = 30;
    const frac = this.#total > 0 ? Math.min(1, this.#current / this.#total) : 1;
    const filled = Math.round(frac * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const pct = `${Math.floor(frac * 100)}`.padStart(3);
    const line = `${styleText("cyan", bar)} ${pct}% ${
      formatNumber(this.#current)
    }/${formatNumber(this.#total)} ${this.#label} ${
      formatDuration(performance.now() - this.#start)
    }`;
    Deno.stderr.writeSync(
      new TextEncoder().encode(this.#tty ? `\r\x1b[2K${line}` : `${line}\n`),
    );
  }

  /** Draws the final state and ends the line. */
  done(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#current = Math.max(this.#current, 0);
    this.#draw();
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

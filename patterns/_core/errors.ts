/**
 * The error classes every pattern throws, and how an error crosses a thread
 * boundary (`errorInfo` out, `reviveError` back in).
 *
 * @module
 */

/**
 * The serialisable description of an error thrown in another thread.
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
 * map-like calls, `index` the item's position. `cause` is the task's error
 * revived in this thread with the same message and the worker's stack: as its
 * own class where it is a built-in (`RangeError`, `TypeError`, …) or one of
 * this package's errors (`EmptyError`, …), as a `DOMException` for a name
 * such as `"TimeoutError"` or `"AbortError"`, else as a plain `Error` whose
 * `name` is the remote name (a user's own class).
 *
 * @example Usage
 * ```ts
 * import { RemoteError } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const e = new RemoteError(
 *   { name: "RangeError", message: "bad", stack: "RangeError: bad" },
 *   { worker: "Pool-1-worker-1", index: 3 },
 * );
 * assert.equal(e.name, "RemoteError");
 * assert.equal(e.remoteName, "RangeError");
 * assert.equal(e.index, 3);
 * assert.ok(e.cause instanceof RangeError);
 * assert.equal(e.cause.message, "bad");
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
   * Wraps the description of a remote error; `cause` is `options.cause` if
   * given, else the error revived from `info`.
   *
   * @param info What the worker reported.
   * @param options Where it came from.
   */
  constructor(info: ErrorInfo, options: RemoteErrorOptions = {}) {
    super(info.message, {
      cause: options.cause === undefined ? reviveError(info) : options.cause,
    });
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
 * import { WorkerCrashedError } from "@dmp/multiprocessing";
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
 * import { ClosedError } from "@dmp/multiprocessing";
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
 * import { AbandonedError } from "@dmp/multiprocessing";
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
 * import { EOFError } from "@dmp/multiprocessing";
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
 * import { EmptyError } from "@dmp/multiprocessing";
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
 * import { FullError } from "@dmp/multiprocessing";
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
 * import { BrokenBarrierError } from "@dmp/multiprocessing";
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
 * import { AuthenticationError } from "@dmp/multiprocessing";
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
 * Thrown when a name refers to nothing: attaching `SharedMemory` to a name
 * no block has (Python's `FileNotFoundError`).
 *
 * @example Usage
 * ```ts
 * import { NotFoundError } from "@dmp/multiprocessing";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new NotFoundError("Cannot attach: no block has that name").name, "NotFoundError");
 * ```
 */
export class NotFoundError extends Error {
  /**
   * Makes the error.
   *
   * @param message What was looked for.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NotFoundError";
  }
}

/**
 * Thrown when a name is taken: creating `SharedMemory` under a name a block
 * already has (Python's `FileExistsError`).
 *
 * @example Usage
 * ```ts
 * import { AlreadyExistsError } from "@dmp/multiprocessing";
 * import { strict as assert } from "node:assert";
 *
 * assert.equal(new AlreadyExistsError("Cannot create: the name is taken").name, "AlreadyExistsError");
 * ```
 */
export class AlreadyExistsError extends Error {
  /**
   * Makes the error.
   *
   * @param message What was taken.
   * @param options The underlying cause, if known.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AlreadyExistsError";
  }
}

/**
 * Makes the error a timed-out call rejects with: a `DOMException` named
 * `"TimeoutError"`, the same kind `AbortSignal.timeout()` uses.
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

/** The classes an error name revives as, beyond those a caller passes. */
const REVIVED: Record<string, new (message: string) => Error> = {
  Error,
  EvalError,
  RangeError,
  ReferenceError,
  SyntaxError,
  TypeError,
  URIError,
  WorkerCrashedError,
  ClosedError,
  AbandonedError,
  EOFError,
  EmptyError,
  FullError,
  BrokenBarrierError,
  AuthenticationError,
  NotFoundError,
  AlreadyExistsError,
};

/** The `DOMException` names an error name revives as a `DOMException`. */
const DOM_EXCEPTIONS: ReadonlySet<string> = new Set([
  "AbortError",
  "TimeoutError",
  "DataCloneError",
  "InvalidStateError",
  "NotSupportedError",
  "InvalidCharacterError",
  "QuotaExceededError",
  "NetworkError",
  "SecurityError",
  "NotAllowedError",
  "OperationError",
  "EncodingError",
  "DataError",
]);

/**
 * Re-creates an error from its {@linkcode ErrorInfo} in this thread, with its
 * message and the remote stack text as `stack`: as the built-in class of the
 * same name (`TypeError`, `RangeError`, `AggregateError` with no `errors`, …),
 * this package's error of that name (a `RemoteError` has no remote details
 * of its own: they were not sent), a class of that name given in `classes`,
 * a `DOMException` for names such as `"TimeoutError"`, `"AbortError"` or
 * `"DataCloneError"`, or else a plain `Error` whose `name` is the remote
 * name. Used for `RemoteError.cause` and where an error crosses a thread but
 * is not a task failure (a `Barrier` action, a manager call).
 *
 * @param info The description.
 * @param classes Error classes by name, tried before the built-in ones.
 * @returns A local error with the same name and message.
 */
export function reviveError(
  info: ErrorInfo,
  classes: Record<string, new (message: string) => Error> = {},
): Error {
  const Ctor = Object.hasOwn(classes, info.name)
    ? classes[info.name]
    : Object.hasOwn(REVIVED, info.name)
    ? REVIVED[info.name]
    : undefined;
  let e: Error;
  if (Ctor) {
    e = new Ctor(info.message);
  } else if (info.name === "AggregateError") {
    e = new AggregateError([], info.message);
  } else if (info.name === "RemoteError") {
    // What it wrapped was not sent: no remote name, stack or cause of its own.
    e = new RemoteError({ name: "Error", message: info.message, stack: "" });
    delete e.cause;
  } else if (DOM_EXCEPTIONS.has(info.name)) {
    e = new DOMException(info.message, info.name) as unknown as Error;
  } else {
    e = new Error(info.message);
    e.name = info.name;
  }
  e.stack = info.stack;
  return e;
}

/**
 * A short, safe description of a value for error messages: its type and, for
 * primitives, the value itself.
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

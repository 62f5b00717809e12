/**
 * Timeouts and abort signals: the options every blocking call takes, their
 * checks, and the deadline wrapper for calls that cannot take a signal.
 *
 * @module
 */

import { describeValue, timeoutError } from "./errors.ts";

/**
 * The options every call that may wait takes.
 *
 * @example Usage
 * ```ts
 * import { Queue, type WaitOptions } from "@dmp/multiprocessing/queue";
 * import { strict as assert } from "node:assert";
 *
 * const q = new Queue<number>();
 * const options: WaitOptions = { timeout: 10 };
 * await assert.rejects(q.get(options), { name: "EmptyError" });
 * q.close();
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
 * The `performance.now()` at which a wait of `timeout` ms ends.
 *
 * @param timeout Milliseconds; `Infinity` for ever.
 * @returns The deadline (`Infinity` for ever).
 */
export function deadline(timeout: number): number {
  return timeout === Infinity ? Infinity : performance.now() + timeout;
}

/**
 * Checks a `timeout` option and turns it into a number of milliseconds
 * (`Infinity` when absent).
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
 * @param signal The signal, if any.
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/** The longest delay `setTimeout` honours, in ms (2^31 - 1). */
const MAX_TIMER_MS = 0x7fffffff;

/**
 * A timer for a wait of `ms` ms, or none for a wait that long it is
 * endless: `setTimeout` fires at once past 2^31 - 1 ms (24.8 days), so an
 * `Infinity` or month-long timeout must set no timer at all.
 *
 * @param ms The delay.
 * @param fn What to run then.
 * @returns The timer, or `undefined` when none was set.
 */
export function timerFor(
  ms: number,
  fn: () => void,
): ReturnType<typeof setTimeout> | undefined {
  return ms <= MAX_TIMER_MS ? setTimeout(fn, ms) : undefined;
}

/**
 * Races `promise` against a timeout and an abort signal. On timeout it
 * rejects with `onTimeout()` (or a `TimeoutError`); on abort with the
 * signal's reason. Timers and listeners are removed when it settles.
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
    const timer = timerFor(timeout, () => {
      done();
      const r = onTimeout?.();
      if (r && typeof r === "object" && "value" in r) resolve(r.value as T);
      else {
        reject(
          r ?? timeoutError(`${what} timed out after ${timeout} ms`),
        );
      }
    });
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

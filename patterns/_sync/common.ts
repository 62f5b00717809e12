/**
 * The small helpers the synchronization primitives of `sync.ts` share:
 * their memory, their argument checks and their errors.
 *
 * @module
 */

import {
  AbandonedError,
  describeValue,
  timeoutError,
} from "../_core/errors.ts";
import type { WaitOptions } from "../_core/deadline.ts";

/** `n` zeroed `Int32` words of fresh shared memory. */
export function words(n: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * n));
}

/** The error of an acquire that took a lock over from its dead holder. */
export function abandoned(what: string, holder: number): AbandonedError {
  return new AbandonedError(
    `${what} was abandoned: its holder (thread ${holder}) died while holding it; the caller now holds it`,
  );
}

/** Checks a count argument (`0 … 2**31-1`) of the call `what`. */
export function checkCount(n: unknown, what: string, name: string): number {
  if (typeof n !== "number") {
    throw new TypeError(
      `Cannot ${what}: ${name} must be a number, received ${describeValue(n)}`,
    );
  }
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) {
    throw new RangeError(
      `Cannot ${what}: ${name} must be a non-negative integer, received ${n}`,
    );
  }
  return n;
}

/** Checks the options argument of a wait (absent: none). */
export function optionsOf(options: unknown, what: string): WaitOptions {
  if (options === undefined) return {};
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot ${what}: options must be an object, received ${
        describeValue(options)
      }`,
    );
  }
  return options as WaitOptions;
}

/**
 * The guard `hold()`/`holdSync()` return once acquired, or the timeout error
 * when the acquire timed out.
 */
export function guardOrTimeout(
  acquired: boolean,
  guard: Disposable,
  what: string,
  options: WaitOptions | undefined,
): Disposable {
  if (!acquired) {
    throw timeoutError(
      `Cannot hold the ${what}: timed out after ${options?.timeout} ms`,
    );
  }
  return guard;
}

/**
 * The `lock` option of `Value` and `SharedArray`, and the error `getLock()`
 * throws without one (private helpers of value.ts and array.ts).
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { Lock, RLock } from "./lock.ts";

/**
 * Checks a `lock` option: `true`/absent makes an `RLock`, `false` none, a
 * `Lock` or `RLock` is used as given.
 *
 * @example Usage
 * ```ts ignore
 * import { lockOption } from "./lock_option.ts";
 * import { Lock } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const lock = new Lock();
 * assert.equal(lockOption(lock, "create Value"), lock);
 * assert.equal(lockOption(false, "create Value"), null);
 * assert.throws(() => lockOption({}, "create Value"), TypeError);
 * ```
 *
 * @param lock The option as given.
 * @param what The call, for the error message.
 * @returns The lock, or `null` for none.
 * @throws {TypeError} If it is neither a boolean nor a `Lock`/`RLock`.
 */
export function lockOption(lock: unknown, what: string): Lock | RLock | null {
  if (lock === undefined || lock === true) return new RLock();
  if (lock === false) return null;
  if (lock instanceof Lock || lock instanceof RLock) return lock;
  throw new TypeError(
    `Cannot ${what}: lock must be true, false, a Lock or an RLock, received ${
      describeValue(lock)
    }`,
  );
}

/**
 * The error `getLock()` throws when there is no lock.
 *
 * @example Usage
 * ```ts ignore
 * import { noLockError } from "./lock_option.ts";
 * import { strict as assert } from "node:assert";
 *
 * const e = noLockError("Value");
 * assert.ok(e instanceof TypeError);
 * assert.match(e.message, /lock: false/);
 * ```
 *
 * @param what The class.
 * @returns The error.
 */
export function noLockError(what: string): TypeError {
  return new TypeError(
    `Cannot get the lock: this ${what} was created with lock: false and has none`,
  );
}

/**
 * The synchronisation proxies: locks, semaphores, condition, event and
 * barrier, each with `hold()` guards where Python has a context manager.
 * Every wait settles by its `timeout` or `signal` on the caller's clock,
 * even when the server has stopped answering; a lock or permit the server
 * grants after the caller gave up is given back.
 *
 * @module
 */

import {
  checkTimeout,
  deadline,
  type WaitOptions,
  withDeadline,
} from "../../_core/deadline.ts";
import { BrokenBarrierError, timeoutError } from "../../_core/errors.ts";
import type { CallOptions, LateReply } from "../client.ts";
import { BaseProxy, invoke } from "./base.ts";

/**
 * The call options of an `acquire`: the client's own deadline answers
 * `false`, and a lock or permit the server granted after the caller had
 * given up (by its timeout or signal) is given back, so the call leaves no
 * trace. An abandoned lock granted late (`AbandonedError`) is held too.
 */
function acquireOptions(
  options: WaitOptions,
  releaseArgs: unknown[],
): CallOptions {
  return {
    ...options,
    waits: true,
    expired: () => false,
    undo: (late: LateReply) => {
      const granted = late.ok
        ? late.value === true
        : late.name === "AbandonedError";
      return granted ? ["release", releaseArgs] : undefined;
    },
  };
}

/** The call options of a wait whose client-side deadline answers `value`. */
function waitOptions(options: WaitOptions, value: unknown): CallOptions {
  return { ...options, waits: true, expired: () => value };
}

async function holdGuard(
  proxy: LockProxy | SemaphoreProxy | ConditionProxy,
  options: WaitOptions,
): Promise<AsyncDisposable> {
  if (!(await proxy.acquire(options))) {
    throw timeoutError(`hold timed out after ${options.timeout} ms`);
  }
  return { [Symbol.asyncDispose]: () => proxy.release() };
}

/**
 * A proxy for a manager Lock: any client may release it (as Python's
 * Lock). If its holder disconnects, the next acquirer gets it with an
 * `AbandonedError`. An `acquire` whose `timeout` or `signal` ends it on
 * the caller's side leaves the lock as it was: if the server hands the
 * lock over afterwards, the proxy releases it again.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const lock = await manager.lock();
 * assert.equal(await lock.acquire(), true);
 * assert.equal(await lock.acquire({ timeout: 0 }), false);
 * await lock.release();
 * {
 *   await using _ = await lock.hold();
 *   assert.equal(await lock.locked(), true);
 * }
 * assert.equal(await lock.locked(), false);
 * ```
 */
export class LockProxy extends BaseProxy {
  /**
   * Acquires the lock; `false` when `timeout` runs out (`timeout: 0` only
   * tries).
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether it was acquired.
   */
  acquire(options: WaitOptions = {}): Promise<boolean> {
    return invoke(
      this,
      "acquire",
      [],
      acquireOptions(options, []),
    ) as Promise<boolean>;
  }
  /** Releases it; an unheld lock → `RangeError`. */
  release(): Promise<void> {
    return invoke(this, "release", []) as Promise<void>;
  }
  /** Returns whether someone holds it. */
  locked(): Promise<boolean> {
    return invoke(this, "locked", []) as Promise<boolean>;
  }
  /**
   * Acquires it and returns a guard for `await using` that releases it.
   *
   * @param options `timeout` (ms; running out rejects with a
   *   `TimeoutError`) and `signal`.
   * @returns The guard.
   */
  hold(options: WaitOptions = {}): Promise<AsyncDisposable> {
    return holdGuard(this, options);
  }
}

/**
 * A proxy for a manager RLock: re-entrant, owned by the client thread that
 * acquired it; releasing it from another thread → `RangeError`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const r = await manager.rlock();
 * assert.ok(await r.acquire());
 * assert.ok(await r.acquire());
 * await r.release();
 * await r.release();
 * assert.equal(await r.locked(), false);
 * ```
 */
export class RLockProxy extends LockProxy {}

/**
 * A proxy for a manager Semaphore (or BoundedSemaphore, whose `release`
 * past the initial value → `RangeError`).
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const s = await manager.semaphore(1);
 * assert.ok(await s.acquire());
 * assert.equal(await s.acquire({ timeout: 0 }), false);
 * await s.release();
 * ```
 */
export class SemaphoreProxy extends BaseProxy {
  /**
   * Takes a permit; `false` when `timeout` runs out.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether a permit was taken.
   */
  acquire(options: WaitOptions = {}): Promise<boolean> {
    return invoke(
      this,
      "acquire",
      [],
      acquireOptions(options, [1]),
    ) as Promise<boolean>;
  }
  /**
   * Gives `n` permits back.
   *
   * @param n How many (default 1).
   */
  release(n = 1): Promise<void> {
    return invoke(this, "release", [n]) as Promise<void>;
  }
  /** Returns the number of free permits. */
  getValue(): Promise<number> {
    return invoke(this, "getValue", []) as Promise<number>;
  }
  /**
   * Takes a permit and returns a guard for `await using` that gives it
   * back.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The guard.
   */
  hold(options: WaitOptions = {}): Promise<AsyncDisposable> {
    return holdGuard(this, options);
  }
}

/**
 * A proxy for a manager BoundedSemaphore.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const s = await manager.boundedSemaphore(1);
 * await assert.rejects(s.release(), RangeError);
 * ```
 */
export class BoundedSemaphoreProxy extends SemaphoreProxy {}

/**
 * A proxy for a manager Condition (over a manager RLock owned per client
 * thread). `wait` and `notify` need the lock held by the caller.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const c = await manager.condition();
 * await c.acquire();
 * assert.equal(await c.wait({ timeout: 5 }), false);
 * await c.notifyAll();
 * await c.release();
 * ```
 */
export class ConditionProxy extends BaseProxy {
  /**
   * Set while a `wait` given up on the client (by its timeout or signal)
   * is not yet answered by the server, which re-acquires the lock for the
   * caller before it answers: the calls that need the lock held (or free)
   * wait for that, so a `release` cannot overtake the re-acquire.
   */
  #regaining: Promise<void> | undefined;

  #afterRegain<T>(run: () => Promise<T>): Promise<T> {
    const regaining = this.#regaining;
    return regaining ? regaining.then(run) : run();
  }

  /**
   * Runs a waiting call after the re-acquire, within the call's own
   * `timeout` and `signal` (the time spent waiting for the re-acquire
   * counts): running out first gives `expired`.
   */
  #afterRegainWithin<T>(
    options: WaitOptions,
    what: string,
    expired: T,
    run: (options: WaitOptions) => Promise<T>,
  ): Promise<T> {
    const regaining = this.#regaining;
    if (!regaining) return run(options);
    let timeout: number;
    try {
      timeout = checkTimeout(options.timeout, what);
    } catch (e) {
      return Promise.reject(e);
    }
    const end = deadline(timeout);
    return withDeadline(
      regaining.then(() => true),
      options,
      what,
      () => ({ value: false }),
    ).then((regained) => {
      if (!regained) return expired;
      const left = Math.max(0, end - performance.now());
      return run({ ...options, timeout: left === Infinity ? undefined : left });
    });
  }

  /**
   * Acquires the underlying lock.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether it was acquired.
   */
  acquire(options: WaitOptions = {}): Promise<boolean> {
    return this.#afterRegainWithin(
      options,
      "acquire",
      false,
      (o) =>
        invoke(
          this,
          "acquire",
          [],
          acquireOptions(o, []),
        ) as Promise<boolean>,
    );
  }
  /** Releases the underlying lock. */
  release(): Promise<void> {
    return this.#afterRegain(() =>
      invoke(this, "release", []) as Promise<void>
    );
  }
  /**
   * Releases the lock, waits for a notify, re-acquires the lock; `false`
   * when `timeout` ran out (the lock is re-acquired either way). When the
   * server does not answer in time, `false` (or the signal's reason) comes
   * on the caller's clock, and the server re-acquires the lock for the
   * caller when it gets to the call; this proxy's next calls that need the
   * lock wait for that.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether it was notified.
   */
  wait(options: WaitOptions = {}): Promise<boolean> {
    return this.#afterRegainWithin(options, "wait", false, (o) => {
      let regained: (() => void) | undefined;
      return invoke(this, "wait", [], {
        ...waitOptions(o, false),
        onGiveUp: () => {
          const p = new Promise<void>((resolve) => regained = resolve);
          this.#regaining = p;
          p.then(() => {
            if (this.#regaining === p) this.#regaining = undefined;
          });
        },
        // Any answer, or the connection's end, means the re-acquire is over.
        undo: () => {
          regained?.();
          return undefined;
        },
      }) as Promise<boolean>;
    });
  }
  /**
   * Waits until `predicate()` is truthy, checking it after each notify;
   * returns its last value (falsy when `timeout` ran out). The predicate
   * runs in the caller's thread and may be async (e.g. read a proxy).
   *
   * @typeParam T The predicate's value.
   * @param predicate The condition to wait for.
   * @param options `timeout` (ms) and `signal`.
   * @returns The predicate's last value.
   */
  async waitFor<T>(
    predicate: () => T | Promise<T>,
    options: WaitOptions = {},
  ): Promise<T> {
    const timeout = checkTimeout(options.timeout, "waitFor");
    const end = performance.now() + timeout;
    let r = await predicate();
    while (!r) {
      const left = end - performance.now();
      if (left <= 0) return r;
      await this.wait({
        timeout: left === Infinity ? undefined : left,
        signal: options.signal,
      });
      r = await predicate();
    }
    return r;
  }
  /**
   * Wakes up to `n` waiters.
   *
   * @param n How many (default 1).
   */
  notify(n = 1): Promise<void> {
    return this.#afterRegain(() =>
      invoke(this, "notify", [n]) as Promise<void>
    );
  }
  /** Wakes every waiter. */
  notifyAll(): Promise<void> {
    return this.#afterRegain(() =>
      invoke(this, "notifyAll", []) as Promise<void>
    );
  }
  /**
   * Acquires the lock and returns a guard for `await using`.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The guard.
   */
  hold(options: WaitOptions = {}): Promise<AsyncDisposable> {
    return holdGuard(this, options);
  }
}

/**
 * A proxy for a manager Event.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const e = await manager.event();
 * assert.equal(await e.wait({ timeout: 0 }), false);
 * await e.set();
 * assert.equal(await e.wait(), true);
 * ```
 */
export class EventProxy extends BaseProxy {
  /** Sets the flag and wakes every waiter. */
  set(): Promise<void> {
    return invoke(this, "set", []) as Promise<void>;
  }
  /** Clears the flag. */
  clear(): Promise<void> {
    return invoke(this, "clear", []) as Promise<void>;
  }
  /** Returns whether the flag is set. */
  isSet(): Promise<boolean> {
    return invoke(this, "isSet", []) as Promise<boolean>;
  }
  /**
   * Waits for the flag; `false` when `timeout` ran out.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns Whether the flag was set.
   */
  wait(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "wait", [], waitOptions(options, false)) as Promise<
      boolean
    >;
  }
}

/**
 * A proxy for a manager Barrier. A wait that times out breaks the barrier
 * and every waiter gets `BrokenBarrierError`.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const b = await manager.barrier(2);
 * const [i, j] = await Promise.all([b.wait(), b.wait()]);
 * assert.deepEqual([i, j].sort(), [0, 1]);
 * assert.equal(await b.parties(), 2);
 * ```
 */
export class BarrierProxy extends BaseProxy {
  /**
   * Waits for all parties; resolves to this party's index.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The index, `0 … parties - 1`.
   */
  wait(options: WaitOptions = {}): Promise<number> {
    return invoke(this, "wait", [], {
      ...options,
      waits: true,
      expired: () => {
        throw new BrokenBarrierError(
          `Cannot wait: the manager did not answer within the timeout (${options.timeout} ms)`,
        );
      },
    }) as Promise<number>;
  }
  /** Breaks the barrier: waiters get `BrokenBarrierError`. */
  abort(): Promise<void> {
    return invoke(this, "abort", []) as Promise<void>;
  }
  /** Breaks the current waiters out and makes the barrier usable again. */
  reset(): Promise<void> {
    return invoke(this, "reset", []) as Promise<void>;
  }
  /** Returns the number of parties. */
  parties(): Promise<number> {
    return invoke(this, "parties", []) as Promise<number>;
  }
  /** Returns how many parties wait now. */
  nWaiting(): Promise<number> {
    return invoke(this, "nWaiting", []) as Promise<number>;
  }
  /** Returns whether the barrier is broken. */
  broken(): Promise<boolean> {
    return invoke(this, "broken", []) as Promise<boolean>;
  }
}

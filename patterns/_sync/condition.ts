/**
 * `Condition`: a table of waiter slots (first come, first served) over a
 * `Lock` or an `RLock`, whose owner word it releases and re-takes itself.
 *
 * @module
 */

import { checkTimeout, deadline, throwIfAborted } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { currentThreadId, isThreadAlive } from "../_core/runtime.ts";
import { describeValue } from "../_core/errors.ts";
import { kAttach, kShare, registerShareable } from "../_core/share.ts";
import type { SharedHandle } from "../_core/share.ts";
import { waitAsync, waitSync } from "../_core/wait.ts";
import { OwnerWord, USER_LOCK } from "../_core/owner_word.ts";
import { checkCount, optionsOf, words } from "./common.ts";
import { DEPTH, isLock, type Lock, lockWords, OWNER, RLock } from "./lock.ts";

/** Condition words: `[0]` ticket counter, then slots of 3 words. */
const C_TICKET = 0;
const C_TABLE = 1;
const C_SLOTS = 128;
const C_FREE = 0;
const C_WAITING = 1;
const C_NOTIFIED = 2;

/** What a step of a wait threw, if it threw. */
interface Failure {
  error: unknown;
}

/** Checks the options of a wait; returns them and the timeout. */
function waitOptions(
  options: WaitOptions | undefined,
): { o: WaitOptions; timeout: number } {
  const o = optionsOf(options, "wait on the condition");
  return { o, timeout: checkTimeout(o.timeout, "wait on the condition") };
}

/**
 * A condition variable, as Python's `multiprocessing.Condition`: `wait`
 * releases the lock (fully, for an `RLock`), sleeps until `notify`, and
 * re-acquires it before returning. Waiters are woken first come, first
 * served. The lock must be held by the calling thread for `wait`,
 * `waitFor`, `notify` and `notifyAll`.
 *
 * @example Usage
 * ```ts
 * import { Condition } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const cond = new Condition();
 * using _ = await cond.hold();
 * assert.equal(await cond.wait({ timeout: 5 }), false);
 * assert.equal(await cond.waitFor(() => 42), 42);
 * ```
 */
export class Condition {
  readonly #w: Int32Array;
  readonly #lock: Lock | RLock;
  readonly #lw: Int32Array;
  readonly #owner: OwnerWord;
  readonly #rlock: boolean;

  /**
   * Makes a condition on `lock` (a new `RLock` by default).
   *
   * @param lock The lock it shares with its users.
   * @throws {TypeError} If `lock` is not a `Lock` or an `RLock`.
   */
  constructor(lock?: Lock | RLock);
  /** @ignore */
  constructor(attach: typeof kAttach, words: Int32Array, lock: Lock | RLock);
  constructor(
    first?: Lock | RLock | typeof kAttach,
    memory?: Int32Array,
    attachedLock?: Lock | RLock,
  ) {
    const attach = first === kAttach;
    const lock = attach ? attachedLock : first;
    if (lock !== undefined && !isLock(lock)) {
      throw new TypeError(
        `Cannot create Condition: lock must be a Lock or an RLock, received ${
          describeValue(lock)
        }`,
      );
    }
    this.#w = attach ? memory! : words(C_TABLE + 3 * C_SLOTS);
    this.#lock = lock ?? new RLock();
    this.#lw = lockWords(this.#lock);
    this.#owner = new OwnerWord(this.#lw, OWNER, USER_LOCK);
    this.#rlock = this.#lock instanceof RLock;
  }

  /**
   * Acquires the underlying lock without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const cond = new Condition();
   * assert.ok(await cond.acquire());
   * cond.release();
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns `true` once held, `false` on timeout.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  acquire(options?: WaitOptions): Promise<boolean> {
    return this.#lock.acquire(options);
  }

  /**
   * Acquires the underlying lock, blocking the thread.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const cond = new Condition();
   * assert.ok(cond.acquireSync());
   * cond.release();
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns `true` once held, `false` on timeout.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  acquireSync(options?: WaitOptions): boolean {
    return this.#lock.acquireSync(options);
  }

  /**
   * Releases the underlying lock.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.throws(() => new Condition().release(), RangeError);
   * ```
   *
   * @throws {RangeError} If it is not held (by the caller, for an RLock).
   */
  release(): void {
    this.#lock.release();
  }

  /**
   * Acquires the underlying lock and returns a guard that releases it.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   *
   * const cond = new Condition();
   * {
   *   using _ = await cond.hold();
   *   cond.notifyAll();
   * }
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   */
  hold(options?: WaitOptions): Promise<Disposable> {
    return this.#lock.hold(options);
  }

  /**
   * The blocking twin of {@linkcode Condition.hold}.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   *
   * const cond = new Condition();
   * {
   *   using _ = cond.holdSync();
   *   cond.notify();
   * }
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   */
  holdSync(options?: WaitOptions): Disposable {
    return this.#lock.holdSync(options);
  }

  #checkOwned(what: string): void {
    const h = this.#owner.holder();
    if (h !== currentThreadId()) {
      throw new RangeError(
        `Cannot ${what}: the condition's lock is not held by the caller (${
          h === 0 ? "it is free" : `thread ${h} holds it`
        })`,
      );
    }
  }

  /** Takes a waiter slot (under the lock); returns its first word. */
  #enlist(): number {
    const w = this.#w;
    for (let i = 0; i < C_SLOTS; i++) {
      const s = C_TABLE + 3 * i;
      const st = Atomics.load(w, s);
      if (st !== C_FREE && isThreadAlive(Atomics.load(w, s + 1))) continue;
      Atomics.store(w, s + 1, currentThreadId());
      Atomics.store(w, s + 2, Atomics.add(w, C_TICKET, 1));
      Atomics.store(w, s, C_WAITING);
      return s;
    }
    throw new RangeError(
      `Cannot wait: more than ${C_SLOTS} waiters wait on this condition`,
    );
  }

  /** Releases the lock fully; returns the depth to restore. */
  #releaseAll(): number {
    const lw = this.#lw;
    const depth = this.#rlock ? lw[DEPTH]! : 1;
    if (this.#rlock) lw[DEPTH] = 0;
    this.#owner.unlock();
    return depth;
  }

  /** Ends a wait (with the lock held again): frees the slot. */
  #delist(s: number): boolean {
    const notified = Atomics.load(this.#w, s) === C_NOTIFIED;
    Atomics.store(this.#w, s, C_FREE);
    return notified;
  }

  /**
   * Releases the lock, waits until notified (or the timeout), re-acquires
   * the lock; never blocks the event loop.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const cond = new Condition();
   * await cond.acquire();
   * assert.equal(await cond.wait({ timeout: 1 }), false);
   * cond.release();
   * ```
   *
   * @param options `timeout` in ms and `signal` (on abort the lock is
   *   re-acquired, then the call rejects with the signal's reason).
   * @returns `true` if notified, `false` on timeout.
   * @throws {RangeError} If the caller does not hold the lock.
   */
  async wait(options?: WaitOptions): Promise<boolean> {
    const { o, s, depth, end } = this.#startWait(options);
    let failure: Failure | undefined;
    try {
      let left;
      while ((left = this.#left(s, end)) > 0) {
        await waitAsync(this.#w, s, C_WAITING, {
          timeout: left,
          ...(o.signal ? { signal: o.signal } : {}),
        });
      }
    } catch (error) {
      failure = { error };
    }
    let again: Failure | undefined;
    try {
      await this.#lock.acquire();
    } catch (error) {
      again = { error };
    }
    return this.#settle(s, depth, failure, again);
  }

  /**
   * Starts a wait: checks its options and the lock, takes a waiter slot,
   * releases the lock; returns the options, the slot, the depth to restore
   * and the deadline.
   */
  #startWait(
    options: WaitOptions | undefined,
  ): { o: WaitOptions; s: number; depth: number; end: number } {
    const { o, timeout } = waitOptions(options);
    throwIfAborted(o.signal);
    this.#checkOwned("wait on the condition");
    const s = this.#enlist();
    const depth = this.#releaseAll();
    return { o, s, depth, end: deadline(timeout) };
  }

  /**
   * In a wait of slot `s` until `end`: the ms left, or 0 once notified or
   * past the deadline.
   */
  #left(s: number, end: number): number {
    if (Atomics.load(this.#w, s) !== C_WAITING) return 0;
    const left = end - performance.now();
    return left <= 0 ? 0 : left;
  }

  /**
   * Ends a wait: restores the lock depth, frees the slot, reports (throws
   * the wait's `failure`, else the re-acquire's, if any).
   */
  #settle(
    s: number,
    depth: number,
    failure: Failure | undefined,
    again: Failure | undefined,
  ): boolean {
    if (this.#rlock && this.#owner.holder() === currentThreadId()) {
      this.#lw[DEPTH] = depth;
    }
    const notified = this.#delist(s);
    if (failure) throw failure.error;
    if (again) throw again.error;
    return notified;
  }

  /**
   * The blocking twin of {@linkcode Condition.wait}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const cond = new Condition();
   * cond.acquireSync();
   * assert.equal(cond.waitSync({ timeout: 1 }), false);
   * cond.release();
   * ```
   *
   * @param options `timeout` in ms; a `signal` is checked once.
   * @returns `true` if notified, `false` on timeout.
   * @throws {RangeError} If the caller does not hold the lock.
   */
  waitSync(options?: WaitOptions): boolean {
    const { s, depth, end } = this.#startWait(options);
    let failure: Failure | undefined;
    try {
      let left;
      while ((left = this.#left(s, end)) > 0) {
        waitSync(this.#w, s, C_WAITING, left);
      }
    } catch (error) {
      failure = { error };
    }
    let again: Failure | undefined;
    try {
      this.#lock.acquireSync();
    } catch (error) {
      again = { error };
    }
    return this.#settle(s, depth, failure, again);
  }

  /**
   * Waits until `predicate()` is truthy, as Python's `wait_for`: checks it
   * first, then after each wake-up, with the lock held.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const cond = new Condition();
   * await cond.acquire();
   * assert.equal(await cond.waitFor(() => 0, { timeout: 5 }), 0);
   * cond.release();
   * ```
   *
   * @typeParam T The predicate's result.
   * @param predicate Checked with the lock held.
   * @param options `timeout` (for the whole call) and `signal`.
   * @returns The predicate's last value: truthy, or falsy on timeout.
   * @throws {RangeError} If the caller does not hold the lock.
   */
  async waitFor<T>(predicate: () => T, options?: WaitOptions): Promise<T> {
    const { o, timeout } = waitOptions(options);
    checkPredicate(predicate);
    throwIfAborted(o.signal);
    this.#checkOwned("wait on the condition");
    const end = deadline(timeout);
    let result = predicate();
    while (!result) {
      const left = end - performance.now();
      if (left <= 0) break;
      await this.wait({
        ...(left === Infinity ? {} : { timeout: left }),
        ...(o.signal ? { signal: o.signal } : {}),
      });
      result = predicate();
    }
    return result;
  }

  /**
   * The blocking twin of {@linkcode Condition.waitFor}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const cond = new Condition();
   * cond.acquireSync();
   * assert.equal(cond.waitForSync(() => "ready"), "ready");
   * cond.release();
   * ```
   *
   * @typeParam T The predicate's result.
   * @param predicate Checked with the lock held.
   * @param options `timeout` (for the whole call); a `signal` is checked
   *   before each wait.
   * @returns The predicate's last value: truthy, or falsy on timeout.
   * @throws {RangeError} If the caller does not hold the lock.
   */
  waitForSync<T>(predicate: () => T, options?: WaitOptions): T {
    const { o, timeout } = waitOptions(options);
    checkPredicate(predicate);
    this.#checkOwned("wait on the condition");
    const end = deadline(timeout);
    let result = predicate();
    while (!result) {
      throwIfAborted(o.signal);
      const left = end - performance.now();
      if (left <= 0) break;
      this.waitSync(left === Infinity ? {} : { timeout: left });
      result = predicate();
    }
    return result;
  }

  /**
   * Wakes up to `n` waiters, oldest first.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   *
   * const cond = new Condition();
   * cond.acquireSync();
   * cond.notify(2);
   * cond.release();
   * ```
   *
   * @param n How many (default 1).
   * @throws {RangeError} If the caller does not hold the lock, or `n` is
   *   negative.
   */
  notify(n: number = 1): void {
    this.#checkOwned("notify");
    if (n !== Infinity) checkCount(n, "notify", "n");
    const w = this.#w;
    for (let k = 0; k < n; k++) {
      let best = -1;
      let bestTicket = 0;
      for (let i = 0; i < C_SLOTS; i++) {
        const s = C_TABLE + 3 * i;
        if (Atomics.load(w, s) !== C_WAITING) continue;
        if (!isThreadAlive(Atomics.load(w, s + 1))) {
          Atomics.store(w, s, C_FREE);
          continue;
        }
        const t = Atomics.load(w, s + 2);
        if (best < 0 || t - bestTicket < 0) {
          best = s;
          bestTicket = t;
        }
      }
      if (best < 0) return;
      Atomics.store(w, best, C_NOTIFIED);
      Atomics.notify(w, best);
    }
  }

  /**
   * Wakes every waiter.
   *
   * @example Usage
   * ```ts
   * import { Condition } from "@dmp/multiprocessing/sync";
   *
   * const cond = new Condition();
   * cond.acquireSync();
   * cond.notifyAll();
   * cond.release();
   * ```
   *
   * @throws {RangeError} If the caller does not hold the lock.
   */
  notifyAll(): void {
    this.notify(Infinity);
  }

  /**
   * Describes the condition (and its lock) for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    return {
      type: "sync.condition",
      module: import.meta.url,
      data: { words: this.#w, lock: this.#lock },
    };
  }
}

function checkPredicate(predicate: unknown): void {
  if (typeof predicate !== "function") {
    throw new TypeError(
      `Cannot wait on the condition: predicate must be a function, received ${
        describeValue(predicate)
      }`,
    );
  }
}

registerShareable("sync.condition", (d) => {
  const data = d as { words: Int32Array; lock: Lock | RLock };
  return new Condition(kAttach, data.words, data.lock);
});

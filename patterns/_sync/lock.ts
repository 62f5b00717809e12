/**
 * `Lock` and `RLock`: a lock word holding the thread id of its holder (an
 * {@linkcode OwnerWord}), taken over with `AbandonedError` when that holder
 * dies; an `RLock` adds a depth word.
 *
 * @module
 */

import { checkTimeout, throwIfAborted } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { currentThreadId } from "../_core/runtime.ts";
import { kAttach, kShare, registerShareable } from "../_core/share.ts";
import type { SharedHandle } from "../_core/share.ts";
import { OwnerWord, TAKEN, TIMED_OUT, USER_LOCK } from "../_core/owner_word.ts";
import { abandoned, guardOrTimeout, optionsOf, words } from "./common.ts";

/**
 * Where a lock's owner word (two words) starts in its memory; an `RLock`'s
 * depth word follows it.
 */
export const OWNER = 0;
/** The word of an `RLock` that counts how deep its holder acquired it. */
export const DEPTH: number = OWNER + OwnerWord.WORDS;

/**
 * Checks the options of an acquire (`what`: "acquire the lock"); returns
 * them and the timeout.
 */
function acquireOptions(
  options: WaitOptions | undefined,
  what: string,
): { o: WaitOptions; timeout: number } {
  const o = optionsOf(options, what);
  const timeout = checkTimeout(o.timeout, what);
  throwIfAborted(o.signal);
  return { o, timeout };
}

/**
 * Ends a `Lock` acquire whose wait for the owner word returned `r`: whether
 * it took the lock; throws if it took it over from a dead holder.
 */
function lockTaken(r: number): boolean {
  if (r > 0) throw abandoned("Lock", r);
  return r === TAKEN;
}

/** Reads the words of a Lock or an RLock; set by their static blocks. */
let wordsOf: (lock: Lock | RLock) => Int32Array;

/**
 * A non-recursive lock, as Python's `multiprocessing.Lock`: one holder at a
 * time; any thread may release it. A holder that dies leaves it abandoned:
 * the next acquirer takes it and gets {@linkcode AbandonedError}.
 *
 * @example Usage
 * ```ts
 * import { Lock } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const lock = new Lock();
 * assert.equal(await lock.acquire(), true);
 * assert.equal(await lock.acquire({ timeout: 0 }), false);
 * lock.release();
 * {
 *   using _ = await lock.hold();
 *   assert.equal(lock.locked(), true);
 * }
 * assert.equal(lock.locked(), false);
 * ```
 */
export class Lock {
  readonly #w: Int32Array;
  readonly #owner: OwnerWord;
  readonly #guard: Disposable;

  /** Makes a free lock. */
  constructor();
  /** @ignore */
  constructor(attach: typeof kAttach, words: Int32Array);
  constructor(attach?: typeof kAttach, memory?: Int32Array) {
    this.#w = attach === kAttach ? memory! : words(OwnerWord.WORDS);
    this.#owner = new OwnerWord(this.#w, OWNER, USER_LOCK);
    this.#guard = { [Symbol.dispose]: () => this.release() };
  }

  static {
    wordsOf = (lock) => (lock as Lock).#w;
  }

  /**
   * Acquires the lock without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const lock = new Lock();
   * assert.equal(await lock.acquire({ timeout: 100 }), true);
   * lock.release();
   * ```
   *
   * @param options `timeout` in ms (`0` only tries) and `signal`.
   * @returns `true` once held, `false` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  async acquire(options?: WaitOptions): Promise<boolean> {
    const { o, timeout } = acquireOptions(options, "acquire the lock");
    const me = currentThreadId();
    if (this.#owner.tryLock(me)) return true;
    return lockTaken(await this.#owner.lockAsync(me, timeout, o.signal));
  }

  /**
   * Acquires the lock, blocking the thread (for worker code).
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const lock = new Lock();
   * assert.equal(lock.acquireSync(), true);
   * assert.equal(lock.acquireSync({ timeout: 1 }), false);
   * lock.release();
   * ```
   *
   * @param options `timeout` in ms (`0` only tries); a `signal` is checked
   *   once, before waiting.
   * @returns `true` once held, `false` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  acquireSync(options?: WaitOptions): boolean {
    const me = currentThreadId();
    if (options === undefined && this.#owner.tryLock(me)) return true;
    const { timeout } = acquireOptions(options, "acquire the lock");
    if (this.#owner.tryLock(me)) return true;
    return lockTaken(this.#owner.lockSync(me, timeout));
  }

  /**
   * Releases the lock; any thread may release it, as in Python.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const lock = new Lock();
   * assert.throws(() => lock.release(), RangeError);
   * ```
   *
   * @throws {RangeError} If the lock is not held.
   */
  release(): void {
    if (this.#owner.unlock() === 0) {
      throw new RangeError("Cannot release the lock: it is not held");
    }
  }

  /**
   * Whether some thread holds the lock.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Lock().locked(), false);
   * ```
   *
   * @returns `true` while held.
   */
  locked(): boolean {
    return this.#owner.holder() !== 0;
  }

  /**
   * Acquires the lock and returns a guard that releases it when disposed:
   * `using _ = await lock.hold();`.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const lock = new Lock();
   * {
   *   using _ = await lock.hold({ timeout: 100 });
   *   assert.ok(lock.locked());
   * }
   * assert.ok(!lock.locked());
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it
   *   (and must release it: no guard was returned).
   */
  async hold(options?: WaitOptions): Promise<Disposable> {
    const acquired = await this.acquire(options);
    return guardOrTimeout(acquired, this.#guard, "lock", options);
  }

  /**
   * The blocking twin of {@linkcode Lock.hold}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { Lock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const lock = new Lock();
   * {
   *   using _ = lock.holdSync();
   *   assert.ok(lock.locked());
   * }
   * assert.ok(!lock.locked());
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  holdSync(options?: WaitOptions): Disposable {
    const acquired = this.acquireSync(options);
    return guardOrTimeout(acquired, this.#guard, "lock", options);
  }

  /**
   * Describes the lock for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    return { type: "sync.lock", module: import.meta.url, data: this.#w };
  }
}

// -- RLock -----------------------------------------------------------------

/**
 * A re-entrant lock, as Python's `multiprocessing.RLock`: the holding
 * thread (the main thread or a worker) may acquire it again and must
 * release it as many times; only the holder may release it. A holder that
 * dies leaves it abandoned (see {@linkcode AbandonedError}).
 *
 * All promise calls of the main thread count as one holder: the main thread.
 *
 * @example Usage
 * ```ts
 * import { RLock } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const rlock = new RLock();
 * assert.ok(rlock.acquireSync());
 * assert.ok(rlock.acquireSync());
 * rlock.release();
 * assert.ok(rlock.locked());
 * rlock.release();
 * assert.ok(!rlock.locked());
 * ```
 */
export class RLock {
  readonly #w: Int32Array;
  readonly #owner: OwnerWord;
  readonly #guard: Disposable;

  /** Makes a free re-entrant lock. */
  constructor();
  /** @ignore */
  constructor(attach: typeof kAttach, words: Int32Array);
  constructor(attach?: typeof kAttach, memory?: Int32Array) {
    this.#w = attach === kAttach ? memory! : words(DEPTH + 1);
    this.#owner = new OwnerWord(this.#w, OWNER, USER_LOCK);
    this.#guard = { [Symbol.dispose]: () => this.release() };
  }

  static {
    const previous = wordsOf;
    wordsOf = (lock) => #w in lock ? lock.#w : previous(lock);
  }

  /**
   * Acquires the lock without blocking the event loop; immediate when this
   * thread already holds it.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const rlock = new RLock();
   * assert.ok(await rlock.acquire());
   * assert.ok(await rlock.acquire({ timeout: 0 }));
   * rlock.release();
   * rlock.release();
   * ```
   *
   * @param options `timeout` in ms (`0` only tries) and `signal`.
   * @returns `true` once held, `false` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  async acquire(options?: WaitOptions): Promise<boolean> {
    const { o, timeout } = acquireOptions(options, "acquire the rlock");
    const me = currentThreadId();
    if (this.#owner.holder() === me) {
      this.#w[DEPTH]!++;
      return true;
    }
    const r = this.#owner.tryLock(me)
      ? TAKEN
      : await this.#owner.lockAsync(me, timeout, o.signal);
    return this.#taken(r);
  }

  /**
   * Acquires the lock, blocking the thread (for worker code); immediate when
   * this thread already holds it.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const rlock = new RLock();
   * assert.ok(rlock.acquireSync({ timeout: 0 }));
   * rlock.release();
   * ```
   *
   * @param options `timeout` in ms (`0` only tries); a `signal` is checked
   *   once, before waiting.
   * @returns `true` once held, `false` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  acquireSync(options?: WaitOptions): boolean {
    const w = this.#w;
    const me = currentThreadId();
    const h = this.#owner.holder();
    if (h === me) {
      w[DEPTH]!++;
      return true;
    }
    if (options === undefined && h === 0 && this.#owner.tryLock(me)) {
      w[DEPTH] = 1;
      return true;
    }
    const { timeout } = acquireOptions(options, "acquire the rlock");
    const r = this.#owner.tryLock(me)
      ? TAKEN
      : this.#owner.lockSync(me, timeout);
    return this.#taken(r);
  }

  /**
   * Ends an acquire whose wait for the owner word returned `r`: at depth 1
   * once taken (also when taken over from a dead holder, then thrown).
   */
  #taken(r: number): boolean {
    if (r === TIMED_OUT) return false;
    this.#w[DEPTH] = 1;
    if (r > 0) throw abandoned("RLock", r);
    return true;
  }

  /**
   * Releases one level of the lock; at the last level, frees it.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.throws(() => new RLock().release(), RangeError);
   * ```
   *
   * @throws {RangeError} If the calling thread does not hold it.
   */
  release(): void {
    const w = this.#w;
    const h = this.#owner.holder();
    if (h !== currentThreadId()) {
      throw new RangeError(
        h === 0
          ? "Cannot release the rlock: it is not held"
          : `Cannot release the rlock: it is held by another thread (thread ${h}), not by the caller`,
      );
    }
    const depth = w[DEPTH]! - 1;
    w[DEPTH] = depth;
    if (depth > 0) return;
    this.#owner.unlock();
  }

  /**
   * Whether some thread holds the lock.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new RLock().locked(), false);
   * ```
   *
   * @returns `true` while held.
   */
  locked(): boolean {
    return this.#owner.holder() !== 0;
  }

  /**
   * Acquires the lock and returns a guard that releases one level when
   * disposed: `using _ = await rlock.hold();`.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const rlock = new RLock();
   * {
   *   using _a = await rlock.hold();
   *   using _b = await rlock.hold();
   *   assert.ok(rlock.locked());
   * }
   * assert.ok(!rlock.locked());
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  async hold(options?: WaitOptions): Promise<Disposable> {
    const acquired = await this.acquire(options);
    return guardOrTimeout(acquired, this.#guard, "rlock", options);
  }

  /**
   * The blocking twin of {@linkcode RLock.hold}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { RLock } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const rlock = new RLock();
   * {
   *   using _ = rlock.holdSync();
   *   assert.ok(rlock.locked());
   * }
   * assert.ok(!rlock.locked());
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   * @throws {AbandonedError} If its holder died; the caller now holds it.
   */
  holdSync(options?: WaitOptions): Disposable {
    const acquired = this.acquireSync(options);
    return guardOrTimeout(acquired, this.#guard, "rlock", options);
  }

  /**
   * Describes the lock for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    return { type: "sync.rlock", module: import.meta.url, data: this.#w };
  }
}

/** Whether `lock` is a `Lock` or an `RLock`. */
export function isLock(lock: unknown): lock is Lock | RLock {
  return lock instanceof Lock || lock instanceof RLock;
}

/**
 * The shared words of a `Lock` or an `RLock` (for `Condition`, which
 * releases and re-takes its lock's owner word itself): see
 * {@linkcode OWNER} and {@linkcode DEPTH}.
 */
export function lockWords(lock: Lock | RLock): Int32Array {
  return wordsOf(lock);
}

registerShareable("sync.lock", (d) => new Lock(kAttach, d as Int32Array));
registerShareable("sync.rlock", (d) => new RLock(kAttach, d as Int32Array));

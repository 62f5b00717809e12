/**
 * `Semaphore` and `BoundedSemaphore`: a permit count, and a table of the
 * threads that hold permits, so that the permits of a thread that dies come
 * back (with `AbandonedError` for their takers).
 *
 * @module
 */

import { AbandonedError } from "../_core/errors.ts";
import { checkTimeout, deadline, throwIfAborted } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import {
  currentThreadId,
  isThreadAlive,
  throwIfStopRequested,
} from "../_core/runtime.ts";
import { kAttach, kShare, registerShareable } from "../_core/share.ts";
import type { SharedHandle } from "../_core/share.ts";
import { waitAsync } from "../_core/wait.ts";
import { checkCount, guardOrTimeout, optionsOf, words } from "./common.ts";

/** Loads to spin on an empty semaphore before sleeping. */
const SPIN = 1000;
/** The longest sleep between two looks for permits of dead holders. */
const SLICE_MS = 10;

/** Semaphore words. */
const S_VALUE = 0;
const S_WAITERS = 1;
const S_INITIAL = 2;
const S_ABANDONED = 3;
const S_BOUNDED = 4;
const S_TABLE = 8;
/** Holder threads tracked at once. */
const S_SLOTS = 32;
/** A table slot being reclaimed from a dead holder. */
const RECLAIMING = -1;

/**
 * Takes one from the word `i` of `w` if it is positive (a CAS loop);
 * whether it did.
 */
function takeOne(w: Int32Array, i: number): boolean {
  let v = Atomics.load(w, i);
  while (v > 0) {
    const p = Atomics.compareExchange(w, i, v, v - 1);
    if (p === v) return true;
    v = p;
  }
  return false;
}

/**
 * A counting semaphore, as Python's `multiprocessing.Semaphore`: `acquire`
 * takes one permit, waiting while there is none; `release(n)` gives `n`
 * back (any thread may release). Permits held by a thread that dies come
 * back, up to the initial value, and their takers get
 * {@linkcode AbandonedError}; see the module doc for the limits.
 *
 * @example Usage
 * ```ts
 * import { Semaphore } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const sem = new Semaphore(2);
 * assert.ok(await sem.acquire());
 * assert.ok(await sem.acquire());
 * assert.equal(await sem.acquire({ timeout: 0 }), false);
 * sem.release(2);
 * assert.equal(sem.getValue(), 2);
 * ```
 */
export class Semaphore {
  readonly #w: Int32Array;
  readonly #guard: Disposable;
  /** The table slot this thread last used (a hint). */
  #slot = -1;

  /**
   * Makes a semaphore with `value` permits.
   *
   * @param value The initial number of permits.
   * @throws {TypeError} If `value` is not a number.
   * @throws {RangeError} If `value` is negative or not an integer.
   */
  constructor(value?: number);
  /** @ignore */
  constructor(attach: typeof kAttach, words: Int32Array);
  constructor(value: number | typeof kAttach = 1, memory?: Int32Array) {
    if (value === kAttach) {
      this.#w = memory!;
    } else {
      checkCount(value, `create ${new.target.name}`, "value");
      this.#w = words(S_TABLE + 2 * S_SLOTS);
      this.#w[S_VALUE] = value;
      this.#w[S_INITIAL] = value;
      this.#w[S_BOUNDED] = new.target === BoundedSemaphore ? 1 : 0;
    }
    this.#guard = { [Symbol.dispose]: () => this.release() };
  }

  #take(): boolean {
    if (!takeOne(this.#w, S_VALUE)) return false;
    this.#track(1);
    return true;
  }

  #track(n: number): void {
    const w = this.#w;
    const me = currentThreadId();
    let s = this.#slot;
    if (s < 0 || Atomics.load(w, S_TABLE + 2 * s) !== me) {
      s = -1;
      for (let i = 0; i < S_SLOTS; i++) {
        if (Atomics.load(w, S_TABLE + 2 * i) === me) {
          s = i;
          break;
        }
      }
      if (s < 0) {
        if (n < 0) return;
        for (let i = 0; i < S_SLOTS && s < 0; i++) {
          if (Atomics.compareExchange(w, S_TABLE + 2 * i, 0, me) === 0) s = i;
        }
        if (s < 0) return; // table full: this holding is not tracked
      }
      this.#slot = s;
    }
    const c = S_TABLE + 2 * s + 1;
    if (n > 0) {
      Atomics.add(w, c, n);
    } else {
      const held = Atomics.load(w, c);
      const d = Math.min(held, -n);
      if (d > 0) Atomics.sub(w, c, d);
      if (held - d === 0) {
        Atomics.store(w, S_TABLE + 2 * s, 0);
        this.#slot = -1;
      }
    }
  }

  /** Gives back the permits of dead holders; true if any came back. */
  #recover(): boolean {
    const w = this.#w;
    let any = false;
    for (let i = 0; i < S_SLOTS; i++) {
      const t = S_TABLE + 2 * i;
      const tid = Atomics.load(w, t);
      if (tid <= 0 || isThreadAlive(tid)) continue;
      if (Atomics.compareExchange(w, t, tid, RECLAIMING) !== tid) continue;
      const held = Atomics.exchange(w, t + 1, 0);
      Atomics.store(w, t, 0);
      const initial = Atomics.load(w, S_INITIAL);
      for (;;) {
        const v = Atomics.load(w, S_VALUE);
        const add = Math.min(held, Math.max(0, initial - v));
        if (add === 0) break;
        if (Atomics.compareExchange(w, S_VALUE, v, v + add) === v) {
          Atomics.add(w, S_ABANDONED, add);
          Atomics.notify(w, S_VALUE, add);
          any = true;
          break;
        }
      }
    }
    return any;
  }

  /** After taking a permit: throws if it was one a dead holder left. */
  #checkAbandoned(): void {
    if (takeOne(this.#w, S_ABANDONED)) {
      throw new AbandonedError(
        `${this.constructor.name} permit was abandoned: a thread died holding it; the caller now holds it`,
      );
    }
  }

  /** Checks the options of an acquire; returns them and its deadline. */
  #startAcquire(
    options: WaitOptions | undefined,
  ): { o: WaitOptions; timeout: number; end: number } {
    const what = `acquire the ${this.constructor.name.toLowerCase()}`;
    const o = optionsOf(options, what);
    const timeout = checkTimeout(o.timeout, what);
    throwIfAborted(o.signal);
    return { o, timeout, end: deadline(timeout) };
  }

  /**
   * Takes a permit without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { Semaphore } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const sem = new Semaphore(0);
   * assert.equal(await sem.acquire({ timeout: 5 }), false);
   * ```
   *
   * @param options `timeout` in ms (`0` only tries) and `signal`.
   * @returns `true` once a permit is taken, `false` on timeout.
   * @throws {AbandonedError} If the permit was left by a dead holder; the
   *   caller now holds it.
   */
  async acquire(options?: WaitOptions): Promise<boolean> {
    const { o, end } = this.#startAcquire(options);
    const w = this.#w;
    for (;;) {
      if (this.#take()) break;
      if (this.#recover() && this.#take()) break;
      const left = end - performance.now();
      if (left <= 0) return false;
      Atomics.add(w, S_WAITERS, 1);
      try {
        await waitAsync(w, S_VALUE, 0, {
          timeout: Math.min(left, SLICE_MS),
          ...(o.signal ? { signal: o.signal } : {}),
        });
      } finally {
        Atomics.sub(w, S_WAITERS, 1);
      }
    }
    this.#checkAbandoned();
    return true;
  }

  /**
   * Takes a permit, blocking the thread (for worker code).
   *
   * @example Usage
   * ```ts
   * import { Semaphore } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const sem = new Semaphore(1);
   * assert.ok(sem.acquireSync());
   * assert.equal(sem.acquireSync({ timeout: 0 }), false);
   * sem.release();
   * ```
   *
   * @param options `timeout` in ms (`0` only tries); a `signal` is checked
   *   once, before waiting.
   * @returns `true` once a permit is taken, `false` on timeout.
   * @throws {AbandonedError} If the permit was left by a dead holder.
   */
  acquireSync(options?: WaitOptions): boolean {
    const { timeout, end } = this.#startAcquire(options);
    const w = this.#w;
    for (let round = 0;; round++) {
      if (this.#take()) break;
      if (round > 0 || timeout > 0) {
        let got = false;
        for (let i = 0; i < SPIN && !got; i++) {
          if (Atomics.load(w, S_VALUE) > 0) got = this.#take();
        }
        if (got) break;
      }
      if (this.#recover() && this.#take()) break;
      throwIfStopRequested();
      const left = end - performance.now();
      if (left <= 0) return false;
      Atomics.add(w, S_WAITERS, 1);
      Atomics.wait(w, S_VALUE, 0, Math.min(left, SLICE_MS));
      Atomics.sub(w, S_WAITERS, 1);
    }
    this.#checkAbandoned();
    return true;
  }

  /**
   * Gives `n` permits back and wakes as many waiters.
   *
   * @example Usage
   * ```ts
   * import { Semaphore } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const sem = new Semaphore(0);
   * sem.release(3);
   * assert.equal(sem.getValue(), 3);
   * ```
   *
   * @param n How many permits (default 1).
   * @throws {RangeError} If `n` is not a positive integer, or a
   *   `BoundedSemaphore` would go past its initial value.
   */
  release(n: number = 1): void {
    const w = this.#w;
    if (n !== 1) {
      checkCount(n, `release the ${this.constructor.name.toLowerCase()}`, "n");
      if (n === 0) {
        throw new RangeError(
          `Cannot release the ${this.constructor.name.toLowerCase()}: n must be at least 1, received 0`,
        );
      }
    }
    for (;;) {
      const v = Atomics.load(w, S_VALUE);
      if (w[S_BOUNDED] === 1 && v + n > w[S_INITIAL]!) {
        throw new RangeError(
          `Cannot release the bounded semaphore: it would hold ${
            v + n
          } permits, more than its initial value ${w[S_INITIAL]}`,
        );
      }
      if (Atomics.compareExchange(w, S_VALUE, v, v + n) === v) break;
    }
    this.#track(-n);
    if (Atomics.load(w, S_WAITERS) !== 0) Atomics.notify(w, S_VALUE, n);
  }

  /**
   * The number of free permits now, as Python's `get_value()`.
   *
   * @example Usage
   * ```ts
   * import { Semaphore } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Semaphore(4).getValue(), 4);
   * ```
   *
   * @returns The count.
   */
  getValue(): number {
    return Atomics.load(this.#w, S_VALUE);
  }

  /**
   * Takes a permit and returns a guard that gives it back when disposed.
   *
   * @example Usage
   * ```ts
   * import { Semaphore } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const sem = new Semaphore(1);
   * {
   *   using _ = await sem.hold();
   *   assert.equal(sem.getValue(), 0);
   * }
   * assert.equal(sem.getValue(), 1);
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   * @throws {AbandonedError} If the permit was left by a dead holder.
   */
  async hold(options?: WaitOptions): Promise<Disposable> {
    const acquired = await this.acquire(options);
    return guardOrTimeout(acquired, this.#guard, "semaphore", options);
  }

  /**
   * The blocking twin of {@linkcode Semaphore.hold}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { Semaphore } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const sem = new Semaphore(1);
   * {
   *   using _ = sem.holdSync();
   *   assert.equal(sem.getValue(), 0);
   * }
   * assert.equal(sem.getValue(), 1);
   * ```
   *
   * @param options `timeout` and `signal`.
   * @returns The guard.
   * @throws {DOMException} A `TimeoutError` if the timeout passed first.
   * @throws {AbandonedError} If the permit was left by a dead holder.
   */
  holdSync(options?: WaitOptions): Disposable {
    const acquired = this.acquireSync(options);
    return guardOrTimeout(acquired, this.#guard, "semaphore", options);
  }

  /**
   * Describes the semaphore for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    return { type: "sync.semaphore", module: import.meta.url, data: this.#w };
  }
}

/**
 * A semaphore that refuses to be released past its initial value, as
 * Python's `multiprocessing.BoundedSemaphore`.
 *
 * @example Usage
 * ```ts
 * import { BoundedSemaphore } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const sem = new BoundedSemaphore(1);
 * assert.ok(sem.acquireSync());
 * sem.release();
 * assert.throws(() => sem.release(), RangeError);
 * ```
 */
export class BoundedSemaphore extends Semaphore {
  /**
   * Makes a bounded semaphore with `value` permits.
   *
   * @param value The initial (and largest) number of permits.
   * @throws {TypeError} If `value` is not a number.
   * @throws {RangeError} If `value` is negative or not an integer.
   */
  constructor(value?: number);
  /** @ignore */
  constructor(attach: typeof kAttach, words: Int32Array);
  constructor(value: number | typeof kAttach = 1, memory?: Int32Array) {
    // A pass-through: (value) or (kAttach, words), as received.
    super(value as typeof kAttach, memory as Int32Array);
  }
}

registerShareable("sync.semaphore", (d) => {
  const w = d as Int32Array;
  return w[S_BOUNDED] === 1
    ? new BoundedSemaphore(kAttach, w)
    : new Semaphore(kAttach, w);
});

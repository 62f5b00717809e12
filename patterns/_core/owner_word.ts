/**
 * An owner word: a lock in two words of shared memory whose first word holds
 * the thread id of its holder (0: free) and whose second counts the threads
 * sleeping on it. A waiter that finds the holder's thread dead (see
 * `isThreadAlive`) takes the word over with a compare-and-swap, so only one
 * waiter does, and is told so: the lock paths return the dead holder's id,
 * and the caller decides what that means (`Lock` throws `AbandonedError`; a
 * short internal lock carries on).
 *
 * Like ESFX's `Mutex`, it is a view over memory it is given: an `Int32Array`
 * on a `SharedArrayBuffer` and the index of its first word, so the same two
 * words can sit inside a larger block (a `Barrier`'s words, a channel ring's
 * control words). It keeps no state of its own: any number of `OwnerWord`s,
 * in any threads, may view the same words.
 *
 * ```ts
 * import { OwnerWord, TAKEN, USER_LOCK } from "./owner_word.ts";
 * import { strict as assert } from "node:assert";
 *
 * const words = new Int32Array(new SharedArrayBuffer(4 * OwnerWord.WORDS));
 * const owner = new OwnerWord(words, 0, USER_LOCK);
 * assert.ok(owner.tryLock(1));
 * assert.equal(owner.holder(), 1);
 * assert.equal(owner.unlock(), 1);
 * // A holder whose thread is not alive (0x7ffffff0 is no live thread's id):
 * Atomics.store(words, 0, 0x7ffffff0);
 * assert.equal(owner.lockSync(2, 1000), 0x7ffffff0);
 * assert.equal(owner.holder(), 2);
 * owner.unlock();
 * assert.equal(owner.lockSync(2, 0), TAKEN);
 * ```
 *
 * @module
 */

import { deadline, throwIfAborted } from "./deadline.ts";
import { isThreadAlive, throwIfStopRequested } from "./runtime.ts";
import { SpinPolicy, waitAsync } from "./wait.ts";

// -- How it waits: every spin and sleep constant of the owner word ---------

/**
 * How an owner word waits for its holder. The lock paths spin on the word
 * before each sleep (a {@linkcode SpinPolicy} of `spin` loads), then sleep
 * on it for at most `sliceMs`, and look between two sleeps whether the
 * holder's thread is still alive.
 */
export interface OwnerWordPolicy {
  /** The spin before each sleep, in loads of the word. */
  readonly spin: number;
  /** The longest sleep, in ms, between two looks at the holder. */
  readonly sliceMs: number;
  /**
   * How long, in ms, a holder must have been seen dead before a waiter
   * takes the word over (0: at once).
   */
  readonly graceMs: number;
  /**
   * Whether a blocking wait throws `WorkerCrashedError` once the calling
   * thread was told to stop (see `throwIfStopRequested`).
   */
  readonly stopCheck: boolean;
}

/**
 * The lock word of `Lock` and `RLock`: user code holds it for as long as it
 * likes, so a blocking waiter watches for a stop request between sleeps, and
 * a dead holder is taken over at once (the taker gets `AbandonedError`).
 */
export const USER_LOCK: OwnerWordPolicy = Object.freeze({
  spin: 1000,
  sliceMs: 10,
  graceMs: 0,
  stopCheck: true,
});

/**
 * A short internal lock (a `Barrier`'s): only a few stores run under it, so
 * a waiter sleeps in 1 ms slices and never throws.
 */
export const SHORT_LOCK: OwnerWordPolicy = Object.freeze({
  spin: 1000,
  sliceMs: 1,
  graceMs: 0,
  stopCheck: false,
});

/**
 * The lock of a channel ring (`_shm/ring.ts`). Its takeover is silent (there
 * is no one to tell), so it waits 20 ms before it: a thread is marked dead
 * when it is told to stop (`terminate()`), before it has stopped, and a
 * holder marked dead in the middle of its few straight-line stores gets the
 * time to finish them, or to be stopped by V8, before a waiter writes the
 * ring.
 */
export const RING_LOCK: OwnerWordPolicy = Object.freeze({
  spin: 256,
  sliceMs: 1,
  graceMs: 20,
  stopCheck: false,
});

// -- Results -------------------------------------------------------------

/** A lock path took the word from a live holder's release (or it was free). */
export const TAKEN = 0;
/** A lock path gave up: its timeout passed first. */
export const TIMED_OUT: -1 = -1;

/** `#look`: the word changed under the look; look again. */
const RETRY = -2;
/** `#look`: a live holder (or one within its grace) has it; sleep. */
const WAIT = -3;

/** What the lock paths remember between two looks at the word. */
interface Watch {
  /** The holder last seen dead, and since when (ms). */
  dead: number;
  since: number;
  /** The holder to sleep on. */
  holder: number;
}

// -- The owner word --------------------------------------------------------

/**
 * A view of an owner word: `words[index]` the holder's thread id (0: free),
 * `words[index + 1]` the sleepers. The lock paths return {@linkcode TAKEN},
 * {@linkcode TIMED_OUT}, or the id (a positive number) of the dead holder
 * they took the word over from.
 */
export class OwnerWord {
  /** The `Int32` words an owner word takes. */
  static readonly WORDS = 2;
  readonly #w: Int32Array;
  readonly #owner: number;
  readonly #sleepers: number;
  readonly #policy: OwnerWordPolicy;
  readonly #spin: SpinPolicy;

  /**
   * Views the owner word at `words[index]` and `words[index + 1]`.
   *
   * @param words Shared memory.
   * @param index The first of its two words.
   * @param policy How it waits.
   * @throws {TypeError} If `words` is not on a `SharedArrayBuffer`.
   * @throws {RangeError} If the two words do not fit at `index`.
   */
  constructor(words: Int32Array, index: number, policy: OwnerWordPolicy) {
    if (!(words.buffer instanceof SharedArrayBuffer)) {
      throw new TypeError(
        "Cannot view the owner word: its words must be on a SharedArrayBuffer",
      );
    }
    if (
      !Number.isInteger(index) || index < 0 ||
      index + OwnerWord.WORDS > words.length
    ) {
      throw new RangeError(
        `Cannot view the owner word: index ${index} leaves no ${OwnerWord.WORDS} words in an array of length ${words.length}`,
      );
    }
    this.#w = words;
    this.#owner = index;
    this.#sleepers = index + 1;
    this.#policy = policy;
    this.#spin = new SpinPolicy(policy.spin);
  }

  /** The holder's thread id, or 0 while free. */
  holder(): number {
    return Atomics.load(this.#w, this.#owner);
  }

  /**
   * Takes the word if it is free; never waits.
   *
   * @param me The caller's thread id.
   * @returns Whether the caller holds it now.
   */
  tryLock(me: number): boolean {
    return Atomics.compareExchange(this.#w, this.#owner, 0, me) === 0;
  }

  /**
   * Takes the word, blocking the thread: a free word at once (without the
   * set-up of {@linkcode OwnerWord.lockSync}, for the short locks taken on
   * every operation), else as `lockSync` does, with no timeout.
   *
   * @param me The caller's thread id.
   */
  take(me: number): void {
    if (!this.tryLock(me)) this.lockSync(me);
  }

  /**
   * Takes the word, blocking the thread: spins, then sleeps in slices,
   * taking it over from a dead holder. With `timeout` 0 it only tries
   * (without spinning).
   *
   * @param me The caller's thread id.
   * @param timeout Milliseconds; `Infinity` for ever.
   * @returns {@linkcode TAKEN}, {@linkcode TIMED_OUT}, or the dead holder's
   *   id.
   * @throws {WorkerCrashedError} If the policy checks for a stop and this
   *   thread was told to stop.
   */
  lockSync(me: number, timeout: number = Infinity): number {
    const w = this.#w;
    const owner = this.#owner;
    const { sliceMs, stopCheck } = this.#policy;
    const end = deadline(timeout);
    const watch: Watch = { dead: 0, since: 0, holder: 0 };
    for (let first = true;; first = false) {
      if (!first || timeout > 0) {
        const seen = Atomics.load(w, owner);
        if (seen !== 0) this.#spin.spinWhile(w, owner, seen);
        if (Atomics.compareExchange(w, owner, 0, me) === 0) return TAKEN;
      }
      const r = this.#look(me, watch);
      if (r === RETRY) continue;
      if (r !== WAIT) return r;
      if (stopCheck) throwIfStopRequested();
      const left = end - performance.now();
      if (left <= 0) return TIMED_OUT;
      Atomics.add(w, this.#sleepers, 1);
      Atomics.wait(w, owner, watch.holder, Math.min(left, sliceMs));
      Atomics.sub(w, this.#sleepers, 1);
    }
  }

  /**
   * The promise twin of {@linkcode OwnerWord.lockSync}, for the main thread:
   * never blocks the event loop.
   *
   * @param me The caller's thread id.
   * @param timeout Milliseconds; `Infinity` for ever.
   * @param signal Aborts the wait.
   * @returns {@linkcode TAKEN}, {@linkcode TIMED_OUT}, or the dead holder's
   *   id.
   * @throws {unknown} The signal's reason, if it aborts.
   */
  async lockAsync(
    me: number,
    timeout: number = Infinity,
    signal?: AbortSignal,
  ): Promise<number> {
    const w = this.#w;
    const owner = this.#owner;
    const end = deadline(timeout);
    const watch: Watch = { dead: 0, since: 0, holder: 0 };
    for (;;) {
      throwIfAborted(signal);
      const r = this.#look(me, watch);
      if (r === RETRY) continue;
      if (r !== WAIT) return r;
      const left = end - performance.now();
      if (left <= 0) return TIMED_OUT;
      Atomics.add(w, this.#sleepers, 1);
      try {
        await waitAsync(w, owner, watch.holder, {
          timeout: Math.min(left, this.#policy.sliceMs),
          ...(signal ? { signal } : {}),
        }, this.#spin);
      } finally {
        Atomics.sub(w, this.#sleepers, 1);
      }
    }
  }

  /**
   * One look at the word: takes it if it is free, or if its holder has been
   * seen dead for the policy's grace; otherwise says to wait for
   * `watch.holder`.
   *
   * @returns {@linkcode TAKEN}, the dead holder's id it took over from,
   *   `WAIT`, or `RETRY` (the word changed under the look).
   */
  #look(me: number, watch: Watch): number {
    const w = this.#w;
    const owner = this.#owner;
    const h = Atomics.load(w, owner);
    if (h === 0) {
      return Atomics.compareExchange(w, owner, 0, me) === 0 ? TAKEN : RETRY;
    }
    if (!isThreadAlive(h)) {
      if (watch.dead !== h) {
        watch.dead = h;
        watch.since = performance.now();
      }
      if (this.#graceOver(watch.since)) {
        return Atomics.compareExchange(w, owner, h, me) === h ? h : RETRY;
      }
    }
    watch.holder = h;
    return WAIT;
  }

  /** Whether a holder seen dead since `since` may be taken over now. */
  #graceOver(since: number): boolean {
    const grace = this.#policy.graceMs;
    return grace === 0 || performance.now() - since >= grace;
  }

  /**
   * Frees the word and wakes one sleeper. Any thread may call it; the
   * caller checks who may.
   *
   * @returns The holder it had (0: it was already free, and nothing
   *   changed).
   */
  unlock(): number {
    const w = this.#w;
    const h = Atomics.exchange(w, this.#owner, 0);
    if (h !== 0 && Atomics.load(w, this.#sleepers) !== 0) {
      Atomics.notify(w, this.#owner, 1);
    }
    return h;
  }
}

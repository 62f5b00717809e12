/**
 * `Barrier`: an arrival count and a generation word, under a short internal
 * lock (an {@linkcode OwnerWord}); the action's source travels with it.
 *
 * @module
 */

import { BrokenBarrierError, describeValue } from "../_core/errors.ts";
import { checkTimeout, deadline, throwIfAborted } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { compileTask, taskSource } from "../_core/task.ts";
import { currentThreadId } from "../_core/runtime.ts";
import { kAttach, kShare, registerShareable } from "../_core/share.ts";
import type { SharedHandle } from "../_core/share.ts";
import { waitAsync, waitSync } from "../_core/wait.ts";
import { OwnerWord, SHORT_LOCK } from "../_core/owner_word.ts";
import { optionsOf, words } from "./common.ts";

/** Barrier words: its internal lock (an owner word, two words), then these. */
const B_LOCK = 0;
const B_COUNT = B_LOCK + OwnerWord.WORDS;
const B_GEN = B_COUNT + 1;
const B_BROKEN = B_GEN + 1;
/** Bit `gen % 32` set: that generation ended broken. */
const B_OUTCOME = B_BROKEN + 1;
const B_PARTIES = B_OUTCOME + 1;
const B_WORDS = B_PARTIES + 1;

/**
 * Options of {@linkcode Barrier}.
 *
 * @example Usage
 * ```ts
 * import { Barrier, type BarrierOptions } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const passes = new Int32Array(new SharedArrayBuffer(4));
 * const options: BarrierOptions = {
 *   action: (counter: Int32Array) => Atomics.add(counter, 0, 1),
 *   actionArgs: [passes],
 *   timeout: 1000,
 * };
 * const barrier = new Barrier(2, options);
 * await Promise.all([barrier.wait(), barrier.wait()]);
 * assert.equal(Atomics.load(passes, 0), 1);
 * ```
 */
export interface BarrierOptions {
  /**
   * Runs once per pass, in the thread of the party that arrives last,
   * before any party is released. A self-contained function: its source is
   * sent to whichever thread runs it (it must not use variables from its
   * enclosing scope). If it throws, the barrier breaks; the last party gets
   * the error and the others `BrokenBarrierError`.
   */
  // deno-lint-ignore no-explicit-any
  action?: (...args: any[]) => unknown;
  /**
   * The arguments `action` is called with: structured-clone values and
   * this package's shared objects (a `Value`, a `Lock`, …), which arrive
   * live in whichever thread runs the action.
   */
  actionArgs?: unknown[];
  /** The default `timeout` (ms) of `wait`. */
  timeout?: number;
}

/**
 * Takes a barrier's internal lock, a short one (no user code runs under
 * it); a dead holder is taken over silently.
 */
function barrierLock(lock: OwnerWord): void {
  const me = currentThreadId();
  lock.take(me);
}

/** Ends generation `g` broken (if it is still current); under no lock. */
function breakGeneration(
  w: Int32Array,
  lock: OwnerWord,
  g: number,
  sticky: boolean,
): void {
  barrierLock(lock);
  if (Atomics.load(w, B_GEN) === g) {
    const bit = 1 << (g & 31);
    Atomics.store(w, B_OUTCOME, Atomics.load(w, B_OUTCOME) | bit);
    Atomics.store(w, B_COUNT, 0);
    if (sticky) Atomics.store(w, B_BROKEN, 1);
    Atomics.store(w, B_GEN, (g + 1) | 0);
    Atomics.notify(w, B_GEN);
  }
  lock.unlock();
}

/** What an arrival found. */
type Arrival =
  | { kind: "wait"; g: number; index: number }
  | { kind: "last"; g: number; index: number }
  | { kind: "full"; g: number };

/**
 * A barrier for a fixed number of parties, as Python's
 * `multiprocessing.Barrier`: each `wait` blocks until `parties` have
 * arrived, then all are released and the barrier is ready for the next
 * round. `wait` resolves to the party's arrival index (`0 … parties-1`). A
 * timeout, `abort()`, or `reset()` during a wait breaks it: every waiter
 * gets {@linkcode BrokenBarrierError}.
 *
 * @example Usage
 * ```ts
 * import { Barrier } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const barrier = new Barrier(2);
 * const [a, b] = await Promise.all([barrier.wait(), barrier.wait()]);
 * assert.deepEqual([a, b].sort(), [0, 1]);
 * ```
 */
export class Barrier {
  readonly #w: Int32Array;
  readonly #lock: OwnerWord;
  readonly #action: string | null;
  readonly #actionArgs: unknown[];
  readonly #timeout: number;
  #compiled: ((...args: unknown[]) => unknown) | undefined;

  /**
   * Makes a barrier for `parties` parties.
   *
   * @param parties How many parties must arrive.
   * @param options `action` and the default `timeout`.
   * @throws {TypeError} If `parties` is not a number, or `action` is not a
   *   function.
   * @throws {RangeError} If `parties` is not a positive integer.
   */
  constructor(parties: number, options?: BarrierOptions);
  /** @ignore */
  constructor(attach: typeof kAttach, data: BarrierData);
  constructor(
    parties: number | typeof kAttach,
    options: BarrierOptions | BarrierData = {},
  ) {
    if (parties === kAttach) {
      const data = options as BarrierData;
      this.#w = data.words;
      this.#lock = new OwnerWord(this.#w, B_LOCK, SHORT_LOCK);
      this.#action = data.action ?? null;
      this.#actionArgs = data.actionArgs;
      this.#timeout = data.timeout;
      return;
    }
    if (typeof parties !== "number") {
      throw new TypeError(
        `Cannot create Barrier: parties must be a number, received ${
          describeValue(parties)
        }`,
      );
    }
    if (!Number.isInteger(parties) || parties < 1 || parties > 0x7fffffff) {
      throw new RangeError(
        `Cannot create Barrier: parties must be a positive integer, received ${parties}`,
      );
    }
    const o = (options ?? {}) as BarrierOptions;
    this.#timeout = checkTimeout(o.timeout, "create Barrier");
    if (o.action === undefined) {
      this.#action = null;
    } else {
      this.#action = taskSource(o.action, "create Barrier");
      this.#compiled = o.action;
    }
    if (o.actionArgs !== undefined && !Array.isArray(o.actionArgs)) {
      throw new TypeError(
        `Cannot create Barrier: actionArgs must be an array, received ${
          describeValue(o.actionArgs)
        }`,
      );
    }
    this.#actionArgs = o.actionArgs ?? [];
    this.#w = words(B_WORDS);
    this.#w[B_PARTIES] = parties;
    this.#lock = new OwnerWord(this.#w, B_LOCK, SHORT_LOCK);
  }

  /** The number of parties that must arrive. */
  get parties(): number {
    return this.#w[B_PARTIES]!;
  }

  /** How many parties wait now (0 while broken). */
  get nWaiting(): number {
    const w = this.#w;
    if (Atomics.load(w, B_BROKEN) === 1) return 0;
    const c = Atomics.load(w, B_COUNT);
    return c < w[B_PARTIES]! ? c : 0;
  }

  /** Whether the barrier is broken (until `reset()`). */
  get broken(): boolean {
    return Atomics.load(this.#w, B_BROKEN) === 1;
  }

  #arrive(): Arrival {
    const w = this.#w;
    barrierLock(this.#lock);
    if (Atomics.load(w, B_BROKEN) === 1) {
      this.#lock.unlock();
      throw new BrokenBarrierError("Cannot wait: the barrier is broken");
    }
    const g = Atomics.load(w, B_GEN);
    const c = Atomics.load(w, B_COUNT);
    const parties = w[B_PARTIES]!;
    if (c >= parties) {
      this.#lock.unlock();
      return { kind: "full", g };
    }
    Atomics.store(w, B_COUNT, c + 1);
    this.#lock.unlock();
    return { kind: c + 1 === parties ? "last" : "wait", g, index: c };
  }

  /** The last party: after the action, releases generation `g`. */
  #pass(g: number): void {
    const w = this.#w;
    barrierLock(this.#lock);
    if (Atomics.load(w, B_GEN) !== g) {
      this.#lock.unlock();
      throw new BrokenBarrierError(
        "Cannot pass the barrier: it was broken while the action ran",
      );
    }
    const bit = 1 << (g & 31);
    Atomics.store(w, B_OUTCOME, Atomics.load(w, B_OUTCOME) & ~bit);
    Atomics.store(w, B_COUNT, 0);
    Atomics.store(w, B_GEN, (g + 1) | 0);
    Atomics.notify(w, B_GEN);
    this.#lock.unlock();
  }

  /** After generation `g` ended: whether it ended broken. */
  #endedBroken(g: number): boolean {
    return (Atomics.load(this.#w, B_OUTCOME) & (1 << (g & 31))) !== 0;
  }

  #runAction(): unknown {
    if (this.#action === null) return undefined;
    this.#compiled ??= compileTask(this.#action);
    return this.#compiled(...this.#actionArgs);
  }

  /**
   * Waits until all parties arrived, without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { Barrier } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const barrier = new Barrier(1, { action: () => console.log("passed") });
   * assert.equal(await barrier.wait(), 0);
   * ```
   *
   * @param options `timeout` in ms (default: the barrier's) and `signal`;
   *   either breaks the barrier for every waiter.
   * @returns This party's arrival index.
   * @throws {BrokenBarrierError} If the barrier is or gets broken.
   */
  async wait(options?: WaitOptions): Promise<number> {
    const { o, timeout, end } = this.#startWait(options);
    for (;;) {
      const a = this.#arrive();
      if (a.kind === "last") {
        try {
          await this.#runAction();
        } catch (e) {
          this.#failed(a, e);
        }
        this.#pass(a.g);
        return a.index;
      }
      try {
        let left;
        while ((left = this.#left(a, end, timeout)) > 0) {
          await waitAsync(this.#w, B_GEN, a.g, {
            timeout: left,
            ...(o.signal ? { signal: o.signal } : {}),
          });
        }
      } catch (e) {
        this.#failed(a, e);
      }
      if (a.kind !== "full") return this.#released(a);
    }
  }

  /**
   * The blocking twin of {@linkcode Barrier.wait}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { Barrier } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Barrier(1).waitSync(), 0);
   * ```
   *
   * @param options `timeout` in ms (default: the barrier's); a `signal` is
   *   checked once.
   * @returns This party's arrival index.
   * @throws {BrokenBarrierError} If the barrier is or gets broken.
   * @throws {TypeError} If the action returned a promise (use `wait`).
   */
  waitSync(options?: WaitOptions): number {
    const { timeout, end } = this.#startWait(options);
    for (;;) {
      const a = this.#arrive();
      if (a.kind === "last") {
        try {
          const r = this.#runAction() as { then?: unknown } | undefined;
          if (r && typeof r.then === "function") {
            throw new TypeError(
              "Cannot run the barrier action in waitSync: it returned a promise (use wait() for an async action)",
            );
          }
        } catch (e) {
          this.#failed(a, e);
        }
        this.#pass(a.g);
        return a.index;
      }
      try {
        let left;
        while ((left = this.#left(a, end, timeout)) > 0) {
          waitSync(this.#w, B_GEN, a.g, left);
        }
      } catch (e) {
        this.#failed(a, e);
      }
      if (a.kind !== "full") return this.#released(a);
    }
  }

  /** Checks the options of a wait; returns them, its timeout and deadline. */
  #startWait(
    options: WaitOptions | undefined,
  ): { o: WaitOptions; timeout: number; end: number } {
    const o = optionsOf(options, "wait on the barrier");
    const timeout = o.timeout === undefined
      ? this.#timeout
      : checkTimeout(o.timeout, "wait on the barrier");
    throwIfAborted(o.signal);
    return { o, timeout, end: deadline(timeout) };
  }

  /**
   * In the wait of arrival `a` until `end` (of `timeout` ms): the ms left,
   * or 0 once its generation ended. At the deadline a party of it breaks
   * the generation (and gets 0); one that found the barrier full throws.
   */
  #left(a: Arrival, end: number, timeout: number): number {
    const w = this.#w;
    if (Atomics.load(w, B_GEN) !== a.g) return 0;
    const left = end - performance.now();
    if (left > 0) return left;
    if (a.kind === "full") {
      throw new BrokenBarrierError(
        `Cannot wait: timed out after ${timeout} ms`,
      );
    }
    breakGeneration(w, this.#lock, a.g, true);
    return 0;
  }

  /**
   * The action or the wait of arrival `a` threw `e`: a party of its
   * generation breaks it; rethrows `e`.
   */
  #failed(a: Arrival, e: unknown): never {
    if (a.kind !== "full") breakGeneration(this.#w, this.#lock, a.g, true);
    throw e;
  }

  /** A party whose generation ended: its index, or the error if broken. */
  #released(a: Arrival & { index: number }): number {
    if (this.#endedBroken(a.g)) {
      throw new BrokenBarrierError(
        "Cannot wait: the barrier was broken while waiting",
      );
    }
    return a.index;
  }

  /**
   * Breaks the barrier: current and future waiters get
   * `BrokenBarrierError` until `reset()`.
   *
   * @example Usage
   * ```ts
   * import { Barrier, BrokenBarrierError } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const barrier = new Barrier(2);
   * barrier.abort();
   * assert.ok(barrier.broken);
   * await assert.rejects(barrier.wait(), BrokenBarrierError);
   * ```
   */
  abort(): void {
    const w = this.#w;
    breakGeneration(w, this.#lock, Atomics.load(w, B_GEN), true);
    Atomics.store(w, B_BROKEN, 1);
  }

  /**
   * Returns the barrier to its initial state; parties waiting now get
   * `BrokenBarrierError`.
   *
   * @example Usage
   * ```ts
   * import { Barrier } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const barrier = new Barrier(1);
   * barrier.abort();
   * barrier.reset();
   * assert.equal(barrier.broken, false);
   * assert.equal(barrier.waitSync(), 0);
   * ```
   */
  reset(): void {
    const w = this.#w;
    barrierLock(this.#lock);
    const g = Atomics.load(w, B_GEN);
    if (Atomics.load(w, B_COUNT) > 0) {
      Atomics.store(w, B_OUTCOME, Atomics.load(w, B_OUTCOME) | 1 << (g & 31));
      Atomics.store(w, B_COUNT, 0);
      Atomics.store(w, B_GEN, (g + 1) | 0);
      Atomics.notify(w, B_GEN);
    }
    Atomics.store(w, B_BROKEN, 0);
    this.#lock.unlock();
  }

  /**
   * Describes the barrier (and its action's source) for the trip into a
   * worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    const data: BarrierData = {
      words: this.#w,
      action: this.#action,
      actionArgs: this.#actionArgs,
      timeout: this.#timeout,
    };
    return { type: "sync.barrier", module: import.meta.url, data };
  }
}

/** What a barrier's handle carries: its words and its action. */
interface BarrierData {
  words: Int32Array;
  action: string | null;
  actionArgs: unknown[];
  timeout: number;
}

registerShareable(
  "sync.barrier",
  (d) => new Barrier(kAttach, d as BarrierData),
);

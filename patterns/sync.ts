/**
 * Synchronization primitives shared by every thread: `Lock`, `RLock`,
 * `Semaphore`, `BoundedSemaphore`, `Condition`, `Event` and `Barrier`, as
 * Python's `multiprocessing` has them, on `SharedArrayBuffer` and `Atomics`.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import Lock, Process
 *
 * def f(lock, i):
 *     with lock:
 *         print("hello world", i)
 *
 * if __name__ == "__main__":
 *     lock = Lock()
 *     for num in range(3):
 *         Process(target=f, args=(lock, num)).start()
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { Lock } from "@dmp/multiprocessing/sync";
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const lock = new Lock();
 * const procs = [0, 1, 2].map((num) =>
 *   new Process({
 *     target: (lock: Lock, i: number) => {
 *       lock.acquireSync();
 *       try {
 *         console.log("hello world", i);
 *       } finally {
 *         lock.release();
 *       }
 *     },
 *     args: [lock, num],
 *   })
 * );
 * for (const p of procs) p.start();
 * for (const p of procs) assert.equal(await p.join(), 0);
 * ```
 *
 * Every primitive is a few words of shared memory; passed to a `Process` or a
 * `Pool` task (also nested in arrays and objects) it arrives live in the
 * worker, on the same memory. Calls that may wait come in two forms: a
 * promise (`acquire`, `wait`, `waitFor`) that never blocks the event loop,
 * for the main thread, and a blocking twin (`acquireSync`, `waitSync`,
 * `waitForSync`) for worker code. Every wait takes `timeout` (ms; `0` only
 * tries) and `signal`. `using _ = await lock.hold()` releases at the end of
 * the block.
 *
 * **Abandoned locks** (what Python lacks). The lock word of a `Lock` or an
 * `RLock` holds the thread id of its holder (`currentThreadId()` of
 * `_util.ts`), and a `Semaphore` records which threads hold its permits in a
 * small table (32 holder threads at a time). The package keeps a table of
 * live threads in shared memory: a worker's entry is marked dead when it
 * exits, crashes, calls `self.close()`/`Deno.exit()`, is terminated, or its
 * pool recycles it. A waiter sleeps in slices of at most 10 ms and, between
 * slices, looks its holder up in that table; when the holder is dead it takes
 * the lock over (a compare-and-swap, so only one waiter does) and its
 * `acquire` fails with `AbandonedError` — the lock is then held by the caller,
 * who should repair or discard the data it protects and release it. A
 * semaphore's permits held by a dead thread come back the same way (up to the
 * semaphore's initial value, so a semaphore used as a signal never gains
 * permits), and each taker of such a permit gets `AbandonedError`.
 *
 * Limits: a thread stopped with `terminate()` while busy in a synchronous
 * loop keeps running in Deno (see `cube.ts`), so it may still touch the data
 * after its lock was taken over; `Condition` waits at most 128 waiters at a
 * time; a `Semaphore` tracks permits of at most 32 holder threads at once
 * (permits of further holders are not recovered when they die).
 *
 * @module
 */

import {
  AbandonedError,
  BrokenBarrierError,
  checkTimeout,
  compileTask,
  currentThreadId,
  describeValue,
  isMainModule,
  isThreadAlive,
  kShare,
  parseCli,
  registerShareable,
  type ShareContext,
  type SharedHandle,
  taskSource,
  throwIfAborted,
  throwIfStopRequested,
  timeoutError,
  waitAsync,
  type WaitOptions,
  waitSync,
} from "./_util.ts";

export { AbandonedError, BrokenBarrierError, kShare } from "./_util.ts";
export type {
  Shareable,
  ShareContext,
  SharedHandle,
  WaitOptions,
} from "./_util.ts";

// -- Shared helpers ------------------------------------------------------

/** Loads to spin on a busy lock before sleeping. */
const SPIN = 1000;
/** The longest sleep between two checks that the holder is still alive. */
const SLICE_MS = 10;

/** The reviver hands the received shared memory to a constructor. */
let adopting: Int32Array | undefined;

function adopt(): Int32Array | undefined {
  const a = adopting;
  adopting = undefined;
  return a;
}

function words(n: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * n));
}

function deadline(timeout: number): number {
  return timeout === Infinity ? Infinity : performance.now() + timeout;
}

function abandoned(what: string, holder: number): AbandonedError {
  return new AbandonedError(
    `${what} was abandoned: its holder (thread ${holder}) died while holding it; the caller now holds it`,
  );
}

function checkCount(n: unknown, what: string, name: string): number {
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

function optionsOf(options: unknown, what: string): WaitOptions {
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
function guardOrTimeout(
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

// -- The owner word of Lock and RLock ------------------------------------

/** `[0]` the holder's thread id (0: free), `[1]` sleepers, `[2]` RLock depth. */
const OWNER = 0;
const WAITERS = 1;
const DEPTH = 2;

/** How a slow acquire ended. */
const TIMED_OUT = 0;
const TAKEN = 1;

/**
 * Takes a busy owner word, blocking. Returns TIMED_OUT, TAKEN, or the id of
 * the dead holder it was taken from (negated).
 */
function ownSlowSync(w: Int32Array, me: number, timeout: number): number {
  const end = deadline(timeout);
  for (let first = true;; first = false) {
    if (!first || timeout > 0) {
      for (let i = 0; i < SPIN; i++) {
        if (
          Atomics.load(w, OWNER) === 0 &&
          Atomics.compareExchange(w, OWNER, 0, me) === 0
        ) return TAKEN;
      }
    }
    const h = Atomics.load(w, OWNER);
    if (h === 0) {
      if (Atomics.compareExchange(w, OWNER, 0, me) === 0) return TAKEN;
      continue;
    }
    if (!isThreadAlive(h)) {
      if (Atomics.compareExchange(w, OWNER, h, me) === h) return -h;
      continue;
    }
    throwIfStopRequested();
    const left = end - performance.now();
    if (left <= 0) return TIMED_OUT;
    Atomics.add(w, WAITERS, 1);
    Atomics.wait(w, OWNER, h, Math.min(left, SLICE_MS));
    Atomics.sub(w, WAITERS, 1);
  }
}

/** The promise twin of {@linkcode ownSlowSync}. */
async function ownSlowAsync(
  w: Int32Array,
  me: number,
  timeout: number,
  signal: AbortSignal | undefined,
): Promise<number> {
  const end = deadline(timeout);
  for (;;) {
    throwIfAborted(signal);
    const h = Atomics.load(w, OWNER);
    if (h === 0) {
      if (Atomics.compareExchange(w, OWNER, 0, me) === 0) return TAKEN;
      continue;
    }
    if (!isThreadAlive(h)) {
      if (Atomics.compareExchange(w, OWNER, h, me) === h) return -h;
      continue;
    }
    const left = end - performance.now();
    if (left <= 0) return TIMED_OUT;
    Atomics.add(w, WAITERS, 1);
    try {
      await waitAsync(w, OWNER, h, {
        timeout: Math.min(left, SLICE_MS),
        ...(signal ? { signal } : {}),
      });
    } finally {
      Atomics.sub(w, WAITERS, 1);
    }
  }
}

function wakeOwnerWaiter(w: Int32Array): void {
  if (Atomics.load(w, WAITERS) !== 0) Atomics.notify(w, OWNER, 1);
}

/** Module-private access to the words of a Lock or RLock (for Condition). */
let lockWords: (lock: Lock | RLock) => Int32Array;

// -- Lock ------------------------------------------------------------------

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
  readonly #guard: Disposable;

  /** Makes a free lock. */
  constructor() {
    this.#w = adopt() ?? words(2);
    this.#guard = { [Symbol.dispose]: () => this.release() };
  }

  static {
    lockWords = (lock) => (lock as Lock).#w;
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
    const o = optionsOf(options, "acquire the lock");
    const timeout = checkTimeout(o.timeout, "acquire the lock");
    throwIfAborted(o.signal);
    const me = currentThreadId();
    if (Atomics.compareExchange(this.#w, OWNER, 0, me) === 0) return true;
    const r = await ownSlowAsync(this.#w, me, timeout, o.signal);
    if (r < 0) throw abandoned("Lock", -r);
    return r === TAKEN;
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
    if (
      options === undefined &&
      Atomics.compareExchange(this.#w, OWNER, 0, me) === 0
    ) return true;
    const o = optionsOf(options, "acquire the lock");
    const timeout = checkTimeout(o.timeout, "acquire the lock");
    throwIfAborted(o.signal);
    if (Atomics.compareExchange(this.#w, OWNER, 0, me) === 0) return true;
    const r = ownSlowSync(this.#w, me, timeout);
    if (r < 0) throw abandoned("Lock", -r);
    return r === TAKEN;
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
    const w = this.#w;
    if (Atomics.exchange(w, OWNER, 0) === 0) {
      throw new RangeError("Cannot release the lock: it is not held");
    }
    if (Atomics.load(w, WAITERS) !== 0) Atomics.notify(w, OWNER, 1);
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
    return Atomics.load(this.#w, OWNER) !== 0;
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
   * @example Usage
   * ```ts
   * import { Lock, kShare } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Lock()[kShare]({ transfer: [], afterSend() {} }).type, "sync.lock");
   * ```
   *
   * @param _context Unused.
   * @returns The handle.
   */
  [kShare](_context?: ShareContext): SharedHandle {
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
  readonly #guard: Disposable;

  /** Makes a free re-entrant lock. */
  constructor() {
    this.#w = adopt() ?? words(3);
    this.#guard = { [Symbol.dispose]: () => this.release() };
  }

  static {
    const previous = lockWords;
    lockWords = (lock) => #w in lock ? lock.#w : previous(lock);
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
    const o = optionsOf(options, "acquire the rlock");
    const timeout = checkTimeout(o.timeout, "acquire the rlock");
    throwIfAborted(o.signal);
    const w = this.#w;
    const me = currentThreadId();
    if (Atomics.load(w, OWNER) === me) {
      w[DEPTH]!++;
      return true;
    }
    if (Atomics.compareExchange(w, OWNER, 0, me) !== 0) {
      const r = await ownSlowAsync(w, me, timeout, o.signal);
      if (r === TIMED_OUT) return false;
      if (r < 0) {
        w[DEPTH] = 1;
        throw abandoned("RLock", -r);
      }
    }
    w[DEPTH] = 1;
    return true;
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
    const h = Atomics.load(w, OWNER);
    if (h === me) {
      w[DEPTH]!++;
      return true;
    }
    if (
      options === undefined && h === 0 &&
      Atomics.compareExchange(w, OWNER, 0, me) === 0
    ) {
      w[DEPTH] = 1;
      return true;
    }
    const o = optionsOf(options, "acquire the rlock");
    const timeout = checkTimeout(o.timeout, "acquire the rlock");
    throwIfAborted(o.signal);
    if (Atomics.compareExchange(w, OWNER, 0, me) !== 0) {
      const r = ownSlowSync(w, me, timeout);
      if (r === TIMED_OUT) return false;
      if (r < 0) {
        w[DEPTH] = 1;
        throw abandoned("RLock", -r);
      }
    }
    w[DEPTH] = 1;
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
    const h = Atomics.load(w, OWNER);
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
    Atomics.store(w, OWNER, 0);
    if (Atomics.load(w, WAITERS) !== 0) Atomics.notify(w, OWNER, 1);
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
    return Atomics.load(this.#w, OWNER) !== 0;
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
   * @example Usage
   * ```ts
   * import { RLock, kShare } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new RLock()[kShare]({ transfer: [], afterSend() {} }).type, "sync.rlock");
   * ```
   *
   * @param _context Unused.
   * @returns The handle.
   */
  [kShare](_context?: ShareContext): SharedHandle {
    return { type: "sync.rlock", module: import.meta.url, data: this.#w };
  }
}

function isLock(lock: unknown): lock is Lock | RLock {
  return lock instanceof Lock || lock instanceof RLock;
}

// -- Semaphore -------------------------------------------------------------

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
  constructor(value: number = 1) {
    const a = adopt();
    if (a) {
      this.#w = a;
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
    const w = this.#w;
    let v = Atomics.load(w, S_VALUE);
    while (v > 0) {
      const p = Atomics.compareExchange(w, S_VALUE, v, v - 1);
      if (p === v) {
        this.#track(1);
        return true;
      }
      v = p;
    }
    return false;
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
    const w = this.#w;
    let a = Atomics.load(w, S_ABANDONED);
    while (a > 0) {
      const p = Atomics.compareExchange(w, S_ABANDONED, a, a - 1);
      if (p === a) {
        throw new AbandonedError(
          `${this.constructor.name} permit was abandoned: a thread died holding it; the caller now holds it`,
        );
      }
      a = p;
    }
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
    const what = `acquire the ${this.constructor.name.toLowerCase()}`;
    const o = optionsOf(options, what);
    const timeout = checkTimeout(o.timeout, what);
    throwIfAborted(o.signal);
    const w = this.#w;
    const end = deadline(timeout);
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
    const what = `acquire the ${this.constructor.name.toLowerCase()}`;
    const o = optionsOf(options, what);
    const timeout = checkTimeout(o.timeout, what);
    throwIfAborted(o.signal);
    const w = this.#w;
    const end = deadline(timeout);
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
   * @example Usage
   * ```ts
   * import { Semaphore, kShare } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Semaphore()[kShare]({ transfer: [], afterSend() {} }).type, "sync.semaphore");
   * ```
   *
   * @param _context Unused.
   * @returns The handle.
   */
  [kShare](_context?: ShareContext): SharedHandle {
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
  constructor(value: number = 1) {
    super(value);
  }
}

// -- Condition -------------------------------------------------------------

/** Condition words: `[0]` ticket counter, then slots of 3 words. */
const C_TICKET = 0;
const C_TABLE = 1;
const C_SLOTS = 128;
const C_FREE = 0;
const C_WAITING = 1;
const C_NOTIFIED = 2;

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
  readonly #rlock: boolean;

  /**
   * Makes a condition on `lock` (a new `RLock` by default).
   *
   * @param lock The lock it shares with its users.
   * @throws {TypeError} If `lock` is not a `Lock` or an `RLock`.
   */
  constructor(lock?: Lock | RLock) {
    const a = adopt();
    if (lock !== undefined && !isLock(lock)) {
      throw new TypeError(
        `Cannot create Condition: lock must be a Lock or an RLock, received ${
          describeValue(lock)
        }`,
      );
    }
    this.#w = a ?? words(C_TABLE + 3 * C_SLOTS);
    this.#lock = lock ?? new RLock();
    this.#lw = lockWords(this.#lock);
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
    const h = Atomics.load(this.#lw, OWNER);
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
    Atomics.store(lw, OWNER, 0);
    wakeOwnerWaiter(lw);
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
    const o = optionsOf(options, "wait on the condition");
    const timeout = checkTimeout(o.timeout, "wait on the condition");
    throwIfAborted(o.signal);
    this.#checkOwned("wait on the condition");
    const w = this.#w;
    const s = this.#enlist();
    const depth = this.#releaseAll();
    let failure: unknown;
    let failed = false;
    try {
      const end = deadline(timeout);
      while (Atomics.load(w, s) === C_WAITING) {
        const left = end - performance.now();
        if (left <= 0) break;
        await waitAsync(w, s, C_WAITING, {
          timeout: left,
          ...(o.signal ? { signal: o.signal } : {}),
        });
      }
    } catch (e) {
      failed = true;
      failure = e;
    }
    let again: unknown;
    let againFailed = false;
    try {
      await this.#lock.acquire();
    } catch (e) {
      againFailed = true;
      again = e;
    }
    return this.#settle(s, depth, failed, failure, againFailed, again);
  }

  /** Ends a wait: restores the lock depth, frees the slot, reports. */
  #settle(
    s: number,
    depth: number,
    failed: boolean,
    failure: unknown,
    againFailed: boolean,
    again: unknown,
  ): boolean {
    if (this.#rlock && Atomics.load(this.#lw, OWNER) === currentThreadId()) {
      this.#lw[DEPTH] = depth;
    }
    const notified = this.#delist(s);
    if (failed) throw failure;
    if (againFailed) throw again;
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
    const o = optionsOf(options, "wait on the condition");
    const timeout = checkTimeout(o.timeout, "wait on the condition");
    throwIfAborted(o.signal);
    this.#checkOwned("wait on the condition");
    const w = this.#w;
    const s = this.#enlist();
    const depth = this.#releaseAll();
    let failure: unknown;
    let failed = false;
    try {
      const end = deadline(timeout);
      while (Atomics.load(w, s) === C_WAITING) {
        const left = end - performance.now();
        if (left <= 0) break;
        waitSync(w, s, C_WAITING, left);
      }
    } catch (e) {
      failed = true;
      failure = e;
    }
    let again: unknown;
    let againFailed = false;
    try {
      this.#lock.acquireSync();
    } catch (e) {
      againFailed = true;
      again = e;
    }
    return this.#settle(s, depth, failed, failure, againFailed, again);
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
    const o = optionsOf(options, "wait on the condition");
    const timeout = checkTimeout(o.timeout, "wait on the condition");
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
    const o = optionsOf(options, "wait on the condition");
    const timeout = checkTimeout(o.timeout, "wait on the condition");
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
   * @example Usage
   * ```ts
   * import { Condition, kShare } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Condition()[kShare]({ transfer: [], afterSend() {} }).type, "sync.condition");
   * ```
   *
   * @param _context Unused.
   * @returns The handle.
   */
  [kShare](_context?: ShareContext): SharedHandle {
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

// -- Event -----------------------------------------------------------------

const E_FLAG = 0;
const E_GEN = 1;

/**
 * A flag threads wait for, as Python's `multiprocessing.Event`. A `wait`
 * under way when `set()` is called returns `true` even if the flag is
 * cleared again at once.
 *
 * @example Usage
 * ```ts
 * import { Event } from "@dmp/multiprocessing/sync";
 * import { strict as assert } from "node:assert";
 *
 * const ev = new Event();
 * assert.equal(await ev.wait({ timeout: 1 }), false);
 * ev.set();
 * assert.equal(await ev.wait(), true);
 * ```
 */
export class Event {
  readonly #w: Int32Array;

  /** Makes a cleared event. */
  constructor() {
    this.#w = adopt() ?? words(2);
  }

  /**
   * Whether the flag is set.
   *
   * @example Usage
   * ```ts
   * import { Event } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Event().isSet(), false);
   * ```
   *
   * @returns The flag.
   */
  isSet(): boolean {
    return Atomics.load(this.#w, E_FLAG) === 1;
  }

  /**
   * Sets the flag and wakes every waiter.
   *
   * @example Usage
   * ```ts
   * import { Event } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const ev = new Event();
   * ev.set();
   * assert.ok(ev.isSet());
   * ```
   */
  set(): void {
    const w = this.#w;
    if (Atomics.compareExchange(w, E_FLAG, 0, 1) === 0) {
      Atomics.add(w, E_GEN, 1);
      Atomics.notify(w, E_GEN);
    }
  }

  /**
   * Clears the flag.
   *
   * @example Usage
   * ```ts
   * import { Event } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const ev = new Event();
   * ev.set();
   * ev.clear();
   * assert.ok(!ev.isSet());
   * ```
   */
  clear(): void {
    Atomics.store(this.#w, E_FLAG, 0);
  }

  /**
   * Waits until the flag is set, without blocking the event loop.
   *
   * @example Usage
   * ```ts
   * import { Event } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * const ev = new Event();
   * setTimeout(() => ev.set(), 1);
   * assert.equal(await ev.wait({ timeout: 5000 }), true);
   * ```
   *
   * @param options `timeout` in ms and `signal`.
   * @returns `true` once set, `false` on timeout.
   */
  async wait(options?: WaitOptions): Promise<boolean> {
    const o = optionsOf(options, "wait for the event");
    const timeout = checkTimeout(o.timeout, "wait for the event");
    throwIfAborted(o.signal);
    const w = this.#w;
    const g = Atomics.load(w, E_GEN);
    if (Atomics.load(w, E_FLAG) === 1) return true;
    const end = deadline(timeout);
    while (Atomics.load(w, E_GEN) === g) {
      const left = end - performance.now();
      if (left <= 0) return false;
      await waitAsync(w, E_GEN, g, {
        timeout: left,
        ...(o.signal ? { signal: o.signal } : {}),
      });
    }
    return true;
  }

  /**
   * The blocking twin of {@linkcode Event.wait}, for worker code.
   *
   * @example Usage
   * ```ts
   * import { Event } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Event().waitSync({ timeout: 1 }), false);
   * ```
   *
   * @param options `timeout` in ms; a `signal` is checked once.
   * @returns `true` once set, `false` on timeout.
   */
  waitSync(options?: WaitOptions): boolean {
    const o = optionsOf(options, "wait for the event");
    const timeout = checkTimeout(o.timeout, "wait for the event");
    throwIfAborted(o.signal);
    const w = this.#w;
    const g = Atomics.load(w, E_GEN);
    if (Atomics.load(w, E_FLAG) === 1) return true;
    const end = deadline(timeout);
    while (Atomics.load(w, E_GEN) === g) {
      const left = end - performance.now();
      if (left <= 0) return false;
      waitSync(w, E_GEN, g, left);
    }
    return true;
  }

  /**
   * Describes the event for the trip into a worker.
   *
   * @example Usage
   * ```ts
   * import { Event, kShare } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Event()[kShare]({ transfer: [], afterSend() {} }).type, "sync.event");
   * ```
   *
   * @param _context Unused.
   * @returns The handle.
   */
  [kShare](_context?: ShareContext): SharedHandle {
    return { type: "sync.event", module: import.meta.url, data: this.#w };
  }
}

// -- Barrier ---------------------------------------------------------------

/** Barrier words. */
const B_LOCK = 0;
const B_COUNT = 1;
const B_GEN = 2;
const B_BROKEN = 3;
/** Bit `gen % 32` set: that generation ended broken. */
const B_OUTCOME = 4;
const B_PARTIES = 5;
const B_LOCK_WAITERS = 6;

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

/** Internal short lock of a barrier (no user code runs under it). */
function barrierLock(w: Int32Array): void {
  const me = currentThreadId();
  if (Atomics.compareExchange(w, B_LOCK, 0, me) === 0) return;
  for (let spins = 0;; spins++) {
    const h = Atomics.load(w, B_LOCK);
    if (h === 0) {
      if (Atomics.compareExchange(w, B_LOCK, 0, me) === 0) return;
      continue;
    }
    if (spins < SPIN) continue;
    if (!isThreadAlive(h)) {
      if (Atomics.compareExchange(w, B_LOCK, h, me) === h) return;
      continue;
    }
    Atomics.add(w, B_LOCK_WAITERS, 1);
    Atomics.wait(w, B_LOCK, h, 1);
    Atomics.sub(w, B_LOCK_WAITERS, 1);
  }
}

function barrierUnlock(w: Int32Array): void {
  Atomics.store(w, B_LOCK, 0);
  if (Atomics.load(w, B_LOCK_WAITERS) !== 0) Atomics.notify(w, B_LOCK, 1);
}

/** Ends generation `g` broken (if it is still current); under no lock. */
function breakGeneration(w: Int32Array, g: number, sticky: boolean): void {
  barrierLock(w);
  if (Atomics.load(w, B_GEN) === g) {
    const bit = 1 << (g & 31);
    Atomics.store(w, B_OUTCOME, Atomics.load(w, B_OUTCOME) | bit);
    Atomics.store(w, B_COUNT, 0);
    if (sticky) Atomics.store(w, B_BROKEN, 1);
    Atomics.store(w, B_GEN, (g + 1) | 0);
    Atomics.notify(w, B_GEN);
  }
  barrierUnlock(w);
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
  constructor(parties: number, options: BarrierOptions = {}) {
    const a = adopt();
    if (a) {
      this.#w = a;
      this.#action = adoptAction ?? null;
      this.#actionArgs = adoptArgs;
      this.#timeout = adoptTimeout;
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
    const o = options ?? {};
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
    this.#w = words(8);
    this.#w[B_PARTIES] = parties;
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
    barrierLock(w);
    if (Atomics.load(w, B_BROKEN) === 1) {
      barrierUnlock(w);
      throw new BrokenBarrierError("Cannot wait: the barrier is broken");
    }
    const g = Atomics.load(w, B_GEN);
    const c = Atomics.load(w, B_COUNT);
    const parties = w[B_PARTIES]!;
    if (c >= parties) {
      barrierUnlock(w);
      return { kind: "full", g };
    }
    Atomics.store(w, B_COUNT, c + 1);
    barrierUnlock(w);
    return { kind: c + 1 === parties ? "last" : "wait", g, index: c };
  }

  /** The last party: after the action, releases generation `g`. */
  #pass(g: number): void {
    const w = this.#w;
    barrierLock(w);
    if (Atomics.load(w, B_GEN) !== g) {
      barrierUnlock(w);
      throw new BrokenBarrierError(
        "Cannot pass the barrier: it was broken while the action ran",
      );
    }
    const bit = 1 << (g & 31);
    Atomics.store(w, B_OUTCOME, Atomics.load(w, B_OUTCOME) & ~bit);
    Atomics.store(w, B_COUNT, 0);
    Atomics.store(w, B_GEN, (g + 1) | 0);
    Atomics.notify(w, B_GEN);
    barrierUnlock(w);
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
    const o = optionsOf(options, "wait on the barrier");
    const timeout = o.timeout === undefined
      ? this.#timeout
      : checkTimeout(o.timeout, "wait on the barrier");
    throwIfAborted(o.signal);
    const w = this.#w;
    const end = deadline(timeout);
    for (;;) {
      const a = this.#arrive();
      if (a.kind === "last") {
        try {
          await this.#runAction();
        } catch (e) {
          breakGeneration(w, a.g, true);
          throw e;
        }
        this.#pass(a.g);
        return a.index;
      }
      try {
        while (Atomics.load(w, B_GEN) === a.g) {
          const left = end - performance.now();
          if (left <= 0) {
            if (a.kind === "full") {
              throw new BrokenBarrierError(
                `Cannot wait: timed out after ${timeout} ms`,
              );
            }
            breakGeneration(w, a.g, true);
            break;
          }
          await waitAsync(w, B_GEN, a.g, {
            timeout: left,
            ...(o.signal ? { signal: o.signal } : {}),
          });
        }
      } catch (e) {
        if (a.kind !== "full") breakGeneration(w, a.g, true);
        throw e;
      }
      if (a.kind === "full") continue;
      if (this.#endedBroken(a.g)) {
        throw new BrokenBarrierError(
          "Cannot wait: the barrier was broken while waiting",
        );
      }
      return a.index;
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
    const o = optionsOf(options, "wait on the barrier");
    const timeout = o.timeout === undefined
      ? this.#timeout
      : checkTimeout(o.timeout, "wait on the barrier");
    throwIfAborted(o.signal);
    const w = this.#w;
    const end = deadline(timeout);
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
          breakGeneration(w, a.g, true);
          throw e;
        }
        this.#pass(a.g);
        return a.index;
      }
      try {
        while (Atomics.load(w, B_GEN) === a.g) {
          const left = end - performance.now();
          if (left <= 0) {
            if (a.kind === "full") {
              throw new BrokenBarrierError(
                `Cannot wait: timed out after ${timeout} ms`,
              );
            }
            breakGeneration(w, a.g, true);
            break;
          }
          waitSync(w, B_GEN, a.g, left);
        }
      } catch (e) {
        if (a.kind !== "full") breakGeneration(w, a.g, true);
        throw e;
      }
      if (a.kind === "full") continue;
      if (this.#endedBroken(a.g)) {
        throw new BrokenBarrierError(
          "Cannot wait: the barrier was broken while waiting",
        );
      }
      return a.index;
    }
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
    breakGeneration(w, Atomics.load(w, B_GEN), true);
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
    barrierLock(w);
    const g = Atomics.load(w, B_GEN);
    if (Atomics.load(w, B_COUNT) > 0) {
      Atomics.store(w, B_OUTCOME, Atomics.load(w, B_OUTCOME) | 1 << (g & 31));
      Atomics.store(w, B_COUNT, 0);
      Atomics.store(w, B_GEN, (g + 1) | 0);
      Atomics.notify(w, B_GEN);
    }
    Atomics.store(w, B_BROKEN, 0);
    barrierUnlock(w);
  }

  /**
   * Describes the barrier (and its action's source) for the trip into a
   * worker.
   *
   * @example Usage
   * ```ts
   * import { Barrier, kShare } from "@dmp/multiprocessing/sync";
   * import { strict as assert } from "node:assert";
   *
   * assert.equal(new Barrier(2)[kShare]({ transfer: [], afterSend() {} }).type, "sync.barrier");
   * ```
   *
   * @param _context Unused.
   * @returns The handle.
   */
  [kShare](_context?: ShareContext): SharedHandle {
    return {
      type: "sync.barrier",
      module: import.meta.url,
      data: {
        words: this.#w,
        action: this.#action,
        actionArgs: this.#actionArgs,
        timeout: this.#timeout,
      },
    };
  }
}

let adoptAction: string | null = null;
let adoptArgs: unknown[] = [];
let adoptTimeout = Infinity;

// -- Revivers --------------------------------------------------------------

function revive<T>(w: unknown, make: () => T): T {
  adopting = w as Int32Array;
  try {
    return make();
  } finally {
    adopting = undefined;
  }
}

registerShareable("sync.lock", (d) => revive(d, () => new Lock()));
registerShareable("sync.rlock", (d) => revive(d, () => new RLock()));
registerShareable("sync.semaphore", (d) => {
  const w = d as Int32Array;
  return revive(
    w,
    () => w[S_BOUNDED] === 1 ? new BoundedSemaphore() : new Semaphore(),
  );
});
registerShareable("sync.condition", (d) => {
  const data = d as { words: Int32Array; lock: Lock | RLock };
  return revive(data.words, () => new Condition(data.lock));
});
registerShareable("sync.event", (d) => revive(d, () => new Event()));
registerShareable("sync.barrier", (d) => {
  const data = d as {
    words: Int32Array;
    action: string | null;
    actionArgs: unknown[];
    timeout: number;
  };
  adoptAction = data.action;
  adoptArgs = data.actionArgs;
  adoptTimeout = data.timeout;
  try {
    return revive(data.words, () => new Barrier(1));
  } finally {
    adoptAction = null;
    adoptArgs = [];
    adoptTimeout = Infinity;
  }
});

// -- Demo --------------------------------------------------------------------

if (isMainModule(import.meta)) {
  parseCli(
    Deno.args,
    "deno task sync",
    "Shows a Lock shared by three processes (each prints under it), then a Barrier that three processes pass together, twice.",
  );
  const { Process } = await import("./cube.ts");
  const lock = new Lock();
  console.log("Lock: three processes print one at a time");
  const printers = [0, 1, 2].map((num) =>
    new Process({
      target: (lock: Lock, i: number) => {
        lock.acquireSync();
        try {
          console.log(`  hello world ${i}`);
        } finally {
          lock.release();
        }
      },
      args: [lock, num],
    })
  );
  for (const p of printers) p.start();
  for (const p of printers) await p.join();

  console.log(
    "Barrier: three processes meet twice; the last to arrive runs the action",
  );
  const barrier = new Barrier(3, {
    action: () => console.log("  -- all 3 arrived, the barrier opens --"),
    timeout: 10_000,
  });
  const walkers = [0, 1, 2].map((num) =>
    new Process({
      target: (barrier: Barrier, lock: Lock, i: number) => {
        for (const round of [1, 2]) {
          lock.acquireSync();
          console.log(`  process ${i} reached round ${round}`);
          lock.release();
          barrier.waitSync();
        }
      },
      args: [barrier, lock, num],
    })
  );
  for (const p of walkers) p.start();
  const codes = await Promise.all(walkers.map((p) => p.join()));
  console.log(`done: exit codes ${codes.join(", ")}`);
}

/**
 * Waiting on a shared word: the one spin-then-sleep policy behind every
 * blocking and async wait of the package, and the event-loop hold an async
 * wait needs on Deno.
 *
 * @module
 */

import { deadline, throwIfAborted, type WaitOptions } from "./deadline.ts";
import { perThread, throwIfStopRequested } from "./runtime.ts";

/**
 * Holds Deno's event loop open while a promise waits on shared memory (a
 * pending `Atomics.waitAsync` alone does not). Call the returned function
 * when the wait ends.
 *
 * @returns A function that lets go; calling it twice is harmless.
 */
export function holdEventLoop(): () => void {
  const ka = perThread("keepalive", () => ({
    count: 0,
    timer: undefined as ReturnType<typeof setInterval> | undefined,
  }));
  if (ka.count++ === 0) ka.timer = setInterval(() => {}, 0x3fffffff);
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--ka.count === 0) {
      clearInterval(ka.timer);
      ka.timer = undefined;
    }
  };
}

// -- The spin policy -------------------------------------------------------

/**
 * The longest single sleep of a blocking wait, so stop requests are seen.
 */
const SLICE_MS = 50;
/** After this many spins in a row that did not pay off, one full spin. */
const PROBE_EVERY = 16;
/** The spin of a wait that names no policy of its own, in loads. */
const DEFAULT_LOADS = 4000;

/** Options of {@linkcode SpinPolicy}. */
export interface SpinPolicyOptions {
  /**
   * Whether the spin adapts: a spin that did not pay off halves the next
   * one, one that did restores it, and every 16th miss in a row probes with
   * a full spin again (spin-then-park, as glibc's adaptive mutex and
   * parking_lot do). A fixed policy always spins its full budget.
   */
  adaptive?: boolean;
}

/**
 * How one wait site spins on a shared word before it sleeps: every wait of
 * the package that spins goes through one of these, so the budgets and the
 * adaptation live in this file. A spin is counted in `Atomics.load`s (one
 * takes about 11 ns in Deno 2.9.6 on these machines) and never reads the
 * clock. Keep one policy per wait site, so that an adaptive one learns its
 * own peer's pace. The budgets of the sites, and why no site stops spinning
 * when it sees itself preempted, are in `docs/architecture.md` ("Waiting").
 */
export class SpinPolicy {
  readonly #max: number;
  readonly #adaptive: boolean;
  #budget: number;
  #misses = 0;

  /**
   * Makes a policy.
   *
   * @param maxLoads The longest spin, in loads.
   * @param options Whether it adapts (default: fixed).
   */
  constructor(
    maxLoads: number = DEFAULT_LOADS,
    options: SpinPolicyOptions = {},
  ) {
    this.#max = maxLoads;
    this.#budget = maxLoads;
    this.#adaptive = options.adaptive ?? false;
  }

  /** How many loads the next spin may make. */
  get budget(): number {
    return this.#budget;
  }

  /**
   * Spins while `array[index] === expected`, for at most the current budget.
   *
   * @param array A shared `Int32Array`.
   * @param index The word to watch.
   * @param expected The value to spin while it holds.
   * @returns `true` if the word changed (or had already changed); `false`
   *   if the caller should sleep.
   */
  spinWhile(array: Int32Array, index: number, expected: number): boolean {
    if (Atomics.load(array, index) !== expected) return true;
    for (let i = this.#budget; i > 0; i--) {
      if (Atomics.load(array, index) !== expected) {
        if (this.#adaptive) this.#caught();
        return true;
      }
    }
    if (this.#adaptive) this.#missed();
    return false;
  }

  #caught(): void {
    this.#misses = 0;
    this.#budget = this.#max;
  }

  #missed(): void {
    this.#misses++;
    this.#budget = this.#misses % PROBE_EVERY === 0
      ? this.#max
      : this.#budget >> 1;
  }
}

/** The policy of the waits that name none of their own (it keeps no state). */
const DEFAULT_POLICY = new SpinPolicy();

/**
 * The result of a wait on a shared word: woken (`"ok"`), the word already
 * differed (`"not-equal"`), or the time ran out (`"timed-out"`).
 */
export type WaitResult = "ok" | "not-equal" | "timed-out";

/**
 * Blocks the calling thread while `array[index] === expected`, for at most
 * `timeout` ms: spins briefly, then sleeps in `Atomics.wait` slices so that a
 * stop request for this thread is noticed.
 *
 * @param array A shared `Int32Array`.
 * @param index The word to watch.
 * @param expected The value to wait while it holds.
 * @param timeout Milliseconds; `Infinity` for ever.
 * @param policy How to spin first (the thread's default policy if absent).
 * @returns How the wait ended.
 * @throws {WorkerCrashedError} If this thread was told to stop meanwhile.
 */
export function waitSync(
  array: Int32Array,
  index: number,
  expected: number,
  timeout: number = Infinity,
  policy: SpinPolicy = DEFAULT_POLICY,
): WaitResult {
  if (Atomics.load(array, index) !== expected) return "not-equal";
  if (policy.spinWhile(array, index, expected)) return "ok";
  if (timeout <= 0) return "timed-out";
  const end = deadline(timeout);
  for (;;) {
    throwIfStopRequested();
    const left = end - performance.now();
    if (left <= 0) return "timed-out";
    const r = Atomics.wait(array, index, expected, Math.min(left, SLICE_MS));
    if (r !== "timed-out") return r;
  }
}

/**
 * Waits without blocking the event loop while `array[index] === expected`:
 * spins briefly, then awaits `Atomics.waitAsync` while holding the event
 * loop open. Honours `timeout` and `signal`.
 *
 * @param array A shared `Int32Array`.
 * @param index The word to watch.
 * @param expected The value to wait while it holds.
 * @param options `timeout` (ms) and `signal`.
 * @param policy How to spin first (the thread's default policy if absent).
 * @returns How the wait ended; rejects with the signal's reason on abort.
 */
export async function waitAsync(
  array: Int32Array,
  index: number,
  expected: number,
  options: WaitOptions = {},
  policy: SpinPolicy = DEFAULT_POLICY,
): Promise<WaitResult> {
  const timeout = options.timeout ?? Infinity;
  const signal = options.signal;
  throwIfAborted(signal);
  if (Atomics.load(array, index) !== expected) return "not-equal";
  if (policy.spinWhile(array, index, expected)) return "ok";
  if (timeout <= 0) return "timed-out";
  const r = Atomics.waitAsync(
    array,
    index,
    expected,
    timeout === Infinity ? undefined : timeout,
  );
  if (!r.async) return r.value;
  const release = holdEventLoop();
  try {
    if (!signal) return await r.value;
    let onAbort!: () => void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([r.value, aborted]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  } finally {
    release();
  }
}

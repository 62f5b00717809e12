/**
 * Waiting on a shared word: the one spin-then-sleep policy behind every
 * blocking and async wait of the package, and the event-loop hold an async
 * wait needs on Deno.
 *
 * @module
 */

import { throwIfAborted, type WaitOptions } from "./deadline.ts";
import { countSpinning, perThread, throwIfStopRequested } from "./runtime.ts";

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
/** Loads between two looks at the clock while spinning (about 1 µs). */
const CHUNK = 128;
/**
 * A gap this long between two looks at the clock means the spinning thread
 * was taken off its core: more threads want to run than there are cores.
 */
const PREEMPTED_MS = 0.2;
/** How long a thread that saw itself preempted does not spin at all. */
const CALM_MS = 50;
/** After this many spins in a row that did not pay off, one full spin. */
const PROBE_EVERY = 16;
/** The longest spin while `cores - 1` other threads spin, in microseconds. */
const CROWDED_US = 2;
/** The default longest spin of a wait site, in microseconds. */
const DEFAULT_MAX_US = 20;

const CORES = Math.max(1, navigator.hardwareConcurrency || 1);

let calmRecord: { until: number } | undefined;

/** Until when this thread does not spin (it saw itself preempted). */
function calm(): { until: number } {
  return calmRecord ??= perThread("wait.calm", () => ({ until: 0 }));
}

/**
 * How one wait site spins before it sleeps. Spinning pays off only while the
 * thread being waited for runs on another core and answers within a few
 * microseconds; on a busy machine a spinner burns the core that thread
 * needs. So the policy adapts from what it observes itself (a Deno program
 * cannot see the load of other programs):
 *
 * - the spin is bounded in time (`maxMicros`), not in loads;
 * - a spin that did not pay off halves the next one, one that did restores
 *   it, and every 16th miss in a row probes with a full spin again
 *   (spin-then-park, as glibc's adaptive mutex and parking_lot do);
 * - a spinner that sees itself taken off its core (a gap of 0.2 ms between
 *   two looks at the clock) stops spinning, in every wait of its thread, for
 *   50 ms: the machine has more runnable threads than cores;
 * - while `cores - 1` other threads of the program spin (a counter in the
 *   shared thread table), a thread spins only 2 µs — long enough for a peer
 *   that is about to stop spinning — so one core is left to the thread
 *   doing the work.
 *
 * Keep one policy per wait site (a ring's reader side, a link's reply
 * wait), so that each learns its own peer's pace.
 */
export class SpinPolicy {
  readonly #max: number;
  #budget: number;
  #misses = 0;

  /**
   * Makes a policy.
   *
   * @param maxMicros The longest spin, in microseconds.
   */
  constructor(maxMicros: number = DEFAULT_MAX_US) {
    this.#max = maxMicros;
    this.#budget = maxMicros;
  }

  /** How long the next spin may last, in microseconds. */
  get budget(): number {
    return this.#budget;
  }

  /**
   * Spins while `array[index] === expected`, for at most the current budget.
   *
   * @param array A shared `Int32Array`.
   * @param index The word to watch.
   * @param expected The value to spin while it holds.
   * @returns `true` if the word changed during the spin; `false` if the
   *   caller should sleep.
   */
  spinWhile(array: Int32Array, index: number, expected: number): boolean {
    if (Atomics.load(array, index) !== expected) return true;
    const budget = this.#budget;
    if (budget <= 0 || CORES < 2) return this.#missed();
    const c = calm();
    let now = performance.now();
    if (now < c.until) return this.#missed();
    // Past `cores - 1` spinners only a short spin, long enough for a peer
    // that is about to stop spinning (it just got what it waited for).
    const crowded = countSpinning(true) >= CORES;
    try {
      const end = now +
        (crowded ? Math.min(budget, CROWDED_US) : budget) / 1000;
      for (;;) {
        for (let i = 0; i < CHUNK; i++) {
          if (Atomics.load(array, index) !== expected) return this.#caught();
        }
        const last = now;
        now = performance.now();
        if (now - last > PREEMPTED_MS) {
          c.until = now + CALM_MS;
          return this.#missed();
        }
        if (now >= end) return this.#missed();
      }
    } finally {
      countSpinning(false);
    }
  }

  #caught(): true {
    this.#misses = 0;
    this.#budget = this.#max;
    return true;
  }

  #missed(): false {
    this.#misses++;
    this.#budget = this.#misses % PROBE_EVERY === 0
      ? this.#max
      : this.#budget >= 1
      ? this.#budget / 2
      : 0;
    return false;
  }
}

/**
 * The policy of a wait that has already spun (a ring's sleep after its
 * pre-registration spin): it goes straight to sleep.
 */
export const NEVER_SPIN: SpinPolicy = new SpinPolicy(0);

/** The policy of the waits that have none of their own. */
let policyRecord: SpinPolicy | undefined;

function defaultPolicy(): SpinPolicy {
  return policyRecord ??= perThread("wait.policy", () => new SpinPolicy());
}

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
  policy: SpinPolicy = defaultPolicy(),
): WaitResult {
  if (Atomics.load(array, index) !== expected) return "not-equal";
  if (policy.spinWhile(array, index, expected)) return "ok";
  if (timeout <= 0) return "timed-out";
  const end = timeout === Infinity ? Infinity : performance.now() + timeout;
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
  policy: SpinPolicy = defaultPolicy(),
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

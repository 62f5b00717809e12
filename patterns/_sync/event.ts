/**
 * `Event`: a flag word and a generation word that waiters sleep on.
 *
 * @module
 */

import { checkTimeout, deadline, throwIfAborted } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { kAttach, kShare, registerShareable } from "../_core/share.ts";
import type { SharedHandle } from "../_core/share.ts";
import { waitAsync, waitSync } from "../_core/wait.ts";
import { optionsOf, words } from "./common.ts";

/** Event words: `[E_FLAG]` the flag, `[E_GEN]` bumped by each `set()`. */
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
  constructor();
  /** @ignore */
  constructor(attach: typeof kAttach, words: Int32Array);
  constructor(attach?: typeof kAttach, memory?: Int32Array) {
    this.#w = attach === kAttach ? memory! : words(2);
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
    const start = this.#startWait(options);
    if (start === true) return true;
    const { o, g, end } = start;
    for (;;) {
      const left = this.#left(g, end);
      if (typeof left === "boolean") return left;
      await waitAsync(this.#w, E_GEN, g, {
        timeout: left,
        ...(o.signal ? { signal: o.signal } : {}),
      });
    }
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
    const start = this.#startWait(options);
    if (start === true) return true;
    const { g, end } = start;
    for (;;) {
      const left = this.#left(g, end);
      if (typeof left === "boolean") return left;
      waitSync(this.#w, E_GEN, g, left);
    }
  }

  /**
   * Checks the options of a wait; `true` if the flag is set already, else
   * the options, the generation to wait past and the deadline.
   */
  #startWait(
    options: WaitOptions | undefined,
  ): true | { o: WaitOptions; g: number; end: number } {
    const o = optionsOf(options, "wait for the event");
    const timeout = checkTimeout(o.timeout, "wait for the event");
    throwIfAborted(o.signal);
    const w = this.#w;
    const g = Atomics.load(w, E_GEN);
    if (Atomics.load(w, E_FLAG) === 1) return true;
    return { o, g, end: deadline(timeout) };
  }

  /**
   * In a wait past generation `g` until `end`: `true` once a `set()` ended
   * it, `false` past the deadline, else the ms left.
   */
  #left(g: number, end: number): number | boolean {
    if (Atomics.load(this.#w, E_GEN) !== g) return true;
    const left = end - performance.now();
    return left <= 0 ? false : left;
  }

  /**
   * Describes the event for the trip into a worker.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    return { type: "sync.event", module: import.meta.url, data: this.#w };
  }
}

registerShareable("sync.event", (d) => new Event(kAttach, d as Int32Array));

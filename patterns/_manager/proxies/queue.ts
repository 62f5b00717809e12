/**
 * The queue proxies: {@linkcode QueueProxy} and
 * {@linkcode JoinableQueueProxy}.
 *
 * @module
 */

import { ClosedError } from "../../_core/errors.ts";
import type { WaitOptions } from "../../_core/deadline.ts";
import { BaseProxy, invoke } from "./base.ts";

/**
 * A proxy for a manager Queue. `get` on an empty queue → `EmptyError`
 * when `timeout` runs out; `put` on a full one → `FullError`; after
 * `close()` (for every holder) `put` → `ClosedError` and `get` drains, then
 * `ClosedError`. `for await` reads until closed and drained.
 *
 * @typeParam T The item type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const q = await manager.queue<number>();
 * await q.put(1);
 * await q.put(2);
 * await q.close();
 * const got: number[] = [];
 * for await (const x of q) got.push(x);
 * assert.deepEqual(got, [1, 2]);
 * ```
 */
export class QueueProxy<T = unknown> extends BaseProxy
  implements AsyncIterable<T> {
  /**
   * Puts an item, waiting for room in a bounded queue.
   *
   * @param item The item.
   * @param options `timeout` (ms) and `signal`.
   */
  put(item: T, options: WaitOptions = {}): Promise<void> {
    return invoke(this, "put", [item], { ...options, waits: true }) as Promise<
      void
    >;
  }
  /**
   * Takes the oldest item, waiting for one.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The item.
   */
  get(options: WaitOptions = {}): Promise<T> {
    return invoke(this, "get", [], { ...options, waits: true }) as Promise<T>;
  }
  /**
   * Puts without waiting; a full queue → `FullError`.
   *
   * @param item The item.
   */
  putNowait(item: T): Promise<void> {
    return invoke(this, "put", [item], { timeout: 0, waits: true }) as Promise<
      void
    >;
  }
  /** Returns the oldest item; an empty queue → `EmptyError`. */
  getNowait(): Promise<T> {
    return invoke(this, "get", [], { timeout: 0, waits: true }) as Promise<T>;
  }
  /** Returns the number of items. */
  qsize(): Promise<number> {
    return invoke(this, "qsize", []) as Promise<number>;
  }
  /** Returns whether it is empty. */
  empty(): Promise<boolean> {
    return invoke(this, "empty", []) as Promise<boolean>;
  }
  /** Returns whether it is full. */
  full(): Promise<boolean> {
    return invoke(this, "full", []) as Promise<boolean>;
  }
  /** Closes the queue for every holder. */
  close(): Promise<void> {
    return invoke(this, "close", []) as Promise<void>;
  }
  /**
   * Reads items until the queue is closed and drained.
   *
   * @returns The iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      try {
        yield await this.get();
      } catch (e) {
        if (e instanceof ClosedError) return;
        throw e;
      }
    }
  }
}

/**
 * A proxy for a manager JoinableQueue: `taskDone()` per item got, and
 * `join()` waits until every item was done (`false` on timeout).
 *
 * @typeParam T The item type.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const q = await manager.joinableQueue<string>();
 * await q.put("job");
 * assert.equal(await q.join({ timeout: 0 }), false);
 * await q.get();
 * await q.taskDone();
 * assert.equal(await q.join(), true);
 * ```
 */
export class JoinableQueueProxy<T = unknown> extends QueueProxy<T> {
  /** Marks one item got as done; one call too many → `RangeError`. */
  taskDone(): Promise<void> {
    return invoke(this, "taskDone", []) as Promise<void>;
  }
  /**
   * Waits until every item put was marked done.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns `false` when `timeout` ran out.
   */
  join(options: WaitOptions = {}): Promise<boolean> {
    return invoke(this, "join", [], { ...options, waits: true }) as Promise<
      boolean
    >;
  }
}

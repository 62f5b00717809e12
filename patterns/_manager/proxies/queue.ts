/**
 * The queue proxies: {@linkcode QueueProxy} and
 * {@linkcode JoinableQueueProxy}.
 *
 * @module
 */

import { ClosedError, EmptyError, FullError } from "../../_core/errors.ts";
import type { WaitOptions } from "../../_core/deadline.ts";
import type { CallOptions, LateReply } from "../client.ts";
import { BaseProxy, invoke } from "./base.ts";

/**
 * The call options of a `get`: the client's own deadline answers with
 * `EmptyError`, and an item the server handed out after the caller had
 * given up (by its timeout or signal) goes back to the front of the queue,
 * so it is never lost and keeps its place.
 */
function getOptions(options: WaitOptions): CallOptions {
  return {
    ...options,
    waits: true,
    expired: () => {
      throw new EmptyError(
        `Cannot get: no item came within ${
          options.timeout ?? 0
        } ms (or the manager did not answer in time)`,
      );
    },
    undo: (late: LateReply) => late.ok ? ["putBack", [late.value]] : undefined,
  };
}

/** The call options of a `put`: the client's own deadline → `FullError`. */
function putOptions(options: WaitOptions): CallOptions {
  return {
    ...options,
    waits: true,
    expired: () => {
      throw new FullError(
        `Cannot put: no room came within ${
          options.timeout ?? 0
        } ms (or the manager did not answer in time)`,
      );
    },
  };
}

/**
 * A proxy for a manager Queue. `get` on an empty queue → `EmptyError`
 * when `timeout` runs out; `put` on a full one → `FullError`; after
 * `close()` (for every holder) `put` → `ClosedError` and `get` drains, then
 * `ClosedError`. `for await` reads until closed and drained. A `get` ended
 * by its `timeout` or `signal` settles on the caller's clock even when the
 * server has stopped answering, and takes nothing: an item the server
 * hands out afterwards goes back to the front of the queue.
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
   * Puts an item, waiting for room in a bounded queue. A put that its
   * `timeout` or `signal` ended on the caller's side may still be made if
   * the server took the item just then (or, frozen, takes it when it
   * resumes): the item is then in the queue, never lost.
   *
   * @param item The item.
   * @param options `timeout` (ms) and `signal`.
   */
  put(item: T, options: WaitOptions = {}): Promise<void> {
    return invoke(this, "put", [item], putOptions(options)) as Promise<void>;
  }
  /**
   * Takes the oldest item, waiting for one.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The item.
   */
  get(options: WaitOptions = {}): Promise<T> {
    return invoke(this, "get", [], getOptions(options)) as Promise<T>;
  }
  /**
   * Puts without waiting; a full queue → `FullError`.
   *
   * @param item The item.
   */
  putNowait(item: T): Promise<void> {
    return invoke(this, "put", [item], putOptions({ timeout: 0 })) as Promise<
      void
    >;
  }
  /** Returns the oldest item; an empty queue → `EmptyError`. */
  getNowait(): Promise<T> {
    return invoke(this, "get", [], getOptions({ timeout: 0 })) as Promise<
      T
    >;
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
    return invoke(this, "join", [], {
      ...options,
      waits: true,
      expired: () => false,
    }) as Promise<boolean>;
  }
}

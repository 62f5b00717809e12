/**
 * The queue object, plain and joinable: FIFO items, parked getters and
 * putters, close, and task accounting for `join`.
 *
 * @module
 */

import { ClosedError, EmptyError, FullError } from "../../../_core/errors.ts";
import { methods } from "../call.ts";
import type { Handler, Managed, ObjectHost, Waiter } from "../call.ts";
import { parkIn } from "./sync.ts";

/** A queue or joinable queue. */
export class QueueObj implements Managed {
  /** The items, from `head` on. */
  items: unknown[] = [];
  /** Where the items start in `items`. */
  head = 0;
  /** Parked `get` calls. */
  getters: Waiter[] = [];
  /** Parked `put` calls with their items (held by the server). */
  putters: Array<{ w: Waiter; item: unknown }> = [];
  /** Whether `close` was called. */
  closed = false;
  /** Items put and not yet marked done (joinable queues). */
  unfinished = 0;
  /** Parked `join` calls. */
  joiners: Waiter[] = [];
  /**
   * Makes an empty queue.
   *
   * @param core The host that counts references.
   * @param type Plain or joinable.
   * @param maxsize The most items it holds (0: no limit).
   */
  constructor(
    readonly core: ObjectHost,
    readonly type: "queue" | "joinableQueue",
    readonly maxsize: number,
  ) {}
  /** How many items it holds. */
  get size(): number {
    return this.items.length - this.head;
  }
  contents(): Iterable<unknown> {
    return [
      ...this.items.slice(this.head),
      ...this.putters.map((p) => p.item),
    ];
  }
  /** Whether it holds `maxsize` items. */
  full(): boolean {
    return this.maxsize > 0 && this.size >= this.maxsize;
  }
  /** Takes the first item out. */
  shift(): unknown {
    const v = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return v;
  }
  /** An item enters the queue (the server holds its references). */
  enter(item: unknown): void {
    if (this.type === "joinableQueue") this.unfinished++;
    const g = this.getters.shift();
    if (g) {
      g.resolve(item);
      return;
    }
    this.core.hold(item);
    this.items.push(item);
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<
    "queue" | "joinableQueue"
  >({
    put: (c, a) => {
      if (this.closed) throw new ClosedError("Cannot put: the queue is closed");
      const item = a[0];
      if (!this.full() || this.getters.length > 0) {
        this.enter(item);
        return undefined;
      }
      return c.wait((w) => {
        const entry = { w, item };
        this.core.hold(item);
        this.putters.push(entry);
        return () => {
          const i = this.putters.indexOf(entry);
          if (i >= 0) {
            this.putters.splice(i, 1);
            this.core.drop(item);
          }
        };
      }, () => {
        throw new FullError("Cannot put: the queue is full");
      });
    },
    get: (c) => {
      if (this.size > 0) {
        const v = this.shift();
        c.core.dropLater(v);
        const p = this.putters.shift();
        if (p) {
          this.core.drop(p.item);
          this.enter(p.item);
          p.w.resolve(undefined);
        }
        return v;
      }
      if (this.closed) {
        throw new ClosedError("Cannot get: the queue is closed and empty");
      }
      return c.wait(parkIn(this.getters), () => {
        throw new EmptyError("Cannot get: the queue is empty");
      });
    },
    putBack: (_, a) => {
      // An item a client was handed after its get had already given up
      // (by its own timeout or signal): back at the front, past maxsize
      // and close, and not counted again for join, so it is never lost.
      const item = a[0];
      const g = this.getters.shift();
      if (g) return g.resolve(item);
      this.core.hold(item);
      if (this.head > 0) this.items[--this.head] = item;
      else this.items.unshift(item);
    },
    qsize: () => this.size,
    empty: () => this.size === 0,
    full: () => this.full(),
    close: () => {
      this.closed = true;
      for (const g of this.getters.splice(0)) {
        g.reject(new ClosedError("Cannot get: the queue is closed and empty"));
      }
      for (const p of this.putters.splice(0)) {
        this.core.drop(p.item);
        p.w.reject(new ClosedError("Cannot put: the queue is closed"));
      }
    },
    closed: () => this.closed,
    taskDone: () => {
      if (this.type !== "joinableQueue") {
        throw new TypeError("Cannot taskDone: the queue is not joinable");
      }
      if (this.unfinished === 0) {
        throw new RangeError(
          "Cannot taskDone: called more times than there were items",
        );
      }
      if (--this.unfinished === 0) {
        for (const w of this.joiners.splice(0)) w.resolve(true);
      }
    },
    join: (c) => {
      if (this.type !== "joinableQueue") {
        throw new TypeError("Cannot join: the queue is not joinable");
      }
      if (this.unfinished === 0) return true;
      return c.wait(parkIn(this.joiners), () => false);
    },
  });
}

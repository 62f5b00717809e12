/**
 * The synchronisation objects: lock and rlock, semaphore and bounded
 * semaphore, condition, event and barrier. Waiting is a FIFO of parked
 * calls; a lock held by a connection that goes away is handed on, and the
 * next holder is told with an `AbandonedError`.
 *
 * @module
 */

import {
  AbandonedError,
  BrokenBarrierError,
  describeValue,
} from "../../../_core/errors.ts";
import { cancelledError, methods, PENDING, ServerCall } from "../call.ts";
import type { Conn, Handler, Managed, Waiter } from "../call.ts";

/** An acquirer queued on a lock. */
export interface LockEntry {
  /** Its owner id. */
  owner: string;
  /** Its connection. */
  conn: Conn;
  /** How many holds it takes (a condition's `wait` takes back all it had). */
  count: number;
  /** Called when it gets the lock (told whether it was abandoned). */
  grant(abandoned: boolean): void;
}

/**
 * An `enqueue` for {@linkcode ServerCall.wait}: parks the waiter at the end
 * of `list`, and takes it out again on timeout or cancel.
 *
 * @param list The waiters.
 * @returns The `enqueue`.
 */
export function parkIn(list: Waiter[]): (w: Waiter) => () => void {
  return (w) => {
    list.push(w);
    return () => {
      const i = list.indexOf(w);
      if (i >= 0) list.splice(i, 1);
    };
  };
}

/** The lock behind Lock, RLock and Condition. */
export class LockObj implements Managed {
  /** The holder's owner id, or `null` when free. */
  owner: string | null = null;
  /** The holder's connection. */
  holder: Conn | null = null;
  /** How many times the holder took it. */
  count = 0;
  /** Whether the last holder disconnected while holding it. */
  abandoned = false;
  /** The acquirers waiting, in order. */
  queue: LockEntry[] = [];
  /**
   * Makes a free lock.
   *
   * @param type Its type id.
   * @param recursive Whether its holder may take it again.
   */
  constructor(readonly type: "lock" | "rlock", readonly recursive: boolean) {}

  /** Takes it now if free (or re-enters it); returns whether it did. */
  tryTake(owner: string, conn: Conn): boolean {
    if (this.owner === null) {
      this.owner = owner;
      this.holder = conn;
      this.count = 1;
      return true;
    }
    if (this.recursive && this.owner === owner) {
      this.count++;
      return true;
    }
    return false;
  }

  /** Queues an acquirer; returns how to take it out again. */
  enqueue(entry: LockEntry): () => void {
    this.queue.push(entry);
    return () => {
      const i = this.queue.indexOf(entry);
      if (i >= 0) this.queue.splice(i, 1);
    };
  }

  /** Gives it to the next acquirer, or frees it. */
  handOff(): void {
    const next = this.queue.shift();
    if (!next) {
      this.owner = null;
      this.holder = null;
      this.count = 0;
      return;
    }
    const abandoned = this.abandoned;
    this.abandoned = false;
    this.owner = next.owner;
    this.holder = next.conn;
    this.count = next.count;
    next.grant(abandoned);
  }

  /** Releases one hold of `owner`'s. */
  releaseBy(owner: string, what: string): void {
    if (this.owner === null) {
      throw new RangeError(`Cannot ${what}: the lock is not held`);
    }
    if (this.recursive && this.owner !== owner) {
      throw new RangeError(
        `Cannot ${what}: the lock is held by another thread, not the caller`,
      );
    }
    if (--this.count === 0) this.handOff();
  }

  /** The `acquire` method: takes it now or parks the call. */
  acquire(call: ServerCall): unknown {
    if (this.tryTake(call.owner, call.conn)) return this.takeResult();
    return call.wait(
      (w) =>
        this.enqueue({
          owner: call.owner,
          conn: call.conn,
          count: 1,
          grant: (abandoned) =>
            abandoned ? w.reject(abandonedError()) : w.resolve(true),
        }),
      () => false,
    );
  }

  /** The answer to an acquirer that got it (throws if it was abandoned). */
  takeResult(): true {
    if (this.abandoned) {
      this.abandoned = false;
      throw abandonedError();
    }
    return true;
  }

  disconnected(conn: Conn): void {
    this.queue = this.queue.filter((e) => e.conn !== conn);
    if (this.holder === conn) {
      this.abandoned = true;
      this.handOff();
    }
  }

  readonly methods: ReadonlyMap<string, Handler> = methods<
    "lock" | "rlock"
  >({
    acquire: (c) => this.acquire(c),
    release: (c) => this.releaseBy(c.owner, "release"),
    locked: () => this.owner !== null,
  });
}

/** The error a lock's next holder gets after its holder disconnected. */
function abandonedError(): AbandonedError {
  return new AbandonedError(
    "Acquired an abandoned lock: its holder disconnected without releasing it; the caller now holds it",
  );
}

/** A semaphore or bounded semaphore (permits are not tracked per client). */
export class SemaphoreObj implements Managed {
  /** The parked acquirers. */
  queue: Waiter[] = [];
  /**
   * Makes a semaphore.
   *
   * @param type Plain or bounded.
   * @param value The permits.
   * @param bound The most permits a bounded one may have.
   */
  constructor(
    readonly type: "semaphore" | "boundedSemaphore",
    public value: number,
    readonly bound: number,
  ) {}
  readonly methods: ReadonlyMap<string, Handler> = methods<
    "semaphore" | "boundedSemaphore"
  >({
    acquire: (c) => {
      if (this.value > 0 && this.queue.length === 0) {
        this.value--;
        return true;
      }
      return c.wait(parkIn(this.queue), () => false);
    },
    release: (_, a) => {
      const n = a[0] === undefined ? 1 : a[0];
      if (!Number.isSafeInteger(n) || (n as number) < 1) {
        throw new RangeError(
          `Cannot release: n must be a positive integer, received ${
            describeValue(n)
          }`,
        );
      }
      if (
        this.type === "boundedSemaphore" &&
        this.value + (n as number) > this.bound
      ) {
        throw new RangeError(
          `Cannot release: the bounded semaphore would exceed its initial value ${this.bound}`,
        );
      }
      this.value += n as number;
      while (this.value > 0 && this.queue.length > 0) {
        this.value--;
        this.queue.shift()!.resolve(true);
      }
    },
    getValue: () => this.value,
  });
}

/** A condition over its own recursive lock. */
export class ConditionObj implements Managed {
  readonly type = "condition";
  /** The lock `wait` releases and takes again. */
  readonly lock = new LockObj("rlock", true);
  /** The parked `wait` calls. */
  waiters: Array<{ w: Waiter; wake(): void }> = [];

  /** Throws unless the caller holds the lock. */
  checkOwner(call: ServerCall, what: string): void {
    if (this.lock.owner !== call.owner) {
      throw new RangeError(
        `Cannot ${what}: the condition's lock is not held by the caller`,
      );
    }
  }

  disconnected(conn: Conn): void {
    this.lock.disconnected(conn);
  }

  readonly methods: ReadonlyMap<string, Handler> = methods<"condition">({
    acquire: (c) => this.lock.acquire(c),
    release: (c) => this.lock.releaseBy(c.owner, "release"),
    wait: (c) => {
      this.checkOwner(c, "wait");
      if (c.timeout <= 0) return false;
      const saved = this.lock.count;
      const lock = this.lock;
      lock.count = 0;
      lock.handOff();
      const reacquire = (w: Waiter, then: () => void) => {
        w.clearTimer();
        if (lock.tryTake(w.owner, w.conn)) {
          lock.count = saved;
          return then();
        }
        w.remove = lock.enqueue({
          owner: w.owner,
          conn: w.conn,
          count: saved,
          grant: () => then(),
        });
      };
      const r = c.wait((w) => {
        const entry = {
          w,
          wake: () => reacquire(w, () => w.resolve(true)),
        };
        this.waiters.push(entry);
        w.onCancel = () => {
          w.remove();
          reacquire(w, () => w.reject(cancelledError()));
        };
        return () => {
          const i = this.waiters.indexOf(entry);
          if (i >= 0) this.waiters.splice(i, 1);
        };
      }, () => false);
      if (r === PENDING) {
        const w = c.conn.waiters.get(c.id) as Waiter;
        // A timeout must reacquire the lock before answering false.
        w.expire = () => {
          w.timer = undefined;
          if (w.settled) return;
          w.remove();
          reacquire(w, () => w.resolve(false));
        };
      }
      return r;
    },
    notify: (c, a) => {
      this.checkOwner(c, "notify");
      let n = a[0] === undefined ? 1 : a[0];
      if (typeof n !== "number" || !(n >= 0)) {
        throw new RangeError(
          `Cannot notify: n must be a non-negative number, received ${
            describeValue(n)
          }`,
        );
      }
      while (n-- > 0 && this.waiters.length > 0) this.waiters.shift()!.wake();
    },
    notifyAll: (c) => {
      this.checkOwner(c, "notifyAll");
      for (const e of this.waiters.splice(0)) e.wake();
    },
    locked: () => this.lock.owner !== null,
  });
}

/** An event. */
export class EventObj implements Managed {
  readonly type = "event";
  /** Whether it is set. */
  flag = false;
  /** The parked `wait` calls. */
  waiters: Waiter[] = [];
  readonly methods: ReadonlyMap<string, Handler> = methods<"event">({
    set: () => {
      this.flag = true;
      for (const w of this.waiters.splice(0)) w.resolve(true);
    },
    clear: () => {
      this.flag = false;
    },
    isSet: () => this.flag,
    wait: (c) => {
      if (this.flag) return true;
      return c.wait(parkIn(this.waiters), () => false);
    },
  });
}

/** A barrier; a wait that times out breaks it. */
export class BarrierObj implements Managed {
  readonly type = "barrier";
  /** The parked `wait` calls. */
  waiting: Waiter[] = [];
  /** Whether it is broken. */
  broken = false;
  /**
   * Makes a barrier.
   *
   * @param parties How many waits release it.
   * @param defaultTimeout How long a wait without a timeout waits, in ms.
   */
  constructor(readonly parties: number, readonly defaultTimeout: number) {}
  /** Breaks it: every parked wait fails. */
  breakAll(): void {
    this.broken = true;
    for (const w of this.waiting.splice(0)) {
      w.reject(new BrokenBarrierError("Cannot wait: the barrier was broken"));
    }
  }
  readonly methods: ReadonlyMap<string, Handler> = methods<"barrier">({
    wait: (c) => {
      if (this.broken) {
        throw new BrokenBarrierError("Cannot wait: the barrier is broken");
      }
      if (this.waiting.length + 1 === this.parties) {
        const ws = this.waiting.splice(0);
        ws.forEach((w, i) => w.resolve(i));
        return ws.length;
      }
      const timeout = c.timeout === Infinity ? this.defaultTimeout : c.timeout;
      const call = new ServerCall(c.core, c.conn, c.id, c.owner, timeout);
      return call.wait(parkIn(this.waiting), () => {
        this.breakAll();
        throw new BrokenBarrierError(
          "Cannot wait: the barrier wait timed out, the barrier is now broken",
        );
      });
    },
    abort: () => this.breakAll(),
    reset: () => {
      this.breakAll();
      this.broken = false;
    },
    parties: () => this.parties,
    nWaiting: () => this.waiting.length,
    broken: () => this.broken,
  });
}

/**
 * The synchronisation objects: lock and rlock, semaphore and bounded
 * semaphore, condition, event and barrier. Waiting is a FIFO of parked
 * calls. A lock or a semaphore permit held by a connection that goes away
 * stays held, marked abandoned: the next acquirer takes it over and is told
 * with an `AbandonedError`, and any client may release it meanwhile (the
 * idiom of a child acquiring and its parent releasing).
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
  /**
   * Whether its holder disconnected while holding it: it stays held until
   * an acquirer takes it over or any client releases it.
   */
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

  /**
   * Takes it now if it is free or abandoned (or re-enters it): `false` if
   * it cannot, `"abandoned"` if it took over a departed holder's lock,
   * else `"taken"`.
   */
  tryTake(owner: string, conn: Conn): "taken" | "abandoned" | false {
    if (this.owner === null || this.abandoned) {
      const abandoned = this.abandoned;
      this.abandoned = false;
      this.owner = owner;
      this.holder = conn;
      this.count = 1;
      return abandoned ? "abandoned" : "taken";
    }
    if (this.recursive && this.owner === owner) {
      this.count++;
      return "taken";
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
      this.abandoned = false;
      return;
    }
    const abandoned = this.abandoned;
    this.abandoned = false;
    this.owner = next.owner;
    this.holder = next.conn;
    this.count = next.count;
    next.grant(abandoned);
  }

  /** Releases one hold of `owner`'s (or all of an abandoned lock's). */
  releaseBy(owner: string, what: string): void {
    if (this.owner === null) {
      throw new RangeError(`Cannot ${what}: the lock is not held`);
    }
    if (this.abandoned) {
      // Its holder is gone: any client may release it, all its holds at
      // once (Python's child-acquires, parent-releases).
      this.abandoned = false;
      this.count = 0;
      return this.handOff();
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
    const taken = this.tryTake(call.owner, call.conn);
    if (taken === "abandoned") throw abandonedError();
    if (taken) return true;
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

  disconnected(conn: Conn): void {
    this.queue = this.queue.filter((e) => e.conn !== conn);
    if (this.holder === conn) {
      // It stays held (`locked()` is true), marked abandoned: a waiting
      // acquirer takes it over now, else the next one to come, each with
      // AbandonedError; or any client releases it.
      this.holder = null;
      this.abandoned = true;
      if (this.queue.length > 0) this.handOff();
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

/** The error the taker of a departed holder's semaphore permit gets. */
function abandonedPermitError(type: string): AbandonedError {
  return new AbandonedError(
    `Acquired an abandoned ${type} permit: its holder disconnected without releasing it; the caller now holds it`,
  );
}

/**
 * A semaphore or bounded semaphore. The permits each connection holds are
 * counted, so that a departed holder's permits stay taken, marked
 * abandoned, instead of vanishing or coming back silently.
 */
export class SemaphoreObj implements Managed {
  /** The parked acquirers. */
  queue: Waiter[] = [];
  /** Permits taken and not given back, by the connection that took them. */
  readonly held: Map<Conn, number> = new Map();
  /**
   * Permits whose holder disconnected: still taken (not in `value`), until
   * an acquirer takes one over or a release gives one back.
   */
  abandoned = 0;
  /**
   * Makes a semaphore.
   *
   * @param type Plain or bounded.
   * @param value The permits.
   * @param bound The initial value: the most permits a bounded one may
   *   have, and the most a departed holder can have left abandoned.
   */
  constructor(
    readonly type: "semaphore" | "boundedSemaphore",
    public value: number,
    readonly bound: number,
  ) {}

  #hold(conn: Conn, n: number): void {
    this.held.set(conn, (this.held.get(conn) ?? 0) + n);
  }

  /** Gives abandoned permits to parked acquirers, with AbandonedError. */
  #grantAbandoned(): void {
    while (this.abandoned > 0 && this.queue.length > 0) {
      this.abandoned--;
      const w = this.queue.shift()!;
      this.#hold(w.conn, 1);
      w.reject(abandonedPermitError(this.type));
    }
  }

  disconnected(conn: Conn): void {
    const n = this.held.get(conn);
    if (n === undefined) return;
    this.held.delete(conn);
    // Only permits really out can be abandoned (at most the initial value
    // less those free or already abandoned): a client that only took what
    // others released — a semaphore used as a signal — leaves none.
    const out = Math.max(0, this.bound - this.value - this.abandoned);
    this.abandoned += Math.min(n, out);
    this.#grantAbandoned();
  }

  readonly methods: ReadonlyMap<string, Handler> = methods<
    "semaphore" | "boundedSemaphore"
  >({
    acquire: (c) => {
      if (this.queue.length === 0) {
        if (this.abandoned > 0) {
          this.abandoned--;
          this.#hold(c.conn, 1);
          throw abandonedPermitError(this.type);
        }
        if (this.value > 0) {
          this.value--;
          this.#hold(c.conn, 1);
          return true;
        }
      }
      return c.wait(parkIn(this.queue), () => false);
    },
    release: (c, a) => {
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
      // The caller's own permits come back first, then abandoned ones
      // (a parent giving back what a departed child took).
      const own = this.held.get(c.conn) ?? 0;
      const mine = Math.min(own, n as number);
      if (own - mine === 0) this.held.delete(c.conn);
      else this.held.set(c.conn, own - mine);
      this.abandoned -= Math.min(this.abandoned, (n as number) - mine);
      this.value += n as number;
      while (this.value > 0 && this.queue.length > 0) {
        this.value--;
        const w = this.queue.shift()!;
        this.#hold(w.conn, 1);
        w.resolve(true);
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
    // An abandoned lock is nobody's, even if a later connection of the
    // departed holder's thread has the same owner id.
    if (this.lock.owner !== call.owner || this.lock.abandoned) {
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

/**
 * The manager's server core: the table of managed objects, their native
 * implementations (plain JS data; waiting is a FIFO of parked calls on the
 * event loop), per-connection reference counts, and the two transports
 * that feed it — `MessagePort`s for the embedded server (in its worker) and
 * authenticated TCP for {@linkcode startTcpServer}. Every name a peer sends
 * is looked up in fixed allowlists; nothing a peer sends is evaluated.
 *
 * ```ts
 * import { ServerCore } from "./_manager_server.ts";
 * import { strict as assert } from "node:assert";
 *
 * const core = new ServerCore();
 * assert.equal(core.stats().objects, 0);
 * core.close();
 * ```
 *
 * @module
 */

import {
  AbandonedError,
  AuthenticationError,
  BrokenBarrierError,
  checkElement,
  ClosedError,
  describeValue,
  EmptyError,
  FullError,
  isThreadAlive,
  type TypecodeInfo,
  typecodeInfo,
} from "./_util.ts";
import {
  authkeyBytes,
  decodeValue,
  DEFAULT_MAX_FRAME,
  encodeValue,
  FramedSocket,
  FrameError,
  HANDSHAKE_MAX_FRAME,
  hmacKey,
  nonce,
  proof,
  PROTOCOL,
  PROTOCOL_VERSION,
  type RefTag,
  timingSafeEqual,
} from "./_manager_codec.ts";
import { Link, type LinkMemory, SpinPolicy } from "./_manager_ring.ts";
export type { LinkMemory } from "./_manager_ring.ts";

// -- References ------------------------------------------------------------

/** A reference to a managed object inside a value held by the server. */
class Ref {
  constructor(readonly id: number, readonly type: string) {}
}

function forEachRef(value: unknown, fn: (r: Ref) => void, depth = 0): void {
  if (typeof value !== "object" || value === null || depth > 250) return;
  if (value instanceof Ref) return fn(value);
  if (Array.isArray(value)) {
    for (const x of value) forEachRef(x, fn, depth + 1);
  } else if (value instanceof Map) {
    for (const [k, x] of value) {
      forEachRef(k, fn, depth + 1);
      forEachRef(x, fn, depth + 1);
    }
  } else if (value instanceof Set) {
    for (const x of value) forEachRef(x, fn, depth + 1);
  } else if (!ArrayBuffer.isView(value) && !(value instanceof Date)) {
    for (const k of Object.keys(value)) {
      forEachRef((value as Record<string, unknown>)[k], fn, depth + 1);
    }
  }
}

// -- Calls and waiting ----------------------------------------------------

/** The name of the error a cancelled call is answered with. */
export const CANCELLED = "ManagerCallCancelled";

/** A call parked until something happens (a lock release, an item…). */
class Waiter implements ParkedCall {
  settled = false;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Takes the waiter out of whatever queue holds it. */
  remove: () => void = () => {};
  /** What a timeout resolves or throws. */
  onTimeout: () => unknown = () => false;
  /** What a cancel does (default: remove and answer "cancelled"). */
  onCancel: (() => void) | undefined;

  constructor(
    readonly core: ServerCore,
    readonly conn: Conn,
    readonly callId: number,
    readonly owner: string,
  ) {}

  resolve(value: unknown): void {
    if (this.settled) return;
    this.#end();
    this.core.reply(this.conn, this.callId, value);
  }

  reject(error: unknown): void {
    if (this.settled) return;
    this.#end();
    this.core.replyError(this.conn, this.callId, error);
  }

  #end(): void {
    this.settled = true;
    this.clearTimer();
    this.conn.waiters.delete(this.callId);
  }

  clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  expire(): void {
    this.timer = undefined;
    if (this.settled) return;
    this.remove();
    try {
      this.resolve(this.onTimeout());
    } catch (e) {
      this.reject(e);
    }
  }

  cancel(): void {
    if (this.settled) return;
    if (this.onCancel) return this.onCancel();
    this.remove();
    this.reject(cancelledError());
  }

  /** The client is gone: leave every queue, answer nothing. */
  drop(): void {
    if (this.settled) return;
    this.remove();
    this.#end();
  }
}

function cancelledError(): Error {
  const e = new Error("The call was cancelled");
  e.name = CANCELLED;
  return e;
}

const PENDING = Symbol("pending");

/** What a method handler gets besides its arguments. */
class Call {
  constructor(
    readonly core: ServerCore,
    readonly conn: Conn,
    readonly id: number,
    readonly owner: string,
    readonly timeout: number,
  ) {}

  /**
   * Parks the call: `enqueue` puts the waiter in a queue and returns how
   * to take it out; `onTimeout` gives the answer when time runs out (also
   * right away for `timeout: 0`).
   */
  wait(
    enqueue: (w: Waiter) => () => void,
    onTimeout: () => unknown,
  ): typeof PENDING | unknown {
    if (this.timeout <= 0 || this.id === 0) return onTimeout();
    const w = new Waiter(this.core, this.conn, this.id, this.owner);
    w.onTimeout = onTimeout;
    w.remove = enqueue(w);
    this.conn.waiters.set(this.id, w);
    if (this.timeout !== Infinity) {
      w.timer = setTimeout(() => w.expire(), this.timeout);
    }
    return PENDING;
  }
}

// -- Managed objects --------------------------------------------------------

/** A method of a managed type: gets the call's context and arguments. */
type Handler = (call: Call, args: unknown[]) => unknown;

interface Managed {
  readonly type: string;
  readonly methods: ReadonlyMap<string, Handler>;
  /** The values it holds (their references are dropped when freed). */
  contents?(): Iterable<unknown>;
  /** A connection went away. */
  disconnected?(conn: Conn): void;
  /** It is being freed. */
  freed?(): void;
}

function arg(args: unknown[], i: number): unknown {
  return args[i];
}

function methods(
  table: Record<string, Handler>,
): ReadonlyMap<string, Handler> {
  return new Map(Object.entries(table));
}

type DictKey = string | number | bigint | boolean;

function checkKey(key: unknown, what: string): DictKey {
  const t = typeof key;
  if (t === "string" || t === "number" || t === "bigint" || t === "boolean") {
    return key as DictKey;
  }
  throw new TypeError(
    `Cannot ${what}: a dict key must be a string, number, bigint or boolean, received ${
      describeValue(key)
    }`,
  );
}

function deepEqual(a: unknown, b: unknown, depth = 0): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a === "number" && typeof b === "number") return a === b;
  if (
    typeof a !== "object" || typeof b !== "object" || a === null ||
    b === null || depth > 100
  ) return false;
  if (a instanceof Ref || b instanceof Ref) {
    return a instanceof Ref && b instanceof Ref && a.id === b.id;
  }
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length &&
      a.every((x, i) => deepEqual(x, b[i], depth + 1));
  }
  if (Array.isArray(b)) return false;
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) {
      return false;
    }
    for (const [k, x] of a) {
      if (!b.has(k) || !deepEqual(x, b.get(k), depth + 1)) return false;
    }
    return true;
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set && b instanceof Set) || a.size !== b.size) {
      return false;
    }
    for (const x of a) if (!b.has(x)) return false;
    return true;
  }
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date &&
      a.getTime() === b.getTime();
  }
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length &&
    ka.every((k) =>
      Object.hasOwn(b, k) &&
      deepEqual(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
        depth + 1,
      )
    );
}

function compare(a: unknown, b: unknown): number {
  const ta = typeof a, tb = typeof b;
  if (
    (ta === "number" || ta === "bigint") && (tb === "number" || tb === "bigint")
  ) {
    return (a as number) < (b as number)
      ? -1
      : (a as number) > (b as number)
      ? 1
      : 0;
  }
  if (ta === "string" && tb === "string") {
    return (a as string) < (b as string)
      ? -1
      : (a as string) > (b as string)
      ? 1
      : 0;
  }
  if (ta === "boolean" && tb === "boolean") return Number(a) - Number(b);
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const c = compare(a[i], b[i]);
      if (c !== 0) return c;
    }
    return a.length - b.length;
  }
  throw new TypeError(
    `Cannot sort: ${describeValue(a)} and ${
      describeValue(b)
    } cannot be compared (numbers, bigints, strings, booleans and arrays of them can)`,
  );
}

function index(i: unknown, length: number, what: string, insert = false) {
  if (!Number.isSafeInteger(i)) {
    throw new TypeError(
      `Cannot ${what}: the index must be an integer, received ${
        describeValue(i)
      }`,
    );
  }
  let n = i as number;
  if (n < 0) n += length;
  if (insert) return Math.min(Math.max(n, 0), length);
  if (n < 0 || n >= length) {
    throw new RangeError(
      `Cannot ${what}: index ${i} is out of range for length ${length}`,
    );
  }
  return n;
}

class DictObj implements Managed {
  readonly type = "dict";
  readonly map = new Map<DictKey, unknown>();
  constructor(readonly core: ServerCore) {}
  contents(): Iterable<unknown> {
    return this.map.values();
  }
  put(key: DictKey, value: unknown): void {
    this.core.hold(value);
    if (this.map.has(key)) this.core.drop(this.map.get(key));
    this.map.set(key, value);
  }
  update(other: unknown, what: string): void {
    if (other === undefined || other === null) return;
    if (other instanceof Map) {
      for (const [k, v] of other) this.put(checkKey(k, what), v);
    } else if (Array.isArray(other)) {
      for (const e of other) {
        if (!Array.isArray(e) || e.length !== 2) {
          throw new TypeError(
            `Cannot ${what}: entries must be [key, value] pairs, received ${
              describeValue(e)
            }`,
          );
        }
        this.put(checkKey(e[0], what), e[1]);
      }
    } else if (typeof other === "object" && !(other instanceof Ref)) {
      for (const k of Object.keys(other)) {
        this.put(k, (other as Record<string, unknown>)[k]);
      }
    } else {
      throw new TypeError(
        `Cannot ${what}: expected an object, a Map or [key, value] entries, received ${
          describeValue(other)
        }`,
      );
    }
  }
  readonly methods = methods({
    get: (_, a) => {
      const k = checkKey(arg(a, 0), "get");
      return this.map.has(k) ? this.map.get(k) : arg(a, 1);
    },
    set: (_, a) => {
      this.put(checkKey(arg(a, 0), "set"), arg(a, 1));
    },
    delete: (_, a) => {
      const k = checkKey(arg(a, 0), "delete");
      if (!this.map.has(k)) return false;
      this.core.drop(this.map.get(k));
      this.map.delete(k);
      return true;
    },
    has: (_, a) => this.map.has(checkKey(arg(a, 0), "has")),
    keys: () => [...this.map.keys()],
    values: () => [...this.map.values()],
    entries: () => [...this.map.entries()],
    size: () => this.map.size,
    clear: () => {
      for (const v of this.map.values()) this.core.drop(v);
      this.map.clear();
    },
    update: (_, a) => this.update(arg(a, 0), "update"),
    pop: (c, a) => {
      const k = checkKey(arg(a, 0), "pop");
      if (!this.map.has(k)) {
        if (a.length > 1) return arg(a, 1);
        throw new RangeError(
          `Cannot pop: key ${describeValue(k)} is not in the dict`,
        );
      }
      const v = this.map.get(k);
      this.map.delete(k);
      c.core.dropLater(v);
      return v;
    },
    setDefault: (_, a) => {
      const k = checkKey(arg(a, 0), "setDefault");
      if (!this.map.has(k)) this.put(k, arg(a, 1));
      return this.map.get(k);
    },
    toObject: () => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of this.map) {
        Object.defineProperty(out, String(k), {
          value: v,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    },
  });
}

class ListObj implements Managed {
  readonly type = "list";
  items: unknown[] = [];
  constructor(readonly core: ServerCore) {}
  contents(): Iterable<unknown> {
    return this.items;
  }
  readonly methods = methods({
    append: (_, a) => {
      this.core.hold(arg(a, 0));
      this.items.push(arg(a, 0));
    },
    extend: (_, a) => {
      const xs = arg(a, 0);
      if (!Array.isArray(xs)) {
        throw new TypeError(
          `Cannot extend: expected an array, received ${describeValue(xs)}`,
        );
      }
      for (const x of xs) {
        this.core.hold(x);
        this.items.push(x);
      }
    },
    get: (_, a) => this.items[index(arg(a, 0), this.items.length, "get")],
    set: (_, a) => {
      const i = index(arg(a, 0), this.items.length, "set");
      this.core.hold(arg(a, 1));
      this.core.drop(this.items[i]);
      this.items[i] = arg(a, 1);
    },
    insert: (_, a) => {
      const i = index(arg(a, 0), this.items.length, "insert", true);
      this.core.hold(arg(a, 1));
      this.items.splice(i, 0, arg(a, 1));
    },
    pop: (c, a) => {
      if (this.items.length === 0) {
        throw new RangeError("Cannot pop: the list is empty");
      }
      const i = index(
        a.length > 0 && a[0] !== undefined ? a[0] : -1,
        this.items.length,
        "pop",
      );
      const [v] = this.items.splice(i, 1);
      c.core.dropLater(v);
      return v;
    },
    remove: (_, a) => {
      const i = this.items.findIndex((x) => deepEqual(x, arg(a, 0)));
      if (i < 0) {
        throw new RangeError(
          `Cannot remove: ${describeValue(arg(a, 0))} is not in the list`,
        );
      }
      this.core.drop(this.items[i]);
      this.items.splice(i, 1);
    },
    index: (_, a) => {
      const start = a[1] === undefined
        ? 0
        : index(a[1], this.items.length, "index", true);
      const stop = a[2] === undefined
        ? this.items.length
        : index(a[2], this.items.length, "index", true);
      for (let i = start; i < stop; i++) {
        if (deepEqual(this.items[i], arg(a, 0))) return i;
      }
      throw new RangeError(
        `Cannot index: ${describeValue(arg(a, 0))} is not in the list`,
      );
    },
    count: (_, a) =>
      this.items.reduce<number>(
        (n, x) => n + (deepEqual(x, arg(a, 0)) ? 1 : 0),
        0,
      ),
    sort: (_, a) => {
      const opts = arg(a, 0);
      const reverse = typeof opts === "object" && opts !== null &&
        (opts as { reverse?: unknown }).reverse === true;
      const sorted = [...this.items].sort(compare);
      if (reverse) sorted.reverse();
      this.items = sorted;
    },
    reverse: () => {
      this.items.reverse();
    },
    length: () => this.items.length,
    clear: () => {
      for (const v of this.items) this.core.drop(v);
      this.items = [];
    },
    toArray: () => [...this.items],
  });
}

class NamespaceObj implements Managed {
  readonly type = "namespace";
  readonly map = new Map<string, unknown>();
  constructor(readonly core: ServerCore) {}
  contents(): Iterable<unknown> {
    return this.map.values();
  }
  static checkName(name: unknown, what: string): string {
    if (typeof name !== "string") {
      throw new TypeError(
        `Cannot ${what}: a namespace attribute name must be a string, received ${
          describeValue(name)
        }`,
      );
    }
    return name;
  }
  put(name: string, value: unknown): void {
    this.core.hold(value);
    if (this.map.has(name)) this.core.drop(this.map.get(name));
    this.map.set(name, value);
  }
  readonly methods = methods({
    get: (_, a) => this.map.get(NamespaceObj.checkName(arg(a, 0), "get")),
    set: (_, a) => this.put(NamespaceObj.checkName(arg(a, 0), "set"), a[1]),
    delete: (_, a) => {
      const k = NamespaceObj.checkName(arg(a, 0), "delete");
      if (!this.map.has(k)) return false;
      this.core.drop(this.map.get(k));
      this.map.delete(k);
      return true;
    },
    toObject: () => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of this.map) {
        Object.defineProperty(out, k, {
          value: v,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    },
  });
}

interface LockEntry {
  owner: string;
  conn: Conn;
  count: number;
  grant(abandoned: boolean): void;
}

/** The lock behind Lock, RLock and Condition. */
class LockObj implements Managed {
  owner: string | null = null;
  holder: Conn | null = null;
  count = 0;
  abandoned = false;
  queue: LockEntry[] = [];
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

  acquire(call: Call): unknown {
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

  readonly methods = methods({
    acquire: (c) => this.acquire(c),
    release: (c) => this.releaseBy(c.owner, "release"),
    locked: () => this.owner !== null,
  });
}

function abandonedError(): AbandonedError {
  return new AbandonedError(
    "Acquired an abandoned lock: its holder disconnected without releasing it; the caller now holds it",
  );
}

class SemaphoreObj implements Managed {
  queue: Waiter[] = [];
  constructor(
    readonly type: "semaphore" | "boundedSemaphore",
    public value: number,
    readonly bound: number,
  ) {}
  readonly methods = methods({
    acquire: (c) => {
      if (this.value > 0 && this.queue.length === 0) {
        this.value--;
        return true;
      }
      return c.wait((w) => {
        this.queue.push(w);
        return () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
        };
      }, () => false);
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

class ConditionObj implements Managed {
  readonly type = "condition";
  readonly lock = new LockObj("rlock", true);
  waiters: Array<{ w: Waiter; wake(): void }> = [];

  checkOwner(call: Call, what: string): void {
    if (this.lock.owner !== call.owner) {
      throw new RangeError(
        `Cannot ${what}: the condition's lock is not held by the caller`,
      );
    }
  }

  disconnected(conn: Conn): void {
    this.lock.disconnected(conn);
  }

  readonly methods = methods({
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

class EventObj implements Managed {
  readonly type = "event";
  flag = false;
  waiters: Waiter[] = [];
  readonly methods = methods({
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
      return c.wait((w) => {
        this.waiters.push(w);
        return () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
        };
      }, () => false);
    },
  });
}

class BarrierObj implements Managed {
  readonly type = "barrier";
  waiting: Waiter[] = [];
  broken = false;
  constructor(readonly parties: number, readonly defaultTimeout: number) {}
  breakAll(): void {
    this.broken = true;
    for (const w of this.waiting.splice(0)) {
      w.reject(new BrokenBarrierError("Cannot wait: the barrier was broken"));
    }
  }
  readonly methods = methods({
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
      const call = new Call(c.core, c.conn, c.id, c.owner, timeout);
      return call.wait((w) => {
        this.waiting.push(w);
        return () => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
        };
      }, () => {
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

class QueueObj implements Managed {
  items: unknown[] = [];
  head = 0;
  getters: Waiter[] = [];
  putters: Array<{ w: Waiter; item: unknown }> = [];
  closed = false;
  unfinished = 0;
  joiners: Waiter[] = [];
  constructor(
    readonly core: ServerCore,
    readonly type: "queue" | "joinableQueue",
    readonly maxsize: number,
  ) {}
  get size(): number {
    return this.items.length - this.head;
  }
  contents(): Iterable<unknown> {
    return [
      ...this.items.slice(this.head),
      ...this.putters.map((p) => p.item),
    ];
  }
  full(): boolean {
    return this.maxsize > 0 && this.size >= this.maxsize;
  }
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
  readonly methods = methods({
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
      return c.wait((w) => {
        this.getters.push(w);
        return () => {
          const i = this.getters.indexOf(w);
          if (i >= 0) this.getters.splice(i, 1);
        };
      }, () => {
        throw new EmptyError("Cannot get: the queue is empty");
      });
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
      return c.wait((w) => {
        this.joiners.push(w);
        return () => {
          const i = this.joiners.indexOf(w);
          if (i >= 0) this.joiners.splice(i, 1);
        };
      }, () => false);
    },
  });
}

// -- Typecodes ------------------------------------------------------------

/** A typed array of `length` zeroes for a typecode. */
function cells(
  t: TypecodeInfo,
  length: number,
): Int8Array | BigInt64Array | Float64Array {
  return new t.ctor(new ArrayBuffer(length * t.bytes)) as
    | Int8Array
    | BigInt64Array
    | Float64Array;
}

class ValueObj implements Managed {
  readonly type = "value";
  readonly cell: Int8Array | BigInt64Array | Float64Array;
  constructor(readonly tc: TypecodeInfo, initial: unknown) {
    this.cell = cells(tc, 1);
    this.cell[0] = checkElement(
      tc,
      initial ?? (tc.kind === "big" ? 0n : 0),
      "make a value",
    ) as never;
  }
  readonly methods = methods({
    get: () => this.cell[0],
    set: (_, a) => {
      this.cell[0] = checkElement(this.tc, a[0], "set") as never;
    },
    add: (_, a) => {
      const d = a[0];
      const big = this.tc.kind === "big";
      if (big ? typeof d !== "bigint" : typeof d !== "number") {
        throw new TypeError(
          `Cannot add: typecode ${this.tc.code} adds a ${
            big ? "bigint" : "number"
          }, received ${describeValue(d)}`,
        );
      }
      const next = (this.cell[0] as number) + (d as number);
      this.cell[0] = checkElement(this.tc, next, "add") as never;
      return this.cell[0];
    },
  });
}

class ArrayObj implements Managed {
  readonly type = "array";
  readonly data: Int8Array | BigInt64Array | Float64Array;
  constructor(readonly tc: TypecodeInfo, init: unknown) {
    if (typeof init === "number") {
      if (!Number.isSafeInteger(init) || init < 0) {
        throw new RangeError(
          `Cannot make an array: the size must be a non-negative integer, received ${init}`,
        );
      }
      this.data = cells(tc, init);
    } else if (Array.isArray(init)) {
      this.data = cells(tc, init.length);
      init.forEach((v, i) =>
        this.data[i] = checkElement(tc, v, "make an array") as never
      );
    } else {
      throw new TypeError(
        `Cannot make an array: expected a size or an array of initial values, received ${
          describeValue(init)
        }`,
      );
    }
  }
  readonly methods = methods({
    get: (_, a) => this.data[index(a[0], this.data.length, "get")],
    set: (_, a) => {
      const i = index(a[0], this.data.length, "set");
      this.data[i] = checkElement(this.tc, a[1], "set") as never;
    },
    length: () => this.data.length,
    toArray: () => Array.from(this.data as ArrayLike<number | bigint>),
  });
}

// -- Registered user types ------------------------------------------------

/**
 * A registered type, as given to `serve` / `Manager.start`.
 *
 * @example Usage
 * ```ts
 * import type { RegisteredType } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * const counter: RegisteredType = {
 *   module: new URL("./counter.ts", import.meta.url),
 *   export: "Counter",
 * };
 * assert.equal(counter.export, "Counter");
 * ```
 */
export interface RegisteredType {
  /** The module that exports the class (a URL or path). */
  module: string | URL;
  /** The export's name. */
  export: string;
}

const FORBIDDEN = new Set([
  "constructor",
  "__proto__",
  "__defineGetter__",
  "__defineSetter__",
  "__lookupGetter__",
  "__lookupSetter__",
  "toString",
  "toLocaleString",
  "valueOf",
  "hasOwnProperty",
  "isPrototypeOf",
  "propertyIsEnumerable",
  "then",
]);

/** A registered user type: its class and its callable methods. */
export interface HostedType {
  /** The class. */
  ctor: new (...args: unknown[]) => object;
  /** Its public methods by name, taken from its prototype chain. */
  methods: Map<string, (...args: unknown[]) => unknown>;
}

/**
 * Loads the classes of a `register` map and lists each one's public
 * methods: own methods of its prototype chain below `Object.prototype`,
 * whose names do not start with `_` and are not `constructor`,
 * `__proto__`, `toString`-style or `then`.
 *
 * @param register Type id → module and export.
 * @returns The hosted types.
 */
export async function loadRegister(
  register: Record<string, RegisteredType> | undefined,
): Promise<Map<string, HostedType>> {
  const out = new Map<string, HostedType>();
  for (const [typeid, spec] of Object.entries(register ?? {})) {
    const mod = await import(String(spec.module)) as Record<string, unknown>;
    const ctor = Object.hasOwn(mod, spec.export) ? mod[spec.export] : undefined;
    if (typeof ctor !== "function") {
      throw new TypeError(
        `Cannot register ${
          describeValue(typeid)
        }: ${spec.module} has no class export ${describeValue(spec.export)}`,
      );
    }
    const table = new Map<string, (...args: unknown[]) => unknown>();
    for (
      let p = (ctor as { prototype: object }).prototype;
      p && p !== Object.prototype;
      p = Object.getPrototypeOf(p)
    ) {
      for (const name of Object.getOwnPropertyNames(p)) {
        if (name.startsWith("_") || FORBIDDEN.has(name) || table.has(name)) {
          continue;
        }
        const d = Object.getOwnPropertyDescriptor(p, name)!;
        if (typeof d.value === "function") table.set(name, d.value);
      }
    }
    out.set(typeid, {
      ctor: ctor as HostedType["ctor"],
      methods: table,
    });
  }
  return out;
}

class HostedObj implements Managed {
  readonly methods: ReadonlyMap<string, Handler>;
  constructor(readonly type: string, hosted: HostedType, instance: object) {
    const table = new Map<string, Handler>();
    for (const [name, fn] of hosted.methods) {
      table.set(name, (_, a) => fn.apply(instance, a));
    }
    this.methods = table;
  }
}

// -- The core ---------------------------------------------------------------

/** A call waiting in the server (for a lock, an item, an event…). */
export interface ParkedCall {
  /** Whether it was answered (or dropped). */
  readonly settled: boolean;
  /** The client aborted it: leave the queue and answer "cancelled". */
  cancel(): void;
  /** The client is gone: leave the queue, answer nothing. */
  drop(): void;
}

/** One client connection as the core sees it. */
export interface Conn {
  /** `"L"` for local (worker) clients, `"R<n>"` for each TCP client. */
  readonly ownerBase: string;
  /** The client thread's id for local clients (checked for liveness), else 0. */
  threadId: number;
  /** Sends a message to the client. */
  send(message: unknown): void;
  /** Closes the transport. */
  closeTransport(): void;
  /** References held by this connection, by object id. */
  readonly refs: Map<number, number>;
  /** Calls parked on the server, by call id. */
  readonly waiters: Map<number, ParkedCall>;
  /** Whether the connection is gone. */
  closed: boolean;
}

interface Entry {
  obj: Managed;
  refs: number;
}

/**
 * The server's live figures, for tests and monitoring.
 *
 * @example Usage
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using m = await Manager.start();
 * const d = await m.dict();
 * const stats = await m.stats();
 * assert.ok(stats.objects >= 1);
 * d.drop();
 * ```
 */
export interface ServerStats {
  /** Managed objects alive. */
  objects: number;
  /** Client connections open. */
  connections: number;
}

/**
 * The objects and the message handling of one manager server, independent
 * of transport.
 */
export class ServerCore {
  readonly #objects = new Map<number, Entry>();
  readonly #conns = new Set<Conn>();
  readonly #pins = new Map<
    string,
    { ids: number[]; timer: ReturnType<typeof setTimeout> }
  >();
  readonly #claims = new Map<string, (ids: number[]) => void>();
  #nextId = 1;
  #hosted = new Map<string, HostedType>();
  #later: unknown[] = [];
  #monitor: ReturnType<typeof setInterval> | undefined;
  /** The methods of object 0, the manager itself. */
  readonly #root: ReadonlyMap<string, Handler>;

  /** Makes an empty server. */
  constructor() {
    this.#root = methods({
      new: (_, a) => this.#make(String(a[0]), a.slice(1)),
      create: (_, a) => {
        const typeid = a[0];
        if (typeof typeid !== "string" || !this.#hosted.has(typeid)) {
          throw new TypeError(
            `Cannot create: ${describeValue(typeid)} is not a registered type${
              this.#hosted.size
                ? ` (registered: ${[...this.#hosted.keys()].join(", ")})`
                : " (none are registered)"
            }`,
          );
        }
        const hosted = this.#hosted.get(typeid)!;
        const instance = new hosted.ctor(...a.slice(1));
        return this.#add(new HostedObj(typeid, hosted, instance));
      },
      decref: (c, a) => {
        for (const id of Array.isArray(a[0]) ? a[0] : []) {
          if (typeof id === "number") this.#decrefConn(c.conn, id);
        }
      },
      stats: (c) => {
        // What other local connections sent before this call (e.g. a
        // finished worker's goodbye) is handled first, so counts are exact.
        this.sync?.(c.conn);
        return this.stats();
      },
      pin: (c, a) => this.#pin(c.conn, a[0], a[1]),
      claim: (c, a) => this.#claim(c, a[0]),
      methods: (c, a) => {
        const id = a[0];
        if (typeof id !== "number" || !c.conn.refs.has(id)) {
          throw new RangeError(`Unknown object id ${describeValue(id)}`);
        }
        return [...this.#objects.get(id)!.obj.methods.keys()];
      },
    });
  }

  /** Handles what every other connection has already sent (set by the hub). */
  sync: ((except: Conn) => void) | undefined;

  /** Registers user types (see {@linkcode loadRegister}). */
  set hosted(types: Map<string, HostedType>) {
    this.#hosted = types;
  }

  /**
   * The live object and connection counts.
   *
   * @returns The figures.
   */
  stats(): ServerStats {
    return { objects: this.#objects.size, connections: this.#conns.size };
  }

  #make(type: string, a: unknown[]): Ref {
    let obj: Managed;
    switch (type) {
      case "dict": {
        const d = new DictObj(this);
        d.update(a[0], "make a dict");
        obj = d;
        break;
      }
      case "list": {
        const l = new ListObj(this);
        if (a[0] !== undefined) {
          if (!Array.isArray(a[0])) {
            throw new TypeError(
              `Cannot make a list: expected an array, received ${
                describeValue(a[0])
              }`,
            );
          }
          for (const x of a[0]) this.hold(x);
          l.items = [...a[0]];
        }
        obj = l;
        break;
      }
      case "namespace": {
        const n = new NamespaceObj(this);
        if (a[0] !== undefined) {
          if (
            typeof a[0] !== "object" || a[0] === null || a[0] instanceof Ref
          ) {
            throw new TypeError(
              `Cannot make a namespace: expected an object, received ${
                describeValue(a[0])
              }`,
            );
          }
          for (const k of Object.keys(a[0])) {
            n.put(k, (a[0] as Record<string, unknown>)[k]);
          }
        }
        obj = n;
        break;
      }
      case "lock":
        obj = new LockObj("lock", false);
        break;
      case "rlock":
        obj = new LockObj("rlock", true);
        break;
      case "semaphore":
      case "boundedSemaphore": {
        const n = a[0] === undefined ? 1 : a[0];
        if (!Number.isSafeInteger(n) || (n as number) < 0) {
          throw new RangeError(
            `Cannot make a ${type}: the value must be a non-negative integer, received ${
              describeValue(n)
            }`,
          );
        }
        obj = new SemaphoreObj(type, n as number, n as number);
        break;
      }
      case "condition":
        obj = new ConditionObj();
        break;
      case "event":
        obj = new EventObj();
        break;
      case "barrier": {
        const n = a[0];
        if (!Number.isSafeInteger(n) || (n as number) < 1) {
          throw new RangeError(
            `Cannot make a barrier: parties must be a positive integer, received ${
              describeValue(n)
            }`,
          );
        }
        const t = a[1];
        if (t !== undefined && (typeof t !== "number" || !(t >= 0))) {
          throw new RangeError(
            `Cannot make a barrier: timeout must be a non-negative number, received ${
              describeValue(t)
            }`,
          );
        }
        obj = new BarrierObj(
          n as number,
          (t as number | undefined) ?? Infinity,
        );
        break;
      }
      case "queue":
      case "joinableQueue": {
        const m = a[0] === undefined ? 0 : a[0];
        if (!Number.isSafeInteger(m)) {
          throw new TypeError(
            `Cannot make a queue: maxsize must be an integer, received ${
              describeValue(m)
            }`,
          );
        }
        obj = new QueueObj(this, type, m as number);
        break;
      }
      case "value":
        obj = new ValueObj(typecodeInfo(a[0], "make a value"), a[1]);
        break;
      case "array":
        obj = new ArrayObj(typecodeInfo(a[0], "make an array"), a[1]);
        break;
      default:
        throw new TypeError(
          `Cannot make an object of unknown type ${describeValue(type)}`,
        );
    }
    return this.#add(obj);
  }

  #add(obj: Managed): Ref {
    const id = this.#nextId++;
    this.#objects.set(id, { obj, refs: 0 });
    return new Ref(id, obj.type);
  }

  /** Counts the references inside a value that a container now holds. */
  hold(value: unknown): void {
    forEachRef(value, (r) => {
      const e = this.#objects.get(r.id);
      if (e) e.refs++;
    });
  }

  /** Releases the references inside a value a container let go of. */
  drop(value: unknown): void {
    forEachRef(value, (r) => this.#decref(r.id));
  }

  /** Drops a value's references after the current reply was encoded. */
  dropLater(value: unknown): void {
    this.#later.push(value);
  }

  #decref(id: number): void {
    const e = this.#objects.get(id);
    if (!e) return;
    if (--e.refs > 0) return;
    this.#objects.delete(id);
    e.obj.freed?.();
    if (e.obj.contents) { for (const v of [...e.obj.contents()]) this.drop(v); }
  }

  #increfConn(conn: Conn, id: number): void {
    const e = this.#objects.get(id);
    if (!e) return;
    e.refs++;
    conn.refs.set(id, (conn.refs.get(id) ?? 0) + 1);
  }

  #decrefConn(conn: Conn, id: number): void {
    const n = conn.refs.get(id);
    if (!n) return;
    if (n === 1) conn.refs.delete(id);
    else conn.refs.set(id, n - 1);
    this.#decref(id);
  }

  /** Encodes a value for `conn`, counting each reference it carries. */
  encodeFor(conn: Conn, value: unknown): unknown {
    return encodeValue(value, (v) => {
      if (!(v instanceof Ref)) return undefined;
      this.#increfConn(conn, v.id);
      return { id: v.id, type: v.type };
    });
  }

  #decodeFrom(tree: unknown): unknown {
    return decodeValue(tree, (r: RefTag) => {
      const e = this.#objects.get(r.id);
      if (!e) {
        throw new RangeError(
          `Cannot use object ${r.id} in a value: it is unknown (freed, or never existed)`,
        );
      }
      return new Ref(r.id, e.obj.type);
    });
  }

  /** Sends a call's result. */
  reply(conn: Conn, id: number, value: unknown): void {
    if (id === 0 || conn.closed) {
      this.#flushLater();
      return;
    }
    let r: unknown;
    try {
      r = this.encodeFor(conn, value);
    } catch (e) {
      this.#flushLater();
      return this.replyError(conn, id, e);
    }
    this.#flushLater();
    conn.send([id, r]);
  }

  #flushLater(): void {
    if (this.#later.length === 0) return;
    for (const v of this.#later.splice(0)) this.drop(v);
  }

  /** Sends a call's error. */
  replyError(conn: Conn, id: number, error: unknown): void {
    if (conn.closed) return;
    const e = error instanceof Error || error instanceof DOMException
      ? { name: error.name, message: error.message }
      : { name: "Error", message: describeValue(error) };
    conn.send(id === 0 ? { e } : { i: id, e });
  }

  /** Registers a new connection. */
  open(conn: Conn): void {
    this.#conns.add(conn);
    if (conn.threadId > 0 && this.#monitor === undefined) {
      this.#monitor = setInterval(() => {
        for (const c of this.#conns) {
          if (c.threadId > 0 && !isThreadAlive(c.threadId)) this.disconnect(c);
        }
      }, 200);
    }
  }

  /**
   * Forgets a connection: its parked calls leave their queues, the locks it
   * holds are released (the next acquirer is told with `AbandonedError`),
   * and its references are dropped.
   */
  disconnect(conn: Conn): void {
    if (conn.closed) return;
    conn.closed = true;
    this.#conns.delete(conn);
    for (const w of [...conn.waiters.values()]) w.drop();
    for (const e of this.#objects.values()) e.obj.disconnected?.(conn);
    for (const [id, n] of [...conn.refs]) {
      conn.refs.delete(id);
      for (let i = 0; i < n; i++) this.#decref(id);
    }
    conn.closeTransport();
    if (
      this.#monitor !== undefined &&
      ![...this.#conns].some((c) => c.threadId > 0)
    ) {
      clearInterval(this.#monitor);
      this.#monitor = undefined;
    }
  }

  /** Incref objects for a connection opened from `from` (a shared proxy). */
  attach(from: Conn, to: Conn, ids: unknown): void {
    if (!Array.isArray(ids)) return;
    for (const id of ids) {
      if (typeof id === "number" && from.refs.has(id)) this.#increfConn(to, id);
    }
  }

  #pin(conn: Conn, token: unknown, ids: unknown): void {
    if (
      typeof token !== "string" || token.length > 100 || !Array.isArray(ids)
    ) {
      throw new TypeError("Cannot pin: bad token or ids");
    }
    const held = ids.filter((id): id is number =>
      typeof id === "number" && conn.refs.has(id)
    );
    for (const id of held) this.#objects.get(id)!.refs++;
    const claim = this.#claims.get(token);
    if (claim) {
      this.#claims.delete(token);
      return claim(held);
    }
    const timer = setTimeout(() => {
      this.#pins.delete(token);
      for (const id of held) this.#decref(id);
    }, 60_000);
    this.#pins.set(token, { ids: held, timer });
  }

  #claim(c: Call, token: unknown): unknown {
    if (typeof token !== "string" || token.length > 100) {
      throw new TypeError("Cannot claim: bad token");
    }
    const take = (ids: number[]) => {
      // The pin's references move to this connection.
      for (const id of ids) {
        if (!this.#objects.has(id)) continue;
        c.conn.refs.set(id, (c.conn.refs.get(id) ?? 0) + 1);
      }
    };
    const pin = this.#pins.get(token);
    if (pin) {
      clearTimeout(pin.timer);
      this.#pins.delete(token);
      take(pin.ids);
      return true;
    }
    const call = new Call(c.core, c.conn, c.id, c.owner, 10_000);
    return call.wait((w) => {
      this.#claims.set(token, (ids) => {
        if (w.settled || c.conn.closed) {
          for (const id of ids) this.#decref(id);
          return;
        }
        take(ids);
        w.resolve(true);
      });
      return () => this.#claims.delete(token);
    }, () => {
      throw new RangeError("Cannot claim the shared proxy: it never arrived");
    });
  }

  /** Handles one message from a connection. */
  message(conn: Conn, msg: unknown): void {
    if (conn.closed) return;
    let id = 0;
    try {
      if (!Array.isArray(msg)) {
        const c = typeof msg === "object" && msg !== null
          ? (msg as Record<string, unknown>).c
          : undefined;
        if (typeof c === "number") {
          conn.waiters.get(c)?.cancel();
          return;
        }
        throw new TypeError(
          `Cannot handle a message: expected a request [id, object, method, args, thread, timeout?] or a cancel { c }, received ${
            describeValue(msg)
          }`,
        );
      }
      const m = {
        i: msg[0],
        o: msg[1],
        m: msg[2],
        a: msg[3],
        t: msg[4],
        w: msg[5] === null ? undefined : msg[5],
      };
      if (m.i !== 0) {
        if (!Number.isSafeInteger(m.i) || (m.i as number) <= 0) {
          throw new TypeError(
            `Cannot handle a message: bad call id ${describeValue(m.i)}`,
          );
        }
        id = m.i as number;
      }
      const o = m.o, name = m.m;
      if (!Number.isSafeInteger(o) || (o as number) < 0) {
        throw new TypeError(
          `Cannot handle a message: bad object id ${describeValue(o)}`,
        );
      }
      if (typeof name !== "string") {
        throw new TypeError(
          `Cannot handle a message: bad method name ${describeValue(name)}`,
        );
      }
      let table: ReadonlyMap<string, Handler>;
      let type = "manager";
      if (o === 0) table = this.#root;
      else {
        const e = this.#objects.get(o as number);
        if (!e || !conn.refs.has(o as number)) {
          throw new RangeError(
            `Cannot call ${
              describeValue(name)
            }: object ${o} is unknown or not held by this client`,
          );
        }
        table = e.obj.methods;
        type = e.obj.type;
      }
      const handler = table.get(name);
      if (!handler) {
        throw new TypeError(
          `Cannot call ${
            describeValue(name)
          }: ${type} has no such public method`,
        );
      }
      const args = m.a === undefined ? [] : this.#decodeFrom(m.a);
      if (!Array.isArray(args)) {
        throw new TypeError(
          "Cannot handle a message: arguments must be an array",
        );
      }
      const w = m.w;
      if (w !== undefined && (typeof w !== "number" || !(w >= 0))) {
        throw new TypeError(
          `Cannot handle a message: bad timeout ${describeValue(w)}`,
        );
      }
      const t = m.t;
      const owner = `${conn.ownerBase}:${typeof t === "number" ? t : 0}`;
      const call = new Call(this, conn, id, owner, (w as number) ?? Infinity);
      const result = handler(call, args);
      if (result === PENDING) return;
      if (result instanceof Promise) {
        result.then(
          (v) => this.reply(conn, id, v),
          (e) => this.replyError(conn, id, e),
        );
        return;
      }
      this.reply(conn, id, result);
    } catch (e) {
      this.#flushLater();
      this.replyError(conn, id, e);
    }
  }

  /** Closes every connection and frees every object. */
  close(): void {
    for (const c of [...this.#conns]) this.disconnect(c);
    for (const p of this.#pins.values()) clearTimeout(p.timer);
    this.#pins.clear();
    this.#objects.clear();
    if (this.#monitor !== undefined) clearInterval(this.#monitor);
    this.#monitor = undefined;
  }
}

// -- Transports -------------------------------------------------------------

/** How many loads the server spins on its doorbell before it sleeps. */
const SERVER_SPIN = 20_000;

/**
 * The embedded server's local connections: each is a {@linkcode Link}
 * (two shared-memory rings and a port). Clients ring one shared doorbell
 * after each send; the hub's loop services every link, spins briefly on the
 * doorbell, then sleeps on it with `Atomics.waitAsync` (yielding to the
 * event loop for timers and port messages).
 */
export class LocalHub {
  /** The doorbell: `[0]` is bumped by clients, `[1]` says the hub sleeps. */
  readonly bell: Int32Array;
  readonly #core: ServerCore;
  readonly #links = new Map<Conn, Link>();
  #running = false;
  #yield: MessageChannel | undefined;
  readonly #spin = new SpinPolicy(SERVER_SPIN);

  /**
   * Makes the hub.
   *
   * @param core The server.
   * @param bell The doorbell's memory (8 bytes).
   */
  constructor(core: ServerCore, bell: SharedArrayBuffer) {
    this.#core = core;
    this.bell = new Int32Array(bell, 0, 2);
    core.sync = (except) => {
      for (const [c, link] of [...this.#links]) {
        if (c !== except && !c.closed) link.service();
      }
    };
  }

  /**
   * Serves a new local connection.
   *
   * @param port The server's end of the connection's port.
   * @param mem The connection's rings.
   * @param threadId The client thread's id (its death closes the connection).
   * @returns The connection.
   */
  add(port: MessagePort, mem: LinkMemory, threadId: number): Conn {
    const holder: { link?: Link } = {};
    const conn: Conn = {
      ownerBase: "L",
      threadId,
      refs: new Map(),
      waiters: new Map(),
      closed: false,
      send: (m) => holder.link!.send(m),
      closeTransport: () => {
        holder.link!.close();
        this.#links.delete(conn);
      },
    };
    const link = new Link(
      mem,
      "server",
      port,
      (m) => this.#onMessage(conn, m),
      () => {},
    );
    holder.link = link;
    this.#links.set(conn, link);
    this.#core.open(conn);
    this.#run();
    return conn;
  }

  #onMessage(conn: Conn, d: unknown): void {
    const m = d as Record<string, unknown> | null;
    if (m && typeof m === "object" && typeof m.x === "string") {
      if (m.x === "bye") return this.#core.disconnect(conn);
      if (m.x === "thread" && typeof m.t === "number") {
        conn.threadId = m.t;
        return;
      }
      if (m.x === "attach" && m.port instanceof MessagePort) {
        const sub = this.add(m.port, m.mem as LinkMemory, conn.threadId);
        this.#core.attach(conn, sub, m.ids);
        return;
      }
    }
    this.#core.message(conn, m);
  }

  #macrotask(): Promise<void> {
    this.#yield ??= new MessageChannel();
    const ch = this.#yield;
    return new Promise((resolve) => {
      ch.port2.onmessage = () => resolve();
      ch.port1.postMessage(0);
    });
  }

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    const bell = this.bell;
    let lastYield = performance.now();
    let busy = 0;
    const spin = this.#spin;
    while (this.#links.size > 0) {
      const seen = Atomics.load(bell, 0);
      let did = false;
      let backlog = false;
      for (const link of this.#links.values()) {
        if (link.service()) did = true;
        if (link.backlog) backlog = true;
      }
      if (did) {
        if ((++busy & 63) === 0 && performance.now() - lastYield > 2) {
          await this.#macrotask();
          lastYield = performance.now();
        }
        continue;
      }
      let changed = false;
      for (let i = spin.budget; i > 0; i--) {
        if (Atomics.load(bell, 0) !== seen) {
          changed = true;
          break;
        }
      }
      spin.record(changed);
      if (changed) continue;
      Atomics.store(bell, 1, 1);
      if (Atomics.load(bell, 0) === seen) {
        const r = Atomics.waitAsync(bell, 0, seen, backlog ? 1 : 1000);
        if (r.async) await r.value;
        else await this.#macrotask();
      }
      Atomics.store(bell, 1, 0);
      lastYield = performance.now();
    }
    this.#yield?.port1.close();
    this.#yield?.port2.close();
    this.#yield = undefined;
    this.#running = false;
  }
}

/** Options of {@linkcode startTcpServer}. */
export interface TcpServerOptions {
  /** The interface to bind. */
  hostname: string;
  /** The port (0 picks a free one). */
  port: number;
  /** The shared secret. */
  authkey: Uint8Array;
  /** The largest frame accepted after the handshake. */
  maxFrameBytes?: number;
  /** How long a client may take to authenticate, in ms. */
  handshakeTimeout?: number;
}

/** A running TCP server. */
export interface TcpServer {
  /** Where it listens. */
  addr: { hostname: string; port: number };
  /** Stops listening, closes every connection, frees every object. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

/**
 * Listens on TCP and serves authenticated clients with `core`.
 *
 * The handshake (see `docs/manager-protocol.md`): the server sends
 * `{ proto, version, challenge }`; the client answers `{ proto, version,
 * response, challenge }` with `response = HMAC(key, "dmp-manager/1 client
 * <server nonce> <client nonce>")`; the server checks it in constant time
 * and answers `{ ok: true, response }` with its own proof (role
 * `server`), or `{ e }` and closes.
 *
 * @param core The server.
 * @param options Where and with which key.
 * @returns The server.
 */
export function startTcpServer(
  core: ServerCore,
  options: TcpServerOptions,
): TcpServer {
  const listener = Deno.listen({
    hostname: options.hostname,
    port: options.port,
    transport: "tcp",
  });
  const addr = listener.addr as Deno.NetAddr;
  const sockets = new Set<FramedSocket>();
  const tasks = new Set<Promise<void>>();
  const keyPromise = hmacKey(options.authkey);
  keyPromise.catch(() => {});
  let count = 0;
  let stopping = false;

  async function handle(tcp: Deno.TcpConn): Promise<void> {
    try {
      tcp.setNoDelay(true);
    } catch {
      // not fatal
    }
    const socket = new FramedSocket(tcp, HANDSHAKE_MAX_FRAME);
    sockets.add(socket);
    try {
      const key = await keyPromise;
      const challenge = nonce();
      socket.send({ proto: PROTOCOL, version: PROTOCOL_VERSION, challenge });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const hello = await Promise.race([
        socket.next(),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(
            () => resolve(undefined),
            options.handshakeTimeout ?? 10_000,
          );
        }),
      ]).finally(() => clearTimeout(timer));
      const h =
        (typeof hello === "object" && hello !== null ? hello : {}) as Record<
          string,
          unknown
        >;
      if (h.proto !== PROTOCOL || h.version !== PROTOCOL_VERSION) {
        socket.send({
          e: {
            name: "AuthenticationError",
            message:
              `Cannot connect: the server speaks ${PROTOCOL} version ${PROTOCOL_VERSION}, the client sent ${
                describeValue(h.proto)
              } version ${describeValue(h.version)}`,
          },
        });
        return;
      }
      const expected = await proof(
        key,
        "client",
        challenge,
        String(h.challenge),
      );
      if (
        typeof h.challenge !== "string" || h.challenge.length > 100 ||
        !timingSafeEqual(h.response, expected)
      ) {
        socket.send({
          e: {
            name: "AuthenticationError",
            message: "Cannot connect: the server refused the authkey",
          },
        });
        return;
      }
      socket.send({
        ok: true,
        response: await proof(key, "server", h.challenge, challenge),
      });
      socket.maxBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME;
      const conn: Conn = {
        ownerBase: `R${++count}`,
        threadId: 0,
        refs: new Map(),
        waiters: new Map(),
        closed: false,
        send: (m) => socket.send(m),
        closeTransport: () => {
          socket.close().catch(() => {});
        },
      };
      core.open(conn);
      socket.onBadFrame = (e) => core.replyError(conn, 0, e);
      socket.onMessage = (m) => core.message(conn, m);
      socket.drain();
      await socket.done;
      if (socket.error instanceof FrameError) {
        // An oversized frame: the stream cannot be trusted any more.
      }
      core.disconnect(conn);
    } catch {
      // A peer that misbehaves only loses its own connection.
    } finally {
      await socket.close().catch(() => {});
      sockets.delete(socket);
    }
  }

  const finished = (async () => {
    try {
      for await (const tcp of listener) {
        if (stopping) {
          tcp.close();
          continue;
        }
        const t = handle(tcp as Deno.TcpConn);
        tasks.add(t);
        t.finally(() => tasks.delete(t));
      }
    } catch {
      // listener closed
    }
    while (tasks.size > 0) await Promise.allSettled([...tasks]);
  })();

  return {
    addr: { hostname: addr.hostname, port: addr.port },
    finished,
    async shutdown() {
      if (!stopping) {
        stopping = true;
        try {
          listener.close();
        } catch {
          // already closed
        }
        core.close();
        for (const s of sockets) s.close().catch(() => {});
      }
      await finished;
    },
  };
}

/** Re-exported for the transports' users. */
export { AuthenticationError, authkeyBytes };

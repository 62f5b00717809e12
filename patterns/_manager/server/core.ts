/**
 * The manager's server core: the table of managed objects (keyed by
 * unguessable ids, see `newObjectId` in `ref.ts`), per-connection reference
 * counts, the names bound to objects, the root object's methods (`new`,
 * `create`, `decref`, `pin`/`claim` for proxies handed between clients,
 * `name`/`lookup`/`names`/`unname`…) and the dispatch of
 * each request to an object's method table. It knows no transport: the
 * embedded server's hub (`LocalHub` in `hub.ts`) and the TCP
 * server (`tcp.ts`) feed it messages. Every name a peer sends is looked up
 * in fixed allowlists; nothing a peer sends is evaluated.
 *
 * ```ts
 * import { ServerCore } from "./core.ts";
 * import { strict as assert } from "node:assert";
 *
 * const core = new ServerCore();
 * assert.equal(core.stats().objects, 0);
 * core.close();
 * ```
 *
 * @module
 */

import { describeValue } from "../../_core/errors.ts";
import { isThreadAlive } from "../../_core/runtime.ts";
import {
  checkName,
  type ObjectId,
  type RefTag,
  ROOT_ID,
  type RootMethod,
} from "../protocol.ts";
import { decodeWire, encodeWire, isObjectIdShape } from "../wire.ts";
import { PENDING, ServerCall } from "./call.ts";
import type { Conn, Handler, Managed, ObjectHost } from "./call.ts";
import { HostedObj, type HostedType } from "./hosted.ts";
import { makeObject } from "./objects/make.ts";
import { forEachRef, newObjectId, Ref } from "./ref.ts";

/** An object in the table, with its reference count. */
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
export class ServerCore implements ObjectHost {
  readonly #objects = new Map<ObjectId, Entry>();
  readonly #conns = new Set<Conn>();
  readonly #pins = new Map<
    string,
    { ids: ObjectId[]; timer: ReturnType<typeof setTimeout> }
  >();
  readonly #claims = new Map<string, (ids: ObjectId[]) => void>();
  /** Names bound to objects; each name holds one reference. */
  readonly #names = new Map<string, ObjectId>();
  #hosted = new Map<string, HostedType>();
  #later: unknown[] = [];
  #monitor: ReturnType<typeof setInterval> | undefined;
  /** The methods of object 0, the manager itself. */
  readonly #root: ReadonlyMap<string, Handler>;

  /** Makes an empty server. */
  constructor() {
    const root = {
      new: (_, a) => this.#add(makeObject(String(a[0]), this, a.slice(1))),
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
        // Only the connection's own references: a guessed id does nothing.
        for (const id of Array.isArray(a[0]) ? a[0] : []) {
          if (typeof id === "string") this.#decrefConn(c.conn, id);
        }
      },
      stats: (c) => {
        // What other local connections sent before this call (e.g. a
        // finished worker's goodbye) is handled first, so counts are exact.
        this.sync?.(c.conn);
        return this.stats();
      },
      // A client's liveness check while its calls are in flight.
      ping: () => null,
      pin: (_, a) => this.#pin(a[0], a[1]),
      claim: (c, a) => this.#claim(c, a[0]),
      methods: (_, a) => {
        const id = a[0];
        const e = this.#entryOf(id);
        if (!e) throw new RangeError(`Unknown object id ${describeValue(id)}`);
        return [...e.obj.methods.keys()];
      },
      name: (_, a) => this.#bindName(a[0], a[1]),
      lookup: (_, a) => {
        const id = this.#names.get(checkName(a[0], "look up"));
        return id === undefined ? undefined : this.#refTo(id);
      },
      names: () => [...this.#names.keys()],
      unname: (_, a) => {
        const name = checkName(a[0], "unname");
        const id = this.#names.get(name);
        if (id === undefined) return false;
        this.#names.delete(name);
        this.#decref(id);
        return true;
      },
    } satisfies Record<RootMethod, Handler>;
    this.#root = new Map(Object.entries(root));
  }

  /** Handles what every other connection has already sent (set by the hub). */
  sync: ((except: Conn) => void) | undefined;

  /** Registers user types (see `loadRegister` in `hosted.ts`). */
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

  #add(obj: Managed): Ref {
    let id = newObjectId();
    while (this.#objects.has(id)) id = newObjectId();
    this.#objects.set(id, { obj, refs: 0 });
    return new Ref(id, obj.type);
  }

  /**
   * The live object a peer's id names. The id is the capability: any
   * connection that has a live object's id may use it; a guessed one, or a
   * number, names nothing.
   */
  #entryOf(id: unknown): Entry | undefined {
    return typeof id === "string" ? this.#objects.get(id) : undefined;
  }

  #refTo(id: ObjectId): Ref {
    return new Ref(id, this.#objects.get(id)!.obj.type);
  }

  /**
   * Binds `name` to the object `ref` unless it is bound already: `null`
   * when it bound it, else the bound object (the caller drops its own).
   * One message, handled whole, so racing clients agree on one object.
   */
  #bindName(name: unknown, ref: unknown): Ref | null {
    const n = checkName(name, "name an object");
    if (!(ref instanceof Ref)) {
      throw new TypeError(
        `Cannot name an object ${
          describeValue(n)
        }: expected a manager proxy, received ${describeValue(ref)}`,
      );
    }
    const bound = this.#names.get(n);
    if (bound !== undefined) return this.#refTo(bound);
    this.#names.set(n, ref.id);
    this.#objects.get(ref.id)!.refs++;
    return null;
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

  #decref(id: ObjectId): void {
    const e = this.#objects.get(id);
    if (!e) return;
    if (--e.refs > 0) return;
    this.#free(id, e);
  }

  #free(id: ObjectId, e: Entry): void {
    this.#objects.delete(id);
    e.obj.freed?.();
    if (e.obj.contents) { for (const v of [...e.obj.contents()]) this.drop(v); }
  }

  /** Frees the objects in a value nobody will receive that nothing holds. */
  #freeOrphans(value: unknown): void {
    forEachRef(value, (r) => {
      const e = this.#objects.get(r.id);
      if (e && e.refs === 0) this.#free(r.id, e);
    });
  }

  #increfConn(conn: Conn, id: ObjectId): void {
    const e = this.#objects.get(id);
    if (!e) return;
    e.refs++;
    conn.refs.set(id, (conn.refs.get(id) ?? 0) + 1);
  }

  #decrefConn(conn: Conn, id: ObjectId): void {
    const n = conn.refs.get(id);
    if (!n) return;
    if (n === 1) conn.refs.delete(id);
    else conn.refs.set(id, n - 1);
    this.#decref(id);
  }

  /** Encodes a value for `conn`, counting each reference it carries. */
  encodeFor(conn: Conn, value: unknown): unknown {
    return encodeWire(value, (v) => {
      if (!(v instanceof Ref)) return undefined;
      this.#increfConn(conn, v.id);
      return { id: v.id, type: v.type };
    });
  }

  /**
   * Decodes a peer's arguments. A reference is honoured only if its id
   * names a live object: ids are unguessable, so knowing one means having
   * been given it.
   */
  #decodeFrom(tree: unknown): unknown {
    return decodeWire(tree, (r: RefTag) => {
      const e = this.#objects.get(r.id);
      if (!e) {
        throw new RangeError(
          `Cannot use object ${r.id} in a value: no such object (freed, never made, or a guessed id)`,
        );
      }
      return new Ref(r.id, e.obj.type);
    });
  }

  /** Sends a call's result. */
  reply(conn: Conn, id: number, value: unknown): void {
    if (conn.closed) {
      this.#freeOrphans(value);
      this.#flushLater();
      return;
    }
    if (id === 0) {
      // Nobody hears the answer, but the references in it are the
      // connection's (e.g. an object made by `[0, 0, "new", …]`): counted
      // to it, they go when it leaves instead of living for ever.
      try {
        this.encodeFor(conn, value);
      } catch {
        this.#freeOrphans(value);
      }
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
      if (typeof id === "string" && from.refs.has(id)) this.#increfConn(to, id);
    }
  }

  #pin(token: unknown, ids: unknown): void {
    if (
      typeof token !== "string" || token.length > 100 || !Array.isArray(ids)
    ) {
      throw new TypeError("Cannot pin: bad token or ids");
    }
    // Any live object (holding an id is the right to use it); a guessed
    // id pins nothing.
    const held = ids.filter((id): id is ObjectId =>
      typeof id === "string" && this.#objects.has(id)
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

  #claim(c: ServerCall, token: unknown): unknown {
    if (typeof token !== "string" || token.length > 100) {
      throw new TypeError("Cannot claim: bad token");
    }
    const take = (ids: ObjectId[]) => {
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
    const call = new ServerCall(c.core, c.conn, c.id, c.owner, 10_000);
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
        if (conn.waiters.has(id)) {
          // Replacing the parked call would leave it queued past the
          // connection's end (to take a permit or an item for nobody).
          throw new TypeError(
            `Cannot handle a message: call id ${id} is already waiting`,
          );
        }
      }
      const o = m.o, name = m.m;
      if (
        o !== ROOT_ID && !isObjectIdShape(o) &&
        !(Number.isSafeInteger(o) && (o as number) > 0)
      ) {
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
      if (o === ROOT_ID) table = this.#root;
      else {
        // From any connection that has the id (a worker's, a second
        // program's).
        const e = this.#entryOf(o);
        if (!e) {
          throw new RangeError(
            `Cannot call ${describeValue(name)}: no object ${
              describeValue(o)
            } (freed, never made, or a guessed id)`,
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
      const call = new ServerCall(
        this,
        conn,
        id,
        owner,
        (w as number) ?? Infinity,
      );
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
    this.#names.clear();
    this.#objects.clear();
    if (this.#monitor !== undefined) clearInterval(this.#monitor);
    this.#monitor = undefined;
  }
}

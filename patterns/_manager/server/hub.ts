/**
 * The embedded server's transport: {@linkcode LocalHub} serves local
 * connections, each a `Link` (two shared-memory rings and a port, see
 * `../link.ts`), from one loop that sleeps on a shared doorbell.
 *
 * @module
 */

import { Link, type LinkMemory } from "../link.ts";
import { SpinPolicy } from "../../_core/wait.ts";
import type { Conn } from "./call.ts";
import type { ServerCore } from "./core.ts";

/**
 * The longest spin of the server on its doorbell before it sleeps, in loads
 * (adaptive: it halves after spins that did not pay off).
 */
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
  readonly #spin = new SpinPolicy(SERVER_SPIN, { adaptive: true });

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
      if (spin.spinWhile(bell, 0, seen)) continue;
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

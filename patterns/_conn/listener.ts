/**
 * `listen`: Python's `multiprocessing.connection.Listener` — it hands out
 * socket `Connection`s from other programs and machines, authenticated
 * both ways with a shared authkey (see `handshake.ts`), on the `"dmp"`
 * wire or Python's own (`wire: "python"`). `connect.ts` is the other end.
 *
 * The listener accepts and authenticates in the background, several peers
 * at once, each within {@linkcode HANDSHAKE_TIMEOUT} (past 64 at once, a
 * new peer evicts the one waiting longest); `accept()` hands out only peers
 * that passed. A peer that fails is dropped (and logged with
 * `MP_DEBUG=1`), and accepting goes on; an error while accepting (out of
 * file descriptors) is retried with a back-off, never the end of the
 * listener.
 *
 * @module
 */

import { checkTimeout, timerFor } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { debug } from "../_core/debug.ts";
import { ClosedError, timeoutError } from "../_core/errors.ts";
import { holdEventLoop } from "../_core/wait.ts";
import { authkeyBytes } from "../_manager/handshake.ts";
import { FrameStream } from "./frame_stream.ts";
import { HANDSHAKE_MAX_BYTES, runHandshake } from "./handshake.ts";
import {
  checkMaxMessage,
  checkPort,
  checkWire,
  HANDSHAKE_TIMEOUT,
  hostPort,
  noDelay,
} from "./options.ts";
import { SocketConnection, type Wire } from "./socket_connection.ts";
import type { Connection } from "../pipe.ts";

export type { Wire } from "./socket_connection.ts";

/** Authenticated connections held for `accept()` before accepting pauses. */
const BACKLOG = 64;
/**
 * Peers authenticating at once; a new one beyond it evicts the oldest (an
 * honest peer authenticates in one round trip, so silent strangers are
 * the ones that age and go).
 */
const MAX_HANDSHAKES = 64;

/**
 * Options of {@linkcode listen}.
 *
 * @example Usage
 * ```ts
 * import { listen, type ListenOptions } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const options: ListenOptions = { port: 0, authkey: "secret" };
 * await using listener = await listen(options);
 * assert.equal(listener.addr.hostname, "127.0.0.1");
 * ```
 */
export interface ListenOptions {
  /**
   * The address to listen on.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** The port; `0` picks a free one (see `Listener.addr`). */
  port: number;
  /** The shared secret: a non-empty string or `Uint8Array`. */
  authkey: string | Uint8Array;
  /** Serve over TLS with this certificate and key (PEM). */
  tls?: { cert: string; key: string };
  /**
   * `"dmp"`, this package's own, or `"python"`: the format of Python's
   * `multiprocessing.connection` (frames, authkey challenge, pickles).
   *
   * @default {"dmp"}
   */
  wire?: Wire;
  /**
   * The largest message a peer may send, in bytes (a larger one breaks the
   * connection).
   *
   * @default {1073741824}
   */
  maxMessageBytes?: number;
}

/**
 * A listening socket that hands out authenticated {@linkcode Connection}s:
 * Python's `multiprocessing.connection.Listener`. Made by
 * {@linkcode listen}. It keeps the program alive until closed.
 *
 * @example Usage
 * ```ts
 * import { connect, listen } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * await using listener = await listen({ port: 0, authkey: "secret" });
 * const client = connect({ port: listener.addr.port, authkey: "secret" });
 * const server = await listener.accept({ timeout: 5000 });
 * (await client).send({ job: 1 });
 * assert.deepEqual(await server.recv(), { job: 1 });
 * server.close();
 * (await client).close();
 * ```
 */
export class Listener implements AsyncDisposable {
  readonly #tcp: Deno.Listener;
  readonly #key: Uint8Array;
  readonly #wire: Wire;
  readonly #maxMessage: number;
  readonly #addr: { hostname: string; port: number };
  #closed = false;
  readonly #ready: SocketConnection[] = [];
  readonly #acceptors: {
    resolve: (c: SocketConnection) => void;
    reject: (e: unknown) => void;
  }[] = [];
  readonly #handshaking = new Set<FrameStream>();
  #resumeAccepting: (() => void) | undefined;
  readonly #loop: Promise<void>;

  /**
   * Internal: use {@linkcode listen}.
   *
   * @param tcp The listening socket.
   * @param key The authkey's bytes.
   * @param wire The format.
   * @param maxMessage The largest message accepted.
   */
  constructor(
    tcp: Deno.Listener,
    key: Uint8Array,
    wire: Wire,
    maxMessage: number,
  ) {
    this.#tcp = tcp;
    this.#key = key;
    this.#wire = wire;
    this.#maxMessage = maxMessage;
    const a = tcp.addr as Deno.NetAddr;
    this.#addr = { hostname: a.hostname, port: a.port };
    this.#loop = this.#acceptLoop();
  }

  /**
   * Where it listens (`port` is the real one when `0` was asked for).
   *
   * @example Usage
   * ```ts
   * import { listen } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * await using listener = await listen({ port: 0, authkey: "k" });
   * assert.ok(listener.addr.port > 0);
   * ```
   *
   * @returns The host and port.
   */
  get addr(): { hostname: string; port: number } {
    return { ...this.#addr };
  }

  /**
   * Whether {@linkcode Listener.close} was called.
   *
   * @example Usage
   * ```ts
   * import { listen } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const listener = await listen({ port: 0, authkey: "k" });
   * assert.equal(listener.closed, false);
   * await listener[Symbol.asyncDispose]();
   * assert.equal(listener.closed, true);
   * ```
   *
   * @returns `true` once closed.
   */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The wire it speaks.
   *
   * @example Usage
   * ```ts
   * import { listen } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * await using listener = await listen({ port: 0, authkey: "k" });
   * assert.equal(listener.wire, "dmp");
   * ```
   *
   * @returns `"dmp"` or `"python"`.
   */
  get wire(): Wire {
    return this.#wire;
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 0;
    for (;;) {
      if (this.#closed) return;
      if (this.#ready.length >= BACKLOG) {
        // Full: leave the rest in the kernel's backlog until there is room.
        const release = holdEventLoop();
        await new Promise<void>((r) => this.#resumeAccepting = r);
        release();
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#tcp.accept();
        backoff = 0;
      } catch (e) {
        if (this.#closed) return;
        // Out of file descriptors, a connection reset while queued, ...:
        // transient. Back off and go on accepting.
        backoff = Math.min(backoff ? backoff * 2 : 10, 1000);
        debug(
          `Listener ${this.#addr.hostname}:${this.#addr.port}: accept failed (${
            (e as Error).message
          }); retrying in ${backoff} ms`,
        );
        await new Promise((r) => setTimeout(r, backoff));
        continue;
      }
      this.#authenticate(conn);
    }
  }

  async #authenticate(conn: Deno.Conn): Promise<void> {
    const peer = hostPort(conn.remoteAddr);
    noDelay(conn);
    const stream = new FrameStream(
      conn,
      HANDSHAKE_MAX_BYTES,
      this.#wire === "python",
    );
    stream.stepwise = true;
    if (this.#handshaking.size >= MAX_HANDSHAKES) {
      const oldest = this.#handshaking.values().next().value!;
      this.#handshaking.delete(oldest);
      oldest.close();
    }
    this.#handshaking.add(stream);
    try {
      await runHandshake(stream, this.#wire, "listener", this.#key, {
        peer,
        deadline: performance.now() + HANDSHAKE_TIMEOUT,
        timeout: HANDSHAKE_TIMEOUT,
        maxBytes: this.#maxMessage,
      });
    } catch (e) {
      debug(
        `Listener ${this.#addr.hostname}:${this.#addr.port}: refused ${peer} (${
          (e as Error).message
        })`,
      );
      stream.close();
      this.#handshakeDone(stream);
      await stream.done;
      return;
    }
    this.#handshakeDone(stream);
    if (this.#closed) {
      stream.close();
      return;
    }
    stream.maxBytes = this.#maxMessage;
    stream.stepwise = false;
    debug(
      `Listener ${this.#addr.hostname}:${this.#addr.port}: ${peer} connected`,
    );
    const c = new SocketConnection(stream, this.#wire, peer);
    const waiter = this.#acceptors.shift();
    if (waiter) waiter.resolve(c);
    else this.#ready.push(c);
  }

  #handshakeDone(stream: FrameStream): void {
    this.#handshaking.delete(stream);
    this.#wake();
  }

  #wake(): void {
    const r = this.#resumeAccepting;
    this.#resumeAccepting = undefined;
    r?.();
  }

  /**
   * Waits for the next authenticated peer.
   *
   * @example Usage
   * ```ts
   * import { connect, listen } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * await using listener = await listen({ port: 0, authkey: "k" });
   * await assert.rejects(listener.accept({ timeout: 10 }), { name: "TimeoutError" });
   * const [client, server] = await Promise.all([
   *   connect({ port: listener.addr.port, authkey: "k" }),
   *   listener.accept(),
   * ]);
   * server.sendBytes(new Uint8Array([1, 2]));
   * assert.deepEqual(await client.recvBytes(), new Uint8Array([1, 2]));
   * client.close();
   * server.close();
   * ```
   *
   * @typeParam T What the connection carries.
   * @param options `timeout` (ms; `0` only takes one already there) and
   *   `signal`.
   * @returns The connection.
   * @throws {ClosedError} If the listener is closed.
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  accept<T = unknown>(options: WaitOptions = {}): Promise<Connection<T>> {
    if (this.#closed) {
      return Promise.reject(
        new ClosedError("Cannot accept: the listener is closed"),
      );
    }
    let timeout: number;
    try {
      timeout = checkTimeout(options.timeout, "accept");
    } catch (e) {
      return Promise.reject(e);
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const ready = this.#ready.shift();
    if (ready) {
      this.#wake();
      return Promise.resolve(ready as SocketConnection<T>);
    }
    if (timeout <= 0) {
      return Promise.reject(
        timeoutError("accept found no connection waiting (timeout 0)"),
      );
    }
    return new Promise<Connection<T>>((resolve, reject) => {
      const entry = {
        resolve: (c: SocketConnection) => {
          done();
          resolve(c as SocketConnection<T>);
        },
        reject: (e: unknown) => {
          done();
          reject(e);
        },
      };
      const drop = (): void => {
        const i = this.#acceptors.indexOf(entry);
        if (i >= 0) this.#acceptors.splice(i, 1);
      };
      const onAbort = (): void => {
        drop();
        entry.reject(signal!.reason);
      };
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      this.#acceptors.push(entry);
      signal?.addEventListener("abort", onAbort, { once: true });
      const timer = timerFor(timeout, () => {
        drop();
        entry.reject(timeoutError(`accept timed out after ${timeout} ms`));
      });
    });
  }

  /**
   * Stops listening: pending `accept` calls reject with `ClosedError`;
   * peers still authenticating and connections nobody accepted are closed.
   * Connections already accepted stay open. Idempotent.
   *
   * @example Usage
   * ```ts
   * import { ClosedError, listen } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const listener = await listen({ port: 0, authkey: "k" });
   * listener.close();
   * await assert.rejects(listener.accept(), ClosedError);
   * ```
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#tcp.close();
    } catch {
      // already closed
    }
    this.#wake();
    // Not close(): a challenge still unwritten (a TLS peer that never did
    // the TLS handshake) would keep it, and dispose, waiting for ever.
    for (const s of this.#handshaking) s.abort();
    for (const c of this.#ready.splice(0)) c.close();
    for (const a of this.#acceptors.splice(0)) {
      a.reject(new ClosedError("Cannot accept: the listener is closed"));
    }
  }

  /**
   * Closes the listener and waits until its sockets are released
   * (`await using listener = await listen(…)`).
   *
   * @example Usage
   * ```ts
   * import { listen } from "@dmp/multiprocessing/pipe";
   * import { strict as assert } from "node:assert";
   *
   * const listener = await listen({ port: 0, authkey: "k" });
   * await listener[Symbol.asyncDispose]();
   * assert.equal(listener.closed, true);
   * ```
   */
  async [Symbol.asyncDispose](): Promise<void> {
    const waits = [
      ...[...this.#handshaking].map((s) => s.done),
      ...this.#ready.map((c) => c.done),
    ];
    this.close();
    await this.#loop;
    await Promise.all(waits);
  }
}

/**
 * Listens for authenticated connections (Python's
 * `multiprocessing.connection.Listener(address, authkey=…)`).
 *
 * @param options Where to listen, the authkey, TLS and the wire.
 * @returns The listener.
 * @throws {TypeError} If the authkey is not a non-empty string or
 *   `Uint8Array`, or `wire` is unknown.
 * @throws {RangeError} If the port is not an integer from 0 to 65535.
 */
export function listen(options: ListenOptions): Promise<Listener> {
  try {
    const key = authkeyBytes(options?.authkey, "listen");
    const port = checkPort(options.port, "listen");
    const wire = checkWire(options.wire, "listen");
    const max = checkMaxMessage(options.maxMessageBytes, "listen");
    const hostname = options.hostname ?? "127.0.0.1";
    const tcp = options.tls
      ? Deno.listenTls({
        hostname,
        port,
        cert: options.tls.cert,
        key: options.tls.key,
      })
      : Deno.listen({ hostname, port });
    return Promise.resolve(new Listener(tcp, key, wire, max));
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * {@linkcode serve}: a manager server on TCP in this thread, and the
 * {@linkcode ManagerServer} handle it returns.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { authkeyBytes } from "./handshake.ts";
import { ServerCore, type ServerStats } from "./server/core.ts";
import { loadRegister, type RegisteredType } from "./server/hosted.ts";
import {
  DEFAULT_MAX_CONNECTIONS,
  type ServeEvent,
  startTcpServer,
  type TcpServer,
} from "./server/tcp.ts";

export type { ServeEvent };

/**
 * Checks a TCP port option.
 *
 * @param port The option.
 * @param min The lowest port allowed (`0` lets the system pick).
 * @param what What is being done, for the error message.
 * @returns The port.
 * @throws {RangeError} If it is not an integer in `min..65535`.
 */
export function checkPort(port: number, min: 0 | 1, what: string): number {
  if (!Number.isInteger(port) || port < min || port > 65535) {
    throw new RangeError(
      `Cannot ${what}: port must be an integer in ${min}..65535, received ${
        describeValue(port)
      }`,
    );
  }
  return port;
}

/**
 * Options of {@linkcode serve}.
 *
 * @example Usage
 * ```ts
 * import { Manager, serve, type ServeOptions } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * const options: ServeOptions = {
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   authkey: new TextEncoder().encode("secret"),
 *   maxFrameBytes: 1 << 20,
 * };
 * await using server = await serve(options);
 * await using manager = await Manager.connect({ port: server.addr.port, authkey: "secret" });
 * const l = await manager.list([1, 2]);
 * assert.deepEqual(await l.toArray(), [1, 2]);
 * ```
 */
export interface ServeOptions {
  /** The interface to bind (default `"127.0.0.1"`: loopback only). */
  hostname?: string;
  /** The port; `0` picks a free one. */
  port: number;
  /** The shared secret: a non-empty string or `Uint8Array`. */
  authkey: string | Uint8Array;
  /** User types to host: type id → `{ module, export }`. */
  register?: Record<string, RegisteredType>;
  /** The largest frame accepted, in bytes (default 16 MiB). */
  maxFrameBytes?: number;
  /**
   * How many connections may be open at once (default 1024), counting every
   * socket, authenticated or not, workers' proxy connections included. A
   * connection past it is refused at once: its client gets a `ClosedError`
   * saying the server is full.
   */
  maxConnections?: number;
  /**
   * Serve over TLS (`Deno.listenTls`) with this certificate chain and
   * private key, both PEM; clients connect with `Manager.connect({ tls })`.
   * A plain client is refused at once (it reports that the server speaks
   * TLS).
   */
  tls?: { cert: string; key: string };
  /**
   * Gets each connection, refused client and disconnect (and accept errors
   * the server retries past). Nothing is logged without it; the `serve` CLI
   * prints them on stderr. Must not throw (a throw is ignored).
   */
  onEvent?: (event: ServeEvent) => void;
}

/**
 * A manager server listening on TCP, made by {@linkcode serve}.
 *
 * @example Usage
 * ```ts
 * import { Manager, serve } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using server = await serve({ port: 0, authkey: "secret" });
 * await using m = await Manager.connect({ port: server.addr.port, authkey: "secret" });
 * const d = await m.dict({ a: 1 });
 * assert.equal(await d.get("a"), 1);
 * ```
 */
export class ManagerServer implements AsyncDisposable {
  readonly #core: ServerCore;
  readonly #tcp: TcpServer;

  /**
   * Wraps a running server (made by {@linkcode serve}).
   *
   * @param core The core (internal).
   * @param tcp The listener (internal).
   */
  constructor(core: unknown, tcp: unknown) {
    if (!(core instanceof ServerCore)) {
      throw new TypeError("Cannot make a ManagerServer directly: use serve()");
    }
    this.#core = core;
    this.#tcp = tcp as TcpServer;
  }

  /** Where it listens. */
  get addr(): { hostname: string; port: number } {
    return this.#tcp.addr;
  }

  /** Returns the live object and connection counts. */
  stats(): ServerStats {
    return this.#core.stats();
  }

  /** Resolves when the server has stopped. */
  get finished(): Promise<void> {
    return this.#tcp.finished;
  }

  /** Stops listening, disconnects every client and frees every object. */
  shutdown(): Promise<void> {
    return this.#tcp.shutdown();
  }

  /** Same as {@linkcode ManagerServer.shutdown}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}

/**
 * Starts a manager server on TCP (or TLS, with `tls`) in this thread.
 * Clients authenticate with a mutual HMAC-SHA256 challenge-response (see
 * `docs/manager-protocol.md`); a client with a wrong key gets
 * `AuthenticationError`; a peer that sends anything malformed gets an
 * error or loses its connection, and every other client is served on. At
 * most `maxConnections` connections are open at once (the excess is
 * refused at once), and no accept error (out of file descriptors, say)
 * stops the server from accepting later connections.
 *
 * @example Usage
 * ```ts
 * import { serve } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * const server = await serve({ port: 0, authkey: "secret" });
 * assert.equal(server.addr.hostname, "127.0.0.1");
 * await server.shutdown();
 * ```
 *
 * @param options Where, the key, user types, limits, TLS and logging.
 * @returns The running server.
 * @throws {TypeError} If `authkey` is not a non-empty string or bytes, or
 *   `tls` is not `{ cert, key }` with PEM strings Deno accepts.
 * @throws {RangeError} If `port` or `maxConnections` is out of range.
 */
export async function serve(options: ServeOptions): Promise<ManagerServer> {
  const authkey = authkeyBytes(options?.authkey, "serve");
  const port = checkPort(options.port, 0, "serve");
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  if (!Number.isInteger(maxConnections) || maxConnections < 1) {
    throw new RangeError(
      `Cannot serve: maxConnections must be a positive integer, received ${
        describeValue(options.maxConnections)
      }`,
    );
  }
  const tls = checkTls(options.tls);
  if (options.onEvent !== undefined && typeof options.onEvent !== "function") {
    throw new TypeError(
      `Cannot serve: onEvent must be a function, received ${
        describeValue(options.onEvent)
      }`,
    );
  }
  const core = new ServerCore();
  core.hosted = await loadRegister(options.register);
  let tcp: TcpServer;
  try {
    tcp = startTcpServer(core, {
      hostname: options.hostname ?? "127.0.0.1",
      port,
      authkey,
      maxFrameBytes: options.maxFrameBytes,
      maxConnections,
      tls,
      onEvent: options.onEvent,
    });
  } catch (e) {
    core.close();
    if (tls && e instanceof Error && !(e instanceof Deno.errors.AddrInUse)) {
      throw new TypeError(
        `Cannot serve over TLS: the certificate or key was refused (${e.message})`,
        { cause: e },
      );
    }
    throw e;
  }
  return new ManagerServer(core, tcp);
}

/**
 * Checks the `tls` option of {@linkcode serve}.
 *
 * @param tls The option.
 * @returns The certificate and key, or `undefined` for plain TCP.
 * @throws {TypeError} If it is not `{ cert, key }` with two PEM strings.
 */
function checkTls(
  tls: unknown,
): { cert: string; key: string } | undefined {
  if (tls === undefined) return undefined;
  const t = (typeof tls === "object" && tls !== null ? tls : {}) as Record<
    string,
    unknown
  >;
  if (
    typeof t.cert !== "string" || !t.cert.includes("-----BEGIN") ||
    typeof t.key !== "string" || !t.key.includes("-----BEGIN")
  ) {
    throw new TypeError(
      `Cannot serve over TLS: tls must be { cert, key } with PEM strings, received ${
        typeof tls === "object" && tls !== null
          ? `{ cert: ${describeValue(t.cert)}, key: ${
            typeof t.key === "string" ? "a string" : describeValue(t.key)
          } }`
          : describeValue(tls)
      }`,
    );
  }
  return { cert: t.cert, key: t.key };
}

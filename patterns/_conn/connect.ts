/**
 * `connect`: Python's `multiprocessing.connection.Client` — a socket
 * `Connection` to a `Listener` (ours, or Python's with `wire: "python"`),
 * authenticated both ways, within one timeout for connecting, TLS and the
 * handshake.
 *
 * @module
 */

import { checkTimeout, timerFor, withDeadline } from "../_core/deadline.ts";
import { timeoutError } from "../_core/errors.ts";
import { authkeyBytes } from "../_manager/handshake.ts";
import { FrameStream } from "./frame_stream.ts";
import { HANDSHAKE_MAX_BYTES, runHandshake } from "./handshake.ts";
import {
  checkMaxMessage,
  checkPort,
  checkWire,
  HANDSHAKE_TIMEOUT,
  noDelay,
} from "./options.ts";
import { SocketConnection, type Wire } from "./socket_connection.ts";
import type { Connection } from "../pipe.ts";

/**
 * Options of {@linkcode connect}.
 *
 * @example Usage
 * ```ts
 * import { connect, type ConnectOptions, listen } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * await using listener = await listen({ port: 0, authkey: "secret" });
 * const options: ConnectOptions = {
 *   port: listener.addr.port,
 *   authkey: "secret",
 *   timeout: 5000,
 * };
 * const [client, server] = await Promise.all([connect(options), listener.accept()]);
 * client.send("hi");
 * assert.equal(await server.recv(), "hi");
 * client.close();
 * server.close();
 * ```
 */
export interface ConnectOptions {
  /**
   * The listener's host.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** The listener's port. */
  port: number;
  /** The shared secret: a non-empty string or `Uint8Array`. */
  authkey: string | Uint8Array;
  /** Connect over TLS, trusting these CA certificates (PEM) too. */
  tls?: { caCerts?: string[] };
  /**
   * How long connecting and the handshake may take, in ms.
   *
   * @default {10000}
   */
  timeout?: number;
  /** Aborts connecting with its reason. */
  signal?: AbortSignal;
  /**
   * The listener's format: `"dmp"` or `"python"` (see
   * {@linkcode ListenOptions.wire}).
   *
   * @default {"dmp"}
   */
  wire?: Wire;
  /**
   * The largest message the listener may send, in bytes.
   *
   * @default {1073741824}
   */
  maxMessageBytes?: number;
}

/**
 * Connects to a {@linkcode Listener} (or to a Python `Listener` with
 * `wire: "python"`) and authenticates both ways: Python's
 * `multiprocessing.connection.Client(address, authkey=…)`.
 *
 * @param options Where to connect, the authkey, TLS, the timeout and the
 *   wire.
 * @returns The connection.
 * @throws {AuthenticationError} If either side does not know the key, or
 *   the peer speaks another protocol.
 * @throws {DOMException} Named `TimeoutError` past the timeout.
 * @throws {TypeError} If an option is malformed.
 */
export async function connect(options: ConnectOptions): Promise<Connection> {
  const key = authkeyBytes(options?.authkey, "connect");
  const port = checkPort(options.port, "connect");
  const wire = checkWire(options.wire, "connect");
  const max = checkMaxMessage(options.maxMessageBytes, "connect");
  const timeout = checkTimeout(options.timeout ?? HANDSHAKE_TIMEOUT, "connect");
  const hostname = options.hostname ?? "127.0.0.1";
  const peer = `${hostname}:${port}`;
  const deadline = performance.now() + timeout;
  // One signal for the caller's abort and the timeout.
  const timer = new AbortController();
  const t = timerFor(
    timeout,
    () =>
      timer.abort(
        timeoutError(
          `Cannot connect to ${peer}: no connection within ${timeout} ms`,
        ),
      ),
  );
  const signal = options.signal
    ? AbortSignal.any([options.signal, timer.signal])
    : timer.signal;
  let conn: Deno.Conn | undefined;
  let stream: FrameStream | undefined;
  try {
    conn = await Deno.connect({ hostname, port, signal });
    noDelay(conn);
    if (options.tls) {
      const starting = Deno.startTls(conn as Deno.TcpConn, {
        hostname,
        ...(options.tls.caCerts ? { caCerts: options.tls.caCerts } : {}),
      });
      conn = await withDeadline(starting, { signal }, "connect").catch((e) => {
        // Aborted first: a TLS connection that still comes is closed.
        starting.then((tls) => tls.close(), () => {});
        throw e;
      });
    }
    stream = new FrameStream(conn, HANDSHAKE_MAX_BYTES, wire === "python");
    stream.stepwise = true;
    await runHandshake(stream, wire, "client", key, {
      peer,
      deadline,
      timeout,
      signal,
      maxBytes: max,
    });
    stream.maxBytes = max;
    stream.stepwise = false;
    return new SocketConnection(stream, wire, peer);
  } catch (e) {
    if (stream) {
      // Nothing queued matters now, and a pending write may never finish
      // (a TLS handshake the server never answers).
      stream.abort();
      await stream.done;
    } else {
      try {
        conn?.close();
      } catch {
        // already closed
      }
    }
    throw e;
  } finally {
    if (t !== undefined) clearTimeout(t);
  }
}

/**
 * The manager's TCP transport: {@linkcode startTcpServer} listens, runs the
 * server half of the handshake on each connection, then feeds the
 * authenticated client's frames to a {@linkcode ServerCore}.
 *
 * @module
 */

import { FramedSocket } from "../frames.ts";
import { hmacKey, serverHandshake } from "../handshake.ts";
import { debug } from "../../_core/debug.ts";
import { DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME } from "../protocol.ts";
import type { Conn } from "./call.ts";
import type { ServerCore } from "./core.ts";

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
 * Each connection first runs the server half of the handshake
 * (`serverHandshake` in `../handshake.ts`, see `docs/manager-protocol.md`);
 * a client that fails it is closed.
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
      const authenticated = await serverHandshake(socket, key, {
        timeout: options.handshakeTimeout ?? 10_000,
        maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME,
      });
      const peer = (() => {
        const a = tcp.remoteAddr as Deno.NetAddr;
        return `${a.hostname}:${a.port}`;
      })();
      if (!authenticated) {
        debug(`manager: refused ${peer}: wrong authkey or bad handshake`);
        return;
      }
      debug(`manager: connection from ${peer}`);
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
      // Ends with the stream, also on an oversized frame (a FrameError in
      // socket.error): the stream cannot be trusted any more.
      await socket.done;
      core.disconnect(conn);
      debug(`manager: ${peer} disconnected`);
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

/**
 * The manager's TCP transport: {@linkcode startTcpServer} listens (plain
 * TCP or TLS), runs the server half of the handshake on each connection,
 * then feeds the authenticated client's frames to a {@linkcode ServerCore}.
 * It owns what keeps the server accepting: a transient accept error (out of
 * file descriptors) is retried with a back-off, connections past
 * `maxConnections` are refused at once with a frame the client reports, and
 * every connection counts from the moment it is accepted.
 *
 * @module
 */

import { frame, FramedSocket } from "../frames.ts";
import { hmacKey, serverHandshake } from "../handshake.ts";
import { debug } from "../../_core/debug.ts";
import { withDeadline } from "../../_core/deadline.ts";
import { DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME } from "../protocol.ts";
import type { Conn } from "./call.ts";
import type { ServerCore } from "./core.ts";

/**
 * Something that happened to a connection of a manager server, handed to
 * `serve({ onEvent })` (the `serve` CLI prints them; a library user gets
 * silence unless it asks). `peer` is `"host:port"`.
 *
 * @example Usage
 * ```ts
 * import { Manager, serve, type ServeEvent } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * const events: ServeEvent[] = [];
 * await using server = await serve({
 *   port: 0,
 *   authkey: "secret",
 *   onEvent: (e) => events.push(e),
 * });
 * const m = await Manager.connect({ port: server.addr.port, authkey: "secret" });
 * await m.shutdown();
 * while (events.length < 2) await new Promise((r) => setTimeout(r, 5));
 * assert.deepEqual(events.map((e) => e.type), ["connect", "disconnect"]);
 * ```
 */
export type ServeEvent =
  | { type: "connect"; peer: string }
  | { type: "disconnect"; peer: string }
  | { type: "refused"; peer: string; reason: string }
  | { type: "acceptError"; reason: string };

/**
 * A server event in words, as the `serve` CLI and `MP_DEBUG` print it.
 *
 * @param e The event.
 * @returns One line.
 */
export function describeServeEvent(e: ServeEvent): string {
  switch (e.type) {
    case "connect":
      return `connection from ${e.peer}`;
    case "disconnect":
      return `disconnected ${e.peer}`;
    case "refused":
      return `refused ${e.peer}: ${e.reason}`;
    case "acceptError":
      return e.reason;
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
  /** How long a client may take to authenticate, in ms (TLS included). */
  handshakeTimeout?: number;
  /** How many connections may be open at once (default 1024). */
  maxConnections?: number;
  /** Serve over TLS with this certificate chain and key (PEM). */
  tls?: { cert: string; key: string };
  /** Gets each connection, refusal and disconnect. */
  onEvent?: (event: ServeEvent) => void;
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

/** The default of {@linkcode TcpServerOptions.maxConnections}. */
export const DEFAULT_MAX_CONNECTIONS = 1024;

/** The first pause after a failed accept, in ms (it doubles). */
const FIRST_BACKOFF = 10;
/**
 * The longest pause between accept attempts, in ms: short enough that a
 * server that ran out of file descriptors serves again soon after some are
 * freed, long enough that retrying costs nothing.
 */
const MAX_BACKOFF = 250;
/** How long a refused connection may take to read its refusal, in ms. */
const REFUSAL_LINGER = 1000;
/**
 * How many refusals may be in flight at once; past that, an excess
 * connection is closed without a word (a flood must not cost descriptors).
 */
const MAX_REFUSING = 64;

/**
 * Sets up Deno's signal machinery now, while descriptors are free. Deno
 * 2.9.6 registers a signal handler of its own some 0.5 s after start, and
 * that first registration opens a pipe: out of file descriptors then, the
 * whole process panics (measured under `ulimit -n 256`). Adding and
 * removing a listener for SIGWINCH (ignored by default, so nothing
 * changes) takes those descriptors at once.
 */
function initSignals(): void {
  if (Deno.build.os === "windows") return;
  try {
    const noop = () => {};
    Deno.addSignalListener("SIGWINCH", noop);
    Deno.removeSignalListener("SIGWINCH", noop);
  } catch {
    // not available here: nothing to protect
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Listens on TCP (or TLS) and serves authenticated clients with `core`.
 *
 * Each connection first runs the server half of the handshake
 * (`serverHandshake` in `../handshake.ts`, see `docs/manager-protocol.md`);
 * a client that fails it is closed. No accept error but the listener's own
 * close ends the accept loop.
 *
 * @param core The server.
 * @param options Where, with which key, and the limits.
 * @returns The server.
 * @throws {Deno.errors.AddrInUse} Or another listen error, as Deno throws
 *   it; an unusable TLS certificate or key as Deno reports it.
 */
export function startTcpServer(
  core: ServerCore,
  options: TcpServerOptions,
): TcpServer {
  initSignals();
  const tls = options.tls;
  const listener: Deno.Listener = tls
    ? Deno.listenTls({
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
      cert: tls.cert,
      key: tls.key,
    })
    : Deno.listen({
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
    });
  const addr = listener.addr as Deno.NetAddr;
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const handshakeTimeout = options.handshakeTimeout ?? 10_000;
  /**
   * Every accepted connection still open, authenticated or not, with its
   * framed socket once it has one (the socket then owns closing it).
   */
  const open = new Map<Deno.Conn, FramedSocket | undefined>();
  const refusing = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const keyPromise = hmacKey(options.authkey);
  keyPromise.catch(() => {});
  let count = 0;
  let stopping = false;
  let wake: (() => void) | undefined;

  function emit(event: ServeEvent): void {
    debug(`manager: ${describeServeEvent(event)}`);
    try {
      options.onEvent?.(event);
    } catch {
      // A failing logger must not stop the server.
    }
  }

  /** Reports a refused connection (not those a stopping server drops). */
  function refused(peer: string, reason: string): void {
    if (!stopping) emit({ type: "refused", peer, reason });
  }

  function track(t: Promise<void>): void {
    tasks.add(t);
    t.finally(() => tasks.delete(t));
  }

  function peerOf(conn: Deno.Conn): string {
    const a = conn.remoteAddr as Deno.NetAddr;
    return `${a.hostname}:${a.port}`;
  }

  /** The TLS handshake within the handshake timeout; a reason if it failed. */
  async function tlsHandshake(conn: Deno.TlsConn): Promise<string | null> {
    try {
      const done = await withDeadline(
        conn.handshake().then(() => true),
        { timeout: handshakeTimeout },
        "finish the TLS handshake",
        () => ({ value: false }),
      );
      return done ? null : `no TLS handshake within ${handshakeTimeout} ms`;
    } catch (e) {
      return `TLS handshake failed (${describeError(e)})`;
    }
  }

  async function handle(conn: Deno.Conn, peer: string): Promise<void> {
    const start = performance.now();
    let socket: FramedSocket | undefined;
    try {
      if (tls) {
        const failed = await tlsHandshake(conn as Deno.TlsConn);
        if (failed) return refused(peer, failed);
      } else {
        try {
          (conn as Deno.TcpConn).setNoDelay(true);
        } catch {
          // not fatal
        }
      }
      if (stopping) return;
      socket = new FramedSocket(conn, HANDSHAKE_MAX_FRAME);
      open.set(conn, socket);
      const key = await keyPromise;
      let reason = "bad handshake";
      const authenticated = await serverHandshake(socket, key, {
        // One deadline for the TLS handshake and this one together.
        timeout: Math.max(1, handshakeTimeout - (performance.now() - start)),
        maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME,
        onRefused: (r) => reason = r,
      });
      if (!authenticated) return refused(peer, reason);
      emit({ type: "connect", peer });
      const s = socket;
      const client: Conn = {
        ownerBase: `R${++count}`,
        threadId: 0,
        refs: new Map(),
        waiters: new Map(),
        closed: false,
        send: (m) => s.send(m),
        closeTransport: () => {
          s.close().catch(() => {});
        },
      };
      core.open(client);
      socket.onBadFrame = (e) => core.replyError(client, 0, e);
      socket.onMessage = (m) => core.message(client, m);
      socket.drain();
      // Ends with the stream, also on an oversized frame (a FrameError in
      // socket.error): the stream cannot be trusted any more.
      await socket.done;
      core.disconnect(client);
      emit({ type: "disconnect", peer });
    } catch {
      // A peer that misbehaves only loses its own connection.
    } finally {
      if (socket) await socket.close().catch(() => {});
      else closeQuietly(conn);
      open.delete(conn);
    }
  }

  /**
   * Tells an excess connection the server is full, then closes it. It
   * half-closes and reads what the client still sends until it hangs up
   * (at most {@linkcode REFUSAL_LINGER}): closing with unread bytes would
   * reset the connection and could lose the refusal on the way.
   */
  async function refuse(conn: Deno.Conn, peer: string): Promise<void> {
    refused(peer, `the server is full (maxConnections ${maxConnections})`);
    if (refusing.size >= MAX_REFUSING) {
      closeQuietly(conn);
      return;
    }
    refusing.add(conn);
    const timer = setTimeout(() => closeQuietly(conn), REFUSAL_LINGER);
    try {
      const bytes = frame({
        e: {
          name: "ClosedError",
          message:
            `Cannot connect: the server is full (it serves at most ${maxConnections} connections at once)`,
        },
      });
      let off = 0;
      while (off < bytes.length) off += await conn.write(bytes.subarray(off));
      await conn.closeWrite();
      const sink = new Uint8Array(512);
      while (await conn.read(sink) !== null) {
        // discard
      }
    } catch {
      // The peer left, or the linger timer closed it.
    } finally {
      clearTimeout(timer);
      closeQuietly(conn);
      refusing.delete(conn);
    }
  }

  /** Waits `ms`, or less when the server stops. */
  function pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        wake = undefined;
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      };
    });
  }

  const finished = (async () => {
    let backoff = 0;
    while (!stopping) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (
          stopping || e instanceof Deno.errors.BadResource ||
          e instanceof Deno.errors.Interrupted
        ) break;
        // Out of file descriptors, a connection aborted before it was
        // accepted…: transient. Retry after a pause that doubles.
        backoff = backoff === 0
          ? FIRST_BACKOFF
          : Math.min(backoff * 2, MAX_BACKOFF);
        if (backoff === FIRST_BACKOFF) {
          const reason = `cannot accept connections (${
            describeError(e)
          }): retrying`;
          emit({ type: "acceptError", reason });
        }
        await pause(backoff);
        continue;
      }
      backoff = 0;
      if (stopping) {
        conn.close();
        break;
      }
      let peer = "unknown";
      try {
        peer = peerOf(conn);
      } catch {
        // no address: keep the placeholder
      }
      if (open.size >= maxConnections) {
        track(refuse(conn, peer));
        continue;
      }
      open.set(conn, undefined);
      track(handle(conn, peer));
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
        wake?.();
        core.close();
        for (const [c, s] of open) {
          if (s) s.close().catch(() => {});
          else closeQuietly(c);
        }
        for (const c of refusing) closeQuietly(c);
      }
      await finished;
    },
  };
}

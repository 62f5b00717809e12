/**
 * The client's two transports: a shared-memory link to an embedded server
 * (with the reply pump that spins, then sleeps) and a framed TCP (or TLS)
 * socket to a remote one, opened by {@linkcode connectSocket} within one
 * deadline (the handshake itself is `handshake.ts`'s).
 *
 * @module
 */

import { timerFor } from "../_core/deadline.ts";
import {
  AuthenticationError,
  describeValue,
  timeoutError,
} from "../_core/errors.ts";
import { holdEventLoop } from "../_core/wait.ts";
import { isThreadAlive } from "../_core/runtime.ts";
import { FramedSocket } from "./frames.ts";
import { clientHandshake } from "./handshake.ts";
import { Link, SEQ, SLEEPING } from "./link.ts";
import { SpinPolicy } from "../_core/wait.ts";
import { HANDSHAKE_MAX_FRAME, type LinkMemory } from "./protocol.ts";

/** How a client sends to its server and holds the event loop while waiting. */
export interface Transport {
  /** Sends one message. */
  send(message: unknown, transfer?: Transferable[]): void;
  /** Keeps the event loop alive (a call is pending). */
  ref(): void;
  /** Lets the event loop end (nothing is pending). */
  unref(): void;
  /** Says goodbye and closes. */
  close(): Promise<void>;
}

/**
 * The longest spin of a local client on its reply ring before it sleeps, in
 * loads (adaptive: it halves after spins that did not pay off).
 */
const CLIENT_SPIN = 20_000;

/** The transport to an embedded server, whose replies are pumped. */
export interface LocalTransport extends Transport {
  /** Starts reading replies (after a call was sent). */
  kick(): void;
}

/** A link to an embedded server over shared rings, woken through `bellSab`. */
export function linkTransport(
  port: MessagePort,
  mem: LinkMemory,
  bellSab: SharedArrayBuffer,
  serverThread: number,
  onMessage: (m: unknown) => void,
  pending: () => number,
  onDead: () => void,
): LocalTransport {
  const bell = new Int32Array(bellSab, 0, 2);
  const link = new Link(mem, "client", port, onMessage, () => {
    Atomics.add(bell, 0, 1);
    if (Atomics.load(bell, 1) !== 0) Atomics.notify(bell, 0);
  });
  (port as MessagePort & { unref?(): void }).unref?.();
  const ctrl = link.in.ctrl;
  const spin = new SpinPolicy(CLIENT_SPIN, { adaptive: true });
  let closed = false;
  let pumping: Promise<void> | undefined;
  const pump = async (): Promise<void> => {
    let release: (() => void) | undefined;
    try {
      while (pending() > 0 && !closed) {
        if (link.service()) continue;
        const seq = Atomics.load(ctrl, SEQ);
        if (link.in.spinForData(spin)) continue;
        Atomics.store(ctrl, SLEEPING, 1);
        if (!link.in.hasData() && !closed) {
          release ??= holdEventLoop();
          const r = Atomics.waitAsync(ctrl, SEQ, seq, 250);
          if (r.async && (await r.value) === "timed-out") {
            if (serverThread > 0 && !isThreadAlive(serverThread)) onDead();
          }
        }
        Atomics.store(ctrl, SLEEPING, 0);
      }
    } finally {
      release?.();
      pumping = undefined;
    }
  };
  return {
    send: (m, transfer) => link.send(m, transfer),
    ref: () => {},
    unref: () => {},
    kick: () => {
      if (pumping) return;
      pumping = Promise.resolve().then(pump);
    },
    close: async () => {
      if (!closed) {
        link.send({ x: "bye" });
        closed = true;
        Atomics.add(ctrl, SEQ, 1);
        Atomics.notify(ctrl, SEQ);
      }
      await pumping;
      link.close();
    },
  };
}

/** Where a remote server listens, and its key. */
export interface RemoteParams {
  /** The server's host. */
  hostname: string;
  /** The server's port. */
  port: number;
  /** The shared secret. */
  authkey: Uint8Array;
  /**
   * Connect over TLS; `caCerts` (PEM) are trusted besides the system's
   * roots (a self-signed server certificate goes here).
   */
  tls?: { caCerts?: string[] };
}

/**
 * Checks the `tls` option of a client (`Manager.connect`).
 *
 * @param tls The option.
 * @param what The call, for the error message.
 * @returns A copy, or `undefined` for plain TCP.
 * @throws {TypeError} If it is not `{ caCerts? }` with PEM strings.
 */
export function checkClientTls(
  tls: unknown,
  what: string,
): { caCerts?: string[] } | undefined {
  if (tls === undefined) return undefined;
  const caCerts = typeof tls === "object" && tls !== null
    ? (tls as { caCerts?: unknown }).caCerts
    : null;
  if (
    caCerts === undefined ||
    (Array.isArray(caCerts) &&
      caCerts.every((c) => typeof c === "string" && c.includes("-----BEGIN")))
  ) {
    return caCerts === undefined ? {} : { caCerts: [...caCerts] };
  }
  throw new TypeError(
    `Cannot ${what} over TLS: tls must be { caCerts?: string[] } with PEM certificates, received ${
      caCerts === null
        ? describeValue(tls)
        : `caCerts ${describeValue(caCerts)}`
    }`,
  );
}

/**
 * Opens the TCP connection, and the TLS session over it when asked, within
 * `timeout` ms; a TLS failure is an `AuthenticationError` naming TLS.
 */
async function openConn(
  params: RemoteParams,
  timeout: number,
  peer: string,
): Promise<Deno.Conn> {
  const abort = new AbortController();
  let timedOut = false;
  const timer = timerFor(timeout, () => {
    timedOut = true;
    abort.abort();
  });
  let tcp: Deno.TcpConn | undefined;
  try {
    tcp = await Deno.connect({
      hostname: params.hostname,
      port: params.port,
      transport: "tcp",
      signal: abort.signal,
    });
    try {
      tcp.setNoDelay(true);
    } catch {
      // not fatal
    }
    if (!params.tls) return tcp;
    const conn = await Deno.startTls(tcp, {
      hostname: params.hostname,
      caCerts: params.tls.caCerts,
    });
    tcp = undefined; // the TLS connection owns it now
    const closeOnAbort = () => {
      try {
        conn.close();
      } catch {
        // already closed
      }
    };
    abort.signal.addEventListener("abort", closeOnAbort, { once: true });
    try {
      await conn.handshake();
    } catch (e) {
      closeOnAbort();
      if (timedOut) throw e;
      const message = e instanceof Error ? e.message : String(e);
      throw new AuthenticationError(
        `Cannot connect to ${peer} over TLS: the TLS handshake failed (${message})${
          /InvalidContentType|corrupt message/i.test(message)
            ? ": the server does not speak TLS (connect without the tls option)"
            : ""
        }`,
        { cause: e },
      );
    } finally {
      abort.signal.removeEventListener("abort", closeOnAbort);
    }
    return conn;
  } catch (e) {
    try {
      tcp?.close();
    } catch {
      // already closed
    }
    if (timedOut) {
      throw timeoutError(
        `Cannot connect to ${peer}: no ${
          params.tls ? "TLS " : ""
        }connection within ${timeout} ms`,
      );
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connects to a remote server (over TLS when `params.tls` is set) and runs
 * the client half of the handshake, all within `timeout` ms; resolves to
 * the authenticated socket and the server's id.
 */
export async function connectSocket(
  params: RemoteParams,
  timeout: number,
): Promise<{ socket: FramedSocket; serverId: string }> {
  const peer = `${params.hostname}:${params.port}`;
  const start = performance.now();
  const conn = await openConn(params, timeout, peer);
  const socket = new FramedSocket(conn, HANDSHAKE_MAX_FRAME);
  const challenge = await clientHandshake(socket, params.authkey, {
    peer,
    timeout: Math.max(1, timeout - (performance.now() - start)),
    tls: params.tls !== undefined,
  });
  return { socket, serverId: `tcp:${challenge}` };
}

/** The transport over an authenticated socket to a remote server. */
export function socketTransport(
  socket: FramedSocket,
  tcpRef: { ref(): void; unref(): void },
  onMessage: (m: unknown) => void,
  onClose: () => void,
): Transport {
  socket.onMessage = onMessage;
  socket.onClose = onClose;
  socket.drain();
  tcpRef.unref();
  return {
    send: (m) => socket.send(m),
    ref: () => tcpRef.ref(),
    unref: () => tcpRef.unref(),
    close: () => socket.close(),
  };
}

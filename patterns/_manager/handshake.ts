/**
 * The manager's TCP handshake, a mutual HMAC-SHA256 challenge-response
 * (see `docs/manager-protocol.md`): the client opens with an empty frame
 * (ignored by a plain server, refused at once by a TLS one); the server
 * sends `{ proto, version, challenge }` (or `{ e }`, a refusal, when it is
 * full); the client answers `{ proto, version, response, challenge }` with
 * `response = HMAC(key, "dmp-manager/1 client <server nonce> <client
 * nonce>")`; the server checks it in constant time and answers `{ ok: true,
 * response }` with its own proof (role `server`), or `{ e }` and closes.
 * Before that, anything that is not the expected message (a frame that is
 * not JSON, another protocol) ends the handshake at once. Both halves live
 * here, with the key and proof helpers they share.
 *
 * ```ts
 * import {
 *   clientHandshake,
 *   hmacKey,
 *   serverHandshake,
 * } from "./handshake.ts";
 * import { FramedSocket } from "./frames.ts";
 * import { HANDSHAKE_MAX_FRAME } from "./protocol.ts";
 * import { strict as assert } from "node:assert";
 *
 * const authkey = new TextEncoder().encode("secret");
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = listener.accept();
 * const client = new FramedSocket(
 *   await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
 *   HANDSHAKE_MAX_FRAME,
 * );
 * const server = new FramedSocket(await accepted, HANDSHAKE_MAX_FRAME);
 * const [ok, serverNonce] = await Promise.all([
 *   serverHandshake(server, await hmacKey(authkey), {
 *     timeout: 1000,
 *     maxFrameBytes: 1 << 20,
 *   }),
 *   clientHandshake(client, authkey, { peer: "test", timeout: 1000 }),
 * ]);
 * assert.ok(ok);
 * assert.equal(typeof serverNonce, "string");
 * await client.close();
 * await server.close();
 * ```
 *
 * @module
 */

import { timerFor } from "../_core/deadline.ts";
import {
  AuthenticationError,
  ClosedError,
  describeValue,
  timeoutError,
} from "../_core/errors.ts";
import { toBase64 } from "./base64.ts";
import { type FramedSocket, FrameError, looksLikeTls } from "./frames.ts";
import { DEFAULT_MAX_FRAME, PROTOCOL, PROTOCOL_VERSION } from "./protocol.ts";
import type { ClientHello, ServerHello, ServerWelcome } from "./protocol.ts";

const encoder = new TextEncoder();

/**
 * Checks an authkey option and returns its bytes.
 *
 * @param authkey The key as given.
 * @param what The call, for the error message.
 * @returns The key's bytes.
 * @throws {TypeError} If it is not a non-empty string or `Uint8Array`.
 */
export function authkeyBytes(authkey: unknown, what: string): Uint8Array {
  if (typeof authkey === "string" && authkey.length > 0) {
    return encoder.encode(authkey);
  }
  if (authkey instanceof Uint8Array && authkey.length > 0) {
    return new Uint8Array(authkey);
  }
  throw new TypeError(
    `Cannot ${what}: authkey must be a non-empty string or Uint8Array, received ${
      authkey instanceof Uint8Array ? "an empty Uint8Array" : describeValue(
        authkey,
      )
    }`,
  );
}

/**
 * Imports an authkey as an HMAC-SHA256 key.
 *
 * @param key The key's bytes.
 * @returns The key.
 */
export function hmacKey(key: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
}

/**
 * The HMAC-SHA256 proof for one side of a handshake:
 * `HMAC(key, label + " " + role + " " + first + " " + second)` over the
 * base64 nonces, as base64. The label names the protocol and its version,
 * so a proof made for one protocol is no proof for another.
 *
 * @param label The protocol, e.g. `"dmp-manager/1"`.
 * @param key The HMAC key.
 * @param role Who proves (`"client"`, `"server"`, `"listener"`).
 * @param first The verifier's nonce.
 * @param second The prover's nonce.
 * @returns The proof, base64.
 */
export async function proofFor(
  label: string,
  key: CryptoKey,
  role: string,
  first: string,
  second: string,
): Promise<string> {
  const data = encoder.encode(`${label} ${role} ${first} ${second}`);
  const mac = await crypto.subtle.sign("HMAC", key, data);
  return toBase64(new Uint8Array(mac));
}

/**
 * The manager's proof for one side of its handshake (see
 * {@linkcode proofFor}): labelled `"dmp-manager/1"`.
 *
 * @param key The HMAC key.
 * @param role `"client"` or `"server"`: who proves.
 * @param first The verifier's nonce.
 * @param second The prover's nonce.
 * @returns The proof, base64.
 */
export function proof(
  key: CryptoKey,
  role: "client" | "server",
  first: string,
  second: string,
): Promise<string> {
  return proofFor(`${PROTOCOL}/${PROTOCOL_VERSION}`, key, role, first, second);
}

/**
 * A fresh random nonce (32 bytes, base64).
 *
 * @returns The nonce.
 */
export function nonce(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * Compares two strings in time that depends only on their lengths.
 *
 * @param a One string.
 * @param b The other.
 * @returns Whether they are equal.
 */
export function timingSafeEqual(a: unknown, b: string): boolean {
  if (typeof a !== "string") return false;
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) {
    diff |= (a.charCodeAt(i % (a.length || 1)) | 0) ^ b.charCodeAt(i);
  }
  return diff === 0;
}

/** What {@linkcode nextWithin} got. */
type Next =
  | { kind: "message"; message: unknown }
  | { kind: "closed"; error: Error | undefined }
  | { kind: "bad"; error: Error }
  | { kind: "timeout" };

/**
 * Waits for the socket's next message during the handshake: a message, the
 * end of the stream (with the read error, if any), a frame that did not
 * decode (the handshake ends at once: the peer speaks something else), or
 * the timeout after `ms`.
 */
function nextWithin(socket: FramedSocket, ms: number): Promise<Next> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const previous = socket.onBadFrame;
  return Promise.race([
    socket.next().then((message): Next =>
      message === undefined && socket.closed
        ? { kind: "closed", error: socket.error }
        : { kind: "message", message }
    ),
    new Promise<Next>((resolve) => {
      timer = timerFor(ms, () => resolve({ kind: "timeout" }));
      socket.onBadFrame = (error) => resolve({ kind: "bad", error });
    }),
  ]).finally(() => {
    clearTimeout(timer);
    socket.onBadFrame = previous;
  });
}

/**
 * Whether the stream ended on a frame length that is a TLS record's start:
 * the peer speaks TLS.
 */
function endedOnTls(n: Next): boolean {
  return n.kind === "closed" && n.error instanceof FrameError &&
    n.error.length !== undefined && looksLikeTls(n.error.length);
}

/** Why a handshake message was not usable, in words, for logs and errors. */
function describeNext(n: Next): string {
  switch (n.kind) {
    case "timeout":
      return "no answer in time";
    case "bad":
      return "a frame that is not UTF-8 JSON";
    case "closed":
      if (endedOnTls(n)) return "a TLS record (the peer speaks TLS)";
      if (n.error instanceof FrameError && n.error.length !== undefined) {
        return `a frame length of ${n.error.length} bytes (not this protocol)`;
      }
      return "a closed connection";
    case "message":
      return describeValue(n.message);
  }
}

function record(message: unknown): Record<string, unknown> {
  return (typeof message === "object" && message !== null
    ? message
    : {}) as Record<string, unknown>;
}

// -- Server half -------------------------------------------------------------

/** Options of {@linkcode serverHandshake}. */
export interface ServerHandshakeOptions {
  /** How long the client may take to answer, in ms. */
  timeout: number;
  /** The frame limit the socket gets once the client is authenticated. */
  maxFrameBytes: number;
  /** Gets why a client was refused, in words (for the server's log). */
  onRefused?: (reason: string) => void;
}

/**
 * The server's half of the handshake on a fresh socket: sends the
 * challenge, checks the client's proof in constant time, and answers with
 * its own proof, then raises the socket's frame limit. A client that speaks
 * another protocol, proves the wrong key or stays silent past the timeout
 * is sent `{ e }` (an `AuthenticationError`) instead, and its reason goes
 * to `options.onRefused`; the caller closes. A first frame that is not a
 * hello ends it at once (it does not wait for the timeout).
 *
 * @param socket The accepted connection (its frame limit still the
 *   handshake's).
 * @param key The authkey as an HMAC key ({@linkcode hmacKey}).
 * @param options The timeout and the frame limit after it.
 * @returns Whether the client was authenticated.
 */
export async function serverHandshake(
  socket: FramedSocket,
  key: CryptoKey,
  options: ServerHandshakeOptions,
): Promise<boolean> {
  const challenge = nonce();
  socket.send(
    {
      proto: PROTOCOL,
      version: PROTOCOL_VERSION,
      challenge,
    } satisfies ServerHello,
  );
  const next = await nextWithin(socket, options.timeout);
  const h = record(next.kind === "message" ? next.message : undefined);
  if (h.proto !== PROTOCOL || h.version !== PROTOCOL_VERSION) {
    options.onRefused?.(
      next.kind === "timeout"
        ? `no handshake within ${options.timeout} ms`
        : next.kind === "message"
        ? `not a ${PROTOCOL} version ${PROTOCOL_VERSION} hello (${
          describeValue(h.proto)
        } version ${describeValue(h.version)})`
        : `not a ${PROTOCOL} client (it sent ${describeNext(next)})`,
    );
    socket.send({
      e: {
        name: "AuthenticationError",
        message:
          `Cannot connect: the server speaks ${PROTOCOL} version ${PROTOCOL_VERSION}, the client sent ${
            describeValue(h.proto)
          } version ${describeValue(h.version)}`,
      },
    });
    return false;
  }
  const expected = await proof(key, "client", challenge, String(h.challenge));
  if (
    typeof h.challenge !== "string" || h.challenge.length > 100 ||
    !timingSafeEqual(h.response, expected)
  ) {
    options.onRefused?.("wrong authkey");
    socket.send({
      e: {
        name: "AuthenticationError",
        message: "Cannot connect: the server refused the authkey",
      },
    });
    return false;
  }
  socket.send(
    {
      ok: true,
      response: await proof(key, "server", h.challenge, challenge),
    } satisfies ServerWelcome,
  );
  socket.maxBytes = options.maxFrameBytes;
  return true;
}

// -- Client half -------------------------------------------------------------

/** Options of {@linkcode clientHandshake}. */
export interface ClientHandshakeOptions {
  /** The server as error messages name it, e.g. `"127.0.0.1:5000"`. */
  peer: string;
  /** How long to wait for each server message, in ms. */
  timeout: number;
  /** Whether the socket runs over TLS (see {@linkcode nudge}). */
  tls?: boolean;
}

/**
 * Sends empty frames at 1, 2, 4 … 64 ms until stopped. Over TLS the
 * server's greeting would otherwise sit about 40 ms in the server's kernel:
 * Deno's TLS server writes its session tickets first and cannot turn
 * Nagle's algorithm off, so the greeting waits for the tickets'
 * acknowledgement, which a client with nothing to send delays by 40 ms.
 * Each empty frame carries that acknowledgement at once (the server skips
 * empty frames).
 *
 * @param socket The client's socket.
 * @returns Stops the nudging.
 */
function nudge(socket: FramedSocket): () => void {
  let delay = 1;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const next = () => {
    timer = setTimeout(() => {
      socket.sendRaw(OPENING);
      delay *= 2;
      if (delay <= 64) next();
    }, delay);
  };
  next();
  return () => clearTimeout(timer);
}

/** The empty frame a client opens with (see the module doc). */
const OPENING = new Uint8Array(4);

/**
 * The client's half of the handshake on a fresh socket: opens with an
 * empty frame, checks the server's greeting, answers its challenge with a
 * proof and a challenge of its own, checks the server's proof in constant
 * time, then raises the socket's frame limit to
 * {@linkcode DEFAULT_MAX_FRAME}. On any failure the socket is closed before
 * the error is thrown; a peer that sends anything unexpected fails it at
 * once.
 *
 * @param socket The new connection (its frame limit still the
 *   handshake's).
 * @param authkey The shared secret's bytes ({@linkcode authkeyBytes}).
 * @param options How to name the server, and how long to wait.
 * @returns The server's nonce (it names this server's session).
 * @throws {AuthenticationError} If the peer does not speak the protocol
 *   (a TLS server to a plain client included), refuses the key, or fails
 *   to prove it knows it.
 * @throws {ClosedError} If the server refused the connection because it
 *   is full.
 * @throws {DOMException} A `TimeoutError` if the server does not answer in
 *   time.
 */
export async function clientHandshake(
  socket: FramedSocket,
  authkey: Uint8Array,
  options: ClientHandshakeOptions,
): Promise<string> {
  const { peer, timeout } = options;
  let stopNudging: (() => void) | undefined;
  const fail = async (error: Error): Promise<never> => {
    await socket.close().catch(() => {});
    throw error;
  };
  try {
    socket.sendRaw(OPENING);
    if (options.tls) stopNudging = nudge(socket);
    const key = await hmacKey(authkey);
    const next = await nextWithin(socket, timeout);
    stopNudging?.();
    if (next.kind === "timeout") {
      return await fail(timeoutError(
        `Cannot connect to ${peer}: no handshake within ${timeout} ms`,
      ));
    }
    const h = record(next.kind === "message" ? next.message : undefined);
    const refusal = record(h.e);
    if (typeof refusal.message === "string") {
      // Refused before the handshake: the server is full.
      const message = refusal.message.replace(
        /^Cannot connect:/,
        `Cannot connect to ${peer}:`,
      );
      return await fail(
        refusal.name === "ClosedError"
          ? new ClosedError(message)
          : new AuthenticationError(message),
      );
    }
    if (
      h.proto !== PROTOCOL || h.version !== PROTOCOL_VERSION ||
      typeof h.challenge !== "string"
    ) {
      return await fail(
        new AuthenticationError(
          endedOnTls(next)
            ? `Cannot connect to ${peer}: the server speaks TLS: connect with the tls option`
            : `Cannot connect to ${peer}: the peer does not speak ${PROTOCOL} version ${PROTOCOL_VERSION} (received ${
              describeNext(next)
            })`,
        ),
      );
    }
    const mine = nonce();
    socket.send(
      {
        proto: PROTOCOL,
        version: PROTOCOL_VERSION,
        response: await proof(key, "client", h.challenge, mine),
        challenge: mine,
      } satisfies ClientHello,
    );
    const answer = await nextWithin(socket, timeout);
    if (answer.kind === "timeout") {
      return await fail(timeoutError(
        `Cannot connect to ${peer}: no answer to the handshake within ${timeout} ms`,
      ));
    }
    const a = record(answer.kind === "message" ? answer.message : undefined);
    if (a.ok !== true) {
      const e = a.e as { message?: unknown } | undefined;
      return await fail(
        new AuthenticationError(
          typeof e?.message === "string"
            ? e.message
            : `Cannot connect to ${peer}: the server closed the connection during the handshake`,
        ),
      );
    }
    const expected = await proof(key, "server", mine, h.challenge);
    if (!timingSafeEqual(a.response, expected)) {
      return await fail(
        new AuthenticationError(
          `Cannot connect to ${peer}: the server failed to prove it knows the authkey`,
        ),
      );
    }
    socket.maxBytes = DEFAULT_MAX_FRAME;
    return h.challenge;
  } catch (e) {
    await socket.close().catch(() => {});
    throw e;
  } finally {
    stopNudging?.();
  }
}

/**
 * The authkey handshakes of `listen`/`connect`, both ways on a fresh
 * {@linkcode FrameStream}; each side proves it knows the key without
 * sending it, and each checks the other.
 *
 * - The `"dmp"` wire: the client says hello, the listener challenges; an
 *   HMAC-SHA256 challenge-response both ways in JSON frames, the
 *   manager's scheme (its key, nonce and comparison helpers are imported
 *   from `_manager/handshake.ts`) under its own protocol name
 *   `dmp-connection`, so a proof made for a manager is never valid here,
 *   and a manager client and a `Listener` tell each other apart clearly.
 * - The `"python"` wire: Python's `multiprocessing.connection` challenge —
 *   `#CHALLENGE#` + a random message, answered with its HMAC, then
 *   `#WELCOME#` or `#FAILURE#`. We send the 3.12+ form (`{sha256}` + 40
 *   random bytes) and accept both answers Python gives to it: the raw
 *   16-byte HMAC-MD5 of Python ≤ 3.11 and the `{sha256}…` of 3.12+. When
 *   answering, the form follows the challenge (a 20-byte one from Python ≤
 *   3.11 gets raw HMAC-MD5).
 *
 * @module
 */

import { createHmac, timingSafeEqual as bytesEqual } from "node:crypto";
import { AuthenticationError, timeoutError } from "../_core/errors.ts";
import {
  hmacKey,
  nonce,
  proofFor,
  timingSafeEqual,
} from "../_manager/handshake.ts";
import type { FrameStream } from "./frame_stream.ts";
import type { Wire } from "./socket_connection.ts";

/** The `"dmp"` wire's protocol name and version. */
export const CONNECTION_PROTOCOL = "dmp-connection";
/** The version of {@linkcode CONNECTION_PROTOCOL}. */
export const CONNECTION_VERSION = 1;
/** The largest handshake frame either wire accepts (Python reads ≤ 256). */
export const HANDSHAKE_MAX_BYTES = 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How long a handshake may take, and who the peer is (for messages). */
export interface HandshakeContext {
  /** The peer as messages name it, e.g. `"127.0.0.1:5000"`. */
  peer: string;
  /** The `performance.now()` by which the handshake must be done. */
  deadline: number;
  /** The total time allowed, for the timeout message. */
  timeout: number;
  /** Aborts the handshake with its reason. */
  signal?: AbortSignal | undefined;
  /**
   * The frame limit after the handshake, set as its last frame is taken:
   * the peer's first message may arrive in the same read as that frame.
   */
  maxBytes?: number;
}

/**
 * The next frame, or `undefined` when the peer closed. The stream parses
 * one frame at a time (`stepwise`) until the `last` one, after which the
 * peer may send its messages at once: those are parsed under
 * `ctx.maxBytes`, not the handshake's limit.
 */
async function nextFrame(
  stream: FrameStream,
  ctx: HandshakeContext,
  last = false,
): Promise<Uint8Array | undefined> {
  const left = Math.max(0, ctx.deadline - performance.now());
  if (!(await stream.waitReadable(left, ctx.signal))) {
    throw timeoutError(
      `Cannot connect to ${ctx.peer}: no handshake within ${ctx.timeout} ms`,
    );
  }
  if (last && stream.peek()) {
    if (ctx.maxBytes !== undefined) stream.maxBytes = ctx.maxBytes;
    stream.stepwise = false;
  }
  return stream.peek() ? stream.take() : undefined;
}

// -- The "dmp" wire ------------------------------------------------------------

/** A hint for a peer that hung up at once: TLS on one side only? */
function tlsHint(stream: FrameStream): string {
  const e = stream.error;
  return e
    ? ` (${e.message}; do both sides agree on TLS?)`
    : " (do both sides agree on TLS?)";
}

function sendJson(stream: FrameStream, message: unknown): void {
  stream.write(encoder.encode(JSON.stringify(message)));
}

function parseJson(frame: Uint8Array | undefined): Record<string, unknown> {
  if (!frame) return {};
  try {
    const v = JSON.parse(decoder.decode(frame));
    return typeof v === "object" && v !== null ? v : {};
  } catch {
    return {};
  }
}

const PYTHON_CHALLENGE = encoder.encode("#CHALLENGE#");

function startsWith(bytes: Uint8Array | undefined, prefix: Uint8Array) {
  if (!bytes || bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    if (bytes[i] !== prefix[i]) return false;
  }
  return true;
}

/** `HMAC-SHA256(key, "dmp-connection/1 <role> <first> <second>")`, base64. */
function proof(
  key: CryptoKey,
  role: "client" | "listener",
  first: string,
  second: string,
): Promise<string> {
  const label = `${CONNECTION_PROTOCOL}/${CONNECTION_VERSION}`;
  return proofFor(label, key, role, first, second);
}

/**
 * The listener's half on the `"dmp"` wire: challenge, check the client's
 * proof, answer with its own. A failing client is told why.
 *
 * @param stream The accepted connection.
 * @param authkey The key's bytes.
 * @param ctx The deadline and the peer's name.
 * @throws {AuthenticationError} If the client does not speak the protocol
 *   or proves another key.
 * @throws {DOMException} A `TimeoutError` past the deadline.
 */
export async function dmpListenerHandshake(
  stream: FrameStream,
  authkey: Uint8Array,
  ctx: HandshakeContext,
): Promise<void> {
  const key = await hmacKey(authkey);
  const challenge = nonce();
  sendJson(stream, {
    proto: CONNECTION_PROTOCOL,
    version: CONNECTION_VERSION,
    challenge,
  });
  const refuse = (message: string): never => {
    sendJson(stream, { e: { name: "AuthenticationError", message } });
    throw new AuthenticationError(message);
  };
  const hello = parseJson(await nextFrame(stream, ctx));
  if (
    hello.proto !== CONNECTION_PROTOCOL || hello.version !== CONNECTION_VERSION
  ) {
    refuse(
      `Cannot connect: the listener speaks ${CONNECTION_PROTOCOL} version ${CONNECTION_VERSION}`,
    );
  }
  const h = parseJson(await nextFrame(stream, ctx));
  const theirs = h.challenge;
  if (typeof theirs !== "string" || theirs.length > 100) {
    refuse("Cannot connect: the client sent no valid challenge");
  }
  const expected = await proof(key, "client", challenge, theirs as string);
  if (!timingSafeEqual(h.response, expected)) {
    refuse("Cannot connect: the listener refused the authkey");
  }
  sendJson(stream, {
    ok: true,
    response: await proof(key, "listener", theirs as string, challenge),
  });
}

/**
 * The client's half on the `"dmp"` wire: answer the challenge with a proof
 * and a challenge of its own, then check the listener's proof.
 *
 * @param stream The new connection.
 * @param authkey The key's bytes.
 * @param ctx The deadline and the peer's name.
 * @throws {AuthenticationError} If the peer speaks another protocol,
 *   refuses the key or fails to prove it knows it.
 * @throws {DOMException} A `TimeoutError` past the deadline.
 */
export async function dmpClientHandshake(
  stream: FrameStream,
  authkey: Uint8Array,
  ctx: HandshakeContext,
): Promise<void> {
  const key = await hmacKey(authkey);
  // Speak first: a TLS listener then fails at once on these bytes (instead
  // of both sides waiting for the other), and a listener of another
  // protocol sees who we are.
  sendJson(stream, { proto: CONNECTION_PROTOCOL, version: CONNECTION_VERSION });
  const first = await nextFrame(stream, ctx);
  const h = parseJson(first);
  if (
    h.proto !== CONNECTION_PROTOCOL || h.version !== CONNECTION_VERSION ||
    typeof h.challenge !== "string"
  ) {
    const what = startsWith(first, PYTHON_CHALLENGE)
      ? `it speaks Python's multiprocessing.connection protocol (connect with wire: "python")`
      : h.proto === "dmp-manager"
      ? "it is a manager server (use Manager.connect)"
      : first === undefined
      ? `it closed the connection${tlsHint(stream)}`
      : `it does not speak ${CONNECTION_PROTOCOL} version ${CONNECTION_VERSION}`;
    throw new AuthenticationError(`Cannot connect to ${ctx.peer}: ${what}`);
  }
  const mine = nonce();
  sendJson(stream, {
    proto: CONNECTION_PROTOCOL,
    version: CONNECTION_VERSION,
    response: await proof(key, "client", h.challenge, mine),
    challenge: mine,
  });
  // The listener may send right behind this frame.
  const a = parseJson(await nextFrame(stream, ctx, true));
  if (a.ok !== true) {
    const e = a.e as { message?: unknown } | undefined;
    throw new AuthenticationError(
      typeof e?.message === "string"
        ? e.message.replace("Cannot connect:", `Cannot connect to ${ctx.peer}:`)
        : `Cannot connect to ${ctx.peer}: the listener closed the connection during the handshake${
          tlsHint(stream)
        }`,
    );
  }
  const expected = await proof(key, "listener", mine, h.challenge);
  if (!timingSafeEqual(a.response, expected)) {
    throw new AuthenticationError(
      `Cannot connect to ${ctx.peer}: the listener failed to prove it knows the authkey`,
    );
  }
}

// -- The "python" wire ---------------------------------------------------------

const WELCOME = encoder.encode("#WELCOME#");
const FAILURE = encoder.encode("#FAILURE#");
/** Python's digest names (between braces) and node:crypto's for them. */
const DIGESTS: Record<string, string> = {
  md5: "md5",
  sha256: "sha256",
  sha384: "sha384",
  "sha3_256": "sha3-256",
  "sha3_384": "sha3-384",
};
/** The challenge lengths of Python ≤ 3.11, answered with raw HMAC-MD5. */
const LEGACY_LENGTHS = [16, 20];

function hmac(digest: string, key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac(digest, key).update(data).digest());
}

function equalBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && bytesEqual(a, b);
}

/**
 * Splits `{name}payload` into Python's digest name and the payload;
 * `undefined` when there is no known `{name}` prefix.
 */
function digestPrefix(
  message: Uint8Array,
): { digest: string; name: string; payload: Uint8Array } | undefined {
  if (message[0] !== 0x7b /* { */) return undefined;
  const close = message.indexOf(0x7d, /* } */ 1);
  if (close < 2 || close > 10) return undefined;
  const name = decoder.decode(message.subarray(1, close));
  if (!Object.hasOwn(DIGESTS, name)) return undefined;
  return { digest: DIGESTS[name]!, name, payload: message.subarray(close + 1) };
}

/** Whether `response` is a valid Python answer to our `message`. */
function pythonAnswerValid(
  key: Uint8Array,
  message: Uint8Array,
  response: Uint8Array | undefined,
): boolean {
  if (!response) return false;
  if (response.length === 16) {
    // Python <= 3.11: a raw HMAC-MD5 of the whole challenge message.
    return equalBytes(response, hmac("md5", key, message));
  }
  const p = digestPrefix(response);
  return p !== undefined && equalBytes(p.payload, hmac(p.digest, key, message));
}

/**
 * Python's `deliver_challenge`: sends a `{sha256}` challenge and checks the
 * answer (raw HMAC-MD5 or `{digest}HMAC`), then says `#WELCOME#`, or
 * `#FAILURE#` and throws.
 *
 * @param stream The connection.
 * @param authkey The key's bytes.
 * @param ctx The deadline and the peer's name.
 * @param role Who we are, for the message.
 * @throws {AuthenticationError} If the answer is wrong.
 * @throws {DOMException} A `TimeoutError` past the deadline.
 */
export async function pythonDeliverChallenge(
  stream: FrameStream,
  authkey: Uint8Array,
  ctx: HandshakeContext,
  role: "listener" | "client",
): Promise<void> {
  const message = new Uint8Array([
    ...encoder.encode("{sha256}"),
    ...crypto.getRandomValues(new Uint8Array(40)),
  ]);
  stream.write(PYTHON_CHALLENGE, message);
  const response = await nextFrame(stream, ctx);
  if (!pythonAnswerValid(authkey, message, response)) {
    stream.write(FAILURE);
    throw new AuthenticationError(
      response === undefined
        ? `Cannot connect to ${ctx.peer}: it closed the connection during the handshake`
        : role === "listener"
        ? `Cannot connect: the client ${ctx.peer} did not prove it knows the authkey`
        : `Cannot connect to ${ctx.peer}: the listener failed to prove it knows the authkey`,
    );
  }
  stream.write(WELCOME);
}

/**
 * Python's `answer_challenge`: answers the peer's challenge in the form it
 * asks for and expects `#WELCOME#`.
 *
 * @param stream The connection.
 * @param authkey The key's bytes.
 * @param ctx The deadline and the peer's name.
 * @throws {AuthenticationError} If the peer sends no valid challenge or
 *   refuses the answer.
 * @throws {DOMException} A `TimeoutError` past the deadline.
 */
export async function pythonAnswerChallenge(
  stream: FrameStream,
  authkey: Uint8Array,
  ctx: HandshakeContext,
  last = false,
): Promise<void> {
  const frame = await nextFrame(stream, ctx);
  if (!startsWith(frame, PYTHON_CHALLENGE)) {
    const json = parseJson(frame);
    throw new AuthenticationError(
      `Cannot connect to ${ctx.peer}: ${
        frame === undefined
          ? "it closed the connection"
          : json.proto === CONNECTION_PROTOCOL
          ? `it speaks the dmp wire, not Python's (leave wire unset)`
          : "it sent no Python multiprocessing.connection challenge"
      }`,
    );
  }
  const message = frame!.subarray(PYTHON_CHALLENGE.length);
  let answer: Uint8Array;
  if (LEGACY_LENGTHS.includes(message.length)) {
    answer = hmac("md5", authkey, message);
  } else {
    const p = digestPrefix(message);
    if (!p || message.length < 20) {
      throw new AuthenticationError(
        `Cannot connect to ${ctx.peer}: its challenge names no supported digest (${
          Object.keys(DIGESTS).join(", ")
        })`,
      );
    }
    answer = new Uint8Array([
      ...encoder.encode(`{${p.name}}`),
      ...hmac(p.digest, authkey, message),
    ]);
  }
  stream.write(answer);
  const reply = await nextFrame(stream, ctx, last);
  if (!equalBytes(reply, WELCOME)) {
    throw new AuthenticationError(
      `Cannot connect to ${ctx.peer}: the peer refused the authkey`,
    );
  }
}

// -- Either wire ---------------------------------------------------------------

/**
 * Runs the handshake of `wire` for `role` on a fresh stream.
 *
 * @param stream The connection.
 * @param wire The format.
 * @param role Who we are.
 * @param key The authkey's bytes.
 * @param ctx The deadline and the peer's name.
 * @throws {AuthenticationError} If either side does not know the key.
 * @throws {DOMException} A `TimeoutError` past the deadline.
 */
export async function runHandshake(
  stream: FrameStream,
  wire: Wire,
  role: "listener" | "client",
  key: Uint8Array,
  ctx: HandshakeContext,
): Promise<void> {
  if (wire === "dmp") {
    await (role === "listener"
      ? dmpListenerHandshake(stream, key, ctx)
      : dmpClientHandshake(stream, key, ctx));
  } else if (role === "listener") {
    // As Python's Listener.accept: challenge first, then answer.
    await pythonDeliverChallenge(stream, key, ctx, role);
    // A Python client sends right behind its #WELCOME#.
    await pythonAnswerChallenge(stream, key, ctx, true);
  } else {
    await pythonAnswerChallenge(stream, key, ctx);
    await pythonDeliverChallenge(stream, key, ctx, role);
  }
}

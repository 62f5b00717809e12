/**
 * A `Connection` over a TCP (or TLS) socket, as `listen`/`connect` hand
 * out: the pipe's API (`send`, `recv`, `sendBytes`, `recvBytes`, `poll`,
 * `close`, `closed`) on a {@linkcode FrameStream}. It extends the pipe's
 * `Connection` class so that it is one (`instanceof Connection`, and code
 * typed for `Connection` takes it), and overrides every method: the pipe's
 * rings are never used.
 *
 * How values travel depends on the wire:
 * - `"dmp"`: one kind byte, then a value (`0`, the manager's tagged JSON,
 *   which only ever builds plain data) or raw bytes (`1`). `recv` returns
 *   bytes sent with `sendBytes` as a `Uint8Array`; `recvBytes` leaves a
 *   value in place for `recv` and throws, as the pipe does.
 * - `"python"`: each message is what Python's `Connection` sends: a pickle
 *   for `send`, raw bytes for `send_bytes`. `recv` reads the next message
 *   as a pickle of plain data (a pickle naming a class or function is
 *   refused, and consumed, as Python's `recv` consumes a message it fails
 *   to unpickle); `recvBytes` returns any message's raw bytes.
 *
 * @module
 */

import { Connection, type PollOptions } from "../pipe.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { checkTimeout, throwIfAborted } from "../_core/deadline.ts";
import {
  ClosedError,
  describeValue,
  EOFError,
  timeoutError,
} from "../_core/errors.ts";
import type { ShareContext, SharedHandle } from "../_core/share.ts";
import { kShare } from "../_core/share.ts";
import { decodeWire, encodeWire } from "../_manager/wire.ts";
import type { FrameStream } from "./frame_stream.ts";
import { decodePickle } from "./pickle_read.ts";
import { encodePickle } from "./pickle_write.ts";

/**
 * Which format a socket connection speaks: `"dmp"`, this package's own
 * (any value the manager's codec carries), or `"python"`, Python's
 * `multiprocessing.connection` (pickles of plain data).
 *
 * @example Usage
 * ```ts
 * import { listen, type Wire } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const wire: Wire = "python";
 * await using listener = await listen({ port: 0, authkey: "k", wire });
 * assert.equal(listener.wire, "python");
 * ```
 */
export type Wire = "dmp" | "python";

const KIND_VALUE = 0;
const KIND_BYTES = 1;
/** The kind bytes as frame parts (`write` copies them, so one each does). */
const VALUE_PART = new Uint8Array([KIND_VALUE]);
const BYTES_PART = new Uint8Array([KIND_BYTES]);

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Makes the error of a value the dmp wire's codec cannot carry. */
function unsendable(e: unknown): never {
  const message = (e as Error).message ?? String(e);
  throw new TypeError(
    `Cannot send: ${
      message.replace(/^Cannot send a value to the manager: /, "")
    }`,
    { cause: e },
  );
}

/** A `Connection` over a socket (see the module doc). */
export class SocketConnection<T = unknown> extends Connection<T> {
  readonly #stream: FrameStream;
  readonly #wire: Wire;
  readonly #peer: string;
  #closed = false;

  /**
   * Wraps an authenticated stream. Internal: `listen` and `connect` make
   * these.
   *
   * @param stream The stream, its handshake done.
   * @param wire The format it speaks.
   * @param peer The peer's address, for messages.
   */
  constructor(stream: FrameStream, wire: Wire, peer: string) {
    super({ rx: null, tx: null });
    this.#stream = stream;
    this.#wire = wire;
    this.#peer = peer;
  }

  /** The peer's address, `host:port`. */
  get peer(): string {
    return this.#peer;
  }

  /** The format this connection speaks. */
  get wire(): Wire {
    return this.#wire;
  }

  /**
   * Whether this end is closed (by `close()`).
   *
   * @returns `true` once closed.
   */
  override get closed(): boolean {
    return this.#closed;
  }

  /** Always `true`: a socket connection is duplex. */
  override get readable(): boolean {
    return true;
  }

  /** Always `true`: a socket connection is duplex. */
  override get writable(): boolean {
    return true;
  }

  #gone(what: string): ClosedError {
    return new ClosedError(`Cannot ${what}: this connection is closed`);
  }

  #writeFrame(what: string, parts: Uint8Array[]): void {
    if (this.#stream.peerGone) {
      throw new ClosedError(
        `Cannot ${what}: the other end (${this.#peer}) is closed${
          this.#stream.error ? ` (${this.#stream.error.message})` : ""
        }`,
      );
    }
    if (!this.#stream.write(...parts)) {
      throw new ClosedError(`Cannot ${what}: the connection is broken`);
    }
  }

  #checkSend(what: string, options: WaitOptions | undefined): void {
    if (this.#closed) throw this.#gone(what);
    if (options) {
      checkTimeout(options.timeout, what);
      throwIfAborted(options.signal);
    }
  }

  /**
   * Sends a value; it never waits (values queue in order while the socket
   * is busy, and keep the program alive until written).
   *
   * @param value Plain data (see the module doc for what each wire takes).
   * @param options Checked (an aborted `signal` throws) but a socket send
   *   never waits.
   * @throws {TypeError} If the value cannot travel this wire (nothing is
   *   sent).
   * @throws {ClosedError} If either end is closed.
   */
  override send(value: T, options?: WaitOptions): void {
    this.#checkSend("send", options);
    if (this.#wire === "python") {
      this.#writeFrame("send", [encodePickle(value)]);
      return;
    }
    let text: string;
    try {
      text = JSON.stringify(encodeWire(value));
    } catch (e) {
      unsendable(e);
    }
    this.#writeFrame("send", [VALUE_PART, encoder.encode(text)]);
  }

  /**
   * Sends raw bytes (copied at once).
   *
   * @param bytes A typed array, `DataView` or `ArrayBuffer`.
   * @param options As for {@linkcode SocketConnection.send}.
   * @throws {TypeError} If `bytes` is none of those.
   * @throws {ClosedError} If either end is closed.
   */
  override sendBytes(
    bytes: ArrayBufferView | ArrayBufferLike,
    options?: WaitOptions,
  ): void {
    let view: Uint8Array;
    if (bytes instanceof Uint8Array) view = bytes;
    else if (ArrayBuffer.isView(bytes)) {
      view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } else if (
      bytes instanceof ArrayBuffer || bytes instanceof SharedArrayBuffer
    ) view = new Uint8Array(bytes);
    else {
      throw new TypeError(
        `Cannot sendBytes: expected a typed array, DataView or ArrayBuffer, received ${
          describeValue(bytes)
        }`,
      );
    }
    this.#checkSend("sendBytes", options);
    this.#writeFrame(
      "sendBytes",
      this.#wire === "python" ? [view] : [BYTES_PART, view],
    );
  }

  /**
   * Receives the next value.
   *
   * @param options `timeout` (ms; `0` only tries) and `signal`.
   * @returns The value.
   * @throws {EOFError} If the other end closed and everything was read.
   * @throws {ClosedError} If this end is closed.
   * @throws {TypeError} On the python wire, if the pickle names a class or
   *   function (nothing is run; the message is consumed).
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  override recv(options: WaitOptions = {}): Promise<T> {
    return this.#recv(options, false, "recv") as Promise<T>;
  }

  /**
   * Receives the next message's raw bytes.
   *
   * @param options `timeout` (ms; `0` only tries) and `signal`.
   * @returns The bytes.
   * @throws {TypeError} On the dmp wire, if the next message was sent with
   *   `send` (it is left for `recv`).
   * @throws {EOFError} If the other end closed and everything was read.
   * @throws {ClosedError} If this end is closed.
   * @throws {DOMException} Named `TimeoutError` when the timeout passes.
   */
  override recvBytes(options: WaitOptions = {}): Promise<Uint8Array> {
    return this.#recv(options, true, "recvBytes") as Promise<Uint8Array>;
  }

  async #recv(
    options: WaitOptions,
    bytes: boolean,
    what: string,
  ): Promise<unknown> {
    if (this.#closed) throw this.#gone(what);
    const timeout = checkTimeout(options.timeout, what);
    throwIfAborted(options.signal);
    const end = timeout === Infinity ? Infinity : performance.now() + timeout;
    for (;;) {
      const frame = this.#stream.peek();
      if (frame) return this.#decode(frame, bytes, what);
      if (this.#stream.ended) {
        if (this.#closed) throw this.#gone(what);
        const why = this.#stream.error;
        throw new EOFError(
          `Cannot ${what}: the other end (${this.#peer}) is closed and everything it sent was read${
            why ? ` (the connection broke: ${why.message})` : ""
          }`,
          why ? { cause: why } : undefined,
        );
      }
      const left = end - performance.now();
      if (
        left <= 0 ||
        !(await this.#stream.waitReadable(left, options.signal))
      ) {
        throw timeoutError(
          timeout === 0
            ? `${what} found nothing to read (timeout 0)`
            : `${what} timed out after ${timeout} ms`,
        );
      }
      if (this.#closed) throw this.#gone(what);
    }
  }

  #decode(frame: Uint8Array, bytes: boolean, what: string): unknown {
    if (this.#wire === "python") {
      this.#stream.take();
      return bytes ? frame : decodePickle(frame, what);
    }
    const kind = frame[0];
    if (kind === KIND_BYTES) {
      this.#stream.take();
      return frame.subarray(1);
    }
    if (bytes && kind === KIND_VALUE) {
      throw new TypeError(
        `Cannot ${what}: the next message was sent with send(), not sendBytes(); read it with recv()`,
      );
    }
    this.#stream.take();
    if (kind !== KIND_VALUE) {
      throw new TypeError(
        `Cannot ${what}: the peer sent a message of unknown kind ${kind}`,
      );
    }
    let tree: unknown;
    try {
      tree = JSON.parse(decoder.decode(frame.subarray(1)));
    } catch (e) {
      throw new TypeError(
        `Cannot ${what}: the peer sent a value that is not UTF-8 JSON`,
        { cause: e },
      );
    }
    return decodeWire(tree);
  }

  /**
   * Sockets cannot block the thread: use `await recv()`.
   *
   * @param _options Unused.
   * @returns Never.
   * @throws {TypeError} Always.
   */
  override recvSync(_options?: WaitOptions): T {
    throw new TypeError(
      "Cannot recvSync on a socket connection: a socket cannot block the thread; use await recv()",
    );
  }

  /**
   * Sockets cannot block the thread: use `await recvBytes()`.
   *
   * @param _options Unused.
   * @returns Never.
   * @throws {TypeError} Always.
   */
  override recvBytesSync(_options?: WaitOptions): Uint8Array {
    throw new TypeError(
      "Cannot recvBytesSync on a socket connection: a socket cannot block the thread; use await recvBytes()",
    );
  }

  /**
   * Whether a message is there (or the other end closed, so `recv` would
   * not wait), waiting up to `timeout` ms for it.
   *
   * @param timeout Milliseconds (`Infinity` for ever).
   * @param options `signal` aborts the wait with its reason.
   * @returns `true` when `recv` would not wait.
   * @throws {ClosedError} If this end is closed.
   */
  override async poll(
    timeout: number = 0,
    options: PollOptions = {},
  ): Promise<boolean> {
    if (this.#closed) throw this.#gone("poll");
    const ms = checkTimeout(timeout, "poll");
    const ready = await this.#stream.waitReadable(ms, options.signal);
    if (this.#closed) throw this.#gone("poll");
    return ready;
  }

  /**
   * Closes this end: what was sent is still written, then the socket
   * closes and the peer sees `EOFError`. Pending `recv` calls reject with
   * `ClosedError`. Idempotent.
   */
  override close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stream.close();
  }

  /**
   * Resolves once the socket is closed (after `close()`, once what was sent
   * is written).
   *
   * @returns When it is done.
   */
  get done(): Promise<void> {
    return this.#stream.done;
  }

  /**
   * A socket connection cannot be passed to another thread.
   *
   * @param _ctx The sending context.
   * @returns Never.
   * @throws {TypeError} Always.
   */
  override [kShare](_ctx: ShareContext): SharedHandle {
    throw new TypeError(
      `Cannot pass a socket connection (to ${this.#peer}) to another thread: only pipe ends can be shared; open a connection there with connect()`,
    );
  }
}

/**
 * Length-prefixed frames for the manager's TCP transport: {@linkcode frame}
 * makes one, {@linkcode FrameReader} splits a byte stream into messages, and
 * {@linkcode FramedSocket} carries them both ways over a connection. A
 * frame is a big-endian u32 payload length, then the payload (the message
 * as UTF-8 JSON). A frame of length 0 carries nothing and is skipped (a
 * client opens with one, so that a TLS server refuses it at once).
 *
 * ```ts
 * import { frame, FrameReader } from "./frames.ts";
 * import { strict as assert } from "node:assert";
 *
 * const r = new FrameReader(1024);
 * const got: unknown[] = [];
 * r.push(frame({ a: 1 }), (m) => got.push(m), () => {});
 * assert.deepEqual(got, [{ a: 1 }]);
 * ```
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Makes one frame: a big-endian u32 payload length, then the payload (the
 * message as UTF-8 JSON).
 *
 * @param message A JSON-compatible message.
 * @returns The frame's bytes.
 */
export function frame(message: unknown): Uint8Array {
  const text = JSON.stringify(message);
  // Worst case 3 bytes per UTF-16 unit.
  const out = new Uint8Array(4 + text.length * 3);
  const { written } = encoder.encodeInto(text, out.subarray(4));
  new DataView(out.buffer).setUint32(0, written);
  return out.subarray(0, 4 + written);
}

/** Why a frame reader gave up on a stream. */
export class FrameError extends Error {
  /**
   * The length field that was refused, as read (its first bytes tell a TLS
   * record, `0x15 0x03` or `0x16 0x03`, from garbage).
   */
  readonly length: number | undefined;

  /**
   * Makes the error.
   *
   * @param message What was wrong.
   * @param length The refused length field, if that was the problem.
   */
  constructor(message: string, length?: number) {
    super(message);
    this.name = "FrameError";
    this.length = length;
  }
}

/**
 * Whether a refused frame length is in fact the start of a TLS record (a
 * handshake or an alert, TLS 1.x): what a plain peer reads from a TLS one.
 *
 * @param length The u32 read where a frame length was expected.
 * @returns Whether it looks like TLS.
 */
export function looksLikeTls(length: number): boolean {
  const type = length >>> 24, major = (length >>> 16) & 0xff;
  return (type === 0x15 || type === 0x16) && major === 0x03;
}

/**
 * Splits a byte stream into frames. A frame longer than `maxBytes` is a
 * fatal {@linkcode FrameError} (the stream cannot be resynchronised); a
 * payload that is not UTF-8 JSON is reported per frame, the stream goes on;
 * an empty frame is skipped.
 */
export class FrameReader {
  #buf = new Uint8Array(0);
  #view = new DataView(this.#buf.buffer);
  #len = 0;
  /** The largest payload accepted, in bytes. */
  maxBytes: number;

  /**
   * Makes a reader.
   *
   * @param maxBytes The largest payload accepted.
   */
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pending(): number {
    return this.#len;
  }

  /**
   * Adds received bytes and hands out every whole frame.
   *
   * @param chunk The bytes.
   * @param onMessage Gets each decoded message.
   * @param onBad Gets the error of a frame that did not decode.
   * @throws {FrameError} If a frame is longer than `maxBytes`.
   */
  push(
    chunk: Uint8Array,
    onMessage: (message: unknown) => void,
    onBad: (error: Error) => void,
  ): void {
    let data = chunk, len = chunk.length;
    if (this.#len > 0) {
      this.#append(chunk);
      data = this.#buf;
      len = this.#len;
    }
    const view = data === this.#buf
      ? this.#view
      : new DataView(data.buffer, data.byteOffset, data.byteLength);
    let at = 0;
    while (len - at >= 4) {
      const size = view.getUint32(at);
      if (size > this.maxBytes) {
        throw new FrameError(
          `Cannot read a frame: its length ${size} exceeds the limit of ${this.maxBytes} bytes`,
          size,
        );
      }
      if (len - at - 4 < size) break;
      const payload = data.subarray(at + 4, at + 4 + size);
      at += 4 + size;
      if (size === 0) continue;
      let message: unknown;
      try {
        message = JSON.parse(decoder.decode(payload));
      } catch (e) {
        onBad(
          new TypeError(
            `Cannot read a frame: its payload is not UTF-8 JSON (${
              (e as Error).message
            })`,
          ),
        );
        continue;
      }
      onMessage(message);
    }
    if (data === this.#buf) {
      if (at > 0) {
        this.#buf.copyWithin(0, at, this.#len);
        this.#len -= at;
      }
    } else if (at < len) {
      this.#append(data.subarray(at, len));
    }
  }

  #append(chunk: Uint8Array): void {
    if (this.#len + chunk.length > this.#buf.length) {
      const grown = new Uint8Array(
        Math.max(this.#len + chunk.length, this.#buf.length * 2, 4096),
      );
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
      this.#view = new DataView(grown.buffer);
    }
    this.#buf.set(chunk, this.#len);
    this.#len += chunk.length;
  }
}

// -- A framed TCP socket ---------------------------------------------------

/** The read buffer of a socket whose frame limit is still small. */
const SMALL_READ = 4 * 1024;
/** The read buffer once the frame limit was raised (after the handshake). */
const LARGE_READ = 64 * 1024;

/**
 * A TCP (or TLS) connection that carries frames both ways: `send` queues a
 * message (frames written in the same tick go out in one write), incoming
 * frames go to `onMessage` in order. Used by both the client and the
 * server. Its buffers start small (a socket that never authenticates costs
 * a few KiB) and grow with the traffic.
 *
 * @example Usage
 * ```ts ignore
 * import { FramedSocket } from "./frames.ts";
 *
 * const socket = new FramedSocket(await Deno.connect({ port: 5000 }), 1024);
 * socket.onMessage = (m) => console.log(m);
 * socket.send({ hello: 1 });
 * await socket.close();
 * ```
 */
export class FramedSocket {
  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  #out = new Uint8Array(1024);
  #outView = new DataView(this.#out.buffer);
  #outLen = 0;
  #spare = new Uint8Array(1024);
  #flushing: Promise<void> | undefined;
  #closed = false;
  #inbox: unknown[] = [];
  #waiter: ((m: unknown) => void) | undefined;
  /** Resolves when the read loop has ended (end of stream, error or close). */
  readonly done: Promise<void>;
  /** Why the stream ended, when it ended on an error. */
  error: Error | undefined;
  /** Gets each incoming message once set (messages queue until then). */
  onMessage: ((message: unknown) => void) | undefined;
  /** Gets frames whose payload did not decode. */
  onBadFrame: ((error: Error) => void) | undefined;
  /** Called once when the stream has ended. */
  onClose: (() => void) | undefined;

  /**
   * Wraps a connection and starts reading.
   *
   * @param conn The TCP or TLS connection.
   * @param maxBytes The largest frame accepted (changeable later through
   *   {@linkcode FramedSocket.maxBytes}).
   */
  constructor(conn: Deno.Conn, maxBytes: number) {
    this.#conn = conn;
    this.#reader = new FrameReader(maxBytes);
    this.done = this.#readLoop();
  }

  /** The largest frame accepted. */
  get maxBytes(): number {
    return this.#reader.maxBytes;
  }
  set maxBytes(n: number) {
    this.#reader.maxBytes = n;
  }

  /** Lets a pending read keep the event loop alive (while calls wait). */
  ref(): void {
    try {
      this.#conn.ref();
    } catch {
      // closed
    }
  }

  /** Lets the event loop end while only this socket's read is pending. */
  unref(): void {
    try {
      this.#conn.unref();
    } catch {
      // closed
    }
  }

  /** Whether the socket was closed or the stream ended. */
  get closed(): boolean {
    return this.#closed;
  }

  async #readLoop(): Promise<void> {
    let buf = new Uint8Array(
      this.#reader.maxBytes < SMALL_READ ? SMALL_READ : LARGE_READ,
    );
    try {
      for (;;) {
        if (buf.length < LARGE_READ && this.#reader.maxBytes >= SMALL_READ) {
          buf = new Uint8Array(LARGE_READ);
        }
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.#reader.push(
          buf.subarray(0, n),
          (m) => this.#deliver(m),
          (e) => this.onBadFrame?.(e),
        );
        if (this.#closed) break;
      }
    } catch (e) {
      if (!this.#closed) this.error = e as Error;
    }
    this.#shut();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.(undefined);
    this.onClose?.();
  }

  #deliver(message: unknown): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w(message);
    } else if (this.onMessage) this.onMessage(message);
    else this.#inbox.push(message);
  }

  /**
   * Waits for the next message (used during the handshake, before
   * `onMessage` is set); `undefined` when the stream ended.
   *
   * @returns The message.
   */
  next(): Promise<unknown> {
    if (this.#inbox.length > 0) return Promise.resolve(this.#inbox.shift());
    if (this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiter = resolve);
  }

  /** Hands the messages that arrived before `onMessage` was set to it. */
  drain(): void {
    for (const m of this.#inbox.splice(0)) this.onMessage?.(m);
  }

  /**
   * Queues a message: it is written at once when no write is in flight,
   * else with the others that queue up meanwhile (one write for all).
   *
   * @param message A JSON-compatible message.
   */
  send(message: unknown): void {
    if (this.#closed) return;
    const text = JSON.stringify(message);
    this.#reserve(4 + text.length * 3);
    const at = this.#outLen;
    const { written } = encoder.encodeInto(
      text,
      this.#out.subarray(at + 4),
    );
    this.#outView.setUint32(at, written);
    this.#outLen = at + 4 + written;
    if (!this.#flushing) this.#flushing = this.#flush();
  }

  /**
   * Queues raw bytes (tests use it to send garbage).
   *
   * @param bytes The bytes.
   */
  sendRaw(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#reserve(bytes.length);
    this.#out.set(bytes, this.#outLen);
    this.#outLen += bytes.length;
    if (!this.#flushing) this.#flushing = this.#flush();
  }

  #reserve(n: number): void {
    if (this.#outLen + n <= this.#out.length) return;
    const grown = new Uint8Array(
      Math.max(this.#out.length * 2, this.#outLen + n),
    );
    grown.set(this.#out.subarray(0, this.#outLen));
    this.#out = grown;
    this.#outView = new DataView(grown.buffer);
  }

  async #flush(): Promise<void> {
    try {
      while (this.#outLen > 0 && !this.#closed) {
        // Swap buffers: frames sent while this write is in flight go into
        // the other one.
        const buf = this.#out, len = this.#outLen;
        this.#out = this.#spare;
        this.#outView = new DataView(this.#out.buffer);
        this.#outLen = 0;
        this.#spare = buf;
        let off = 0;
        while (off < len) off += await this.#conn.write(buf.subarray(off, len));
      }
    } catch {
      this.#shut();
    } finally {
      this.#flushing = undefined;
    }
  }

  /** Waits until every queued message was written. */
  async flushed(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  #shut(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  /**
   * Writes what is queued, closes the connection and waits for the read
   * loop to end.
   */
  async close(): Promise<void> {
    await this.flushed();
    this.#shut();
    await this.done;
  }
}

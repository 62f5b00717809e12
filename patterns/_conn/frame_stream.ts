/**
 * Length-prefixed frames over one TCP (or TLS) connection, for the socket
 * `Connection`s of `listen`/`connect`: a big-endian u32 payload length, then
 * the payload — the framing of both wires (Python's
 * `multiprocessing.connection` also allows `0xFFFFFFFF` followed by a u64
 * length for payloads of 2 GiB and more). Reading stops while whole frames
 * nobody took yet exceed a high-water mark, so a fast peer fills the TCP
 * window, not this program's memory; writes queue in order and never block
 * the caller.
 *
 * ```ts
 * import { FrameStream } from "./frame_stream.ts";
 * import { strict as assert } from "node:assert";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = listener.accept();
 * const a = new FrameStream(
 *   await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
 *   1024,
 *   false,
 * );
 * const b = new FrameStream(await accepted, 1024, false);
 * a.write(new TextEncoder().encode("hi"));
 * assert.equal(await b.waitReadable(Infinity, undefined), true);
 * assert.equal(new TextDecoder().decode(b.take()), "hi");
 * a.close();
 * assert.equal(await b.waitReadable(Infinity, undefined), true);
 * assert.equal(b.ended, true);
 * b.close();
 * await Promise.all([a.done, b.done]);
 * ```
 *
 * @module
 */

import { timerFor } from "../_core/deadline.ts";
import { FrameError } from "../_manager/frames.ts";

/** Whole frames held before reading pauses, in bytes. */
const HIGH_WATER = 4 * 1024 * 1024;
/**
 * What one held frame counts toward {@linkcode HIGH_WATER} beyond its
 * payload: its objects cost memory even when it is empty, so a stream of
 * empty or tiny frames pauses reading too.
 */
const FRAME_COST = 64;
/** Writes of frames smaller than this are merged into one buffer. */
const MERGE_BELOW = 64 * 1024;
/** A payload's first buffer; it doubles as more of it arrives. */
const GROW_FROM = 1024 * 1024;
/** Python's marker that a u64 length follows. */
const LONG_LENGTH = 0xffffffff;

/** A frame stream over a connection (see the module doc). */
export class FrameStream {
  readonly #conn: Deno.Conn;
  readonly #python: boolean;
  /** The largest payload accepted, in bytes (raised after the handshake). */
  maxBytes: number;
  /**
   * Whether a frame is parsed only once the one before it was taken (for
   * the handshake: the limit of what follows it may change meanwhile).
   */
  stepwise = false;
  #frames: Uint8Array[] = [];
  #framesHead = 0;
  #heldBytes = 0;
  #resume: (() => void) | undefined;
  #waiters = new Set<() => void>();
  #eof = false;
  #closed = false;
  #error: Error | undefined;
  #out: Uint8Array[] = [];
  #flushing = false;
  #refs = 0;
  /** Resolves once the read loop ended and the connection is closed. */
  readonly done: Promise<void>;

  /**
   * Wraps a connection and starts reading (unref'd: an idle stream does not
   * keep the program alive; see {@linkcode FrameStream.ref}).
   *
   * @param conn The connection.
   * @param maxBytes The largest payload accepted.
   * @param python Whether Python's u64 length form is accepted and written.
   */
  constructor(conn: Deno.Conn, maxBytes: number, python: boolean) {
    this.#conn = conn;
    this.maxBytes = maxBytes;
    this.#python = python;
    this.#unrefConn();
    this.done = this.#readLoop();
  }

  /** Whether the peer ended the stream (or it broke) and no frame is left. */
  get ended(): boolean {
    return this.#framesHead === this.#frames.length &&
      (this.#eof || this.#closed);
  }

  /** Why the stream broke, if it did (a framing error or a socket error). */
  get error(): Error | undefined {
    return this.#error;
  }

  /** Whether {@linkcode FrameStream.close} was called or the stream broke. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the peer closed its end (what it sent may still be queued). */
  get peerGone(): boolean {
    return this.#eof || this.#error !== undefined;
  }

  /** Keeps the program alive while someone waits for a frame (counted). */
  ref(): void {
    if (this.#refs++ === 0) {
      try {
        this.#conn.ref();
      } catch {
        // closed
      }
    }
  }

  /** Undoes one {@linkcode FrameStream.ref}. */
  unref(): void {
    if (--this.#refs === 0) this.#unrefConn();
  }

  #unrefConn(): void {
    try {
      this.#conn.unref();
    } catch {
      // closed
    }
  }

  // -- Reading -------------------------------------------------------------

  /**
   * The next whole frame, left in place, or `undefined` if none arrived.
   *
   * @returns The payload.
   */
  peek(): Uint8Array | undefined {
    return this.#frames[this.#framesHead];
  }

  /**
   * Removes and returns the next whole frame.
   *
   * @returns The payload.
   * @throws {RangeError} If there is none (check {@linkcode FrameStream.peek}).
   */
  take(): Uint8Array {
    const f = this.#frames[this.#framesHead];
    if (!f) throw new RangeError("Cannot take a frame: none is there");
    this.#frames[this.#framesHead++] = undefined as never;
    if (this.#framesHead === this.#frames.length) {
      this.#frames = [];
      this.#framesHead = 0;
    } else if (this.#framesHead >= 1024) {
      // A reader that never catches up: drop the taken slots now and then.
      this.#frames = this.#frames.slice(this.#framesHead);
      this.#framesHead = 0;
    }
    this.#heldBytes -= f.length + FRAME_COST;
    if (this.#heldBytes < HIGH_WATER && this.#resume) {
      const r = this.#resume;
      this.#resume = undefined;
      r();
    }
    return f;
  }

  /**
   * Waits until a frame is there or the stream ended.
   *
   * @param timeout Milliseconds (`Infinity` for ever, `0` only checks).
   * @param signal Rejects the wait with its reason.
   * @returns `true` when a frame is there or the stream ended, `false` at
   *   the timeout.
   */
  waitReadable(
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    if (this.peek() || this.ended) return Promise.resolve(true);
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (timeout <= 0) return Promise.resolve(false);
    return new Promise<boolean>((resolve, reject) => {
      const finish = (): void => {
        this.#waiters.delete(wake);
        signal?.removeEventListener("abort", onAbort);
        if (timer !== undefined) clearTimeout(timer);
        this.unref();
      };
      const wake = (): void => {
        finish();
        resolve(true);
      };
      const onAbort = (): void => {
        finish();
        reject(signal!.reason);
      };
      this.ref();
      this.#waiters.add(wake);
      signal?.addEventListener("abort", onAbort, { once: true });
      const timer = timerFor(timeout, () => {
        finish();
        resolve(false);
      });
    });
  }

  #wakeAll(): void {
    for (const w of [...this.#waiters]) w();
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    // The frame being read: its header bytes, then its payload.
    const header = new Uint8Array(12);
    const headerView = new DataView(header.buffer);
    let headerLen = 0;
    let headerNeed = 4;
    let body: Uint8Array | undefined;
    let bodyLen = 0;
    let bodySize = 0;
    try {
      while (!this.#closed) {
        if (this.#heldBytes >= HIGH_WATER) {
          await new Promise<void>((r) => this.#resume = r);
          continue;
        }
        const n = await this.#conn.read(buf);
        if (n === null) break;
        let at = 0;
        while (at < n) {
          if (
            !body && headerLen === 0 && this.stepwise &&
            this.#framesHead < this.#frames.length
          ) {
            this.#wakeAll();
            await new Promise<void>((r) => this.#resume = r);
            if (this.#closed) break;
            continue;
          }
          if (!body) {
            const k = Math.min(headerNeed - headerLen, n - at);
            header.set(buf.subarray(at, at + k), headerLen);
            headerLen += k;
            at += k;
            if (headerLen < headerNeed) break;
            let size = headerView.getUint32(0);
            if (headerNeed === 4 && size === LONG_LENGTH && this.#python) {
              headerNeed = 12;
              continue;
            }
            if (headerNeed === 12) {
              size = Number(headerView.getBigUint64(4));
            } else if (this.#python && size > 0x7fffffff) {
              throw new FrameError(
                `Cannot read a message: its length header is negative (${
                  size | 0
                })`,
              );
            }
            if (size > this.maxBytes) {
              throw new FrameError(
                `Cannot read a message: its length ${size} exceeds the limit of ${this.maxBytes} bytes`,
              );
            }
            // Memory grows as the payload arrives, not as its header claims.
            body = new Uint8Array(Math.min(size, GROW_FROM));
            bodyLen = 0;
            bodySize = size;
          }
          if (bodyLen === body.length && bodyLen < bodySize) {
            const grown = new Uint8Array(Math.min(bodySize, body.length * 2));
            grown.set(body);
            body = grown;
          }
          const k = Math.min(body.length - bodyLen, n - at);
          body.set(buf.subarray(at, at + k), bodyLen);
          bodyLen += k;
          at += k;
          if (bodyLen === bodySize) {
            this.#frames.push(body);
            this.#heldBytes += body.length + FRAME_COST;
            body = undefined;
            headerLen = 0;
            headerNeed = 4;
          }
        }
        if (this.#framesHead < this.#frames.length) this.#wakeAll();
      }
    } catch (e) {
      if (!this.#closed) this.#error = e as Error;
    }
    if (body || headerLen > 0) {
      // A message cut off midway is dropped whole.
      this.#error ??= new FrameError(
        "Cannot read a message: the connection ended in the middle of one",
      );
    }
    this.#eof = true;
    if (this.#error) this.#shut();
    this.#wakeAll();
    // A stream the peer ended stays open for writing until close().
    await this.#closedPromise;
  }

  #markClosed: (() => void) | undefined;
  readonly #closedPromise: Promise<void> = new Promise((r) =>
    this.#markClosed = r
  );

  // -- Writing -------------------------------------------------------------

  /**
   * Queues one frame (the payload given as parts, copied at once); frames
   * go out in order, without blocking the caller. Nothing is written once
   * the stream is closed or broke.
   *
   * @param parts The payload's pieces.
   * @returns Whether it was queued.
   */
  write(...parts: Uint8Array[]): boolean {
    if (this.#closed || this.#error) return false;
    let size = 0;
    for (const p of parts) size += p.length;
    const long = size > 0x7fffffff;
    const headerLen = long ? 12 : 4;
    const frame = new Uint8Array(headerLen + size);
    const view = new DataView(frame.buffer);
    if (long) {
      view.setUint32(0, LONG_LENGTH);
      view.setBigUint64(4, BigInt(size));
    } else view.setUint32(0, size);
    let at = headerLen;
    for (const p of parts) {
      frame.set(p, at);
      at += p.length;
    }
    this.#out.push(frame);
    if (!this.#flushing) this.#flush();
    return true;
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#out.length > 0 && !this.#error) {
        let chunk = this.#out.shift()!;
        if (chunk.length < MERGE_BELOW && this.#out.length > 0) {
          // Merge small frames into one write (and one TCP segment).
          let total = chunk.length, k = 0;
          while (
            k < this.#out.length && total + this.#out[k]!.length <= MERGE_BELOW
          ) total += this.#out[k++]!.length;
          if (k > 0) {
            const merged = new Uint8Array(total);
            merged.set(chunk);
            let at = chunk.length;
            for (const f of this.#out.splice(0, k)) {
              merged.set(f, at);
              at += f.length;
            }
            chunk = merged;
          }
        }
        let off = 0;
        while (off < chunk.length) {
          off += await this.#conn.write(chunk.subarray(off));
        }
      }
    } catch (e) {
      this.#error ??= e as Error;
      this.#out = [];
      this.#shut();
      this.#wakeAll();
    } finally {
      this.#flushing = false;
      if (this.#closed) this.#shut();
    }
  }

  // -- Closing -------------------------------------------------------------

  /**
   * Closes the stream: frames already queued are written first, then the
   * connection closes (see {@linkcode FrameStream.done}). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#flushing) this.#shut();
    this.#resume?.();
    this.#wakeAll();
  }

  /**
   * Closes the connection now, dropping frames still queued: for a peer
   * being refused or given up on, whose pending write may never finish
   * (a TLS peer that never did the TLS handshake). Idempotent.
   */
  abort(): void {
    this.#out = [];
    this.#closed = true;
    this.#shut();
    this.#resume?.();
    this.#wakeAll();
  }

  #shut(): void {
    this.#closed = true;
    // A read loop paused (high water, stepwise) must see the close too.
    this.#resume?.();
    if (this.#markClosed) {
      try {
        // A pending read that is unref'd would let the program end before
        // its cancellation arrives (and `done` resolves): ref it first.
        this.#conn.ref();
        this.#conn.close();
      } catch {
        // already closed
      }
      this.#markClosed();
      this.#markClosed = undefined;
    }
  }
}

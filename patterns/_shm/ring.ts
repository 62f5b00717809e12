/**
 * The engine under `pipe.ts` and `queue.ts`: a multi-producer,
 * multi-consumer ring of variable-length records (`codec.ts`) in a
 * `SharedArrayBuffer`, guarded by a short, recoverable lock. Not to be
 * confused with the manager's single-producer text ring.
 *
 * **Layout.** 128 bytes of control words, then `capacity` bytes of data
 * holding the records back to back, wrapping at the end.
 *
 * **Lock.** The lock word holds the holder's thread id. A thread that finds it
 * held spins briefly, then sleeps on it in 1 ms slices; when the holder's
 * thread is gone (terminated, crashed, exited) for longer than a short grace
 * period, the waiter takes the lock over. The commit of a put or a get is a
 * few straight-line stores with no call and no loop, and V8 only stops a
 * thread at a function entry or a loop back-edge, so a thread stopped while
 * holding the lock never leaves a half-committed ring: what it had not
 * committed is simply not there. A consumer killed while waiting holds no lock
 * and has taken nothing, so it loses nothing.
 *
 * **Streams.** A record larger than the ring (or than a record can say)
 * travels as a stream of tag-0 records: a *start* record (the stream's id,
 * the message's own tag, its length and the writer's thread id), then
 * *chunks* of at most a quarter of the ring (id, offset, bytes). A writer
 * holds the ring's stream claim (an owner word) for the whole stream, so
 * two streams never interleave; small records of other writers may sit
 * between the chunks, whole. The reader that takes the start record holds
 * the read claim (`R_CLAIM`, its thread id) and reassembles the chunks in
 * this thread's record of the stream; other readers leave the chunks alone
 * and take only whole records. A reader never sees a part: the message is
 * decoded once its last byte is in. A stream the writer abandoned (timeout,
 * abort: it sets `ABORT_ID`), a writer that died with nothing more in the
 * ring, a reader that died holding the claim, a closed writing side: the
 * partial message is dropped whole, and chunks no reader claims are
 * discarded by whoever meets them. The records' layout, the writer's
 * `StreamWrite` and a reader's reassembly live in `stream.ts`.
 *
 * **Waking.** Consumers that sleep count themselves in `WAIT_GET` and sleep on
 * `PUT_SEQ`; producers on `GET_SEQ` with `WAIT_PUT`. A put only bumps and
 * notifies `PUT_SEQ` when someone sleeps (and vice versa), and every sleeper
 * spins first, so a busy channel makes no system call per item.
 *
 * ```ts
 * import { DRAINED, EMPTY, OK, RecordRing } from "./ring.ts";
 * import { strict as assert } from "node:assert";
 *
 * const ring = new RecordRing(RecordRing.allocate(1024, 0));
 * assert.equal(ring.put(42, "put"), OK);
 * assert.equal(ring.put("hi", "put"), OK);
 * assert.equal(ring.tryGet(false), 42);
 * assert.equal(ring.tryGet(false), "hi");
 * assert.equal(ring.tryGet(false), EMPTY);
 * ring.closeWriter();
 * assert.equal(ring.tryGet(false), DRAINED);
 * ```
 *
 * @module
 */

import { currentThreadId, isThreadAlive } from "../_core/runtime.ts";
import { describeValue } from "../_core/errors.ts";
import { SpinPolicy, waitAsync, waitSync } from "../_core/wait.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import {
  decodeMessage,
  decodePayload,
  encodeRecord,
  isBytesRecord,
  MAX_PAYLOAD,
  pendingLength,
  pendingSize,
  readPayload,
  storedSize,
  TAG_STREAM,
  takePending,
  writePending,
} from "./codec.ts";
import { OwnerWord, RING_LOCK, TIMED_OUT } from "../_core/owner_word.ts";
import {
  AGAIN,
  assemblies,
  CHUNK_PREFIX,
  copyChunk,
  START_PAYLOAD,
  STREAM_CLAIM,
  type StreamWrite,
} from "./stream.ts";

// -- Control words (Int32 indices) ---------------------------------------

const LOCK = 0;
const HEAD = 2;
const TAIL = 3;
const USED = 4;
const COUNT = 5;
const CAP = 6;
const MAXSIZE = 7;
const FLAGS = 8;
/** Bumped when a record was added (or the ring closed) and a consumer sleeps. */
const PUT_SEQ = 16;
/** Bumped when a record was taken (or the ring closed) and a producer sleeps. */
const GET_SEQ = 17;
const WAIT_GET = 18;
const WAIT_PUT = 19;
/**
 * JoinableQueue: items put and not yet marked done. Raised in a put's
 * commit, under the lock; lowered by `taskDone` without it.
 */
const UNFINISHED = 24;
const WAIT_JOIN = 25;
/** Streams: the thread that reassembles the current stream (0: none). */
const R_CLAIM = 20;
/** Streams: the id of the stream `R_CLAIM` reassembles. */
const CUR_ID = 21;
/** Streams: the last stream id given out. */
const STREAM_SEQ = 22;
/** Streams: the id of the last stream its writer abandoned. */
const ABORT_ID = 23;
/** Streams: the writers' claim, an owner word (26–27). */
const W_CLAIM = 26;
/** Two random words naming this ring in a thread's stream records. */
const UID = 28;
/**
 * Pipes: the copies of the writing end and of the reading end beyond the
 * first (an end passed to another thread is shared, as a file descriptor
 * is; the side closes when its last copy does).
 */
const W_COPIES = 10;
const R_COPIES = 11;
/** Bytes of control words before the data. */
const HEADER_BYTES = 128;

/** Flag: the writing side is closed (a closed queue, a pipe's sender gone). */
const W_CLOSED = 1;
/** Flag: the reading side is closed (a pipe's receiver gone). */
const R_CLOSED = 2;

// -- Results -------------------------------------------------------------

/** A put succeeded. */
export const OK = 0;
/** A put found no room (items or bytes). */
export const FULL = 1;
/** A put found the writing side closed. */
export const CLOSED = 2;
/** A put found the reading side closed (a broken pipe). */
export const BROKEN = 3;
/** What a put returns. */
export type PutResult = typeof OK | typeof FULL | typeof CLOSED | typeof BROKEN;

/** A get found the ring empty. */
export const EMPTY: unique symbol = Symbol("empty");
/** A get found the ring empty and the writing side closed. */
export const DRAINED: unique symbol = Symbol("drained");
/** A get found a record of the other kind (bytes vs value): nothing taken. */
export const MISMATCH: unique symbol = Symbol("mismatch");
/** The sentinels a get may return instead of a value. */
export type GetSentinel = typeof EMPTY | typeof DRAINED | typeof MISMATCH;

/**
 * Which records a get takes: `"any"`, only a `"value"`, or only `"bytes"`
 * (a record of the other kind is left in place and `MISMATCH` returned).
 */
export type RecordKind = "any" | "value" | "bytes";

/** Whether a get of `kind` must leave the record with this header or tag. */
function isWrongKind(kind: RecordKind, tag: number): boolean {
  return kind !== "any" && isBytesRecord(tag) !== (kind === "bytes");
}

// -- Waiting and waking ---------------------------------------------------

/**
 * The spin of a get or put before it registers as a sleeper, in loads; the
 * sleep then spins as every wait does (on the sequence word a waker bumps).
 */
const RING_SPIN = 4000;

function bump(c: Int32Array, index: number): void {
  Atomics.add(c, index, 1);
  Atomics.notify(c, index);
}

// -- The ring ------------------------------------------------------------

/**
 * A multi-producer, multi-consumer ring of records in shared memory. Every
 * thread that holds the same `SharedArrayBuffer` sees the same ring.
 */
export class RecordRing {
  /** The shared memory (control words and data). */
  readonly buffer: SharedArrayBuffer;
  /** Data capacity in bytes. */
  readonly capacity: number;
  /** Item limit, or 0 for none. */
  readonly maxsize: number;
  readonly #c: Int32Array;
  /**
   * Whether a put counts its item as an unfinished task (a JoinableQueue),
   * in the same commit that makes it visible.
   */
  readonly #tasks: boolean;
  /** The short lock every change of the ring is made under (words 0–1). */
  readonly #lock: OwnerWord;
  /** How this thread's gets spin before they sleep (once per wait). */
  readonly #readSpin = new SpinPolicy(RING_SPIN);
  /** How this thread's puts spin before they sleep. */
  readonly #writeSpin = new SpinPolicy(RING_SPIN);
  readonly #data: Uint8Array;
  readonly #d32: Int32Array;
  /** The wake sequence read under the lock by the last failed try. */
  #seq = 0;
  /** The writers' stream claim (words 26–27). */
  readonly #claim: OwnerWord;
  /** The data bytes of one chunk. */
  readonly #chunk: number;
  /** This ring's key in the thread's stream records. */
  readonly #key: string;

  /**
   * Allocates the memory of a ring.
   *
   * @param capacity Data bytes (a multiple of 8).
   * @param maxsize Item limit (≤ 0: none).
   * @returns The buffer to hand to {@linkcode RecordRing}'s constructor.
   */
  static allocate(capacity: number, maxsize: number): SharedArrayBuffer {
    const buffer = new SharedArrayBuffer(HEADER_BYTES + capacity);
    const c = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    c[CAP] = capacity;
    c[MAXSIZE] = maxsize > 0 ? maxsize : 0;
    c[UID] = (Math.random() * 0x7fffffff) | 0;
    c[UID + 1] = (Math.random() * 0x7fffffff) | 0;
    return buffer;
  }

  /**
   * Attaches to a ring's memory.
   *
   * @param buffer Memory from {@linkcode RecordRing.allocate}.
   * @param tasks Count every item put as an unfinished task (see
   *   {@linkcode RecordRing.taskDone}); every holder of a JoinableQueue's
   *   ring attaches with `true`.
   */
  constructor(buffer: SharedArrayBuffer, tasks = false) {
    this.buffer = buffer;
    this.#c = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.#tasks = tasks;
    this.#lock = new OwnerWord(this.#c, LOCK, RING_LOCK);
    this.capacity = this.#c[CAP]!;
    this.maxsize = this.#c[MAXSIZE]!;
    this.#data = new Uint8Array(buffer, HEADER_BYTES, this.capacity);
    this.#d32 = new Int32Array(buffer, HEADER_BYTES, this.capacity / 4);
    this.#claim = new OwnerWord(this.#c, W_CLAIM, STREAM_CLAIM);
    this.#chunk = Math.max(4, ((this.capacity >> 2) - 4 - CHUNK_PREFIX) & ~3);
    this.#key = `${this.#c[UID]}.${this.#c[UID + 1]}`;
  }
  /**
   * Takes the ring's lock. A dead holder's lock is taken over silently
   * (after the policy's grace): nothing is half-written under it for long.
   */
  #take(): void {
    const me = currentThreadId();
    this.#lock.take(me);
  }

  /**
   * Counts the caller as a sleeping producer, noting the wake sequence it
   * must sleep on (under the lock, after a try found the ring full).
   */
  #registerPut(): void {
    this.#seq = Atomics.load(this.#c, GET_SEQ);
    Atomics.add(this.#c, WAIT_PUT, 1);
  }

  /** Counts the caller as a sleeping consumer; see `#registerPut`. */
  #registerGet(): void {
    this.#seq = Atomics.load(this.#c, PUT_SEQ);
    Atomics.add(this.#c, WAIT_GET, 1);
  }

  /** Items in the ring. */
  get count(): number {
    return Atomics.load(this.#c, COUNT);
  }

  /** Whether the writing side is closed. */
  get writerClosed(): boolean {
    return (Atomics.load(this.#c, FLAGS) & W_CLOSED) !== 0;
  }

  /** Whether the reading side is closed. */
  get readerClosed(): boolean {
    return (Atomics.load(this.#c, FLAGS) & R_CLOSED) !== 0;
  }

  /**
   * Tries to append the pending record (see {@linkcode encodeRecord}).
   *
   * @param register When it is full, count the caller as a sleeping
   *   producer (it must then sleep with {@linkcode RecordRing.waitPutSync}
   *   or {@linkcode RecordRing.waitPut}).
   * @returns `OK`, `FULL`, `CLOSED` or `BROKEN`.
   */
  tryPut(register: boolean): PutResult {
    const c = this.#c;
    this.#take();
    const flags = c[FLAGS]!;
    if (flags !== 0) {
      this.#lock.unlock();
      return (flags & W_CLOSED) !== 0 ? CLOSED : BROKEN;
    }
    const size = pendingSize();
    const used = c[USED]!;
    const count = c[COUNT]!;
    const cap = this.capacity;
    // A record larger than the ring, or than a header can say, never fits:
    // it must be streamed (see `needsStream`).
    if (
      used + size > cap || (this.maxsize > 0 && count >= this.maxsize) ||
      (size > MAX_PAYLOAD - 64 && pendingLength() > MAX_PAYLOAD)
    ) {
      if (register) this.#registerPut();
      this.#lock.unlock();
      return FULL;
    }
    writePending(this.#data, this.#d32, c[TAIL]!, cap);
    this.#append(size, used, count, this.#tasks);
    return OK;
  }

  /**
   * The commit of a put (lock held; released here): makes the record just
   * written at the tail visible, in straight-line stores, never half-done,
   * and wakes sleeping consumers. A task is counted here, under the lock,
   * so it is unfinished before any consumer can take it (and no failed put
   * counts one). `taskDone` changes the word without the lock, hence the
   * atomic add.
   *
   * @param size The record's size in the ring.
   * @param used `USED` as read under the lock.
   * @param count `COUNT` as read under the lock.
   * @param task Whether the record completes an unfinished task.
   */
  #append(size: number, used: number, count: number, task: boolean): void {
    const c = this.#c;
    let next = c[TAIL]! + size;
    if (next >= this.capacity) next -= this.capacity;
    c[TAIL] = next;
    c[USED] = used + size;
    c[COUNT] = count + 1;
    if (task) Atomics.add(c, UNFINISHED, 1);
    const wake = c[WAIT_GET] !== 0;
    this.#lock.unlock();
    if (wake) bump(c, PUT_SEQ);
  }

  /**
   * Encodes `value` and tries to append it once.
   *
   * @param value The value.
   * @param what The call, for error messages.
   * @returns `OK`, `FULL`, `CLOSED` or `BROKEN`.
   * @throws {TypeError} If it cannot be cloned.
   * @throws {RangeError} If it can never fit.
   */
  put(value: unknown, what: string): PutResult {
    encodeRecord(value, what);
    return this.tryPut(false);
  }

  /**
   * Whether the pending record is too large for one record of this ring,
   * so that a put streams it in pieces.
   *
   * @returns `true` when it must be streamed.
   */
  needsStream(): boolean {
    return pendingSize() > this.capacity || pendingLength() > MAX_PAYLOAD;
  }

  /**
   * Tries to take the oldest record.
   *
   * @param register When it is empty, count the caller as a sleeping
   *   consumer (it must then sleep with {@linkcode RecordRing.waitGetSync}
   *   or {@linkcode RecordRing.waitGet}).
   * @param kind Which records to take.
   * @returns The value, or `EMPTY`, `DRAINED` or `MISMATCH`.
   */
  tryGet(register: boolean, kind: RecordKind = "any"): unknown {
    const c = this.#c;
    this.#take();
    const count = c[COUNT]!;
    if (count === 0) {
      if (c[R_CLAIM] !== 0) this.#emptyInStream();
      const closed = (c[FLAGS]! & W_CLOSED) !== 0;
      if (!closed && register) this.#registerGet();
      this.#lock.unlock();
      return closed ? DRAINED : EMPTY;
    }
    const cap = this.capacity;
    const head = c[HEAD]!;
    const hdr = this.#d32[head >> 2]!;
    if ((hdr & 7) === TAG_STREAM) return this.#getStream(register, kind);
    if (isWrongKind(kind, hdr)) {
      this.#lock.unlock();
      return MISMATCH;
    }
    const raw = readPayload(this.#data, this.#d32, hdr, head, cap);
    const wake = this.#drop(storedSize(hdr), count);
    this.#lock.unlock();
    if (wake) bump(c, GET_SEQ);
    return decodePayload(hdr, raw);
  }

  // -- Streams --

  /**
   * Whether a reader reassembles a stream now (a get's wait then sleeps in
   * short slices, to notice a dead writer or reader).
   */
  get streaming(): boolean {
    return Atomics.load(this.#c, R_CLAIM) !== 0;
  }

  /** The word at payload offset `k` (a multiple of 4) of the record at `at`. */
  #word(at: number, k: number): number {
    let p = at + 4 + k;
    if (p >= this.capacity) p -= this.capacity;
    return this.#d32[p >> 2]!;
  }

  #setWord(at: number, k: number, v: number): void {
    let p = at + 4 + k;
    if (p >= this.capacity) p -= this.capacity;
    this.#d32[p >> 2] = v;
  }

  /**
   * Removes the record at the head (lock held): the commit of a get,
   * straight-line stores, never half-done.
   *
   * @param size The record's size in the ring.
   * @param count `COUNT` as read under the lock.
   * @returns Whether sleeping producers should be woken: only once there is
   *   real room (half the bytes and half the items free, or empty), so a
   *   full ring does not cost a notify per get.
   */
  #drop(size: number, count: number): boolean {
    const c = this.#c;
    const cap = this.capacity;
    let next = c[HEAD]! + size;
    if (next >= cap) next -= cap;
    const used = c[USED]! - size;
    c[HEAD] = next;
    c[USED] = used;
    c[COUNT] = count - 1;
    const max = this.maxsize;
    return c[WAIT_PUT] !== 0 &&
      (count === 1 ||
        (used <= cap >> 1 && (max === 0 || count - 1 <= max >> 1)));
  }

  /** Ends this thread's reassembly on this ring (lock held). */
  #forget(): void {
    const c = this.#c;
    if (c[R_CLAIM] === currentThreadId()) {
      c[R_CLAIM] = 0;
      c[CUR_ID] = 0;
    }
    assemblies().delete(this.#key);
  }

  /**
   * A get found the ring empty while a reader holds the read claim (lock
   * held): drops this thread's partial message if its stream can no longer
   * end (abandoned, its writer dead, the writing side closed), frees a dead
   * reader's claim.
   */
  #emptyInStream(): void {
    const c = this.#c;
    const claimer = c[R_CLAIM]!;
    if (claimer === currentThreadId()) {
      const a = assemblies().get(this.#key);
      if (
        !a || a.id !== c[CUR_ID] || c[ABORT_ID] === a.id ||
        (c[FLAGS]! & W_CLOSED) !== 0 || !isThreadAlive(a.writer)
      ) {
        this.#forget();
      }
    } else if (!isThreadAlive(claimer)) {
      c[R_CLAIM] = 0;
      c[CUR_ID] = 0;
    }
  }

  /**
   * A get found a stream record at the head (lock held; released here).
   * Takes a start record (and the read claim), adds a chunk to this
   * thread's message, discards chunks no reader can use, and leaves chunks
   * another live reader reassembles.
   */
  #getStream(register: boolean, kind: RecordKind): unknown {
    for (;;) {
      const r = this.#streamStep(register, kind);
      if (r !== AGAIN) return r;
      this.#take();
      if (this.#c[COUNT] === 0 || (this.#d32[this.#c[HEAD]! >> 2]! & 7) !== 0) {
        this.#lock.unlock();
        return this.tryGet(register, kind);
      }
    }
  }

  /** One record of `#getStream` (lock held; released here). */
  #streamStep(register: boolean, kind: RecordKind): unknown {
    const c = this.#c;
    const head = c[HEAD]!;
    const count = c[COUNT]!;
    const hdr = this.#d32[head >> 2]!;
    const size = storedSize(hdr);
    const id = this.#word(head, 0);
    const w1 = this.#word(head, 4);
    const me = currentThreadId();
    const claimer = c[R_CLAIM]!;
    if (w1 < 0) {
      // A start record. A stream already abandoned is discarded at once.
      const tag = -w1;
      const live = c[ABORT_ID] !== id;
      if (live && isWrongKind(kind, tag)) {
        this.#lock.unlock();
        return MISMATCH;
      }
      const length = this.#word(head, 8);
      const writer = this.#word(head, 12);
      const wake = this.#drop(size, count);
      if (live) {
        // A start while another reader holds the claim: that reader's
        // stream is over (streams never interleave), so the claim moves.
        c[R_CLAIM] = me;
        c[CUR_ID] = id;
      }
      this.#lock.unlock();
      if (wake) bump(c, GET_SEQ);
      if (live) {
        assemblies().set(this.#key, {
          id,
          tag,
          writer,
          got: 0,
          buf: new Uint8Array(length),
        });
      }
      return AGAIN;
    }
    const a = claimer === me ? assemblies().get(this.#key) : undefined;
    if (a && a.id === id && c[CUR_ID] === id && a.got === w1) {
      if (isWrongKind(kind, a.tag)) {
        this.#lock.unlock();
        return MISMATCH;
      }
      copyChunk(this.#data, this.capacity, head, hdr >>> 3, a);
      const wake = this.#drop(size, count);
      if (a.got < a.buf.length) {
        this.#lock.unlock();
        if (wake) bump(c, GET_SEQ);
        return AGAIN;
      }
      // The last byte is in: the message is whole.
      this.#forget();
      const readers = count > 1 && c[WAIT_GET] !== 0;
      this.#lock.unlock();
      if (wake) bump(c, GET_SEQ);
      if (readers) bump(c, PUT_SEQ);
      return decodeMessage(a.tag, a.buf);
    }
    if (
      claimer !== 0 && claimer !== me && c[CUR_ID] === id &&
      isThreadAlive(claimer)
    ) {
      // Another reader reassembles this stream: wait for it.
      if (register) this.#registerGet();
      this.#lock.unlock();
      return EMPTY;
    }
    // A chunk nobody can use: its stream was dropped, its reader died, or
    // it is out of order. Discard it (and this thread's part of it).
    if (claimer !== 0 && c[CUR_ID] === id) {
      if (claimer === me) this.#forget();
      else if (!isThreadAlive(claimer)) {
        c[R_CLAIM] = 0;
        c[CUR_ID] = 0;
      }
    }
    const wake = this.#drop(size, count);
    this.#lock.unlock();
    if (wake) bump(c, GET_SEQ);
    return AGAIN;
  }

  /**
   * Takes the pending record (see {@linkcode encodeRecord}) as a stream to
   * write with {@linkcode RecordRing.tryPutPiece}.
   *
   * @param copy Copy bytes that may change meanwhile (an async put).
   * @returns The stream.
   */
  beginStream(copy: boolean): StreamWrite {
    const { tag, bytes } = takePending(copy);
    return { tag, bytes, id: 0, off: -1 };
  }

  /**
   * Takes the writers' stream claim, blocking the thread.
   *
   * @param timeout Milliseconds.
   * @returns `false` on timeout.
   */
  claimStreamSync(timeout: number): boolean {
    return this.#claim.lockSync(currentThreadId(), timeout) !== TIMED_OUT;
  }

  /**
   * Takes the writers' stream claim without blocking the event loop.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   * @returns `false` on timeout.
   */
  async claimStream(
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    const me = currentThreadId();
    if (this.#claim.tryLock(me)) return true;
    return await this.#claim.lockAsync(me, timeout, signal) !== TIMED_OUT;
  }

  /** Frees the writers' stream claim. */
  releaseStream(): void {
    this.#claim.unlock();
  }

  /**
   * The size in the ring of the stream's next record.
   *
   * @param s The stream.
   * @returns Bytes.
   */
  pieceSize(s: StreamWrite): number {
    if (s.off < 0) return 4 + START_PAYLOAD;
    const n = Math.min(s.bytes.length - s.off, this.#chunk);
    return 4 + CHUNK_PREFIX + ((n + 3) & ~3);
  }

  /**
   * Tries to append the stream's next record (the caller holds the stream
   * claim). The start record counts against `maxsize`; chunks only need
   * bytes. The last chunk counts the item as an unfinished task.
   *
   * @param register When it is full, count the caller as a sleeping
   *   producer (as {@linkcode RecordRing.tryPut}).
   * @param s The stream; advanced on `OK`.
   * @returns `OK`, `FULL`, `CLOSED` or `BROKEN`.
   */
  tryPutPiece(register: boolean, s: StreamWrite): PutResult {
    const c = this.#c;
    this.#take();
    const flags = c[FLAGS]!;
    if (flags !== 0) {
      this.#lock.unlock();
      return (flags & W_CLOSED) !== 0 ? CLOSED : BROKEN;
    }
    const start = s.off < 0;
    const size = this.pieceSize(s);
    const used = c[USED]!;
    const count = c[COUNT]!;
    const cap = this.capacity;
    if (
      used + size > cap ||
      (start && this.maxsize > 0 && count >= this.maxsize)
    ) {
      if (register) this.#registerPut();
      this.#lock.unlock();
      return FULL;
    }
    const tail = c[TAIL]!;
    let last = false;
    let n = 0;
    if (start) {
      const id = (c[STREAM_SEQ]! % 0x7ffffffe) + 1;
      c[STREAM_SEQ] = id;
      s.id = id;
      this.#d32[tail >> 2] = START_PAYLOAD * 8 + TAG_STREAM;
      this.#setWord(tail, 0, id);
      this.#setWord(tail, 4, -s.tag);
      this.#setWord(tail, 8, s.bytes.length);
      this.#setWord(tail, 12, currentThreadId());
    } else {
      n = Math.min(s.bytes.length - s.off, this.#chunk);
      last = s.off + n === s.bytes.length;
      this.#d32[tail >> 2] = (CHUNK_PREFIX + n) * 8 + TAG_STREAM;
      this.#setWord(tail, 0, s.id);
      this.#setWord(tail, 4, s.off);
      let p = tail + 4 + CHUNK_PREFIX;
      if (p >= cap) p -= cap;
      const first = cap - p;
      const src = s.bytes.subarray(s.off, s.off + n);
      if (n <= first) {
        this.#data.set(src, p);
      } else {
        this.#data.set(src.subarray(0, first), p);
        this.#data.set(src.subarray(first), 0);
      }
    }
    this.#append(size, used, count, last && this.#tasks);
    s.off = start ? 0 : s.off + n;
    return OK;
  }

  /**
   * Abandons a stream its writer will not finish (timeout, abort, error):
   * the reader drops what it has of it, and its remaining chunks are
   * discarded. Does nothing before its start record or after its end.
   *
   * @param s The stream.
   */
  abortStream(s: StreamWrite): void {
    if (s.id === 0 || s.off === s.bytes.length) return;
    const c = this.#c;
    this.#take();
    c[ABORT_ID] = s.id;
    this.#lock.unlock();
    bump(c, PUT_SEQ);
  }

  /**
   * Spins (reading without the lock, as the read side's spin policy allows)
   * until an item may be there or the writer closed.
   *
   * @returns `true` when it may be readable now.
   */
  spinReadable(): boolean {
    const c = this.#c;
    return this.#readSpin.spinWhile(c, COUNT, 0) ||
      Atomics.load(c, FLAGS) !== 0;
  }

  /**
   * Spins (reading without the lock, as the write side's spin policy
   * allows) until a record of `size` bytes may fit: until a get changes
   * the count.
   *
   * @param size The record's size.
   * @returns `true` when it may fit now.
   */
  spinWritable(size: number): boolean {
    const c = this.#c;
    const max = this.maxsize;
    const count = Atomics.load(c, COUNT);
    if (
      (Atomics.load(c, USED) <= this.capacity - size &&
        (max === 0 || count < max)) || Atomics.load(c, FLAGS) !== 0
    ) return true;
    return this.#writeSpin.spinWhile(c, COUNT, count);
  }

  /**
   * Whether a get would not wait (an item is there, or the writer closed).
   *
   * @param register When not, count the caller as a sleeping consumer.
   * @returns `true` when readable.
   */
  readable(register: boolean): boolean {
    const c = this.#c;
    this.#take();
    const ready = c[COUNT] !== 0 || (c[FLAGS]! & W_CLOSED) !== 0;
    if (!ready && register) this.#registerGet();
    this.#lock.unlock();
    return ready;
  }

  /**
   * Sleeps (blocking) until a registered consumer may retry.
   *
   * @param timeout Milliseconds.
   */
  waitGetSync(timeout: number): void {
    this.#sleepSync(PUT_SEQ, WAIT_GET, timeout);
  }

  /**
   * Sleeps (blocking) until a registered producer may retry.
   *
   * @param timeout Milliseconds.
   */
  waitPutSync(timeout: number): void {
    this.#sleepSync(GET_SEQ, WAIT_PUT, timeout);
  }

  /**
   * Waits, without blocking, until a registered consumer may retry.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   */
  waitGet(timeout: number, signal: AbortSignal | undefined): Promise<void> {
    return this.#sleep(PUT_SEQ, WAIT_GET, timeout, signal);
  }

  /**
   * Waits, without blocking, until a registered producer may retry.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   */
  waitPut(timeout: number, signal: AbortSignal | undefined): Promise<void> {
    return this.#sleep(GET_SEQ, WAIT_PUT, timeout, signal);
  }

  /**
   * Sleeps on the sequence word `seq` (the caller registered in `waiters`,
   * which it leaves on waking).
   */
  #sleepSync(seq: number, waiters: number, timeout: number): void {
    try {
      waitSync(this.#c, seq, this.#seq, timeout);
    } finally {
      Atomics.sub(this.#c, waiters, 1);
    }
  }

  /** The promise twin of `#sleepSync`. */
  async #sleep(
    seq: number,
    waiters: number,
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const seen = this.#seq;
    try {
      await waitAsync(this.#c, seq, seen, options(timeout, signal));
    } finally {
      Atomics.sub(this.#c, waiters, 1);
    }
  }

  #setFlag(flag: number): void {
    const c = this.#c;
    this.#take();
    c[FLAGS] = c[FLAGS]! | flag;
    this.#lock.unlock();
    bump(c, PUT_SEQ);
    bump(c, GET_SEQ);
  }

  /**
   * Counts one more copy of the writing (`"w"`) or reading (`"r"`) end.
   *
   * @param side Which end.
   */
  addCopy(side: "w" | "r"): void {
    Atomics.add(this.#c, side === "w" ? W_COPIES : R_COPIES, 1);
  }

  /**
   * Drops one copy of an end.
   *
   * @param side Which end.
   * @returns `true` if it was the last copy (the side should close).
   */
  dropCopy(side: "w" | "r"): boolean {
    return Atomics.sub(this.#c, side === "w" ? W_COPIES : R_COPIES, 1) <= 0;
  }

  /** Closes the writing side: puts fail, gets drain then see `DRAINED`. */
  closeWriter(): void {
    this.#setFlag(W_CLOSED);
  }

  /** Closes the reading side: puts see `BROKEN`. */
  closeReader(): void {
    this.#setFlag(R_CLOSED);
  }

  // -- JoinableQueue accounting --

  /**
   * Marks one task done (a ring attached with `tasks` counts one per item
   * in the commit of its put).
   *
   * @returns `false` when none was unfinished (nothing changed).
   */
  taskDone(): boolean {
    const c = this.#c;
    for (;;) {
      const u = Atomics.load(c, UNFINISHED);
      if (u <= 0) return false;
      if (Atomics.compareExchange(c, UNFINISHED, u, u - 1) === u) {
        if (u === 1 && Atomics.load(c, WAIT_JOIN) !== 0) {
          Atomics.notify(c, UNFINISHED);
        }
        return true;
      }
    }
  }

  /**
   * Waits until every task is done.
   *
   * @param timeout Milliseconds.
   * @param signal Aborts the wait with its reason.
   * @returns `false` on timeout.
   */
  async join(
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    const c = this.#c;
    const end = performance.now() + timeout;
    Atomics.add(c, WAIT_JOIN, 1);
    try {
      for (;;) {
        const u = Atomics.load(c, UNFINISHED);
        if (u === 0) return true;
        const left = end - performance.now();
        if (left <= 0) return false;
        await waitAsync(c, UNFINISHED, u, options(left, signal));
      }
    } finally {
      Atomics.sub(c, WAIT_JOIN, 1);
    }
  }

  /** Items put and not yet marked done. */
  get unfinished(): number {
    return Atomics.load(this.#c, UNFINISHED);
  }
}

function options(
  timeout: number,
  signal: AbortSignal | undefined,
): WaitOptions {
  const o: WaitOptions = { timeout };
  if (signal) o.signal = signal;
  return o;
}

/**
 * Checks a byte-capacity option and rounds it up to a multiple of 8.
 *
 * @param value The option as given.
 * @param fallback The default.
 * @param what The call, for the message.
 * @returns The capacity in bytes.
 * @throws {RangeError} If it is not an integer from 64 to 2^30.
 */
export function checkCapacity(
  value: unknown,
  fallback: number,
  what: string,
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 64 ||
    value > 1 << 30
  ) {
    throw new RangeError(
      `Cannot ${what}: capacityBytes must be an integer from 64 to ${
        1 << 30
      }, received ${describeValue(value)}`,
    );
  }
  return (value + 7) & ~7;
}

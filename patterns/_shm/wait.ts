/**
 * The waiting loops shared by `pipe.ts` and `queue.ts`: try once, then spin
 * on the ring without its lock, register as a sleeper and sleep until woken,
 * the timeout passes or (for the async loops) the signal aborts. A record
 * larger than the ring is streamed in pieces (`putStreamSync`,
 * `putStreamAsync`): the stream claim, then each piece as room appears,
 * under one deadline; a stream that cannot finish is abandoned, so the
 * reader drops it whole.
 *
 * @module
 */

import { throwIfStopRequested } from "../_core/runtime.ts";
import { deadline } from "../_core/deadline.ts";
import {
  pendingSize,
  recordSize,
  restorePending,
  savePending,
} from "./codec.ts";
import { EMPTY, FULL, OK } from "./ring.ts";
import type { PutResult, RecordKind, RecordRing } from "./ring.ts";

/** Slices of a get's sleep while a stream is in progress, in ms. */
const STREAM_SLICE_MS = 20;

/** How long a get sleeps: to its deadline, in short slices mid-stream. */
function sleepFor(ring: RecordRing, end: number): number {
  const left = Math.max(0, end - performance.now());
  return ring.streaming ? Math.min(left, STREAM_SLICE_MS) : left;
}

/**
 * Gets a record, waiting (without blocking) up to `timeout` ms.
 *
 * @param ring The ring.
 * @param kind Which records to take.
 * @param timeout Milliseconds (`0` only tries).
 * @param signal Aborts the wait with its reason.
 * @param check Called after each wake; throws to end the wait (e.g. the
 *   caller's own end was closed meanwhile).
 * @returns The value, or `EMPTY` on timeout, `DRAINED` or `MISMATCH`.
 */
export async function getAsync(
  ring: RecordRing,
  kind: RecordKind,
  timeout: number,
  signal: AbortSignal | undefined,
  check?: () => void,
): Promise<unknown> {
  if (signal?.aborted) throw signal.reason;
  const first = ring.tryGet(false, kind);
  if (first !== EMPTY || timeout <= 0) return first;
  const end = performance.now() + timeout;
  for (;;) {
    ring.spinReadable();
    const v = ring.tryGet(true, kind);
    if (v !== EMPTY) return v;
    await ring.waitGet(sleepFor(ring, end), signal);
    check?.();
    if (performance.now() >= end) return ring.tryGet(false, kind);
  }
}

/**
 * Gets a record, blocking the thread up to `timeout` ms.
 *
 * @param ring The ring.
 * @param kind Which records to take.
 * @param timeout Milliseconds (`0` only tries).
 * @param check Called after each wake; throws to end the wait.
 * @returns The value, or `EMPTY` on timeout, `DRAINED` or `MISMATCH`.
 */
export function getSync(
  ring: RecordRing,
  kind: RecordKind,
  timeout: number,
  check?: () => void,
): unknown {
  const first = ring.tryGet(false, kind);
  if (first !== EMPTY || timeout <= 0) return first;
  const end = performance.now() + timeout;
  for (;;) {
    ring.spinReadable();
    const v = ring.tryGet(true, kind);
    if (v !== EMPTY) return v;
    ring.waitGetSync(sleepFor(ring, end));
    throwIfStopRequested();
    check?.();
    if (performance.now() >= end) return ring.tryGet(false, kind);
  }
}

/**
 * Puts the pending record (see `encodeRecord` in `codec.ts`), waiting
 * (without blocking) up to `timeout` ms for room.
 *
 * @param ring The ring.
 * @param timeout Milliseconds (`0` only tries).
 * @param signal Aborts the wait with its reason.
 * @param check Called after each wake; throws to end the wait.
 * @returns `OK`, `FULL` (timed out), `CLOSED` or `BROKEN`.
 */
export async function putAsync(
  ring: RecordRing,
  timeout: number,
  signal: AbortSignal | undefined,
  check?: () => void,
): Promise<PutResult> {
  if (ring.needsStream()) {
    return putStreamAsync(ring, timeout, signal, check, true);
  }
  const first = ring.tryPut(false);
  if (first !== FULL || timeout <= 0) return first;
  const saved = savePending();
  const end = performance.now() + timeout;
  for (;;) {
    ring.spinWritable(recordSize(saved.len));
    restorePending(saved);
    const r = ring.tryPut(true);
    if (r !== FULL) return r;
    await ring.waitPut(Math.max(0, end - performance.now()), signal);
    check?.();
    if (performance.now() >= end) {
      restorePending(saved);
      return ring.tryPut(false);
    }
  }
}

/**
 * Puts the pending record, blocking the thread up to `timeout` ms for room.
 *
 * @param ring The ring.
 * @param timeout Milliseconds (`0` only tries).
 * @param check Called after each wake; throws to end the wait.
 * @returns `OK`, `FULL` (timed out), `CLOSED` or `BROKEN`.
 */
export function putSync(
  ring: RecordRing,
  timeout: number,
  check?: () => void,
): PutResult {
  if (ring.needsStream()) return putStreamSync(ring, timeout, check);
  const first = ring.tryPut(false);
  if (first !== FULL || timeout <= 0) return first;
  const end = performance.now() + timeout;
  const size = pendingSize();
  for (;;) {
    // Nothing else runs in this thread while it blocks: the pending record
    // stays as it is.
    ring.spinWritable(size);
    const r = ring.tryPut(true);
    if (r !== FULL) return r;
    ring.waitPutSync(Math.max(0, end - performance.now()));
    throwIfStopRequested();
    check?.();
    if (performance.now() >= end) return ring.tryPut(false);
  }
}

/**
 * Streams the pending record, larger than the ring, in pieces, blocking
 * the thread up to `timeout` ms in all (`0`: `FULL` at once, a stream
 * cannot be written in one try). A stream that does not finish is
 * abandoned: the reader drops it whole.
 *
 * @param ring The ring.
 * @param timeout Milliseconds for the whole stream.
 * @param check Called after each wake; throws to end the wait.
 * @returns `OK`, `FULL` (timed out), `CLOSED` or `BROKEN`.
 */
export function putStreamSync(
  ring: RecordRing,
  timeout: number,
  check?: () => void,
): PutResult {
  if (timeout <= 0) return FULL;
  const end = deadline(timeout);
  const s = ring.beginStream(false);
  if (!ring.claimStreamSync(timeout)) return FULL;
  try {
    for (;;) {
      let r = ring.tryPutPiece(false, s);
      while (r === FULL) {
        if (performance.now() >= end) return FULL;
        ring.spinWritable(ring.pieceSize(s));
        r = ring.tryPutPiece(true, s);
        if (r !== FULL) break;
        ring.waitPutSync(Math.max(0, end - performance.now()));
        throwIfStopRequested();
        check?.();
      }
      if (r !== OK) return r;
      if (s.off === s.bytes.length) return OK;
    }
  } finally {
    ring.abortStream(s);
    ring.releaseStream();
  }
}

/**
 * Streams the pending record, larger than the ring, in pieces, waiting
 * without blocking up to `timeout` ms in all.
 *
 * @param ring The ring.
 * @param timeout Milliseconds for the whole stream.
 * @param signal Aborts it with its reason (the stream is abandoned).
 * @param check Called after each wake; throws to end the wait.
 * @param copy Copy bytes the caller may change meanwhile (see
 *   `takePending` in `codec.ts`).
 * @returns `OK`, `FULL` (timed out), `CLOSED` or `BROKEN`.
 */
export async function putStreamAsync(
  ring: RecordRing,
  timeout: number,
  signal: AbortSignal | undefined,
  check: (() => void) | undefined,
  copy: boolean,
): Promise<PutResult> {
  if (signal?.aborted) throw signal.reason;
  if (timeout <= 0) return FULL;
  const end = deadline(timeout);
  const s = ring.beginStream(copy);
  if (!await ring.claimStream(timeout, signal)) return FULL;
  try {
    for (;;) {
      let r = ring.tryPutPiece(false, s);
      while (r === FULL) {
        if (performance.now() >= end) return FULL;
        ring.spinWritable(ring.pieceSize(s));
        r = ring.tryPutPiece(true, s);
        if (r !== FULL) break;
        await ring.waitPut(Math.max(0, end - performance.now()), signal);
        check?.();
      }
      if (r !== OK) return r;
      if (s.off === s.bytes.length) return OK;
    }
  } finally {
    ring.abortStream(s);
    ring.releaseStream();
  }
}

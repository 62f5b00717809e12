/**
 * The waiting loops shared by `pipe.ts` and `queue.ts`: try once, then spin
 * on the ring without its lock, register as a sleeper and sleep until woken,
 * the timeout passes or (for the async loops) the signal aborts.
 *
 * @module
 */

import { throwIfStopRequested } from "../_core/runtime.ts";
import {
  pendingSize,
  recordSize,
  restorePending,
  savePending,
} from "./codec.ts";
import { EMPTY, FULL } from "./ring.ts";
import type { PutResult, RecordKind, RecordRing } from "./ring.ts";

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
    await ring.waitGet(Math.max(0, end - performance.now()), signal);
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
    ring.waitGetSync(Math.max(0, end - performance.now()));
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

/**
 * What the ring's streams are made of (`ring.ts` runs the protocol, which
 * needs its private words): the layout of a stream's start record and
 * chunks, the writers' stream claim policy, a writer's
 * {@linkcode StreamWrite}, and the reassembly a reading thread keeps per
 * ring. A message larger than the ring goes in as a start record (id,
 * -tag, length, writer) and chunks (id, offset, data) that one reader, the
 * claimer, copies into its assembly until the last byte is in.
 *
 * @module
 */

import type { OwnerWordPolicy } from "../_core/owner_word.ts";
import { perThread } from "../_core/runtime.ts";

/**
 * The writers' stream claim: held for a whole stream (many waits for
 * room), so its waiters sleep in 10 ms slices, watch for a stop request,
 * and take a dead writer's claim over at once (the reader drops what that
 * writer left half-sent, see the module doc).
 */
export const STREAM_CLAIM: OwnerWordPolicy = Object.freeze({
  spin: 1000,
  sliceMs: 10,
  graceMs: 0,
  stopCheck: true,
});

/** Payload bytes of a stream's start record: id, -tag, length, writer. */
export const START_PAYLOAD = 16;
/** Payload bytes of a chunk before its data: id, offset. */
export const CHUNK_PREFIX = 8;

/** A stream being written (see {@linkcode RecordRing.beginStream}). */
export interface StreamWrite {
  /** The message's own tag. */
  readonly tag: number;
  /** Its encoded payload. */
  readonly bytes: Uint8Array;
  /** The stream's id (0 until its start record is in). */
  id: number;
  /** Bytes written so far (-1 until the start record is in). */
  off: number;
}

/** What a thread keeps of a stream it reassembles. */
export interface Assembly {
  /** The stream's id. */
  id: number;
  /** The message's own tag. */
  tag: number;
  /** The writing thread (its death ends the stream). */
  writer: number;
  /** Bytes copied so far. */
  got: number;
  /** The whole message, as it fills. */
  buf: Uint8Array;
}

/** This thread's streams in reassembly, by ring. */
export function assemblies(): Map<string, Assembly> {
  return perThread("ring-streams", () => new Map<string, Assembly>());
}

/** The internal result of one step of a stream read: look again. */
export const AGAIN: unique symbol = Symbol("again");

/**
 * Copies a chunk's data out of the ring (wrapping at its end) into the
 * assembly, and counts it.
 *
 * @param data The ring's bytes.
 * @param cap The ring's capacity.
 * @param head Where the chunk record starts.
 * @param payload The record's payload length (prefix included).
 * @param a The assembly the chunk belongs to.
 */
export function copyChunk(
  data: Uint8Array,
  cap: number,
  head: number,
  payload: number,
  a: Assembly,
): void {
  const n = Math.min(payload - CHUNK_PREFIX, a.buf.length - a.got);
  let p = head + 4 + CHUNK_PREFIX;
  if (p >= cap) p -= cap;
  const first = cap - p;
  if (n <= first) {
    a.buf.set(data.subarray(p, p + n), a.got);
  } else {
    a.buf.set(data.subarray(p, cap), a.got);
    a.buf.set(data.subarray(0, n - first), a.got + first);
  }
  a.got += n;
}

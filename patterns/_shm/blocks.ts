/**
 * The named blocks behind `shared_memory.ts`: one arena (a growable
 * `SharedArrayBuffer` every thread of the program holds from its start, see
 * `ThreadIdentity.blocks`) and a directory of entries in shared memory, each
 * a name, a place in the arena, a size and a count of open handles, changed
 * under one short lock.
 *
 * An entry is live (its name can be attached), unlinked (the name is gone,
 * handles still open), or a free region (its bytes may be given to a new
 * block of at most its capacity). The arena only grows; freed regions are
 * reused first fit.
 *
 * @module
 */

import { OwnerWord, SHORT_LOCK } from "../_core/owner_word.ts";
import { currentThreadId, threadIdentity } from "../_core/runtime.ts";

const HEADER = 64;
const ENTRY = 128;
/** The longest name, in UTF-8 bytes. */
export const MAX_NAME_BYTES: number = ENTRY - 40;

const EMPTY = 0;
const LIVE = 1;
const UNLINKED = 2;
const FREE = 3;

// Header words: [0..1] the lock, [2] entries in use (high-water mark);
// bytes 16.. the arena's bump pointer as a Float64.
// Entry words: [0] state, [1] open handles, [2] name length; bytes 16.. the
// offset, 24.. the size, 32.. the region's capacity (Float64s); 40.. the name.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Where a block lives. */
export interface BlockPlace {
  /** Its entry in the directory. */
  entry: number;
  /** Its name. */
  name: string;
  /** Byte offset in the arena. */
  offset: number;
  /** Its size in bytes. */
  size: number;
}

interface Directory {
  words: Int32Array;
  bytes: Uint8Array;
  f64: Float64Array;
  lock: OwnerWord;
  arena: SharedArrayBuffer;
  capacity: number;
}

let dir: Directory | undefined;

function directory(): Directory {
  if (dir) return dir;
  const { arena, directory: buffer } = threadIdentity().blocks;
  const words = new Int32Array(buffer);
  dir = {
    words,
    bytes: new Uint8Array(buffer),
    f64: new Float64Array(buffer, 0, buffer.byteLength >> 3),
    lock: new OwnerWord(words, 0, SHORT_LOCK),
    arena,
    capacity: (buffer.byteLength - HEADER) / ENTRY,
  };
  return dir;
}

function locked<T>(fn: (d: Directory) => T): T {
  const d = directory();
  const me = currentThreadId();
  d.lock.take(me);
  try {
    return fn(d);
  } finally {
    d.lock.unlock();
  }
}

const w = (e: number, i: number) => (HEADER + e * ENTRY >> 2) + i;
const f = (e: number, i: number) => (HEADER + e * ENTRY >> 3) + 2 + i;

function nameOf(d: Directory, e: number): string {
  const len = d.words[w(e, 2)]!;
  const at = HEADER + e * ENTRY + 40;
  return decoder.decode(d.bytes.slice(at, at + len));
}

function find(d: Directory, name: Uint8Array): number {
  const used = d.words[2]!;
  for (let e = 0; e < used; e++) {
    if (d.words[w(e, 0)] !== LIVE) continue;
    if (d.words[w(e, 2)] !== name.length) continue;
    const at = HEADER + e * ENTRY + 40;
    let same = true;
    for (let i = 0; i < name.length; i++) {
      if (d.bytes[at + i] !== name[i]) {
        same = false;
        break;
      }
    }
    if (same) return e;
  }
  return -1;
}

function place(d: Directory, e: number): BlockPlace {
  return {
    entry: e,
    name: nameOf(d, e),
    offset: d.f64[f(e, 0)]!,
    size: d.f64[f(e, 1)]!,
  };
}

/** Why {@linkcode createBlock} could not make a block. */
export type BlockFailure = "taken" | "full" | "too-big";

/**
 * Makes a block: a fresh zeroed region under a name no live block has.
 *
 * @param name Its name, already checked (at most `MAX_NAME_BYTES` bytes).
 * @param size Bytes, at least 1.
 * @returns Where it lives, or why it cannot be made.
 */
export function createBlock(
  name: string,
  size: number,
): BlockPlace | BlockFailure {
  const bytes = encoder.encode(name);
  return locked((d) => {
    if (find(d, bytes) >= 0) return "taken";
    const used = d.words[2]!;
    // A freed region that is large enough, else a fresh one.
    let e = -1;
    for (let i = 0; i < used; i++) {
      if (d.words[w(i, 0)] === FREE && d.f64[f(i, 2)]! >= size) {
        e = i;
        break;
      }
    }
    let offset: number;
    if (e >= 0) {
      offset = d.f64[f(e, 0)]!;
      new Uint8Array(d.arena, offset, size).fill(0);
    } else {
      for (let i = 0; i < used && e < 0; i++) {
        if (d.words[w(i, 0)] === EMPTY) e = i;
      }
      if (e < 0) {
        if (used >= d.capacity) return "full";
        e = used;
        d.words[2] = used + 1;
      }
      offset = Math.ceil(d.f64[2]! / 8) * 8;
      const end = offset + size;
      const arena = d.arena as SharedArrayBuffer & {
        grow(n: number): void;
        maxByteLength: number;
      };
      if (end > arena.maxByteLength) return "too-big";
      if (end > arena.byteLength) {
        arena.grow(
          Math.min(arena.maxByteLength, Math.ceil(end / 65536) * 65536),
        );
      }
      d.f64[2] = end;
      d.f64[f(e, 2)] = size;
    }
    d.f64[f(e, 0)] = offset;
    d.f64[f(e, 1)] = size;
    d.words[w(e, 1)] = 1;
    d.words[w(e, 2)] = bytes.length;
    d.bytes.set(bytes, HEADER + e * ENTRY + 40);
    Atomics.store(d.words, w(e, 0), LIVE);
    return place(d, e);
  });
}

/**
 * Opens a handle on a live block by name.
 *
 * @param name Its name.
 * @returns Where it lives, or `"unknown"`.
 */
export function attachBlock(name: string): BlockPlace | "unknown" {
  const bytes = encoder.encode(name);
  return locked((d) => {
    const e = find(d, bytes);
    if (e < 0) return "unknown";
    d.words[w(e, 1)]!++;
    return place(d, e);
  });
}

/**
 * Opens one more handle on the block in `entry` (a handle travelling to
 * another thread), live or unlinked.
 *
 * @param entry The directory entry.
 * @returns Whether the block is still there.
 */
export function retainBlock(entry: number): boolean {
  return locked((d) => {
    const s = d.words[w(entry, 0)];
    if (s !== LIVE && s !== UNLINKED) return false;
    d.words[w(entry, 1)]!++;
    return true;
  });
}

function freeIfDone(d: Directory, e: number): void {
  if (d.words[w(e, 0)] === UNLINKED && d.words[w(e, 1)]! <= 0) {
    d.words[w(e, 2)] = 0;
    Atomics.store(d.words, w(e, 0), FREE);
  }
}

/**
 * Closes one handle on the block in `entry`.
 *
 * @param entry The directory entry.
 */
export function releaseBlock(entry: number): void {
  locked((d) => {
    const s = d.words[w(entry, 0)];
    if (s !== LIVE && s !== UNLINKED) return;
    d.words[w(entry, 1)]!--;
    freeIfDone(d, entry);
  });
}

/**
 * Frees a block's name; its memory is reused once every handle is closed.
 *
 * @param entry The directory entry.
 * @returns `false` if it was already unlinked.
 */
export function unlinkBlock(entry: number): boolean {
  return locked((d) => {
    if (d.words[w(entry, 0)] !== LIVE) return false;
    d.words[w(entry, 0)] = UNLINKED;
    freeIfDone(d, entry);
    return true;
  });
}

/**
 * The bytes of a block, in this thread.
 *
 * @param p Where it lives.
 * @returns A view of its bytes.
 */
export function blockBytes(p: BlockPlace): Uint8Array {
  return new Uint8Array(directory().arena, p.offset, p.size);
}

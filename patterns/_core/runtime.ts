/**
 * Who this thread is: its id in the thread table shared by every thread of
 * the program (dead-holder detection reads it), its name, the stop request
 * word, and the per-thread records each concern keeps its own state in.
 *
 * @module
 */

import { isMainThread } from "node:worker_threads";
import { WorkerCrashedError } from "./errors.ts";

/** How many threads can be alive at once (slots in the thread table). */
const TABLE_SLOTS = 4096;
/**
 * Table layout: [0] the id counter; [1 + id % TABLE_SLOTS] the id of the
 * live thread in that slot, or 0. A thread is alive while its slot holds its
 * id: marking it dead clears the slot, which a new thread may then claim, so
 * one word says both "alive" and "told to stop" with no race between them.
 */
const IDS_OFFSET = 1;

/**
 * The record this thread keeps for one concern (`name`), made by `init` on
 * first use. It lives on `globalThis` under a registered symbol, so every
 * copy of this package loaded into the thread (from a `file:` and an
 * `https:` URL, say) shares it. Each concern owns its own record: the thread
 * identity here, the share registry in share.ts, the live workers in
 * worker.ts, the event-loop hold in wait.ts.
 *
 * @param name The concern's name.
 * @param init Makes the record.
 * @returns The thread's record for that concern.
 */
export function perThread<T>(name: string, init: () => T): T {
  const key = Symbol.for(`deno-multiprocessing.${name}.v2`);
  const g = globalThis as unknown as Record<symbol, T | undefined>;
  return (g[key] ??= init());
}

/** Who this thread is. */
export interface ThreadIdentity {
  /** The thread table every thread of the program shares. */
  table: Int32Array;
  /** This thread's id in it. */
  threadId: number;
  /** The name errors and `currentThreadName()` show. */
  threadName: string;
  /** Whether this is a worker rather than the main thread. */
  isWorker: boolean;
  /**
   * The memory behind `shared_memory.ts`, the same in every thread: the
   * arena the blocks live in (a growable `SharedArrayBuffer`) and the
   * directory of their names.
   */
  blocks: SharedBlocks;
}

/** See {@linkcode ThreadIdentity.blocks}. */
export interface SharedBlocks {
  /** Where the blocks' bytes live; grows as blocks are made. */
  arena: SharedArrayBuffer;
  /** Names, places and reference counts. */
  directory: SharedArrayBuffer;
}

/** The most the arena may grow to: address space, reserved, not used. */
const ARENA_MAX_BYTES = 2 ** 36;
/** The directory's size (its pages are touched only as it fills). */
const DIRECTORY_BYTES = 64 + 4096 * 128;

function newBlocks(): SharedBlocks {
  const Growable = SharedArrayBuffer as unknown as new (
    length: number,
    options: { maxByteLength: number },
  ) => SharedArrayBuffer;
  return {
    arena: new Growable(0, { maxByteLength: ARENA_MAX_BYTES }),
    directory: new SharedArrayBuffer(DIRECTORY_BYTES),
  };
}

function inWorkerScope(): boolean {
  return !isMainThread || typeof (globalThis as { WorkerGlobalScope?: unknown })
        .WorkerGlobalScope !== "undefined";
}

function claimId(table: Int32Array): number {
  for (let tries = 0; tries < TABLE_SLOTS * 2; tries++) {
    let id = Atomics.add(table, 0, 1) + 1;
    if (id >= 0x7fff0000) id = (id % 0x7fff0000) + 1;
    const slot = IDS_OFFSET + (id % TABLE_SLOTS);
    const occupant = Atomics.load(table, slot);
    if (occupant !== 0) continue;
    if (Atomics.compareExchange(table, slot, 0, id) === 0) return id;
  }
  throw new RangeError(
    `Cannot start a worker: more than ${TABLE_SLOTS} threads are alive`,
  );
}

const IDENTITY = "identity";
/** This module copy's reference to the thread's shared identity record. */
let identity: ThreadIdentity | undefined;

/**
 * This thread's identity: in the main thread a new table and id, made on
 * first use; in a worker the ones its spawner sent (see
 * {@linkcode adoptIdentity}).
 *
 * @returns The identity record.
 */
export function threadIdentity(): ThreadIdentity {
  return identity ??= perThread(IDENTITY, () => {
    const table = new Int32Array(
      new SharedArrayBuffer(4 * (IDS_OFFSET + TABLE_SLOTS)),
    );
    const isWorker = inWorkerScope();
    return {
      table,
      threadId: claimId(table),
      threadName: isWorker
        ? ((globalThis as { name?: string }).name || "worker")
        : "MainProcess",
      isWorker,
      blocks: newBlocks(),
    };
  });
}

/**
 * Takes on the identity a worker's spawner sent in its init message.
 *
 * @param identity The shared table, the worker's id and name.
 */
export function adoptIdentity(
  identity: Omit<ThreadIdentity, "isWorker">,
): void {
  const record = threadIdentity();
  record.table = identity.table;
  record.threadId = identity.threadId;
  record.threadName = identity.threadName;
  record.blocks = identity.blocks;
  record.isWorker = true;
}

/**
 * Claims a free id in the shared table for a thread about to be spawned.
 *
 * @returns The new thread's id.
 * @throws {RangeError} If the table is full.
 */
export function allocateThreadId(): number {
  return claimId(threadIdentity().table);
}

/**
 * The id of the calling thread (the main thread or a worker), unique among
 * the threads alive in this process tree. Lock owners are recorded by it.
 *
 * @returns A positive integer.
 */
export function currentThreadId(): number {
  return threadIdentity().threadId;
}

/**
 * The calling thread's name: `"MainProcess"`, or the worker's name (e.g.
 * `"Pool-1-worker-2"`), as Python's `current_process().name`.
 *
 * @returns The name.
 */
export function currentThreadName(): string {
  return threadIdentity().threadName;
}

/**
 * Whether the thread with this id is still alive: not exited, crashed,
 * terminated or told to stop. A lock owned by a thread that is not alive is
 * abandoned.
 *
 * @param id A thread id from {@linkcode currentThreadId}.
 * @returns `true` while it runs.
 */
export function isThreadAlive(id: number): boolean {
  if (id <= 0) return false;
  const t = threadIdentity().table;
  return Atomics.load(t, IDS_OFFSET + (id % TABLE_SLOTS)) === id;
}

/**
 * Marks a thread dead (or told to stop): its slot in the table is cleared.
 *
 * @param id The thread's id.
 */
export function markThreadDead(id: number): void {
  const t = threadIdentity().table;
  Atomics.compareExchange(t, IDS_OFFSET + (id % TABLE_SLOTS), id, 0);
}

/**
 * Whether the calling thread has been asked to stop (its pool or process
 * was terminated). Timed waits in worker code check this and throw, so a
 * terminated worker unwinds instead of waiting forever.
 *
 * @returns `true` once a stop was requested.
 */
export function stopRequested(): boolean {
  const rt = threadIdentity();
  return Atomics.load(rt.table, IDS_OFFSET + (rt.threadId % TABLE_SLOTS)) !==
    rt.threadId;
}

/**
 * Throws when the calling thread was told to stop (see
 * {@linkcode stopRequested}): every wait of this package calls it after each
 * sleep, so a terminated worker unwinds instead of taking another item or
 * lock it could not hand on.
 *
 * @throws {WorkerCrashedError} If this thread was told to stop.
 */
export function throwIfStopRequested(): void {
  if (stopRequested()) {
    throw new WorkerCrashedError(
      `Worker ${currentThreadName()} was told to stop while waiting`,
    );
  }
}

/**
 * Whether the calling code runs in a worker rather than the main thread.
 *
 * @returns `true` in a worker.
 */
export function isWorkerThread(): boolean {
  return threadIdentity().isWorker;
}

/**
 * Whether a module runs as a program's entry point in the main thread: the
 * demo guard (`import.meta.main` alone is also `true` in a worker's entry).
 *
 * @param meta The module's `import.meta`.
 * @returns `true` when the module should run its demo.
 */
export function isMainModule(meta: ImportMeta): boolean {
  return meta.main && !inWorkerScope();
}

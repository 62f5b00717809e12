/**
 * What the pool (or a process) and its worker say to each other: the
 * worker entry's URL, the messages both ways, and the layout of the shared
 * memory through which a worker tells which job and item it is running.
 *
 * A session with a pool worker: `setup` in, `ready` (or `setup-error`) out,
 * then any number of `run` in / `done` out. A process worker gets one
 * `process` and answers `exit`.
 *
 * @module
 */

import type { ErrorInfo } from "../_core/errors.ts";

export type { ErrorInfo } from "../_core/errors.ts";

/** The worker entry of `Process` and `Pool`. */
export const WORKER_URL: URL = new URL("./worker.ts", import.meta.url);

/** How a task is defined: `[fnId, "src" | "export", text]`. */
export type TaskDef = [number, "src" | "export", string];

/** How a job calls its task on each item: `fn(item)`. */
export const CALL_ITEM = 0;
/** How a job calls its task on each item: `fn(...item)` (starmap, apply). */
export const CALL_SPREAD = 1;
/** How a job calls its task: {@linkcode CALL_ITEM} or {@linkcode CALL_SPREAD}. */
export type CallMode = typeof CALL_ITEM | typeof CALL_SPREAD;

// -- The slot's shared memory ----------------------------------------------

/**
 * The bytes of a worker slot's shared memory: an `Int32Array` of 3 at byte
 * 0 — the claim word (see {@linkcode claimWord}), the index of the item the
 * worker runs within its job, and the fence horizon (the number of the last
 * job the pool took back) — and a `Float64Array` of 1 at byte 16: when
 * the running item started, in ms since the epoch.
 *
 * Jobs are numbered per slot, in the order they are sent (from 1, modulo
 * {@linkcode JOB_NUMBERS}); both sides count them.
 */
export const SLOT_BYTES = 24;
/** Job numbers of a slot wrap at this (they fit the claim word). */
export const JOB_NUMBERS: number = 2 ** 29;
/** The claim word before the worker has started any job. */
export const IDLE = 0;

/**
 * The claim word: `(last started job's number << 1) | running`, or its
 * bitwise complement (negative) once the pool has fenced the slot to take
 * back the jobs after that one. The worker claims each job with a
 * compare-and-swap on it, so a job is either started by the worker or
 * taken back by the pool, never both.
 *
 * @param num The last started job's number.
 * @param running Whether it is still running.
 * @returns The word.
 */
export function claimWord(num: number, running: boolean): number {
  return (num << 1) | (running ? 1 : 0);
}

/** The views over a slot's shared memory; see {@linkcode SLOT_BYTES}. */
export interface SlotViews {
  /** `[claim word, item index within the job, fence horizon]`. */
  state: Int32Array;
  /** `[start time of the running item]`. */
  started: Float64Array;
}

/**
 * Views a slot's shared memory as laid out in {@linkcode SLOT_BYTES}.
 *
 * @param buffer The slot's memory, {@linkcode SLOT_BYTES} long.
 * @returns Its views.
 */
export function slotViews(buffer: SharedArrayBuffer): SlotViews {
  return {
    state: new Int32Array(buffer, 0, 3),
    started: new Float64Array(buffer, 16, 1),
  };
}

// -- Main thread to worker -------------------------------------------------

/** Sets a pool worker up: its slot memory, module and initializer. */
export interface SetupMsg {
  /** The message tag. */
  t: "setup";
  /** The slot's shared memory ({@linkcode SLOT_BYTES}). */
  state: SharedArrayBuffer;
  /** The mailbox of jobs, pool to worker (`mailbox.ts`). */
  jobs: SharedArrayBuffer;
  /** The mailbox of results, worker to pool. */
  results: SharedArrayBuffer;
  /** The module whose exports tasks may name. */
  module?: string;
  /** The initializer to run before the first task. */
  initializer?: TaskDef;
  /** The initializer's arguments. */
  initArgs?: unknown[];
  /** Whether `initArgs` holds shared-object handles to decode. */
  handles?: boolean;
}

/**
 * A batch of jobs, in columns: job `j` is `seqs[j]`, runs task `fns[j]` in
 * mode `modes[j]` over the next `lens[j]` entries of `items`.
 */
export interface RunMsg {
  /** The message tag. */
  t: "run";
  /**
   * The message's number (from 1): run messages come by mailbox or by
   * `postMessage`, and are taken in this order.
   */
  m: number;
  /** Task definitions this worker has not seen yet. */
  defs: TaskDef[];
  /** Whether `items` holds shared-object handles to decode. */
  handles: boolean;
  /** Job sequence numbers. */
  seqs: number[];
  /** Task ids. */
  fns: number[];
  /** Call modes. */
  modes: CallMode[];
  /** Items per job. */
  lens: number[];
  /** All items, job after job. */
  items: unknown[];
}

/** Runs one process target, after which the worker reports its exit. */
export interface ProcessMsg {
  /** The message tag. */
  t: "process";
  /** The module whose export `target` names. */
  module?: string;
  /** The target. */
  target: TaskDef;
  /** Its arguments. */
  args: unknown[];
  /** Whether `args` holds shared-object handles to decode. */
  handles: boolean;
}

/** The messages the main thread sends to a worker. */
export type ToWorker = SetupMsg | RunMsg | ProcessMsg;

// -- Worker to main thread -------------------------------------------------

/** A failed job: `[seq, error, itemIndex, badTask]`. */
export type JobError = [number, ErrorInfo, number, boolean];

/** The results of a run of jobs, in dispatch order. */
export interface DoneMsg {
  /** The message tag. */
  t: "done";
  /** The message's number (from 1), as {@linkcode RunMsg.m}. */
  m: number;
  /** The finished jobs' sequence numbers, in order. */
  seqs: number[];
  /** The values of the jobs that succeeded, job after job. */
  values: unknown[];
  /** Whether `values` holds shared-object handles to decode. */
  handles: boolean;
  /** The jobs that failed. */
  errors: JobError[];
  /** The time spent on these jobs, in ms. */
  ms: number;
  /** The number of items run. */
  n: number;
}

/** The messages a worker sends to the main thread. */
export type FromWorker =
  | { t: "ready" }
  | DoneMsg
  | { t: "setup-error"; error: ErrorInfo }
  | { t: "exit"; code: number };

/**
 * The worker side of `Process` and `Pool`: it compiles or imports task
 * functions, runs batches of jobs one at a time, records which job and item
 * it is running in shared memory (so the pool can tell a crash or a timeout
 * apart from a finished task), and posts results back in batches.
 *
 * Messages in (after the runtime's init message), as `protocol.ts` types
 * them:
 * - `setup`: the slot's shared memory, the pool's module and initializer;
 * - `run`: task definitions and a batch of jobs;
 * - `process`: one target to run, after which the worker reports its exit.
 *
 * Messages out: `ready`, `done` (job results), `setup-error`, `exit`.
 *
 * @module
 */

import { compileTask, explainTaskError } from "../_core/task.ts";
import { currentThreadName, stopRequested } from "../_core/runtime.ts";
import {
  decodeShared,
  encodeShared,
  setAmbientReviveContext,
} from "../_core/share.ts";
import { type ErrorInfo, errorInfo } from "../_core/errors.ts";
import {
  installWorkerRuntime,
  postBulkToParent,
  postToParent,
} from "../_core/worker.ts";
import { setImmediate } from "node:timers";
import { SpinPolicy } from "../_core/wait.ts";
import { CLOSED, InOrder, Mailbox, type MailboxWait } from "./mailbox.ts";
import {
  CALL_ITEM,
  claimWord,
  type DoneMsg,
  type FromWorker,
  IDLE,
  JOB_NUMBERS,
  type JobError,
  type ProcessMsg,
  type RunMsg,
  type SetupMsg,
  slotViews,
  type TaskDef,
  type ToWorker,
} from "./protocol.ts";

type Task = {
  fn?: (...args: unknown[]) => unknown;
  fromSource: boolean;
  error?: ErrorInfo;
};

const now = () => performance.timeOrigin + performance.now();
const post = (m: FromWorker, transfer: Transferable[] = []) =>
  postToParent(m, transfer);

let state: Int32Array<ArrayBufferLike> = new Int32Array(2);
let started: Float64Array<ArrayBufferLike> = new Float64Array(1);
/** The number of the last job received (jobs are numbered per worker). */
let received = 0;
/** Whether jobs are being skipped because the pool took them back. */
let dropping = false;
/** The number of the last job the pool took back. */
let dropEnd = 0;
let moduleUrl: string | undefined;
let moduleNs: Promise<Record<string, unknown>> | undefined;
let setupDone: Promise<boolean> = Promise.resolve(true);
const tasks = new Map<number, Task>();
const inbox: RunMsg[] = [];
let draining = false;
/** The running drain (the job loop waits for it before it waits again). */
let drained: Promise<void> = Promise.resolve();

/** The mailboxes shared with the pool (none for a process worker). */
let jobBox: Mailbox | undefined;
let resultBox: Mailbox | undefined;
/** How the worker waits for jobs: a spin that pays off in a busy pool. */
const JOB_WAIT: MailboxWait = {
  spin: new SpinPolicy(20_000, { adaptive: true }),
  pollMs: 0.1,
  misses: 0,
};
/** Run messages in the order sent (they come by mailbox or postMessage). */
const runs = new InOrder<RunMsg>();
/** The number of the last result message sent. */
let sentDone = 0;

/** Results not yet posted. */
let out: DoneMsg = emptyDone();
let lastFlushWall = 0;
let flushStart = 0;

function emptyDone(): DoneMsg {
  return {
    t: "done",
    m: 0,
    seqs: [],
    values: [],
    handles: false,
    errors: [],
    ms: 0,
    n: 0,
  };
}

function flush(): void {
  const t = now();
  lastFlushWall = Date.now();
  if (out.seqs.length === 0) return;
  const msg = out;
  msg.ms = t - flushStart;
  out = emptyDone();
  flushStart = t;
  let transfer: Transferable[] = [];
  let after: Array<() => void> = [];
  if (msg.handles) {
    const enc = encodeShared(msg.values, transfer);
    msg.values = enc.value as unknown[];
    msg.handles = enc.handles;
    after = enc.afterSend;
  }
  msg.m = ++sentDone;
  try {
    if (transfer.length > 0 || msg.handles || !resultBox?.trySend(msg)) {
      postBulkToParent(msg, transfer);
    }
    for (const hook of after) hook();
  } catch (e) {
    // Some value cannot be cloned: fail every job of this message with a
    // clear error rather than losing them.
    transfer = [];
    const info: ErrorInfo = {
      name: "TypeError",
      message: `Cannot return a task's result to the caller: ${
        (e as Error).message
      }`,
      stack: "",
    };
    const failed = new Set(msg.errors.map((x) => x[0]));
    post({
      ...msg,
      values: [],
      handles: false,
      errors: [
        ...msg.errors,
        ...msg.seqs.filter((q) => !failed.has(q)).map((q): JobError => [
          q,
          info,
          0,
          false,
        ]),
      ],
    });
  }
}

installWorkerRuntime((data) => onMessage(data as ToWorker), flush);

function loadModule(): Promise<Record<string, unknown>> {
  if (!moduleUrl) {
    return Promise.reject(
      new TypeError(
        "Cannot run the task: it names an export but no module was given",
      ),
    );
  }
  moduleNs ??= import(moduleUrl) as Promise<Record<string, unknown>>;
  return moduleNs;
}

async function resolveTask(def: TaskDef): Promise<Task> {
  const [, kind, text] = def;
  if (kind === "src") {
    try {
      return { fn: compileTask(text), fromSource: true };
    } catch (e) {
      return {
        fromSource: true,
        error: { ...errorInfo(e), name: "TypeError" },
      };
    }
  }
  try {
    const ns = await loadModule();
    const fn = Object.hasOwn(ns, text) ? ns[text] : undefined;
    if (typeof fn !== "function") {
      return {
        fromSource: false,
        error: errorInfo(
          new TypeError(
            `Cannot run the task: the module ${moduleUrl} has no exported function named ${
              JSON.stringify(text)
            }${fn === undefined ? "" : ` (it is ${typeof fn})`}`,
          ),
        ),
      };
    }
    return { fn: fn as (...args: unknown[]) => unknown, fromSource: false };
  } catch (e) {
    return { fromSource: false, error: errorInfo(e) };
  }
}

// Work runs from `setImmediate`, never in the message handler itself: a
// capped worker that runs out of memory inside a message handler is never
// stopped (see NOTES.md), one that does so in an immediate callback is.
function onMessage(msg: ToWorker): void {
  switch (msg.t) {
    case "setup":
      ({ state, started } = slotViews(msg.state));
      Atomics.store(state, 0, IDLE);
      moduleUrl = msg.module;
      jobBox = new Mailbox(msg.jobs);
      resultBox = new Mailbox(msg.results);
      setupDone = new Promise((resolve) =>
        setImmediate(() => setup(msg).then(resolve))
      );
      void readJobs(jobBox);
      break;
    case "run":
      takeRun(msg, false);
      break;
    case "process":
      setImmediate(() => void runProcess(msg));
      break;
  }
}

/**
 * Takes a run message in its order; starts the drain from `setImmediate`
 * when the message came in a message handler (`direct` is false), or right
 * away from the mailbox loop (a `waitAsync` continuation, where running out
 * of memory is caught).
 */
function takeRun(msg: RunMsg, direct: boolean): void {
  if (!runs.accept(msg, (next) => inbox.push(next))) return;
  if (!draining) {
    draining = true;
    if (direct) drained = drain();
    else setImmediate(() => drained = drain());
  }
}

async function readJobs(box: Mailbox): Promise<void> {
  for (;;) {
    const msg = await box.recv(JOB_WAIT, () => true);
    if (msg === CLOSED) return;
    takeRun(msg as RunMsg, true);
    await drained;
  }
}

async function setup(msg: SetupMsg): Promise<boolean> {
  try {
    if (moduleUrl) await loadModule();
    if (msg.initializer) {
      const task = await resolveTask(msg.initializer);
      if (task.error) throw Object.assign(new Error(), task.error);
      const args = (msg.handles
        ? await decodeShared(msg.initArgs ?? [])
        : msg.initArgs ?? []) as unknown[];
      await task.fn!(...args);
    }
    post({ t: "ready" });
    return true;
  } catch (e) {
    post({ t: "setup-error", error: explainTaskError(e, true) });
    return false;
  }
}

async function drain(): Promise<void> {
  try {
    if (!(await setupDone)) {
      inbox.length = 0;
      return;
    }
    flushStart = now();
    lastFlushWall = Date.now();
    while (inbox.length > 0) {
      await runBatch(inbox.shift()!);
      flush();
    }
  } finally {
    draining = false;
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (typeof v === "object" || typeof v === "function") && v !== null &&
    typeof (v as { then?: unknown }).then === "function";
}

/**
 * Takes note of a fence: the pool took back the jobs after the last one
 * started, up to the number in the fence horizon; they are skipped.
 */
function acknowledgeFence(word: number): void {
  dropEnd = Atomics.load(state, 2);
  dropping = true;
  Atomics.store(state, 0, ~word);
}

/**
 * Claims job `num` before running it.
 *
 * @returns `false` if the pool took it back (skip it).
 */
function claim(num: number): boolean {
  for (;;) {
    const w = Atomics.load(state, 0);
    if (w < 0) {
      acknowledgeFence(w);
      continue;
    }
    if (dropping) {
      if (num === dropEnd) dropping = false;
      return false;
    }
    if (Atomics.compareExchange(state, 0, w, claimWord(num, true)) === w) {
      return true;
    }
  }
}

/** Marks job `num` finished in the claim word. */
function release(num: number): void {
  for (;;) {
    const w = Atomics.load(state, 0);
    if (w < 0) {
      acknowledgeFence(w);
      continue;
    }
    if (Atomics.compareExchange(state, 0, w, claimWord(num, false)) === w) {
      return;
    }
  }
}

async function runBatch(msg: RunMsg): Promise<void> {
  for (const def of msg.defs) tasks.set(def[0], await resolveTask(def));
  const { seqs, fns, modes, lens } = msg;
  const ends: Array<() => void> = [];
  const taskContext = { onTaskEnd: (fn: () => void) => ends.push(fn) };
  // What a task receives through a pipe or queue is its own, as its
  // arguments are. Set once per batch: this worker runs one batch at a time
  // and nothing else sets it meanwhile.
  setAmbientReviveContext(taskContext);
  let at = 0;
  for (let j = 0; j < seqs.length; j++) {
    const seq = seqs[j]!, len = lens[j]!, mode = modes[j];
    received = (received + 1) % JOB_NUMBERS;
    const num = received;
    if (!claim(num)) {
      at += len;
      continue;
    }
    // Shared objects are revived only for a job this worker claimed: a job
    // taken back runs elsewhere, and reviving it here too would open (and
    // at the batch's end close) a second copy of a pipe end it holds.
    let items = msg.items, base = at;
    if (msg.handles) {
      try {
        items = (await decodeShared(
          msg.items.slice(at, at + len),
          taskContext,
        )) as unknown[];
        base = 0;
      } catch (e) {
        out.seqs.push(seq);
        out.errors.push([seq, errorInfo(e), 0, false]);
        release(num);
        at += len;
        continue;
      }
    }
    const task = tasks.get(fns[j]!);
    if (!task || task.error) {
      out.seqs.push(seq);
      out.errors.push([
        seq,
        task?.error ?? errorInfo(
          new TypeError(
            `Cannot run the task: unknown task id ${fns[j]}`,
          ),
        ),
        0,
        true,
      ]);
      release(num);
      at += len;
      continue;
    }
    const fn = task.fn!;
    const values = out.values;
    const mark = values.length;
    let i = 0;
    try {
      for (; i < len; i++) {
        state[1] = i;
        // Date.now() is a builtin; performance.now() an op call, which
        // showed up at 7 % of a worker's time at chunksize 1. Milliseconds
        // are enough for timeouts and for taking work back.
        started[0] = Date.now();
        let r = mode === CALL_ITEM
          ? fn(items[base + i])
          : fn(...(items[base + i] as unknown[]));
        if (isThenable(r)) r = await r;
        if (typeof r === "object" && r !== null) out.handles = true;
        values.push(r);
      }
    } catch (e) {
      values.length = mark;
      out.errors.push([seq, explainTaskError(e, task.fromSource), i, false]);
    }
    release(num);
    // Recorded only once finished: a flush while the job runs (the task
    // closing its worker) must not report it as done.
    out.seqs.push(seq);
    out.n += len;
    at += len;
    if (Date.now() - lastFlushWall > 2) flush();
  }
  setAmbientReviveContext(undefined);
  for (const end of ends) {
    try {
      end();
    } catch {
      // Closing what the tasks held is best effort.
    }
  }
}

async function runProcess(msg: ProcessMsg): Promise<void> {
  moduleUrl = msg.module;
  const ends: Array<() => void> = [];
  let code = 0;
  let stopped = false;
  try {
    // The arguments first: what they hold (a pipe end's copy) is the
    // process's from now on, and closes when it ends, even if the target
    // cannot be found.
    const context = { onTaskEnd: (fn: () => void) => ends.push(fn) };
    const args = (msg.handles
      ? await decodeShared(msg.args, context)
      : msg.args) as unknown[];
    const task = await resolveTask(msg.target);
    if (task.error) {
      throw Object.assign(new Error(task.error.message), task.error);
    }
    setAmbientReviveContext(context);
    try {
      await task.fn!(...args);
    } catch (e) {
      // Told to stop (terminated): the unwinding is not the target's error.
      stopped = stopRequested();
      if (stopped) {
        throw e;
      }
      const info = explainTaskError(e, task.fromSource);
      // The stack shows the original message: put the explanation first
      // when there is one.
      const stack = info.message === errorInfo(e).message
        ? info.stack
        : `${info.name}: ${info.message}\n${info.stack}`;
      console.error(`Process ${currentThreadName()}:\n${stack}`);
      code = 1;
    }
  } catch (e) {
    if (!stopped) {
      const info = errorInfo(e);
      console.error(`Process ${currentThreadName()}:\n${info.stack}`);
      code = 1;
    }
  }
  for (const end of ends) {
    try {
      end();
    } catch {
      // Closing what the process held is best effort.
    }
  }
  if (!stopped) post({ t: "exit", code });
}

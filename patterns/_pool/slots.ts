/**
 * The engine under `Pool`: one slot per worker, the queue of calls, and
 * the dispatch of their jobs in batches sized by how long jobs take; the
 * results coming back; and what happens when a worker dies, times out or
 * retires (its running job fails, the jobs queued behind it go to others, a
 * replacement starts).
 *
 * @module
 */

import {
  ClosedError,
  type ErrorInfo,
  RemoteError,
  timeoutError,
  WorkerCrashedError,
} from "../_core/errors.ts";
import { decodeShared } from "../_core/share.ts";
import { spawnWorker } from "../_core/worker.ts";
import { holdEventLoop, SpinPolicy } from "../_core/wait.ts";
import { debug } from "../_core/debug.ts";
import { CLOSED, InOrder, Mailbox, NOTHING } from "./mailbox.ts";
import type { ManagedWorker, WorkerDeath } from "../_core/worker.ts";
import { ApplyCall, type CallHost, type PoolCall } from "./calls.ts";
import {
  type CallMode,
  type DoneMsg,
  type FromWorker,
  IDLE,
  JOB_NUMBERS,
  type RunMsg,
  type SetupMsg,
  SLOT_BYTES,
  slotViews,
  type TaskDef,
  WORKER_URL,
} from "./protocol.ts";
import { encodeArgs, type EncodedArgs, taskDef } from "./task.ts";

/** The work to keep queued in each worker, in ms. */
const QUEUE_MS = 2;
/**
 * How long a worker may sit on one item, with jobs queued behind it, while
 * another worker is idle, before the pool takes those jobs back, in ms.
 */
const STEAL_MS = 5;
/** How often the pool looks for such jobs (and for timeouts), in ms. */
const WATCH_MS = 10;
/**
 * A worker that has work but has not finished its setup (loaded its module,
 * run the initializer) after this long is taken for dead, in ms.
 */
const START_TIMEOUT_MS = 30_000;
const NO_TRANSFER: Transferable[] = [];
const NO_HOOKS: Array<() => void> = [];

/** A chunk of one call's items, sent to a worker as one unit. */
interface Job {
  seq: number;
  /** Its number in its slot's sequence (see `protocol.ts`), once sent. */
  num: number;
  call: PoolCall;
  fnId: number;
  mode: CallMode;
  start: number;
  items: unknown[];
  handles: boolean;
  transfer: Transferable[];
  after: Array<() => void>;
}

/** A worker and what the pool knows of it. */
interface Slot {
  worker: ManagedWorker;
  state: Int32Array;
  started: Float64Array;
  /** Jobs sent and not yet answered, in dispatch order, from `head`. */
  inflight: Job[];
  head: number;
  defined: Set<number>;
  jobs: number;
  avgJobMs: number;
  retiring: boolean;
  dead: boolean;
  /** Whether the worker finished its setup (module, initializer). */
  ready: boolean;
  /** Whether the watchdog stopped it for running past `taskTimeout`. */
  timedOut: boolean;
  /** The number of the last job sent to it. */
  sent: number;
  /** When a job was last sent to it. */
  sentAt: number;
  /** When it was spawned. */
  spawnedAt: number;
  /** Jobs to the worker, results back (see `mailbox.ts`). */
  jobBox: Mailbox;
  resultBox: Mailbox;
  /** The number of the last run message sent. */
  sentMsgs: number;
  /** Result messages in the order sent (by mailbox or postMessage). */
  results: InOrder<DoneMsg>;
}

/** Where a slot's worker stands: its last started job, and whether it runs. */
function claimOf(slot: Slot): { num: number; running: boolean; word: number } {
  const word = Atomics.load(slot.state, 0);
  const w = word < 0 ? ~word : word;
  return { num: w >> 1, running: (w & 1) === 1, word };
}

/**
 * Where a slot's queued jobs start: the index of the first pending job after
 * the one numbered `num` (the last its worker started), or of the first
 * pending job if that one is not pending.
 */
function firstQueued(slot: Slot, num: number): number {
  for (let i = slot.inflight.length - 1; i >= slot.head; i--) {
    if (slot.inflight[i]!.num === num) return i + 1;
  }
  return slot.head;
}

/** The clock of the slots' start stamps (the worker writes `Date.now()`). */
const now = () => Date.now();

/** Closes a slot's mailboxes: its readers on both sides stop. */
function closeBoxes(slot: Slot): void {
  slot.jobBox.close();
  slot.resultBox.close();
}

function pending(slot: Slot): number {
  return slot.inflight.length - slot.head;
}

/** What a {@linkcode Dispatcher} is set up with (checked by `Pool`). */
export interface DispatcherOptions {
  /** The pool's number, in its workers' names. */
  id: number;
  /** How many workers. */
  size: number;
  /** The module whose exports tasks may name. */
  module: string | undefined;
  /** Jobs per worker before it is replaced (`Infinity`: never). */
  maxTasks: number;
  /** The task timeout in ms (`Infinity`: none). */
  taskTimeout: number;
  /** The initializer each worker runs first. */
  initializer: TaskDef | undefined;
  /** The initializer's encoded arguments. */
  initArgs: EncodedArgs;
  /** Each worker's heap cap in MB (`undefined`: the default). */
  memoryLimitMb: number | undefined;
}

/**
 * What `pool.stats()` returns: what a user looks at when a pool seems slow.
 *
 * @example Usage
 * ```ts
 * import { Pool, type PoolStats } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 2 });
 * await pool.map((x: number) => x, [1, 2, 3]);
 * const s: PoolStats = pool.stats();
 * assert.equal(s.completed, 3);
 * assert.equal(s.queued, 0);
 * ```
 */
export interface PoolStats {
  /** Live workers. */
  workers: number;
  /** Workers running a task now. */
  busy: number;
  /** Tasks (items) waiting to start, those of inputs not yet read excepted. */
  queued: number;
  /** Tasks whose results came back. */
  completed: number;
  /** Tasks that failed (threw, crashed their worker or timed out). */
  failed: number;
}

/** Where a pool stands: taking work, draining after `close()`, or stopped. */
export type PoolState = "running" | "closed" | "terminated";

/** The worker slots of a pool and the dispatch of its calls' jobs. */
export class Dispatcher {
  readonly #id: number;
  readonly #module: string | undefined;
  readonly #maxTasks: number;
  readonly #taskTimeout: number;
  readonly #initializer: TaskDef | undefined;
  readonly #initArgs: EncodedArgs;
  readonly #memoryLimitMb: number | undefined;
  /** Whether work is in flight (the workers then keep the program alive). */
  #busy = false;
  #hold: (() => void) | undefined;
  readonly #slots: Slot[] = [];
  readonly #calls: PoolCall[] = [];
  readonly #retry: Job[] = [];
  /** Task ids by `kind:text`; a task's id indexes `#defs`. */
  readonly #fnIds = new Map<string, number>();
  readonly #defs: TaskDef[] = [];
  #seq = 0;
  #workerCounter = 0;
  /** Tasks (items) whose results came back, and tasks that failed. */
  #completed = 0;
  #failed = 0;
  #state: PoolState = "running";
  #broken: Error | undefined;
  #startFailures = 0;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #idle: Array<() => void> = [];
  /** What the pool's calls are created with. */
  readonly host: CallHost;

  /**
   * Starts the workers.
   *
   * @param options The pool's checked options.
   */
  constructor(options: DispatcherOptions) {
    this.#id = options.id;
    this.#module = options.module;
    this.#maxTasks = options.maxTasks;
    this.#taskTimeout = options.taskTimeout;
    this.#initializer = options.initializer;
    this.#initArgs = options.initArgs;
    this.#memoryLimitMb = options.memoryLimitMb;
    this.host = {
      size: options.size,
      pump: () => this.#pump(),
      callEnded: (call) => this.#callEnded(call),
    };
    for (let i = 0; i < options.size; i++) this.#spawn();
  }

  /** Where the pool stands. */
  get state(): PoolState {
    return this.#state;
  }

  #spawn(): void {
    const name = `Pool-${this.#id}-worker-${++this.#workerCounter}`;
    const sab = new SharedArrayBuffer(SLOT_BYTES);
    const { state, started } = slotViews(sab);
    const slot: Slot = {
      worker: undefined as unknown as ManagedWorker,
      state,
      started,
      inflight: [],
      head: 0,
      defined: new Set(),
      jobs: 0,
      avgJobMs: -1,
      retiring: false,
      dead: false,
      ready: false,
      timedOut: false,
      sent: 0,
      sentAt: 0,
      spawnedAt: now(),
      jobBox: new Mailbox(Mailbox.allocate()),
      resultBox: new Mailbox(Mailbox.allocate()),
      sentMsgs: 0,
      results: new InOrder(),
    };
    Atomics.store(slot.state, 0, IDLE);
    slot.worker = spawnWorker(WORKER_URL, {
      name,
      onMessage: (data) => this.#onMessage(slot, data as FromWorker),
      onDeath: (death) => this.#onDeath(slot, death),
      ref: this.#busy,
      memoryLimitMb: this.#memoryLimitMb,
    });
    this.#slots.push(slot);
    debug(`${name}: started`);
    const setup: SetupMsg = {
      t: "setup",
      state: sab,
      jobs: slot.jobBox.buffer,
      results: slot.resultBox.buffer,
      ...(this.#module ? { module: this.#module } : {}),
      ...(this.#initializer
        ? {
          initializer: this.#initializer,
          initArgs: this.#initArgs.value as unknown[],
          handles: this.#initArgs.handles,
        }
        : {}),
    };
    slot.worker.postMessage(setup);
    void this.#readResults(slot);
  }

  /** Takes a slot's results from its mailbox as they come. */
  async #readResults(slot: Slot): Promise<void> {
    const wait = {
      spin: new SpinPolicy(20_000, { adaptive: true }),
      pollMs: 0.2,
      misses: 0,
    };
    const busy = () => pending(slot) > 0;
    for (;;) {
      const msg = await slot.resultBox.recv(wait, busy);
      if (msg === CLOSED || slot.dead) return;
      this.#onMessage(slot, msg as FromWorker);
    }
  }

  /**
   * The id of a task in this pool, defining it on first use.
   *
   * @param task A function or the name of a module export.
   * @param what The call, for error messages.
   * @returns The task's id.
   * @throws {ClosedError} If the pool no longer takes work.
   * @throws {TypeError} If the task is a name but the pool has no module,
   *   or cannot be sent.
   */
  fnId(task: unknown, what: string): number {
    if (this.#state !== "running") {
      throw new ClosedError(`Cannot ${what}: the pool is ${this.#state}`);
    }
    if (typeof task === "string" && !this.#module) {
      throw new TypeError(
        `Cannot ${what}: task ${
          JSON.stringify(task)
        } names an export, but the pool has no module`,
      );
    }
    const def = taskDef(task, this.#defs.length, what);
    const key = `${def[1]}:${def[2]}`;
    const known = this.#fnIds.get(key);
    if (known !== undefined) return known;
    this.#fnIds.set(key, def[0]);
    this.#defs.push(def);
    return def[0];
  }

  /**
   * Queues a call and dispatches what it can; a broken pool or an aborted
   * signal fails it at once.
   *
   * @param call The call, created with {@linkcode Dispatcher.host}.
   */
  submit(call: PoolCall): void {
    if (this.#broken) {
      call.fail(this.#broken);
      return;
    }
    if (call.signal?.aborted) {
      call.fail(call.signal.reason);
      return;
    }
    this.#calls.push(call);
    this.#pump();
  }

  #callEnded(call: PoolCall): void {
    const i = this.#calls.indexOf(call);
    if (i >= 0) this.#calls.splice(i, 1);
    this.#checkIdle();
  }

  #cap(slot: Slot): number {
    if (slot.avgJobMs < 0) return 2;
    return Math.max(
      2,
      Math.min(512, Math.ceil(QUEUE_MS / Math.max(slot.avgJobMs, 1e-4))),
    );
  }

  /** Gives queued work to workers with room. */
  #pump(): void {
    if (this.#state === "terminated") return;
    let any = false;
    // Round robin, least loaded worker first, one batch of at most half a
    // worker's window per worker and round, until no worker has room or no
    // work is left: a worker always has its next job queued, and a few
    // heavy jobs spread out. A fenced worker (jobs were taken back from it,
    // and it has not seen that yet) gets nothing until it has.
    for (let sent = true; sent;) {
      sent = false;
      const order = this.#slots.length > 1
        ? [...this.#slots].sort((a, b) => pending(a) - pending(b))
        : this.#slots;
      for (const slot of order) {
        if (slot.retiring || slot.dead) continue;
        if (Atomics.load(slot.state, 0) < 0) continue;
        const cap = this.#cap(slot);
        const room = Math.min(
          cap - pending(slot),
          Math.ceil(cap / 2),
          this.#maxTasks - slot.jobs,
        );
        if (room <= 0) continue;
        const jobs: Job[] = [];
        while (jobs.length < room) {
          const job = this.#nextJob();
          if (!job) break;
          // A job that moves buffers could not be taken back from a busy
          // worker: it goes only to an idle one, alone.
          if (
            job.transfer.length > 0 && (pending(slot) > 0 || jobs.length > 0)
          ) {
            this.#retry.unshift(job);
            break;
          }
          jobs.push(job);
          if (job.transfer.length > 0) break;
        }
        if (jobs.length === 0) break;
        slot.jobs += jobs.length;
        if (slot.jobs >= this.#maxTasks) slot.retiring = true;
        for (const j of jobs) slot.inflight.push(j);
        this.#send(slot, jobs);
        sent = any = true;
      }
    }
    if (any) {
      this.#setBusy(true);
      this.#startWatchdog();
    }
  }

  /** Makes the workers keep the program alive while work is in flight. */
  #setBusy(busy: boolean): void {
    if (busy === this.#busy) return;
    this.#busy = busy;
    // The mailbox waits do not keep the event loop alive: while work is in
    // flight, the pool does.
    if (busy) this.#hold = holdEventLoop();
    else {
      this.#hold?.();
      this.#hold = undefined;
    }
    for (const s of this.#slots) s.worker.keepAlive(busy);
  }

  /**
   * Takes back the jobs queued to a worker that sits on one item while
   * another worker is idle and no other work is waiting, and gives them to
   * the idle ones: no task waits behind a busy worker.
   */
  #steal(t: number): void {
    // Hand out what is waiting first (this also finds an input spent).
    this.#pump();
    if (this.#calls.some((c) => c.hasWork()) || this.#retry.length > 0) return;
    const idle = this.#slots.some((s) =>
      s.ready && !s.retiring && !s.dead && pending(s) === 0
    );
    if (!idle) return;
    let stolen = false;
    for (const slot of this.#slots) {
      if (slot.dead || pending(slot) === 0) continue;
      const { num, running, word } = claimOf(slot);
      if (word < 0) continue; // fenced, not yet seen by the worker
      const first = firstQueued(slot, num);
      if (first >= slot.inflight.length) continue;
      if (slot.inflight.slice(first).some((j) => j.transfer.length > 0)) {
        continue; // its buffers are gone from here
      }
      const waited = t - (running ? slot.started[0]! : slot.sentAt);
      if (waited < STEAL_MS) continue;
      Atomics.store(slot.state, 2, slot.sent);
      if (Atomics.compareExchange(slot.state, 0, word, ~word) !== word) {
        continue; // it moved on: look again next time
      }
      const taken = slot.inflight.splice(first);
      slot.jobs -= taken.length;
      if (slot.retiring && slot.jobs < this.#maxTasks) slot.retiring = false;
      this.#retry.unshift(...taken);
      stolen = true;
    }
    if (stolen) {
      this.#pump();
      // Jobs of calls that ended meanwhile are dropped, not run: the pool
      // may be idle now.
      this.#checkIdle();
    }
  }

  #nextJob(): Job | undefined {
    while (this.#retry.length > 0) {
      const retry = this.#retry.shift()!;
      if (!retry.call.done) return retry;
    }
    for (const call of this.#calls) {
      const items = call.take();
      if (!items) continue;
      const start = call.dispatched;
      call.dispatched += items.length;
      let handles = false;
      let transfer: Transferable[] = NO_TRANSFER;
      let after: Array<() => void> = NO_HOOKS;
      let payload = items;
      for (const it of items) {
        if (typeof it === "object" && it !== null) {
          const enc = encodeArgs(items);
          payload = enc.value as unknown[];
          handles = enc.handles;
          transfer = enc.transfer;
          after = enc.after;
          break;
        }
      }
      return {
        seq: ++this.#seq,
        num: 0,
        call,
        fnId: call.fnId,
        mode: call.mode,
        start,
        items: payload,
        handles,
        transfer,
        after,
      };
    }
    return undefined;
  }

  #message(slot: Slot, jobs: Job[]): { msg: RunMsg; transfer: Transferable[] } {
    const msg: RunMsg = {
      t: "run",
      m: slot.sentMsgs + 1,
      defs: [],
      handles: false,
      seqs: [],
      fns: [],
      modes: [],
      lens: [],
      items: [],
    };
    const transfer: Transferable[] = [];
    for (const j of jobs) {
      if (!slot.defined.has(j.fnId)) {
        slot.defined.add(j.fnId);
        msg.defs.push(this.#defs[j.fnId]!);
      }
      if (j.handles) msg.handles = true;
      for (const t of j.transfer) transfer.push(t);
      msg.seqs.push(j.seq);
      msg.fns.push(j.fnId);
      msg.modes.push(j.mode);
      msg.lens.push(j.items.length);
      for (const item of j.items) msg.items.push(item);
    }
    return { msg, transfer };
  }

  #number(slot: Slot, job: Job): void {
    slot.sent = (slot.sent + 1) % JOB_NUMBERS;
    job.num = slot.sent;
  }

  #send(slot: Slot, jobs: Job[]): void {
    const { msg, transfer } = this.#message(slot, jobs);
    slot.sentAt = now();
    try {
      if (transfer.length > 0 || msg.handles || !slot.jobBox.trySend(msg)) {
        slot.worker.postMessage(msg, transfer);
      }
      slot.sentMsgs++;
      for (const j of jobs) this.#number(slot, j);
      for (const j of jobs) for (const hook of j.after) hook();
      return;
    } catch (e) {
      if (!(e instanceof DOMException) || e.name !== "DataCloneError") throw e;
    }
    // Some item cannot be cloned: send the jobs one by one so that only the
    // calls with such items fail.
    for (const def of msg.defs) slot.defined.delete(def[0]);
    const kept: Job[] = [];
    for (const j of jobs) {
      const one = this.#message(slot, [j]);
      try {
        slot.worker.postMessage(one.msg, one.transfer);
        slot.sentMsgs++;
        this.#number(slot, j);
        for (const hook of j.after) hook();
        kept.push(j);
      } catch (err) {
        for (const def of one.msg.defs) slot.defined.delete(def[0]);
        slot.jobs--;
        queueMicrotask(() =>
          j.call.fail(
            new TypeError(
              `Cannot send the task's arguments to a worker: ${
                (err as Error).message
              }`,
            ),
          )
        );
      }
    }
    slot.inflight.splice(
      slot.inflight.length - jobs.length,
      jobs.length,
      ...kept,
    );
  }

  #onMessage(slot: Slot, msg: FromWorker): void {
    switch (msg.t) {
      case "done":
        if (!this.#takeDone(slot, msg)) break;
        if (slot.retiring && pending(slot) === 0) {
          this.#replace(slot, { kind: "exit", code: 0, reason: "" });
        }
        this.#pump();
        this.#checkIdle();
        break;
      case "setup-error":
        this.#breakPool(
          new RemoteError(msg.error, { worker: slot.worker.name }),
        );
        break;
      case "ready":
        slot.ready = true;
        this.#startFailures = 0;
        break;
      case "exit":
        break;
    }
  }

  /**
   * Takes a result message in its order (results come by mailbox or by
   * postMessage).
   *
   * @returns Whether any result was taken.
   */
  #takeDone(slot: Slot, msg: DoneMsg): boolean {
    return slot.results.accept(msg, (next) => this.#done(slot, next));
  }

  /** Takes the results a gone worker left in its mailbox. */
  #takeLeftResults(slot: Slot): void {
    for (let v = slot.resultBox.tryRecv(); v !== NOTHING;) {
      const msg = v as FromWorker;
      if (msg.t === "done") this.#takeDone(slot, msg);
      v = slot.resultBox.tryRecv();
    }
  }

  #done(slot: Slot, msg: DoneMsg): void {
    const jobs = msg.seqs.length;
    if (jobs === 0) return;
    const perJob = msg.ms / jobs;
    slot.avgJobMs = slot.avgJobMs < 0
      ? perJob
      : slot.avgJobMs * 0.7 + perJob * 0.3;
    const perItem = msg.ms / Math.max(1, msg.n);
    const errors = msg.errors.length > 0
      ? new Map(msg.errors.map((e) => [e[0], e]))
      : undefined;
    const values = msg.values;
    let decoded: Promise<unknown[]> | undefined;
    if (msg.handles) decoded = decodeShared(values) as Promise<unknown[]>;
    let at = 0;
    for (const seq of msg.seqs) {
      const job = slot.inflight[slot.head];
      if (!job || job.seq !== seq) continue;
      slot.inflight[slot.head++] = undefined as unknown as Job;
      const call = job.call;
      const err = errors?.get(seq);
      if (err) {
        const [, info, index, bad] = err;
        this.#failed++;
        call.fail(
          bad
            ? (info.name === "TypeError"
              ? new TypeError(info.message)
              : new RemoteError(info, { worker: slot.worker.name }))
            : this.#remoteError(info, slot, job, index),
        );
        continue;
      }
      const n = job.items.length;
      this.#completed += n;
      if (decoded) {
        const from = at;
        decoded.then(
          (v) => call.deliver(job.start, v.slice(from, from + n), perItem),
          (e) => call.fail(e),
        );
      } else if (at === 0 && n === values.length) {
        call.deliver(job.start, values, perItem);
      } else {
        call.deliver(job.start, values.slice(at, at + n), perItem);
      }
      at += n;
    }
    if (slot.head > 1024 && slot.head * 2 > slot.inflight.length) {
      slot.inflight = slot.inflight.slice(slot.head);
      slot.head = 0;
    }
  }

  #remoteError(
    info: ErrorInfo,
    slot: Slot,
    job: Job,
    index: number,
  ): RemoteError {
    return new RemoteError(info, {
      worker: slot.worker.name,
      ...(job.call instanceof ApplyCall ? {} : { index: job.start + index }),
    });
  }

  /** Fails every pending and future call with `error`. */
  #breakPool(error: Error): void {
    this.#broken = error;
    this.#failAll(error);
    this.#checkIdle();
  }

  /** Fails every call: pending, in flight and waiting for a retry. */
  #failAll(error: unknown): void {
    for (const call of [...this.#calls]) call.fail(error);
    for (const s of this.#slots) {
      for (let i = s.head; i < s.inflight.length; i++) {
        s.inflight[i]!.call.fail(error);
      }
      s.inflight = [];
      s.head = 0;
    }
    for (const job of this.#retry.splice(0)) job.call.fail(error);
  }

  #onDeath(slot: Slot, death: WorkerDeath): void {
    if (this.#state !== "terminated") {
      debug(
        `${slot.worker.name}: ${
          death.reason || `exited (code ${death.code})`
        }; replacing it`,
      );
      this.#takeLeftResults(slot);
    }
    closeBoxes(slot);
    slot.dead = true;
    if (this.#state === "terminated") return;
    if (!slot.ready && death.kind === "error" && ++this.#startFailures >= 3) {
      // Workers die before they are set up (their module cannot load, e.g.
      // no read permission): replacing them again would never end.
      this.#breakPool(
        new WorkerCrashedError(
          `Cannot start the pool's workers: ${death.reason}`,
        ),
      );
      this.#replace(slot, death);
      return;
    }
    const claim = claimOf(slot);
    const item = slot.state[1]!;
    const jobs = slot.inflight.slice(slot.head);
    slot.inflight = [];
    slot.head = 0;
    for (const job of jobs) {
      if (claim.running && job.num === claim.num) {
        const index = job.call instanceof ApplyCall ? {} : {
          index: job.start + item,
        };
        const e = slot.timedOut
          ? Object.assign(timeoutError(death.reason), index)
          : new WorkerCrashedError(
            `${death.reason} while running a task${
              "index" in index ? ` (item ${index.index})` : ""
            }`,
          );
        this.#failed++;
        job.call.fail(e);
      } else {
        // Never started, or finished with its result lost: run it again.
        this.#retry.push(job);
      }
    }
    this.#replace(slot, death);
    this.#pump();
    this.#checkIdle();
  }

  #replace(slot: Slot, death: WorkerDeath): void {
    const i = this.#slots.indexOf(slot);
    if (i < 0) return;
    this.#slots.splice(i, 1);
    if (death.reason === "" && this.#state !== "terminated") {
      debug(`${slot.worker.name}: retired after ${slot.jobs} jobs`);
    }
    closeBoxes(slot);
    if (!slot.worker.death) slot.worker.terminate(death);
    if (this.#state === "terminated" || this.#startFailures >= 3) return;
    if (
      this.#state === "closed" && this.#inflightCount() === 0 &&
      this.#calls.length === 0 && this.#retry.length === 0
    ) {
      return;
    }
    this.#spawn();
  }

  #inflightCount(): number {
    let n = 0;
    for (const s of this.#slots) n += pending(s);
    return n;
  }

  #startWatchdog(): void {
    // A worker that exits or crashes says so itself; the timer looks for
    // tasks past `taskTimeout` and for jobs waiting behind a busy worker.
    if (this.#watchdog !== undefined) return;
    const period = Math.max(5, Math.min(WATCH_MS, this.#taskTimeout / 4));
    this.#watchdog = setInterval(() => this.#watch(), period);
    Deno.unrefTimer(this.#watchdog);
  }

  #watch(): void {
    if (this.#inflightCount() === 0) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
      return;
    }
    const t = now();
    for (const slot of [...this.#slots]) {
      if (slot.ready || slot.dead || pending(slot) === 0) continue;
      if (t - slot.spawnedAt > START_TIMEOUT_MS) {
        slot.worker.terminate({
          kind: "error",
          code: 1,
          reason: `Worker ${slot.worker.name} did not start within ${
            START_TIMEOUT_MS / 1000
          } s (its module or initializer never finished loading)`,
        });
      }
    }
    if (this.#taskTimeout !== Infinity) {
      for (const slot of [...this.#slots]) {
        if (slot.dead || slot.worker.death) continue;
        if (!claimOf(slot).running) continue;
        const ran = t - slot.started[0]!;
        if (ran > this.#taskTimeout) {
          slot.timedOut = true;
          debug(
            `${slot.worker.name}: task timed out after ${this.#taskTimeout} ms`,
          );
          slot.worker.terminate({
            kind: "terminated",
            code: -15,
            reason:
              `Task timed out after ${this.#taskTimeout} ms on ${slot.worker.name}`,
          });
        }
      }
    }
    this.#steal(t);
  }

  /** Wakes the {@linkcode Dispatcher.whenIdle} waiters if no work is left. */
  #checkIdle(): void {
    if (this.#calls.length > 0 || this.#retry.length > 0) return;
    if (this.#inflightCount() > 0) return;
    this.#setBusy(false);
    if (this.#watchdog !== undefined) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
    }
    const waiters = this.#idle.splice(0);
    for (const w of waiters) w();
  }

  /**
   * Where the pool stands now; see {@linkcode PoolStats}.
   *
   * @returns The counts.
   */
  stats(): PoolStats {
    let busy = 0;
    let queued = this.#retry.reduce((n, j) => n + j.items.length, 0);
    for (const slot of this.#slots) {
      if (slot.dead) continue;
      const { num, running } = claimOf(slot);
      if (running) busy++;
      const first = firstQueued(slot, num);
      for (let i = first; i < slot.inflight.length; i++) {
        queued += slot.inflight[i]!.items.length;
      }
    }
    for (const call of this.#calls) {
      if (call.total !== undefined) {
        queued += Math.max(0, call.total - call.dispatched);
      }
    }
    return {
      workers: this.#slots.filter((s) => !s.dead).length,
      busy,
      queued,
      completed: this.#completed,
      failed: this.#failed,
    };
  }

  /** Stops taking work; queued and running work still completes. */
  close(): void {
    if (this.#state === "running") this.#state = "closed";
    this.#checkIdle();
  }

  /**
   * Waits until no call is queued and no job is in flight.
   *
   * @returns A promise that resolves then.
   */
  whenIdle(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#idle.push(resolve);
      this.#checkIdle();
    });
  }

  /** Fails every pending call with `ClosedError` and stops the workers. */
  terminate(): void {
    if (this.#state === "terminated") return;
    this.#state = "terminated";
    const e = new ClosedError(
      "Cannot finish the call: the pool was terminated",
    );
    this.#failAll(e);
    this.stopWorkers();
    for (const w of this.#idle.splice(0)) w();
  }

  /** Stops the workers (after a join, or on terminate). */
  stopWorkers(): void {
    this.#state = "terminated";
    if (this.#watchdog !== undefined) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
    }
    this.#setBusy(false);
    const slots = this.#slots.splice(0);
    for (const s of slots) {
      closeBoxes(s);
      s.worker.terminate();
    }
  }
}

/**
 * The engine under a `Pool` given a `broker`: the calls' chunks become
 * task entries on the queue's Redis stream, and their results come back on
 * the pool's own result stream. It has the shape of the local pool's
 * `Dispatcher`, so `map`, `imap`, chunking, `signal`, `onProgress`,
 * `close`/`join`/`terminate` and `stats()` keep one implementation
 * (`_pool/pool.ts`, `_pool/calls.ts`). Results are matched to jobs by
 * number: one that arrives twice (a task run again after its worker was
 * presumed dead) is dropped.
 *
 * @module
 */

import { ClosedError, RemoteError, reviveError } from "../_core/errors.ts";
import { holdEventLoop } from "../_core/wait.ts";
import { debug } from "../_core/debug.ts";
import { ApplyCall, type CallHost, IterCall } from "../_pool/calls.ts";
import type { PoolCall } from "../_pool/calls.ts";
import { CALL_SPREAD } from "../_pool/protocol.ts";
import type { PoolState, PoolStats } from "../_pool/slots.ts";
import {
  newPoolId,
  POOL_TTL_MS,
  type PoolKeys,
  poolKeys,
  QUEUE_TTL_MS,
  type QueueKeys,
  queueKeys,
  redactUrl,
} from "./keys.ts";
import { RedisLink } from "./redis.ts";
import {
  checkNoShared,
  checkRemoteTask,
  decodeResultEntry,
  decodeValues,
  encodeTaskEntry,
  type EntryResult,
  wireErrorInfo,
} from "./wire.ts";
import { countWorkers } from "./registry.ts";
import { ensureGroup } from "./streams.ts";

/** Items sent and not yet answered, at most, over all calls. */
const MAX_INFLIGHT_ITEMS = 262_144;
/** Task entries sent and not yet answered, at most. */
const MAX_INFLIGHT_ENTRIES = 20_000;
/** The pause before a write or read is tried again, in ms. */
const RETRY_MS = 200;
/** How often the pool counts the live workers while it sends, in ms. */
const COUNT_EVERY_MS = 5_000;
/** The remote work an automatic chunk aims at, in ms. */
const ENTRY_MS = 50;
/** Items per automatic chunk, at most. */
const MAX_CHUNK = 4096;
/** Items per chunk of an input of unknown length, before any timing. */
const LAZY_CHUNK = 64;
/** Result entries taken per read. */
const READ_COUNT = "1000";
/** How long one blocking read of results waits, in ms. */
const READ_BLOCK_MS = "2000";
/**
 * How long past a blocking read's own wait Redis may take to answer, in
 * ms: a broker that stopped answering (a lost network, a frozen host)
 * fails the calls rather than leave them waiting forever.
 */
const ANSWER_MS = 10_000;
/** How long a stopping pool waits on the broker before it drops the link, in ms. */
const STOP_MS = 10_000;

/** A chunk sent to Redis and not yet answered. */
interface RemoteJob {
  call: PoolCall;
  /** The index of its first item in the call. */
  start: number;
  /** How many items it holds. */
  count: number;
  /** Its task entry's id, once Redis gave it. */
  entryId: string | undefined;
}

/** What a {@linkcode BrokerDispatcher} is set up with (checked by `Pool`). */
export interface BrokerDispatcherOptions {
  /** The broker's URL. */
  broker: string;
  /** The queue's name. */
  queue: string;
  /** The task timeout in ms (`Infinity`: none), enforced by the workers. */
  taskTimeout: number;
}

/** What a call is named in messages. */
function callName(call: PoolCall): string {
  if (call instanceof ApplyCall) return "apply";
  if (call instanceof IterCall) return "imap";
  return call.mode === CALL_SPREAD ? "starmap" : "map";
}

/** The calls of a broker pool and their jobs in Redis. */
export class BrokerDispatcher {
  readonly #url: string;
  readonly #queue: QueueKeys;
  readonly #pool: PoolKeys;
  readonly #taskTimeout: number;
  #state: PoolState = "running";
  #broken: Error | undefined;
  readonly #calls: PoolCall[] = [];
  /** Task names by id (a task's id indexes it). */
  readonly #names: string[] = [];
  readonly #nameIds = new Map<string, number>();
  /** The measured time per item of each task, in ms (`-1`: unknown). */
  readonly #itemMs: number[] = [];
  readonly #jobs = new Map<number, RemoteJob>();
  readonly #callJobs = new WeakMap<PoolCall, Set<number>>();
  #inflightItems = 0;
  #seq = 0;
  #cmd: RedisLink | undefined;
  #reader: RedisLink | undefined;
  #connecting: Promise<void> | undefined;
  #reading = false;
  #lastResult = "0-0";
  #aliveAt = 0;
  #countedAt = 0;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #hold: (() => void) | undefined;
  /** Writes whose replies are still due (awaited before closing). */
  readonly #writes = new Set<Promise<unknown>>();
  #stopping: Promise<void> | undefined;
  #completed = 0;
  #failed = 0;
  #workers = 0;
  #idle: Array<() => void> = [];
  /** What the pool's calls are created with. */
  readonly host: CallHost;

  /**
   * Sets the pool up; it connects on its first call.
   *
   * @param options The broker, queue and task timeout.
   */
  constructor(options: BrokerDispatcherOptions) {
    this.#url = options.broker;
    this.#queue = queueKeys(options.queue);
    this.#pool = poolKeys(options.queue, newPoolId());
    this.#taskTimeout = options.taskTimeout;
    this.host = {
      // Chunks are sized here (see #sizeChunk), not from a worker count.
      size: 1,
      pump: () => this.#pump(),
      callEnded: (call) => this.#callEnded(call),
    };
  }

  /** Where the pool stands. */
  get state(): PoolState {
    return this.#state;
  }

  /** The pool's id (its keys and result stream carry it). */
  get id(): string {
    return this.#pool.id;
  }

  /**
   * The id of a task in this pool: tasks are export names only.
   *
   * @param task The name of an export of the workers' module.
   * @param what The call, for error messages.
   * @returns The task's id.
   * @throws {ClosedError} If the pool no longer takes work.
   * @throws {TypeError} If the task is a function or not a name.
   */
  fnId(task: unknown, what: string): number {
    if (this.#state !== "running") {
      throw new ClosedError(`Cannot ${what}: the pool is ${this.#state}`);
    }
    const name = checkRemoteTask(task, what);
    const known = this.#nameIds.get(name);
    if (known !== undefined) return known;
    const id = this.#names.length;
    this.#names.push(name);
    this.#itemMs.push(-1);
    this.#nameIds.set(name, id);
    return id;
  }

  /**
   * Queues a call and sends what it can.
   *
   * @param call The call, created with {@linkcode BrokerDispatcher.host}.
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
    this.#callJobs.set(call, new Set());
    this.#setBusy(true);
    this.#pump();
  }

  #connect(): Promise<void> {
    return this.#connecting ??= (async () => {
      const name = `dmp-pool-${this.#pool.id.slice(0, 8)}`;
      const cmd = await RedisLink.open(this.#url, name);
      let reader: RedisLink;
      try {
        reader = await RedisLink.open(this.#url, `${name}-results`);
      } catch (e) {
        await cmd.close();
        throw e;
      }
      this.#cmd = cmd;
      this.#reader = reader;
      // Idle links do not keep the program alive (work in flight holds it).
      cmd.keepAlive(false);
      reader.keepAlive(false);
      if (this.#state === "terminated") return;
      await ensureGroup(cmd, this.#queue);
      this.#workers = await countWorkers(cmd, this.#queue);
      debug(
        `broker pool ${this.#pool.id}: connected to ${
          redactUrl(this.#url)
        }, queue ${this.#queue.queue}, ${this.#workers} worker(s) serving`,
      );
    })();
  }

  /** Sizes a call's next automatic chunk (the call cuts it in `take()`). */
  #sizeChunk(call: PoolCall): void {
    if (call.fixedChunk !== undefined) return;
    const parallel = Math.max(1, this.#workers || 4);
    let size = call.total !== undefined
      ? Math.ceil(call.total / (parallel * 4))
      : LAZY_CHUNK;
    const ms = this.#itemMs[call.fnId]!;
    if (ms > 0) size = Math.min(size, Math.floor(ENTRY_MS / ms));
    size = Math.max(1, Math.min(MAX_CHUNK, size));
    // `take()` cuts floor(0.5 ms / avgItemMs) items (see calls.ts).
    call.avgItemMs = 0.5 / (size + 0.5);
  }

  /** Sends queued work to Redis while there is room. */
  #pump(): void {
    if (this.#state === "terminated" || this.#broken) return;
    if (!this.#cmd) {
      this.#connect().then(
        () => this.#pump(),
        (e) => this.#breakPool(e as Error),
      );
      return;
    }
    const batch: Array<[number, string]> = [];
    for (let progress = true; progress;) {
      progress = false;
      for (const call of [...this.#calls]) {
        if (
          this.#inflightItems >= MAX_INFLIGHT_ITEMS ||
          this.#jobs.size >= MAX_INFLIGHT_ENTRIES
        ) break;
        if (call.done) continue;
        this.#sizeChunk(call);
        const items = call.take();
        if (!items) continue;
        const start = call.dispatched;
        call.dispatched += items.length;
        const what = callName(call);
        let json: string;
        const n = ++this.#seq;
        try {
          checkNoShared(items, start, what);
          json = encodeTaskEntry(
            n,
            this.#names[call.fnId]!,
            call.mode,
            this.#taskTimeout,
            items,
            what,
          );
        } catch (e) {
          call.fail(e);
          continue;
        }
        this.#jobs.set(n, {
          call,
          start,
          count: items.length,
          entryId: undefined,
        });
        this.#callJobs.get(call)?.add(n);
        this.#inflightItems += items.length;
        batch.push([n, json]);
        progress = true;
      }
    }
    if (batch.length > 0) this.#send(batch);
    this.#checkIdle();
  }

  /** Writes task entries (one pipeline: the client batches a tick's commands). */
  #send(batch: Array<[number, string]>): void {
    const cmd = this.#cmd!;
    const now = Date.now();
    if (now - this.#aliveAt > POOL_TTL_MS / 3) {
      // Before the entries: a worker that reads them finds the pool alive.
      this.#refreshAlive(cmd, this.#jobs.size > batch.length);
      this.#track(
        cmd.send(["PEXPIRE", this.#queue.tasks, String(QUEUE_TTL_MS)]),
      );
    }
    for (const [n, json] of batch) this.#sendEntry(n, json);
    if (now - this.#countedAt > COUNT_EVERY_MS) {
      this.#countedAt = now;
      this.#track(
        countWorkers(cmd, this.#queue).then((c) => this.#workers = c),
      );
    }
    this.#startHeartbeat();
    void this.#readResults();
  }

  /**
   * Writes one task entry. A write that fails while the link reconnects
   * is tried again: if the first one reached Redis after all, the task
   * runs twice and its second result is dropped.
   */
  #sendEntry(n: number, json: string): void {
    const cmd = this.#cmd!;
    const write = cmd.send([
      "XADD",
      this.#queue.tasks,
      "*",
      "p",
      this.#pool.id,
      "j",
      json,
    ]).then((id) => {
      const job = this.#jobs.get(n);
      if (job) job.entryId = String(id);
      // Its call ended (or the pool was terminated) before Redis answered:
      // take the entry back (a terminating pool waits for this write).
      else this.#track(cmd.send(["XDEL", this.#queue.tasks, String(id)]));
    }, async (e) => {
      if (!cmd.isOpen || this.#state === "terminated") throw e;
      await new Promise((r) => setTimeout(r, RETRY_MS));
      if (this.#jobs.has(n)) this.#sendEntry(n, json);
    });
    this.#track(write);
  }

  /** Keeps a write's promise until its reply came; a failure breaks the pool. */
  #track(p: Promise<unknown>): void {
    const tracked = p.catch((e) => {
      if (this.#state !== "terminated") this.#breakPool(e as Error);
    }).finally(() => this.#writes.delete(tracked));
    this.#writes.add(tracked);
  }

  /** Reads the pool's result stream while jobs are out. */
  async #readResults(): Promise<void> {
    if (this.#reading) return;
    this.#reading = true;
    try {
      while (
        this.#jobs.size > 0 && this.#state !== "terminated" && !this.#broken
      ) {
        const reader = this.#reader!;
        let timer: ReturnType<typeof setTimeout> | undefined;
        const reply = await Promise.race([
          reader.send([
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            READ_BLOCK_MS,
            "STREAMS",
            this.#pool.results,
            this.#lastResult,
          ]),
          new Promise<never>((_, reject) => {
            const wait = Number(READ_BLOCK_MS) + ANSWER_MS;
            timer = setTimeout(() => {
              reader.destroy();
              reject(
                new Deno.errors.ConnectionReset(
                  `Lost the connection to the broker ${
                    redactUrl(this.#url)
                  }: no answer for ${wait} ms`,
                ),
              );
            }, wait);
          }),
        ]).finally(() => clearTimeout(timer)) as
          | Array<[string, Array<[string, string[]]>]>
          | null;
        if (!reply) continue;
        const ids: string[] = [];
        for (const [, entries] of reply) {
          for (const [id, fields] of entries) {
            this.#lastResult = id;
            ids.push(id);
            this.#onResultEntry(fields);
          }
        }
        if (ids.length > 0 && this.state !== "terminated") {
          this.#track(
            this.#cmd!.send(["XDEL", this.#pool.results, ...ids]),
          );
        }
        this.#pump();
      }
    } catch (e) {
      if (this.#state !== "terminated") {
        if (this.#reader?.isOpen) {
          // Reconnecting: read again shortly, from where it stopped.
          setTimeout(() => void this.#readResults(), RETRY_MS);
        } else this.#breakPool(e as Error);
      }
    } finally {
      this.#reading = false;
    }
    this.#checkIdle();
  }

  #onResultEntry(fields: string[]): void {
    const i = fields.indexOf("r");
    if (i < 0 || i % 2 !== 0) return;
    let results: EntryResult[];
    try {
      results = decodeResultEntry(fields[i + 1]!);
    } catch (e) {
      debug(`broker pool ${this.#pool.id}: dropped a result entry: ${e}`);
      return;
    }
    for (const r of results) this.#onResult(r);
  }

  #onResult(r: EntryResult): void {
    const job = this.#jobs.get(r.n);
    // A duplicate (the task ran twice), or a job of a call that ended.
    if (!job) return;
    this.#forget(r.n, job);
    const call = job.call;
    if ("v" in r) {
      let values: unknown[];
      try {
        values = decodeValues(r.v);
        if (values.length !== job.count) {
          throw new TypeError(
            `Cannot read a broker result: ${values.length} values for ${job.count} items`,
          );
        }
      } catch (e) {
        this.#failed += job.count;
        call.fail(e);
        return;
      }
      const per = r.ms / job.count;
      const avg = this.#itemMs[call.fnId]!;
      this.#itemMs[call.fnId] = avg < 0 ? per : avg * 0.7 + per * 0.3;
      this.#completed += job.count;
      call.deliver(job.start, values, r.ms);
      return;
    }
    this.#failed++;
    const e = r.e;
    const index = call instanceof ApplyCall || e.i === null
      ? {}
      : { index: job.start + e.i };
    if (e.k === "remote") {
      call.fail(
        new RemoteError(wireErrorInfo(e), { worker: e.worker, ...index }),
      );
    } else {
      call.fail(Object.assign(reviveError(wireErrorInfo(e)), index));
    }
  }

  #forget(n: number, job: RemoteJob): void {
    this.#jobs.delete(n);
    this.#callJobs.get(job.call)?.delete(n);
    this.#inflightItems -= job.count;
  }

  #callEnded(call: PoolCall): void {
    const i = this.#calls.indexOf(call);
    if (i >= 0) this.#calls.splice(i, 1);
    // Its jobs still in Redis are taken back; a late result is dropped.
    const ns = this.#callJobs.get(call);
    if (ns && ns.size > 0) {
      const ids: string[] = [];
      for (const n of ns) {
        const job = this.#jobs.get(n)!;
        if (job.entryId) ids.push(job.entryId);
        this.#forget(n, job);
      }
      if (ids.length > 0 && this.#cmd && this.#state !== "terminated") {
        this.#track(this.#cmd.send(["XDEL", this.#queue.tasks, ...ids]));
      }
    }
    this.#checkIdle();
  }

  #setBusy(busy: boolean): void {
    if (busy === (this.#hold !== undefined)) return;
    if (busy) this.#hold = holdEventLoop();
    else {
      this.#hold!();
      this.#hold = undefined;
      if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
    }
  }

  /** Refreshes the pool's liveness key and the worker count while busy. */
  #startHeartbeat(): void {
    if (this.#heartbeat !== undefined) return;
    this.#heartbeat = setInterval(() => {
      const cmd = this.#cmd;
      if (!cmd || this.#state === "terminated") return;
      this.#refreshAlive(cmd, this.#jobs.size > 0);
      this.#track(
        countWorkers(cmd, this.#queue).then((n) => this.#workers = n),
      );
    }, POOL_TTL_MS / 3);
    Deno.unrefTimer(this.#heartbeat);
  }

  /**
   * Refreshes the pool's liveness key. Found gone while jobs were out,
   * those jobs are lost (Redis restarted without its data, or the key
   * expired and the workers dropped them): their calls fail rather than
   * wait forever.
   */
  #refreshAlive(cmd: RedisLink, jobsOut: boolean): void {
    this.#aliveAt = Date.now();
    this.#track(
      cmd.send([
        "SET",
        this.#pool.alive,
        "1",
        "PX",
        String(POOL_TTL_MS),
        "GET",
      ]).then((previous) => {
        if (previous !== null || !jobsOut) return;
        if (this.#state === "terminated") return;
        this.#breakPool(
          new Deno.errors.ConnectionReset(
            `Lost the pool's tasks in the broker ${
              redactUrl(this.#url)
            }: its liveness key was gone (Redis restarted without its data?)`,
          ),
        );
      }),
    );
  }

  /** Fails every pending and future call with `error`. */
  #breakPool(error: Error): void {
    if (this.#broken) return;
    this.#broken = error;
    debug(`broker pool ${this.#pool.id}: ${error.message}`);
    this.#failAll(error);
    this.#checkIdle();
  }

  #failAll(error: unknown): void {
    for (const call of [...this.#calls]) call.fail(error);
    for (const [n, job] of [...this.#jobs]) {
      this.#forget(n, job);
      job.call.fail(error);
    }
  }

  #checkIdle(): void {
    if (this.#calls.length > 0 || this.#jobs.size > 0) return;
    this.#setBusy(false);
    for (const w of this.#idle.splice(0)) w();
  }

  /**
   * Where the pool stands. `workers` counts the live remote workers last
   * seen on the queue; `busy` is how many of them hold this pool's work, at
   * most; `queued` counts the items in Redis or not yet sent.
   *
   * @returns The counts.
   */
  stats(): PoolStats {
    let queued = this.#inflightItems;
    for (const call of this.#calls) {
      if (call.total !== undefined) {
        queued += Math.max(0, call.total - call.dispatched);
      }
    }
    return {
      workers: this.#workers,
      busy: Math.min(this.#workers, this.#jobs.size),
      queued,
      completed: this.#completed,
      failed: this.#failed,
    };
  }

  /** Stops taking work; what was sent still completes. */
  close(): void {
    if (this.#state === "running") this.#state = "closed";
    this.#checkIdle();
  }

  /**
   * Waits until no call is queued and no job is out.
   *
   * @returns A promise that resolves then.
   */
  whenIdle(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#idle.push(resolve);
      this.#checkIdle();
    });
  }

  /** Fails every pending call with `ClosedError` and removes the pool's keys. */
  terminate(): void {
    if (this.#state === "terminated") return;
    const ids = [...this.#jobs.values()].flatMap((j) =>
      j.entryId ? [j.entryId] : []
    );
    this.#state = "terminated";
    this.#failAll(
      new ClosedError("Cannot finish the call: the pool was terminated"),
    );
    void this.#stop(ids);
    for (const w of this.#idle.splice(0)) w();
  }

  /**
   * Removes the pool's keys and closes its connections (after a join, or
   * on terminate). `join()` awaits it.
   *
   * @returns A promise that resolves once the keys are gone.
   */
  stopWorkers(): Promise<void> {
    return this.#stop([]);
  }

  #stop(entryIds: string[]): Promise<void> {
    this.#state = "terminated";
    return this.#stopping ??= (async () => {
      if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
      this.#setBusy(false);
      try {
        await this.#connecting;
      } catch {
        // Its links may have opened before the failure: closed below.
      }
      // A blocked read of results ends now.
      this.#reader?.destroy();
      const cmd = this.#cmd;
      if (!cmd) return; // never connected: nothing to remove
      // A broker that stopped answering must not hold the stop up forever:
      // dropping the link fails what still waits on it.
      const cut = setTimeout(() => cmd.destroy(), STOP_MS);
      // A reply may add a write (an entry taken back): wait for those too.
      while (this.#writes.size > 0) await Promise.allSettled([...this.#writes]);
      try {
        if (entryIds.length > 0) {
          await cmd.send(["XDEL", this.#queue.tasks, ...entryIds]);
        }
        await cmd.send(["DEL", this.#pool.alive, this.#pool.results]);
      } catch (e) {
        debug(
          `broker pool ${this.#pool.id}: could not remove its keys: ${
            (e as Error).message
          } (they expire)`,
        );
      } finally {
        clearTimeout(cut);
        await cmd.close();
      }
    })();
  }
}

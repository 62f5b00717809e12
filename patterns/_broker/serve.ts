/**
 * A worker process's side of a broker pool: reads task entries from the
 * queue's stream in the workers' consumer group, runs them on local pools
 * (the same killable workers as a local `Pool`), writes each pool's
 * results to its result stream — only while that pool is alive — and
 * acknowledges and deletes the entries. Entries held by a worker that
 * stopped showing it is alive for the visibility timeout are claimed and
 * run again; a stopping worker finishes what it runs within its grace
 * time and hands the rest back to the queue.
 *
 * @module
 */

import { ClosedError, RemoteError } from "../_core/errors.ts";
import { debug } from "../_core/debug.ts";
import { Pool } from "../_pool/pool.ts";
import { CALL_ITEM } from "../_pool/protocol.ts";
import { poolKeys, QUEUE_TTL_MS, type QueueKeys, queueKeys } from "./keys.ts";
import { RedisLink } from "./redis.ts";
import { registerWorker, unregisterWorker } from "./registry.ts";
import {
  encodeValues,
  type EntryResult,
  parseTaskFields,
  type TaskEntry,
  toWireError,
} from "./wire.ts";
import {
  ackAndDelete,
  claimIdle,
  deliveryCounts,
  ensureGroup,
  handBack,
  holdsEntries,
  leaveGroup,
  type RawEntry,
  readTasks,
  refreshHeld,
  writeResults,
} from "./streams.ts";

/** How long one blocking read of tasks waits, in ms. */
const READ_BLOCK_MS = 5_000;
/** Entries held per local worker, at most. */
const HELD_PER_WORKER = 64;
/** Entries running on the local pools per local worker, at most. */
const ACTIVE_PER_WORKER = 8;
/** The work a worker holds ahead of its local workers, in ms. */
const HELD_MS = 200;
/** How long a pool found alive (or dead) is taken as such, in ms. */
const ALIVE_CACHE_MS = 1_000;
/** The pause before a read is tried again on a reconnecting link, in ms. */
const RETRY_MS = 200;
/**
 * How many times an entry may be delivered (claimed after its worker went
 * silent) before it is failed instead: a task that takes its worker
 * process down every time must not go round the workers forever.
 */
const MAX_DELIVERIES = 5;
/**
 * How long a stop may wait on the broker past the grace time, in ms: then
 * the links are dropped (a broker that stopped answering must not keep a
 * stopped worker alive; what it held is claimed by others).
 */
const STOP_BROKER_MS = 5_000;
/** Local pools of different task timeouts kept at once, at most. */
const MAX_LOCAL_POOLS = 4;

/** What a {@linkcode BrokerWorker} is started with (checked by the caller). */
export interface ServeOptions {
  /** The broker's URL. */
  broker: string;
  /** The absolute URL of the module whose exports are the tasks. */
  module: string;
  /** The queue's name. */
  queue: string;
  /** Local workers. */
  workers: number;
  /** The visibility timeout in ms. */
  visibilityTimeout: number;
  /** How long a stop lets running tasks finish, in ms. */
  grace: number;
}

/** An entry this worker holds. */
interface Held {
  id: string;
  pool: string;
  text: string;
  entry: TaskEntry;
  /** Set once handed back or dropped: its outcome is then ignored. */
  gone: boolean;
  startedAt: number;
}

/** A worker process serving one queue. */
export class BrokerWorker {
  readonly #options: ServeOptions;
  readonly #keys: QueueKeys;
  readonly #consumer: string;
  readonly #reader: RedisLink;
  readonly #cmd: RedisLink;
  readonly #readerId: string;
  readonly #pools = new Map<number | null, Pool<AnyTasks>>();
  readonly #held = new Map<string, Held>();
  readonly #fifo: Held[] = [];
  #heldItems = 0;
  #active = 0;
  #avgEntryMs = -1;
  #avgItems = 1;
  readonly #alive = new Map<string, { alive: boolean; at: number }>();
  #outbox: Array<{ held: Held; result: EntryResult }> = [];
  #flushQueued = false;
  readonly #writes = new Set<Promise<unknown>>();
  #maintainTimer: ReturnType<typeof setInterval> | undefined;
  #maintaining: Promise<void> | undefined;
  /** Where the next scan for idle entries starts. */
  #claimFrom = "0-0";
  #roomWaiter: (() => void) | undefined;
  #stopping = false;
  #forceStop: (() => void) | undefined;
  #cutLinks: ReturnType<typeof setTimeout> | undefined;
  readonly #served = { ran: 0, handedBack: 0, claimed: 0 };
  /** Holds the serving back until `start()` has finished. */
  #startGate: (() => void) | undefined;
  readonly #gate = new Promise<void>((r) => this.#startGate = r);
  /** Resolves once the worker stopped (rejects if it lost the broker). */
  readonly done: Promise<void>;

  private constructor(
    options: ServeOptions,
    consumer: string,
    links: { reader: RedisLink; cmd: RedisLink; readerId: string },
  ) {
    this.#options = options;
    this.#keys = queueKeys(options.queue);
    this.#consumer = consumer;
    this.#reader = links.reader;
    this.#cmd = links.cmd;
    this.#readerId = links.readerId;
    this.done = this.#serve();
  }

  /**
   * Connects, checks that the module loads in a local worker, registers
   * and starts serving.
   *
   * @param options The checked options.
   * @returns The serving worker.
   */
  static async start(options: ServeOptions): Promise<BrokerWorker> {
    const consumer = `${Deno.pid}-${
      crypto.getRandomValues(new Uint32Array(1))[0]!.toString(36)
    }`;
    const name = `dmp-worker-${consumer}`;
    const cmd = await RedisLink.open(options.broker, name);
    let reader: RedisLink | undefined;
    let worker: BrokerWorker | undefined;
    try {
      reader = await RedisLink.open(options.broker, `${name}-read`);
      const readerId = String(await reader.send(["CLIENT", "ID"]));
      const keys = queueKeys(options.queue);
      await ensureGroup(cmd, keys);
      worker = new BrokerWorker(options, consumer, { reader, cmd, readerId });
      await worker.#checkModule();
      await registerWorker(
        cmd,
        keys,
        consumer,
        options.workers,
        registryTtl(options),
      );
      worker.#startMaintenance();
      worker.#release();
      debug(
        `broker worker ${consumer}: serving queue ${options.queue} with ${options.workers} worker(s)`,
      );
      return worker;
    } catch (e) {
      if (worker) {
        worker.#stopping = true;
        worker.#release();
        await worker.done.catch(() => {});
      } else {
        reader?.destroy();
        await cmd.close();
      }
      throw e;
    }
  }

  /** The consumer name of this worker in the queue's group. */
  get consumer(): string {
    return this.#consumer;
  }

  /** What it did: entries run, handed back, claimed from dead workers. */
  get served(): { ran: number; handedBack: number; claimed: number } {
    return { ...this.#served };
  }

  #release(): void {
    this.#startGate?.();
  }

  /**
   * Stops serving: no more entries are read; running ones get the grace
   * time, the rest go back to the queue. A second call skips the grace.
   *
   * @returns {@linkcode BrokerWorker.done}.
   */
  stop(): Promise<void> {
    if (this.#stopping) this.#forceStop?.();
    this.#stopping = true;
    this.#cutLinks ??= setTimeout(() => {
      this.#reader.destroy();
      this.#cmd.destroy();
    }, this.#options.grace + STOP_BROKER_MS);
    this.#wakeRoom();
    // A blocked read returns at once, as if it timed out.
    void this.#cmd.send(["CLIENT", "UNBLOCK", this.#readerId]).catch(() => {});
    return this.done;
  }

  async #serve(): Promise<void> {
    await this.#gate;
    let failure: unknown;
    try {
      await this.#readLoop();
    } catch (e) {
      failure = e;
    }
    this.#stopping = true;
    try {
      await this.#shutDown(failure === undefined);
    } finally {
      clearTimeout(this.#cutLinks);
    }
    if (failure !== undefined) throw failure;
  }

  async #readLoop(): Promise<void> {
    while (!this.#stopping) {
      const room = this.#room();
      if (room <= 0) {
        await new Promise<void>((r) => this.#roomWaiter = r);
        continue;
      }
      let entries: RawEntry[];
      try {
        entries = await readTasks(
          this.#reader,
          this.#keys,
          this.#consumer,
          room,
          READ_BLOCK_MS,
        );
      } catch (e) {
        if (this.#stopping) return;
        if (/NOGROUP/.test((e as Error).message)) {
          // The stream expired or was deleted: make it again.
          await ensureGroup(this.#cmd, this.#keys);
          continue;
        }
        // Reconnecting: try again; the client gives up after a while.
        if (this.#reader.isOpen) {
          await new Promise((r) => setTimeout(r, RETRY_MS));
          continue;
        }
        throw e;
      }
      if (entries.length > 0) await this.#accept(entries);
    }
  }

  /** How many entries to read now. */
  #room(): number {
    const w = this.#options.workers;
    const maxHeld = w * HELD_PER_WORKER;
    let n = maxHeld - this.#held.size;
    if (this.#avgEntryMs >= 0) {
      const byTime = Math.floor(
        w * HELD_MS / Math.max(this.#avgEntryMs, 0.01),
      );
      n = Math.min(n, byTime - this.#held.size);
    } else n = Math.min(n, w - this.#held.size);
    n = Math.min(n, Math.floor((w * 256 - this.#heldItems) / this.#avgItems));
    // Always enough to keep every local worker busy.
    n = Math.max(n, w - this.#held.size);
    return Math.max(0, n);
  }

  #wakeRoom(): void {
    const w = this.#roomWaiter;
    this.#roomWaiter = undefined;
    w?.();
  }

  /** Takes read or claimed entries: drops bad ones and dead pools' ones. */
  async #accept(entries: RawEntry[]): Promise<void> {
    const fresh: Held[] = [];
    const drop: string[] = [];
    for (const raw of entries) {
      if (!raw) continue;
      const [id, fields] = raw;
      if (this.#held.has(id)) continue;
      const held = parseEntry(id, fields);
      if (typeof held === "string") {
        debug(`broker worker ${this.#consumer}: dropped entry ${id}: ${held}`);
        drop.push(id);
      } else fresh.push(held);
    }
    const alive = await this.#poolsAlive(fresh.map((h) => h.pool));
    for (const held of fresh) {
      if (!alive.has(held.pool)) {
        drop.push(held.id);
        continue;
      }
      this.#held.set(held.id, held);
      this.#heldItems += held.entry.a.length;
      this.#avgItems = this.#avgItems * 0.8 + held.entry.a.length * 0.2;
      this.#fifo.push(held);
    }
    if (drop.length > 0) this.#ackAndDelete(drop);
    this.#runMore();
  }

  /** Which of these pools are alive (their liveness key exists). */
  async #poolsAlive(pools: string[]): Promise<Set<string>> {
    const now = Date.now();
    const alive = new Set<string>();
    const ask: string[] = [];
    for (const p of new Set(pools)) {
      const known = this.#alive.get(p);
      if (known && now - known.at < ALIVE_CACHE_MS) {
        if (known.alive) alive.add(p);
      } else ask.push(p);
    }
    if (ask.length > 0) {
      const answers = await Promise.all(
        ask.map((p) =>
          this.#cmd.send(["EXISTS", poolKeys(this.#options.queue, p).alive])
        ),
      );
      ask.forEach((p, i) => {
        const yes = Number(answers[i]) === 1;
        this.#alive.set(p, { alive: yes, at: now });
        if (yes) alive.add(p);
      });
      if (this.#alive.size > 1000) {
        for (const [p, v] of this.#alive) {
          if (now - v.at > ALIVE_CACHE_MS) this.#alive.delete(p);
        }
      }
    }
    return alive;
  }

  /**
   * The local pool for a task timeout, started on first use. Synchronous,
   * so that the caller submits to it before another entry's lookup could
   * retire it.
   */
  #localPool(timeout: number | null): Pool<AnyTasks> {
    let pool = this.#pools.get(timeout);
    if (pool) return pool;
    if (this.#pools.size >= MAX_LOCAL_POOLS) {
      // Retire the idlest pool of another timeout (it finishes its work).
      for (const [t, p] of this.#pools) {
        if (t === null) continue;
        const { busy, queued } = p.stats();
        if (busy === 0 && queued === 0) {
          this.#pools.delete(t);
          p.close();
          this.#track(p.join());
          break;
        }
      }
    }
    pool = new Pool<AnyTasks>({
      module: this.#options.module,
      workers: this.#options.workers,
      ...(timeout === null ? {} : { taskTimeout: timeout }),
    });
    this.#pools.set(timeout, pool);
    return pool;
  }

  /**
   * Starts the local pool without a task timeout and checks that the
   * module loads in it: a worker that cannot run its tasks refuses to
   * start rather than fail every task it takes.
   */
  async #checkModule(): Promise<void> {
    const pool = this.#localPool(null);
    try {
      await pool.apply(() => true);
    } catch (e) {
      pool.terminate();
      this.#pools.delete(null);
      const why = e instanceof RemoteError ? e.message : String(e);
      throw new TypeError(
        `Cannot start the worker: its module ${this.#options.module} does not load: ${why}`,
        { cause: e },
      );
    }
  }

  /** Starts held entries on the local pools while there is room. */
  #runMore(): void {
    const max = this.#options.workers * ACTIVE_PER_WORKER;
    while (this.#active < max && this.#fifo.length > 0 && !this.#stopping) {
      const held = this.#fifo.shift()!;
      if (held.gone) continue;
      held.startedAt = performance.now();
      this.#active++;
      void this.#run(held);
    }
  }

  async #run(held: Held): Promise<void> {
    const { entry } = held;
    let result: EntryResult;
    try {
      const pool = this.#localPool(entry.t);
      const values = entry.m === CALL_ITEM
        ? await pool.map(entry.f, entry.a)
        : await pool.starmap(entry.f, entry.a as unknown[][]);
      const ms = performance.now() - held.startedAt;
      try {
        result = { n: entry.n, ms, v: encodeValues(values) };
      } catch (e) {
        result = { n: entry.n, ms, e: toWireError(e, this.#consumer) };
      }
    } catch (e) {
      if (held.gone) return;
      if (e instanceof ClosedError && this.#stopping) return; // handed back
      result = {
        n: entry.n,
        ms: performance.now() - held.startedAt,
        e: toWireError(e, this.#consumer),
      };
    }
    if (held.gone) return;
    this.#active--;
    this.#forget(held);
    const ms = result.ms;
    this.#avgEntryMs = this.#avgEntryMs < 0
      ? ms
      : this.#avgEntryMs * 0.8 + ms * 0.2;
    this.#served.ran++;
    this.#outbox.push({ held, result });
    if (!this.#flushQueued) {
      // After the other results that came in this turn: one write for all.
      this.#flushQueued = true;
      queueMicrotask(() => queueMicrotask(() => this.#flush()));
    }
    this.#runMore();
    this.#wakeRoom();
    if (this.#stopping && this.#active === 0) this.#forceStop?.();
  }

  /** Forgets a held entry (its outcome is known or it is handed back). */
  #forget(held: Held): void {
    if (this.#held.delete(held.id)) this.#heldItems -= held.entry.a.length;
  }

  /** Writes the results gathered, then acknowledges and deletes their entries. */
  #flush(): void {
    this.#flushQueued = false;
    const out = this.#outbox;
    this.#outbox = [];
    if (out.length === 0) return;
    const byPool = new Map<string, EntryResult[]>();
    for (const { held, result } of out) {
      let list = byPool.get(held.pool);
      if (!list) byPool.set(held.pool, list = []);
      list.push(result);
    }
    // One tick: the client sends these as one pipeline, in this order (a
    // result is written before its entry is acknowledged).
    for (const [pool, results] of byPool) {
      this.#track(
        writeResults(this.#cmd, this.#options.queue, pool, results),
      );
    }
    this.#ackAndDelete(out.map((o) => o.held.id));
  }

  #ackAndDelete(ids: string[]): void {
    for (const w of ackAndDelete(this.#cmd, this.#keys, ids)) this.#track(w);
  }

  #track(p: Promise<unknown>): void {
    const tracked = p.catch((e) => {
      // The entries stay pending: another worker claims them after the
      // visibility timeout, and their duplicates are dropped by the pool.
      debug(`broker worker ${this.#consumer}: ${(e as Error).message}`);
    }).finally(() => this.#writes.delete(tracked));
    this.#writes.add(tracked);
  }

  #startMaintenance(): void {
    const every = Math.max(50, Math.floor(this.#options.visibilityTimeout / 4));
    this.#maintainTimer = setInterval(() => {
      if (this.#maintaining || this.#stopping) return;
      this.#maintaining = this.#maintain().catch((e) =>
        debug(`broker worker ${this.#consumer}: ${(e as Error).message}`)
      ).finally(() => this.#maintaining = undefined);
    }, every);
  }

  /**
   * Shows the entries held are alive (resets their idle time), claims the
   * entries of workers silent for the visibility timeout, and refreshes
   * the register.
   */
  async #maintain(): Promise<void> {
    await Promise.all([
      refreshHeld(this.#cmd, this.#keys, this.#consumer, [
        ...this.#held.keys(),
      ]),
      registerWorker(
        this.#cmd,
        this.#keys,
        this.#consumer,
        this.#options.workers,
        registryTtl(this.#options),
      ),
      this.#cmd.send(["PEXPIRE", this.#keys.tasks, String(QUEUE_TTL_MS)]),
    ]);
    const room = this.#room();
    if (room <= 0 || this.#stopping) return;
    const scan = await claimIdle(
      this.#cmd,
      this.#keys,
      this.#consumer,
      this.#options.visibilityTimeout,
      room,
      this.#claimFrom,
    );
    this.#claimFrom = scan.next;
    let claimed: RawEntry[] = scan.entries.filter((e) => !this.#held.has(e[0]));
    if (claimed.length > 0) claimed = await this.#dropPoison(claimed);
    if (claimed.length > 0 && !this.#stopping) {
      this.#served.claimed += claimed.length;
      debug(
        `broker worker ${this.#consumer}: claimed ${claimed.length} entries of a silent worker`,
      );
      await this.#accept(claimed);
    } else if (claimed.length > 0) {
      // Claimed while stopping: back to the queue at once.
      for (const [id, fields] of claimed as Array<[string, string[]]>) {
        const held = parseEntry(id, fields);
        if (typeof held !== "string") this.#handBack(held);
        else this.#ackAndDelete([id]);
      }
    }
  }

  /**
   * Fails the claimed entries delivered too often (their workers died each
   * time): the pool gets a `WorkerCrashedError` for them.
   *
   * @returns The entries to run.
   */
  async #dropPoison(claimed: RawEntry[]): Promise<RawEntry[]> {
    const counts = await deliveryCounts(
      this.#cmd,
      this.#keys,
      claimed.map((raw) => raw![0]),
    );
    const keep: RawEntry[] = [];
    claimed.forEach((raw, i) => {
      const deliveries = counts[i]!;
      if (deliveries <= MAX_DELIVERIES) {
        keep.push(raw);
        return;
      }
      const held = parseEntry(raw![0], raw![1]);
      if (typeof held === "string") {
        this.#ackAndDelete([raw![0]]);
        return;
      }
      held.gone = true;
      this.#outbox.push({
        held,
        result: {
          n: held.entry.n,
          ms: 0,
          e: {
            k: "local",
            name: "WorkerCrashedError",
            message:
              `The task's worker process was lost ${MAX_DELIVERIES} times while running it (it may take its process down); it is not run again`,
            stack: "",
            worker: this.#consumer,
            i: null,
          },
        },
      });
      debug(
        `broker worker ${this.#consumer}: entry ${held.id} failed after ${deliveries} deliveries`,
      );
    });
    if (keep.length < claimed.length) this.#flush();
    return keep;
  }

  #handBack(held: Held): void {
    held.gone = true;
    this.#forget(held);
    this.#served.handedBack++;
    this.#track(handBack(this.#cmd, this.#keys, held));
  }

  /** Finishes or hands back what it holds, then lets go of everything. */
  async #shutDown(connected: boolean): Promise<void> {
    if (this.#maintainTimer !== undefined) clearInterval(this.#maintainTimer);
    this.#maintainTimer = undefined;
    await this.#maintaining;
    // Not started: back to the queue now.
    for (const held of this.#fifo.splice(0)) {
      if (!held.gone) this.#handBack(held);
    }
    if (connected && this.#active > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#forceStop = resolve;
        timer = setTimeout(resolve, this.#options.grace);
      });
      clearTimeout(timer);
    }
    this.#forceStop = undefined;
    // Still running after the grace time: stopped, and back to the queue.
    for (const held of [...this.#held.values()]) {
      if (!held.gone) this.#handBack(held);
    }
    this.#flush();
    await this.#closeAll();
  }

  async #closeAll(): Promise<void> {
    for (const pool of this.#pools.values()) pool.terminate();
    await Promise.all([...this.#pools.values()].map((p) => p.join()));
    this.#pools.clear();
    while (this.#writes.size > 0) await Promise.allSettled([...this.#writes]);
    try {
      // Nothing left in its name: the consumer can go from the group.
      if (!await holdsEntries(this.#cmd, this.#keys, this.#consumer)) {
        await leaveGroup(this.#cmd, this.#keys, this.#consumer);
      }
      await unregisterWorker(this.#cmd, this.#keys, this.#consumer);
    } catch (e) {
      debug(`broker worker ${this.#consumer}: ${(e as Error).message}`);
    }
    this.#reader.destroy();
    await this.#cmd.close();
    debug(
      `broker worker ${this.#consumer}: stopped (${this.#served.ran} run, ${this.#served.handedBack} handed back)`,
    );
  }
}

/** The local pools' module type: any export, any arguments. */
// deno-lint-ignore no-explicit-any
type AnyTasks = Record<string, (...args: any[]) => unknown>;

/** How long a worker's register entry lives without a refresh, in ms. */
function registryTtl(options: ServeOptions): number {
  return Math.max(1000, options.visibilityTimeout);
}

/** Reads an entry's fields, or says why it is dropped. */
function parseEntry(id: string, fields: string[]): Held | string {
  const parsed = parseTaskFields(fields);
  if (typeof parsed === "string") return parsed;
  return { id, ...parsed, gone: false, startedAt: 0 };
}

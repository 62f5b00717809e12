/**
 * Spawning and supervising this package's workers, on Deno's
 * `node:worker_threads`: unlike a Web Worker, such a worker can be stopped
 * while it is busy, capped in heap size, reports its exit code, and can be
 * told not to keep the program alive.
 *
 * What the substrate does not say itself, this module adds: the live-worker
 * count, the thread id and shared thread table each worker gets, and a heap
 * watch inside the worker (a capped worker that runs out of memory inside a
 * promise continuation is not stopped by the runtime: its task just never
 * settles; the watch sees the raised heap limit and ends the worker).
 *
 * @module
 */

import {
  type MessagePort as NodeMessagePort,
  parentPort,
  SHARE_ENV,
  Worker as NodeWorker,
  workerData,
} from "node:worker_threads";
import { getHeapStatistics } from "node:v8";
import {
  type ChildExchange,
  childExchangePort,
  joinExchange,
} from "./exchange.ts";
import { ClosedError, type ErrorInfo, errorInfo } from "./errors.ts";
import {
  adoptIdentity,
  allocateThreadId,
  markThreadDead,
  perThread,
  type SharedBlocks,
  threadIdentity,
} from "./runtime.ts";

interface WorkerState {
  /** How many workers this thread has spawned. */
  spawned: number;
  /** The ones alive now. */
  live: Set<ManagedWorker>;
}

let workerState: WorkerState | undefined;

function workers(): WorkerState {
  return workerState ??= perThread(
    "workers",
    () => ({ spawned: 0, live: new Set() }),
  );
}

const INIT = "\u0000mp.init";
const OUT_OF_MEMORY = "\u0000mp.oom";

/** What a worker gets in `workerData`. */
interface WorkerInit {
  table: Int32Array;
  threadId: number;
  name: string;
  blocks: SharedBlocks;
}

/**
 * The heap cap a worker gets when its pool or process sets none, in MB:
 * the heap limit V8 gives this thread, so a worker may grow as large as the
 * main thread could, but its running out of memory is a
 * `WorkerCrashedError` rather than the end of the program.
 *
 * @returns The default `memoryLimitMb`.
 */
export function defaultMemoryLimitMb(): number {
  return Math.max(
    64,
    Math.floor(getHeapStatistics().heap_size_limit / 2 ** 20),
  );
}

/**
 * Why a managed worker is gone.
 */
export interface WorkerDeath {
  /** How it ended. */
  kind: "exit" | "error" | "terminated";
  /** The exit code for `"exit"`; 1 for errors; -15 when terminated. */
  code: number;
  /** The error that killed it, for `"error"`. */
  error?: ErrorInfo;
  /** A sentence saying what happened, for error messages. */
  reason: string;
}

/**
 * Options of {@linkcode spawnWorker}.
 */
export interface SpawnOptions {
  /** The worker's name (shown in errors and `currentThreadName()`). */
  name: string;
  /** Called with each message the worker posts. */
  onMessage(data: unknown): void;
  /** Called once when the worker is gone, however that happened. */
  onDeath?(death: WorkerDeath): void;
  /** The worker's heap cap in MB (default {@linkcode defaultMemoryLimitMb}). */
  memoryLimitMb?: number;
  /** Whether the worker keeps the program alive from the start (default `true`). */
  ref?: boolean;
}

const LOAD_ERROR = "\u0000mp.load-error";

/**
 * The entry every worker starts from: a `data:` module (`node:worker_threads`
 * takes only `file:` and `data:` URLs) that imports the real one. A module
 * that fails to load would otherwise end the whole program (Deno reports an
 * uncaught error in a worker's entry as the program's own); here it is
 * reported to the spawner and the worker exits with code 1. A load over the
 * network that fails to connect is tried twice more first: a worker started
 * right after another was terminated can find the shared connection broken.
 */
function entryUrl(url: URL | string): URL {
  const href = JSON.stringify(new URL(url).href);
  const source = `import { parentPort } from "node:worker_threads";
for (let i = 0; ; i++) {
  try {
    await import(${href});
    break;
  } catch (e) {
    if (i < 2 && /error sending request|connect/i.test(String(e?.message))) {
      await new Promise((r) => setTimeout(r, 50 * (i + 1)));
      continue;
    }
    parentPort.postMessage({ ${JSON.stringify(LOAD_ERROR)}: {
      name: String(e?.name ?? "Error"),
      message: String(e?.message ?? e),
      stack: String(e?.stack ?? ""),
    } });
    process.exit(1);
  }
}
`;
  return new URL(`data:text/javascript,${encodeURIComponent(source)}`);
}

/**
 * A worker spawned by this package: counted while alive, told its thread id
 * and the shared thread table, capped in heap size, and watched so that its
 * end — an exit, a crash, running out of memory, being terminated — is
 * reported exactly once through `onDeath`.
 */
export class ManagedWorker {
  readonly #worker: NodeWorker | undefined;
  readonly #options: SpawnOptions;
  readonly #threadId: number;
  readonly #limitMb: number;
  #dead: WorkerDeath | undefined;
  #error: unknown;
  #outOfMemory = false;
  #refd: boolean;
  /**
   * Messages to the worker go through this Web `MessagePort` (its twin is
   * in `workerData`), not through the `node:worker_threads` Worker: Deno's
   * node `postMessage` walks every element of a message looking for ports
   * (a 50 MB `Uint8Array` took 8–12 s, transferred or not; 45 ms and 3 ms
   * through a port), and a port queues what is posted before the worker
   * listens. Messages from the worker stay on the node channel, which
   * delivers them before the worker's `exit` event.
   */
  #port: MessagePort | undefined;
  #exchange: ChildExchange | undefined;

  /**
   * Spawns the worker module at `url`.
   *
   * @param url The worker module, e.g. `new URL("./_x_worker.ts", import.meta.url)`.
   * @param options Name, handlers, heap cap.
   */
  constructor(url: URL | string, options: SpawnOptions) {
    const rt = workers();
    this.#options = options;
    this.#limitMb = options.memoryLimitMb ?? defaultMemoryLimitMb();
    this.#threadId = allocateThreadId();
    const init: WorkerInit = {
      table: threadIdentity().table,
      threadId: this.#threadId,
      name: options.name,
      blocks: threadIdentity().blocks,
    };
    let worker: NodeWorker;
    const channel = new MessageChannel();
    const exchange = childExchangePort();
    this.#exchange = exchange;
    try {
      worker = new NodeWorker(entryUrl(url), {
        name: options.name,
        workerData: {
          [INIT]: init,
          port: channel.port2,
          exchange: exchange.ports,
        },
        // deno-lint-ignore no-explicit-any
        transferList: [channel.port2 as any, ...exchange.ports],
        resourceLimits: { maxOldGenerationSizeMb: this.#limitMb },
        // Threads share the environment, as Web Workers do. Node's default
        // copies process.env, which reads every variable and so prompts for
        // env access in a terminal.
        env: SHARE_ENV,
      });
    } catch (e) {
      // Refused at once (no read permission on the module, say): reported
      // as a crash at start, as a Web Worker's failed load is.
      markThreadDead(this.#threadId);
      channel.port1.close();
      for (const p of exchange.ports) p.close();
      exchange.close();
      this.#worker = undefined;
      this.#refd = false;
      const error = errorInfo(e);
      queueMicrotask(() =>
        this.#die({
          kind: "error",
          code: 1,
          error,
          reason:
            `Worker ${options.name} could not start: ${error.name}: ${error.message}`,
        })
      );
      return;
    }
    this.#worker = worker;
    this.#port = channel.port1;
    rt.spawned++;
    rt.live.add(this);
    this.#refd = options.ref ?? true;
    // Bulky messages from the worker come through the port (see
    // postBulkToParent). Set before the unref below: listening refs a port.
    channel.port1.onmessage = (e: MessageEvent) => {
      if (!this.#dead) this.#options.onMessage(e.data);
    };
    if (!this.#refd) {
      worker.unref();
      (this.#port as MessagePort & { unref?(): void }).unref?.();
    }
    worker.on("message", (data: unknown) => {
      if (this.#dead) return;
      if (typeof data === "object" && data !== null) {
        if (OUT_OF_MEMORY in data) {
          this.#outOfMemory = true;
          return;
        }
        if (LOAD_ERROR in data) {
          this.#error ??= Object.assign(
            new Error(),
            (data as Record<string, ErrorInfo>)[LOAD_ERROR],
          );
          return;
        }
      }
      this.#options.onMessage(data);
    });
    worker.on("error", (e: unknown) => {
      if ((e as { code?: string })?.code === "ERR_WORKER_OUT_OF_MEMORY") {
        this.#outOfMemory = true;
      } else this.#error ??= e;
    });
    worker.on("messageerror", (e: unknown) => {
      this.#error ??= new TypeError(
        `Worker ${options.name} sent a message that could not be read: ${
          (e as Error)?.message ?? e
        }`,
      );
    });
    worker.once("exit", (code: number) => this.#onExit(code));
  }

  /** Lets go of the thread: no longer counted, its ports closed. */
  #release(): void {
    workers().live.delete(this);
    this.#port?.close();
    this.#exchange?.close();
  }

  #onExit(code: number): void {
    markThreadDead(this.#threadId);
    this.#release();
    if (this.#dead) return;
    const name = this.#options.name;
    if (this.#outOfMemory) {
      this.#die({
        kind: "error",
        code: 1,
        error: {
          name: "RangeError",
          message: `heap limit of ${this.#limitMb} MB reached`,
          stack: "",
        },
        reason: `Worker ${name} ran out of memory: it reached its heap ` +
          `limit of ${this.#limitMb} MB (memoryLimitMb)`,
      });
    } else if (this.#error !== undefined) {
      const error = errorInfo(this.#error);
      this.#die({
        kind: "error",
        code: 1,
        error,
        reason: `Worker ${name} crashed: ${error.name}: ${error.message}`,
      });
    } else {
      this.#die({
        kind: "exit",
        code,
        reason: `Worker ${name} exited (code ${code})`,
      });
    }
  }

  #die(death: WorkerDeath): void {
    if (this.#dead) return;
    this.#dead = death;
    this.#options.onDeath?.(death);
  }

  /** The worker's name. */
  get name(): string {
    return this.#options.name;
  }

  /** The worker's thread id (lock owners are recorded by it). */
  get threadId(): number {
    return this.#threadId;
  }

  /** How the worker ended, or `undefined` while it runs. */
  get death(): WorkerDeath | undefined {
    return this.#dead;
  }

  /**
   * Makes the worker keep the program alive (`true`) or not (`false`), as
   * Node's `ref()`/`unref()`.
   *
   * @param keep Whether the program waits for it.
   */
  keepAlive(keep: boolean): void {
    if (keep === this.#refd || this.#dead) return;
    this.#refd = keep;
    const port = this.#port as MessagePort & { ref?(): void; unref?(): void };
    if (keep) {
      this.#worker?.ref();
      port?.ref?.();
    } else {
      this.#worker?.unref();
      port?.unref?.();
    }
  }

  /**
   * Posts a message to the worker.
   *
   * @param data The message.
   * @param transfer Objects to transfer.
   */
  postMessage(data: unknown, transfer: Transferable[] = []): void {
    // A worker that could not start reports so on its own: drop the message.
    if (!this.#worker) return;
    if (this.#dead) {
      throw new ClosedError(
        `Cannot post to worker ${this.#options.name}: it is gone`,
      );
    }
    this.#port!.postMessage(data, transfer);
  }

  /**
   * Stops the worker now, busy or not: its end is reported at once (the
   * caller does not wait for the thread), its thread is marked dead (so the
   * locks it held count as abandoned, and its waits unwind) and it no longer
   * keeps the program alive. A thread in a loop that never yields is not
   * interrupted by Deno 2.9.6 (denoland/deno#35657): it spins on until the
   * program ends.
   *
   * @param death How to report the end (default: terminated, code -15).
   */
  terminate(death?: Partial<WorkerDeath>): void {
    markThreadDead(this.#threadId);
    this.#die({
      kind: "terminated",
      code: -15,
      reason: `Worker ${this.#options.name} was terminated`,
      ...death,
    });
    this.#release();
    this.#worker?.terminate().catch(() => {});
  }
}

/**
 * Spawns a worker module and supervises it; see {@linkcode ManagedWorker}.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnWorker } from "./worker.ts";
 *
 * const w = spawnWorker(new URL("../_pool/worker.ts", import.meta.url), {
 *   name: "example",
 *   onMessage(data) { console.log(data); },
 * });
 * w.terminate();
 * ```
 *
 * @param url The worker module's URL.
 * @param options Name and handlers.
 * @returns The supervised worker.
 */
export function spawnWorker(
  url: URL | string,
  options: SpawnOptions,
): ManagedWorker {
  return new ManagedWorker(url, options);
}

/**
 * How many workers spawned by this package (in this thread) are still
 * alive. Tests assert it is back to zero at the end of each test: Deno's
 * sanitizers do not report a leaked worker.
 *
 * @returns The number of live workers.
 */
export function liveWorkerCount(): number {
  return workers().live.size;
}

/**
 * Posts a message from a worker to the thread that spawned it.
 *
 * @param data The message.
 * @param transfer Objects to transfer.
 */
export function postToParent(
  data: unknown,
  transfer: Transferable[] = [],
): void {
  // deno-lint-ignore no-explicit-any
  parentPort!.postMessage(data, transfer as any);
}

/**
 * Posts a bulky message (a big result) from a worker through its port
 * rather than the node channel, whose `postMessage` walks every element of
 * a message (seconds for tens of MB). The port does not keep the message's
 * order with the worker's `exit` event: a result that arrives after its
 * worker's death is ignored (the job is run again), as one lost in a crash.
 *
 * @param data The message.
 * @param transfer Objects to transfer.
 */
export function postBulkToParent(
  data: unknown,
  transfer: Transferable[] = [],
): void {
  (workerData as { port: MessagePort }).port.postMessage(data, transfer);
}

/** How often a worker checks whether it ran out of memory, in ms. */
const HEAP_WATCH_MS = 100;

/**
 * Sets up the worker side of a worker spawned with
 * {@linkcode spawnWorker}. Call it synchronously at the top of a worker
 * entry module: it takes the thread id and thread table from `workerData`,
 * delivers the spawner's messages to `onMessage`, makes `self.close()`,
 * `Deno.exit()` and `process.exit()` run `beforeExit` first (to post what
 * is finished), and starts the heap watch.
 *
 * Messages are handed over from the message handler as they come; work
 * must not run in that handler itself (a capped worker that runs out of
 * memory there is never stopped): run it from a timer or `setImmediate`.
 *
 * @example Usage
 * ```ts ignore
 * import { installWorkerRuntime, postToParent } from "./worker.ts";
 *
 * installWorkerRuntime((data) => postToParent(data));
 * ```
 *
 * @param onMessage Handles the spawner's messages.
 * @param beforeExit Runs when the worker code calls `self.close()`,
 *   `Deno.exit()` or `process.exit()`, before the worker ends.
 */
export function installWorkerRuntime(
  onMessage: (data: unknown) => void,
  beforeExit?: () => void,
): void {
  const init = (workerData as Record<string, WorkerInit> | null)?.[INIT];
  if (!init || !parentPort) {
    throw new TypeError(
      "Cannot set up the worker runtime: this thread was not spawned by spawnWorker",
    );
  }
  adoptIdentity({
    table: init.table,
    threadId: init.threadId,
    threadName: init.name,
    blocks: init.blocks,
  });
  const port = (workerData as { port?: MessagePort }).port!;
  joinExchange(
    (workerData as { exchange: [NodeMessagePort, NodeMessagePort] }).exchange,
  );
  port.onmessage = (e: MessageEvent) => onMessage(e.data);
  // Worker code written for Web Workers names the global scope `self`.
  (globalThis as { self?: unknown }).self ??= globalThis;
  const g = globalThis as unknown as { close?: () => void };
  const proc = (globalThis as unknown as {
    process?: { exit(code?: number): never };
  }).process;
  const realExit = Deno.exit.bind(Deno);
  const realClose = g.close?.bind(globalThis);
  let exiting = false;
  const before = () => {
    if (exiting) return;
    exiting = true;
    try {
      beforeExit?.();
    } catch {
      // The worker is going away regardless.
    }
    for (const w of [...workers().live]) w.terminate();
  };
  (Deno as { exit: (code?: number) => never }).exit = (code?: number) => {
    before();
    return realExit(code);
  };
  if (realClose) {
    g.close = () => {
      before();
      realClose();
    };
  }
  if (proc) {
    const realProcExit = proc.exit.bind(proc);
    proc.exit = (code?: number) => {
      before();
      return realProcExit(code);
    };
  }
  // Running out of memory inside a promise continuation leaves the worker
  // alive with its task never settling, and V8's heap limit raised: seen
  // here, the worker reports it and exits.
  const limit = getHeapStatistics().heap_size_limit;
  const watch = setInterval(() => {
    if (getHeapStatistics().heap_size_limit <= limit) return;
    clearInterval(watch);
    parentPort!.postMessage({ [OUT_OF_MEMORY]: true });
    realExit(1);
  }, HEAP_WATCH_MS);
  Deno.unrefTimer(watch);
}

/**
 * Spawning and supervising this package's workers: the live-worker count,
 * the init message that hands a worker its thread id, and the detection of a
 * silent death (`self.close()`/`Deno.exit()`), which Web Workers do not
 * report.
 *
 * @module
 */

import { ClosedError, type ErrorInfo, errorInfo } from "./errors.ts";
import {
  adoptIdentity,
  allocateThreadId,
  isThreadAlive,
  markThreadDead,
  perThread,
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
const EXITED = "\u0000mp.exit";
const FATAL = "\u0000mp.fatal";

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
}

/**
 * A worker spawned by this package: counted while alive, told its thread id
 * and the shared thread table, and watched so that a silent death (the
 * worker calling `self.close()` or `Deno.exit()`) or a crash is reported
 * exactly once through `onDeath`.
 */
export class ManagedWorker {
  readonly #worker: Worker;
  readonly #options: SpawnOptions;
  readonly #threadId: number;
  #dead: WorkerDeath | undefined;
  #fatal: ErrorInfo | undefined;

  /**
   * Spawns the worker module at `url`.
   *
   * @param url The worker module, e.g. `new URL("./_x_worker.ts", import.meta.url)`.
   * @param options Name and handlers.
   */
  constructor(url: URL | string, options: SpawnOptions) {
    const rt = workers();
    this.#options = options;
    this.#threadId = allocateThreadId();
    try {
      this.#worker = new Worker(url, { type: "module", name: options.name });
    } catch (e) {
      markThreadDead(this.#threadId);
      throw e;
    }
    rt.spawned++;
    rt.live.add(this);
    this.#worker.onmessage = (e: MessageEvent) => this.#onMessage(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const error = this.#fatal ?? {
        name: "Error",
        message: e.message || "uncaught error",
        stack: e.message || "",
      };
      this.#die({
        kind: "error",
        code: 1,
        error,
        reason:
          `Worker ${options.name} crashed: ${error.name}: ${error.message}`,
      });
    };
    this.#worker.onmessageerror = () => {
      this.#die({
        kind: "error",
        code: 1,
        reason: `Worker ${options.name} sent a message that could not be read`,
      });
    };
    this.#worker.postMessage({
      [INIT]: {
        table: threadIdentity().table,
        threadId: this.#threadId,
        name: options.name,
      },
    });
  }

  #onMessage(data: unknown): void {
    if (typeof data === "object" && data !== null) {
      const rec = data as Record<string, unknown>;
      if (EXITED in rec) {
        const code = Number(rec[EXITED]) | 0;
        this.#die({
          kind: "exit",
          code,
          reason: `Worker ${this.#options.name} exited (code ${code})`,
        });
        return;
      }
      if (FATAL in rec) {
        this.#fatal = rec[FATAL] as ErrorInfo;
        return;
      }
    }
    if (!this.#dead) this.#options.onMessage(data);
  }

  #die(death: WorkerDeath): void {
    if (this.#dead) return;
    this.#dead = death;
    markThreadDead(this.#threadId);
    this.#worker.terminate();
    workers().live.delete(this);
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
    if (!this.#dead && !isThreadAlive(this.#threadId)) {
      // It marked itself dead (self.close / Deno.exit) but its last message
      // has not arrived yet: report the death now.
      this.#die({
        kind: "exit",
        code: 0,
        reason: `Worker ${this.#options.name} exited`,
      });
    }
    return this.#dead;
  }

  /**
   * Posts a message to the worker.
   *
   * @param data The message.
   * @param transfer Objects to transfer.
   */
  postMessage(data: unknown, transfer: Transferable[] = []): void {
    if (this.#dead) {
      throw new ClosedError(
        `Cannot post to worker ${this.#options.name}: it is gone`,
      );
    }
    this.#worker.postMessage(data, transfer);
  }

  /**
   * Stops the worker: sets its stop flag (so timed waits inside it unwind),
   * then terminates it. A worker busy in a synchronous loop cannot be
   * stopped by Deno; it is then abandoned, no longer counted, and its locks
   * count as abandoned.
   *
   * @param death How to report the end (default: terminated, code -15).
   */
  terminate(death?: Partial<WorkerDeath>): void {
    this.#die({
      kind: "terminated",
      code: -15,
      reason: `Worker ${this.#options.name} was terminated`,
      ...death,
    });
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
 * Sets up the worker side of a worker spawned with
 * {@linkcode spawnWorker}. Call it synchronously at the top of a worker
 * entry module: it installs `self.onmessage`, takes the init message (thread
 * id, thread table), wraps `self.close` and `Deno.exit` so a silent exit is
 * recorded, and reports uncaught errors with their stack. Every later
 * message goes to `onMessage`.
 *
 * @example Usage
 * ```ts ignore
 * import { installWorkerRuntime } from "./worker.ts";
 *
 * installWorkerRuntime((data) => postMessage(data));
 * ```
 *
 * @param onMessage Handles the messages after the init message.
 * @param beforeExit Runs when the worker code calls `self.close()` or
 *   `Deno.exit()`, before the exit is reported (e.g. to flush results).
 */
export function installWorkerRuntime(
  onMessage: (data: unknown) => void,
  beforeExit?: () => void,
): void {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent) => void) | null;
    close(): void;
    postMessage(data: unknown): void;
    addEventListener(type: string, fn: (e: Event) => void): void;
  };
  const pending: unknown[] = [];
  let ready = false;
  scope.onmessage = (e: MessageEvent) => {
    const data = e.data;
    if (!ready) {
      if (typeof data === "object" && data !== null && INIT in data) {
        const init = (data as Record<string, {
          table: Int32Array;
          threadId: number;
          name: string;
        }>)[INIT]!;
        adoptIdentity({
          table: init.table,
          threadId: init.threadId,
          threadName: init.name,
        });
        ready = true;
        for (const p of pending.splice(0)) onMessage(p);
        return;
      }
      pending.push(data);
      return;
    }
    onMessage(data);
  };
  const realClose = scope.close.bind(globalThis);
  const realExit = Deno.exit.bind(Deno);
  let exiting = false;
  const exit = (code: number, really: () => void): never => {
    if (!exiting) {
      exiting = true;
      try {
        beforeExit?.();
      } catch {
        // The worker is going away regardless.
      }
      for (const w of [...workers().live]) w.terminate();
      scope.postMessage({ [EXITED]: code });
      markThreadDead(threadIdentity().threadId);
    }
    really();
    throw new Error("unreachable: the worker is closing");
  };
  scope.close = () => {
    exit(0, realClose);
  };
  (Deno as { exit: (code?: number) => never }).exit = (code?: number) =>
    exit(code ?? 0, () => realExit(code));
  scope.addEventListener("error", (e: Event) => {
    const err = (e as ErrorEvent).error;
    scope.postMessage({ [FATAL]: errorInfo(err ?? (e as ErrorEvent).message) });
  });
  scope.addEventListener("unhandledrejection", (e: Event) => {
    const reason = (e as PromiseRejectionEvent).reason;
    scope.postMessage({ [FATAL]: errorInfo(reason) });
  });
}

/**
 * `Process`: one task in its own worker, as Python's
 * `multiprocessing.Process`.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import {
  currentThreadId,
  currentThreadName,
  perThread,
} from "../_core/runtime.ts";
import { spawnWorker } from "../_core/worker.ts";
import type { ManagedWorker, WorkerDeath } from "../_core/worker.ts";
import { withDeadline } from "../_core/deadline.ts";
import { debug } from "../_core/debug.ts";
import { WORKER_URL } from "./protocol.ts";
import type { FromWorker, ProcessMsg, TaskDef } from "./protocol.ts";
import { checkModule, encodeArgs, taskDef } from "./task.ts";
import type { TaskFunction, TaskName } from "./task.ts";

/**
 * Checks an option that lists a task's arguments.
 *
 * @param list The option (`undefined` for none).
 * @param name The option's name, for the error message.
 * @param what What is being done, for the error message.
 * @returns The list (`[]` for none).
 * @throws {TypeError} If it is not an array.
 */
export function argList(
  list: readonly unknown[] | undefined,
  name: string,
  what: string,
): readonly unknown[] {
  const args = list ?? [];
  if (!Array.isArray(args)) {
    throw new TypeError(
      `Cannot ${what}: ${name} must be an array, received ${
        describeValue(args)
      }`,
    );
  }
  return args;
}

/**
 * Options of {@linkcode Process}.
 *
 * @typeParam M The type of `module`, e.g. `typeof import("./tasks.ts")`.
 *
 * @example Usage
 * ```ts
 * import { Process, type ProcessOptions } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const options: ProcessOptions = {
 *   target: (a: number, b: number) => console.log(a + b),
 *   args: [1, 2],
 *   name: "adder",
 * };
 * const p = new Process(options);
 * p.start();
 * assert.equal(await p.join(), 0);
 * ```
 *
 * @example Usage
 * ```ts
 * import { type JoinOptions, Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: () => new Promise((r) => setTimeout(r, 5_000)) });
 * p.start();
 * const options: JoinOptions = { timeout: 10 };
 * assert.equal(await p.join(options), null);
 * p.terminate();
 * assert.equal(await p.join(), -15);
 * ```
 */
export interface ProcessOptions<
  M = Record<string, never>,
  F extends TaskFunction = TaskFunction,
> {
  /**
   * What to run: a self-contained function, or the name of an export of
   * `module`.
   */
  target: F | TaskName<M>;
  /**
   * The arguments (structured-clone values or this package's shared
   * objects), checked against the target function's parameters.
   */
  args?: Readonly<Parameters<F>>;
  /** The module whose export `target` names (an absolute URL). */
  module?: string | URL;
  /** The process's name; defaults to `Process-N`. */
  name?: string;
  /**
   * Whether the process is a daemon: it does not keep the program alive,
   * and is stopped when the program ends (as Python's daemon children).
   * Default `false`: the program waits for the process to end.
   */
  daemon?: boolean;
  /**
   * The worker's heap cap in MB; over it, the process ends with exit code
   * 1 and an error naming the limit. Default: the heap limit V8 gives the
   * main thread. It caps the JS heap
   * only: `ArrayBuffer` memory is not counted.
   */
  memoryLimitMb?: number;
}

/**
 * Checks a `memoryLimitMb` option.
 *
 * @param mb The option.
 * @param what What is being done, for the error message.
 * @returns The cap, or `undefined` for the default.
 * @throws {RangeError} If it is not a positive number.
 */
export function checkMemoryLimit(
  mb: number | undefined,
  what: string,
): number | undefined {
  if (mb === undefined) return undefined;
  if (typeof mb !== "number" || !Number.isFinite(mb) || mb < 1) {
    throw new RangeError(
      `Cannot ${what}: memoryLimitMb must be a number of MB ≥ 1, received ${
        describeValue(mb)
      }`,
    );
  }
  return Math.ceil(mb);
}

/**
 * What {@linkcode currentProcess} returns.
 *
 * @example Usage
 * ```ts
 * import { currentProcess, type ProcessInfo } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const me: ProcessInfo = currentProcess();
 * assert.equal(me.name, "MainProcess");
 * assert.ok(me.ident > 0);
 * ```
 */
export interface ProcessInfo {
  /** `"MainProcess"`, or the process's or pool worker's name. */
  name: string;
  /** A number unique among the program's live threads. */
  ident: number;
}

/**
 * Who the calling code runs in, as Python's `current_process()`:
 * `"MainProcess"` on the main thread, the `Process`'s name inside it, the
 * pool worker's name (e.g. `"Pool-1-worker-2"`) inside a pool task.
 *
 * @example Usage
 * ```ts
 * import { currentProcess } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const me = currentProcess();
 * assert.equal(me.name, "MainProcess");
 * assert.equal(typeof me.ident, "number");
 * ```
 *
 * @returns The name and ident.
 */
export function currentProcess(): ProcessInfo {
  return { name: currentThreadName(), ident: currentThreadId() };
}

let children: Set<Process<unknown, TaskFunction>> | undefined;

function liveChildren(): Set<Process<unknown, TaskFunction>> {
  return children ??= perThread("children", () => new Set());
}

/**
 * The processes this thread started that are still alive, as Python's
 * `active_children()`.
 *
 * @example Usage
 * ```ts
 * import { activeChildren, Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: () => new Promise((r) => setTimeout(r, 50)) });
 * p.start();
 * assert.deepEqual(activeChildren(), [p]);
 * await p.join();
 * assert.deepEqual(activeChildren(), []);
 * ```
 *
 * @returns The live processes, in start order.
 */
export function activeChildren(): Process<unknown, TaskFunction>[] {
  return [...liveChildren()];
}

/**
 * Options of {@linkcode Process.join}.
 *
 * @example Usage
 * ```ts
 * import { type JoinOptions, Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: () => new Promise((r) => setTimeout(r, 50)) });
 * p.start();
 * const options: JoinOptions = { timeout: 30_000 };
 * assert.equal(await p.join(options), 0);
 * ```
 */
export interface JoinOptions {
  /** How long to wait, in ms; on timeout `join` resolves to `null`. */
  timeout?: number;
  /** Aborting it rejects `join` with the signal's reason. */
  signal?: AbortSignal;
}

let processCounter = 0;

/**
 * A task run in its own worker, as Python's `multiprocessing.Process`.
 *
 * `exitCode` is `null` while running, `0` when the target returned, `1` when
 * it threw (the error is printed to stderr with the worker's stack, as
 * Python prints the traceback) or the worker died, the code given to
 * `Deno.exit(code)` by the target, and `-15` after `terminate()`.
 *
 * @example Usage
 * ```ts
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: (x: number) => console.log(x ** 3), args: [3] });
 * p.start();
 * assert.equal(await p.join(), 0);
 * assert.equal(p.exitCode, 0);
 * ```
 *
 * @typeParam M The type of the `module` option.
 */
export class Process<
  M = Record<string, never>,
  F extends TaskFunction = TaskFunction,
> {
  readonly #name: string;
  readonly #target: TaskDef;
  readonly #module: string | undefined;
  readonly #args: readonly unknown[];
  readonly #daemon: boolean;
  readonly #memoryLimitMb: number | undefined;
  #worker: ManagedWorker | undefined;
  #exitCode: number | null = null;
  #started = false;
  readonly #exited: Promise<number>;
  #resolveExit!: (code: number) => void;

  /**
   * Describes the process; nothing runs before {@linkcode Process.start}.
   *
   * @param options The target, its arguments, the module and the name.
   * @throws {TypeError} If the target is neither a function nor a name.
   */
  constructor(options: ProcessOptions<M, F>) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(
        `Cannot create Process: options must be an object, received ${
          describeValue(options)
        }`,
      );
    }
    processCounter++;
    this.#name = options.name ?? `Process-${processCounter}`;
    this.#module = checkModule(options.module, "create Process");
    if (typeof options.target === "string" && !this.#module) {
      throw new TypeError(
        `Cannot create Process: target ${
          JSON.stringify(options.target)
        } names an export, but no module was given`,
      );
    }
    this.#target = taskDef(options.target, 0, "create Process");
    this.#args = argList(options.args, "args", "create Process");
    this.#daemon = options.daemon === true;
    this.#memoryLimitMb = checkMemoryLimit(
      options.memoryLimitMb,
      "create Process",
    );
    this.#exited = new Promise((resolve) => this.#resolveExit = resolve);
  }

  /** The process's name, e.g. `"Process-1"`. */
  get name(): string {
    return this.#name;
  }

  /** Whether the process is a daemon (it does not keep the program alive). */
  get daemon(): boolean {
    return this.#daemon;
  }

  /**
   * The exit code: `null` while running (or before start), `0` success,
   * `1` error or crash, `-15` terminated.
   */
  get exitCode(): number | null {
    return this.#exitCode;
  }

  /**
   * Whether the process was started and has not ended.
   *
   * @returns `true` while it runs.
   */
  isAlive(): boolean {
    return this.#started && this.#exitCode === null;
  }

  /**
   * Starts the process in a new worker.
   *
   * @throws {TypeError} If it was already started, or an argument cannot be
   *   sent to a worker.
   */
  start(): void {
    if (this.#started) {
      throw new TypeError(
        `Cannot start ${this.#name}: a process can be started only once`,
      );
    }
    const enc = encodeArgs(this.#args);
    this.#started = true;
    const worker = spawnWorker(WORKER_URL, {
      name: this.#name,
      onMessage: (data) => {
        const msg = data as FromWorker;
        if (msg.t === "exit") {
          this.#finish({ kind: "exit", code: msg.code, reason: "" });
        }
      },
      onDeath: (death) => this.#finish(death),
      ref: !this.#daemon,
      memoryLimitMb: this.#memoryLimitMb,
    });
    this.#worker = worker;
    liveChildren().add(this as Process<unknown, TaskFunction>);
    debug(`${this.#name}: started${this.#daemon ? " (daemon)" : ""}`);
    const msg: ProcessMsg = {
      t: "process",
      target: this.#target,
      args: enc.value as unknown[],
      handles: enc.handles,
      ...(this.#module ? { module: this.#module } : {}),
    };
    try {
      worker.postMessage(msg, enc.transfer);
    } catch (e) {
      worker.terminate({ kind: "error", code: 1 });
      throw new TypeError(
        `Cannot start ${this.#name}: an argument cannot be sent to a worker: ${
          (e as Error).message
        }`,
      );
    }
    for (const hook of enc.after) hook();
  }

  #finish(death: WorkerDeath): void {
    if (this.#exitCode !== null) return;
    this.#exitCode = death.kind === "terminated"
      ? -15
      : death.kind === "error"
      ? 1
      : death.code;
    liveChildren().delete(this as Process<unknown, TaskFunction>);
    debug(
      `${this.#name}: ${
        death.kind === "terminated"
          ? "terminated"
          : death.kind === "error"
          ? death.reason
          : `exited (code ${this.#exitCode})`
      }`,
    );
    if (death.kind === "error" && death.error) {
      console.error(
        `Process ${this.#name}:\n${
          death.error.stack || `${death.error.name}: ${death.error.message}`
        }\n${death.reason}`,
      );
    }
    this.#worker?.terminate({ kind: "exit", code: this.#exitCode });
    this.#resolveExit(this.#exitCode);
  }

  /**
   * Waits for the process to end.
   *
   * @param options `timeout` (ms) and `signal`.
   * @returns The exit code, or `null` if the timeout passed first.
   * @throws {TypeError} If the process was never started.
   */
  join(options: JoinOptions = {}): Promise<number | null> {
    if (!this.#started) {
      return Promise.reject(
        new TypeError(`Cannot join ${this.#name}: it was never started`),
      );
    }
    return withDeadline<number | null>(
      this.#exited,
      options,
      `join ${this.#name}`,
      () => ({ value: null }),
    );
  }

  /**
   * Stops the process now, even when it is busy in a synchronous loop or a
   * blocking wait: its exit code becomes `-15`, `join()` resolves at once,
   * and it no longer keeps the program alive. (Deno 2.9.6 does not interrupt
   * a thread that never yields: such a one keeps a core busy until the
   * program ends. Waits of this package's objects see the stop and unwind.)
   */
  terminate(): void {
    if (!this.#started || this.#exitCode !== null) return;
    this.#worker!.terminate();
  }
}

/**
 * Worker processes for a broker pool: `runWorker` (and `deno task worker`)
 * serves the tasks that `new Pool({ broker })` puts on a Redis queue, on
 * any machine that reaches the broker — what Celery or RQ workers are to a
 * Python program that outgrew one machine, with the same `Pool` API on the
 * caller's side.
 *
 * Each worker process runs N local workers (the killable workers of a local
 * `Pool`). Delivery is at least once through a Redis stream's consumer
 * group, and exactly once to the caller: a worker that dies mid-task has
 * its entries claimed by another worker after the visibility timeout and
 * run again, and the pool drops the duplicate result. On SIGINT or SIGTERM
 * a worker stops reading, lets its running tasks finish within its grace
 * time, hands the rest back to the queue, and exits 0 (a second signal
 * skips the grace time).
 *
 * In Python this is where a program leaves `multiprocessing` for Celery:
 *
 * ```py
 * from celery import Celery
 * app = Celery("tasks", broker="redis://redis-host:6379/0",
 *              backend="redis://redis-host:6379/0")
 *
 * @app.task
 * def cube(x):
 *     return x ** 3
 *
 * # on each machine: celery -A tasks worker --concurrency 4
 * # the program:     print([r.get() for r in [cube.delay(x) for x in (1, 2, 3)]])
 * ```
 *
 * Here it stays the `Pool` you know. The three commands (Redis, a worker on
 * each machine, the program):
 *
 * ```sh
 * redis-server --port 6379
 * deno task worker --broker redis://redis-host:6379 --module ./tasks.ts --workers 4
 * deno run --allow-net=redis-host main.ts
 * ```
 *
 * where `main.ts` is:
 *
 * ```ts ignore
 * import { Pool } from "@dmp/multiprocessing/cube";
 *
 * await using pool = new Pool<typeof import("./tasks.ts")>({
 *   broker: "redis://redis-host:6379",
 * });
 * console.log(await pool.map("cube", [1, 2, 3])); // [1, 8, 27]
 * ```
 *
 * A worker refuses a bad configuration before it connects:
 *
 * ```ts
 * import { runWorker } from "@dmp/multiprocessing/worker";
 * import { strict as assert } from "node:assert";
 *
 * await assert.rejects(
 *   runWorker({ broker: "http://127.0.0.1:6379", module: import.meta.url }),
 *   TypeError,
 * );
 * ```
 *
 * @module
 */

import { describeValue } from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { checkModule } from "./_pool/task.ts";
import { cpuCount } from "./_pool/pool.ts";
import {
  checkBroker,
  checkQueue,
  DEFAULT_GRACE_MS,
  DEFAULT_VISIBILITY_MS,
} from "./_broker/keys.ts";
import { BrokerWorker } from "./_broker/serve.ts";

/**
 * Options of {@linkcode runWorker}.
 *
 * @example Usage
 * ```ts
 * import type { WorkerOptions } from "@dmp/multiprocessing/worker";
 * import { strict as assert } from "node:assert";
 *
 * const options: WorkerOptions = {
 *   broker: "redis://127.0.0.1:6379/0",
 *   module: new URL("./tasks.ts", import.meta.url),
 *   queue: "images",
 *   workers: 4,
 *   visibilityTimeout: 60_000,
 *   grace: 5_000,
 * };
 * assert.equal(options.workers, 4);
 * ```
 */
export interface WorkerOptions {
  /**
   * The broker's URL: `redis://user:password@host:port/db`, or `rediss://`
   * for TLS, as the pools that use it.
   */
  broker: string | URL;
  /** The module whose exports are the tasks (an absolute URL). */
  module: string | URL;
  /** The queue to serve. Default: `"default"`. */
  queue?: string;
  /** How many local workers run tasks. Default: {@linkcode cpuCount}. */
  workers?: number;
  /**
   * How long, in ms, a task entry held by a worker that stopped showing it
   * is alive stays with it before another worker claims it and runs it
   * again (a worker refreshes the entries it holds every quarter of this,
   * so a long task is not run twice while its worker lives). Default:
   * 30,000.
   */
  visibilityTimeout?: number;
  /**
   * How long, in ms, a stopping worker lets its running tasks finish before
   * it stops them and hands them back. Default: 10,000.
   */
  grace?: number;
  /** Aborting it stops the worker, as SIGTERM does. */
  signal?: AbortSignal;
  /**
   * Whether SIGINT and SIGTERM stop the worker (a second one skips the
   * grace time). Default: `true`.
   */
  handleSignals?: boolean;
}

/**
 * What {@linkcode runWorker} resolves to once the worker stopped.
 *
 * @example Usage
 * ```ts
 * import type { WorkerReport } from "@dmp/multiprocessing/worker";
 * import { strict as assert } from "node:assert";
 *
 * const report: WorkerReport = { consumer: "4242-x1", ran: 10, handedBack: 0, claimed: 0 };
 * assert.equal(report.ran, 10);
 * ```
 */
export interface WorkerReport {
  /** The worker's consumer name in the queue's consumer group. */
  consumer: string;
  /** Task entries it ran to a result (or a task's error). */
  ran: number;
  /** Entries it handed back to the queue when it stopped. */
  handedBack: number;
  /** Entries it claimed from workers that had gone silent. */
  claimed: number;
}

function positiveMs(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(
      `Cannot run the worker: ${name} must be a positive number of milliseconds, received ${
        describeValue(value)
      }`,
    );
  }
  return value;
}

/**
 * Serves a queue of broker pools' tasks until stopped (SIGINT, SIGTERM or
 * `signal`), running them on N local workers.
 *
 * @example Usage
 * ```ts
 * import { runWorker } from "@dmp/multiprocessing/worker";
 * import { strict as assert } from "node:assert";
 *
 * // An aborted signal stops the worker before it starts.
 * await assert.rejects(
 *   runWorker({
 *     broker: "redis://127.0.0.1:6379",
 *     module: import.meta.url,
 *     signal: AbortSignal.abort(new Error("not now")),
 *   }),
 *   /not now/,
 * );
 * ```
 *
 * @param options The broker, module, queue, workers and timings.
 * @returns What the worker did, once it stopped.
 * @throws {TypeError} If `broker` or `module` is not a valid URL, or the
 *   module does not load in a worker.
 * @throws {RangeError} If `workers`, `visibilityTimeout` or `grace` is out
 *   of range.
 * @throws {AuthenticationError} If the broker refuses the password.
 * @throws {Deno.errors.ConnectionRefused} If the broker cannot be reached.
 * @throws {Deno.errors.ConnectionReset} If the worker lost the broker for
 *   good while serving (its entries are then claimed by other workers).
 */
export function runWorker(options: WorkerOptions): Promise<WorkerReport> {
  return serve(options, () => {});
}

/** {@linkcode runWorker}, telling `onStart` once it serves. */
async function serve(
  options: WorkerOptions,
  onStart: (consumer: string, queue: string) => void,
): Promise<WorkerReport> {
  const what = "run the worker";
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Cannot ${what}: options must be an object, received ${
        describeValue(options)
      }`,
    );
  }
  const broker = checkBroker(options.broker, what);
  const module = checkModule(options.module, what);
  if (!module) {
    throw new TypeError(`Cannot ${what}: module is required`);
  }
  const queue = checkQueue(options.queue, what);
  const workers = options.workers ?? cpuCount();
  if (!Number.isSafeInteger(workers) || workers < 1) {
    throw new RangeError(
      `Cannot ${what}: workers must be a positive integer, received ${
        describeValue(workers)
      }`,
    );
  }
  const visibilityTimeout = positiveMs(
    options.visibilityTimeout,
    "visibilityTimeout",
    DEFAULT_VISIBILITY_MS,
  );
  const grace = positiveMs(options.grace, "grace", DEFAULT_GRACE_MS);
  const signal = options.signal;
  signal?.throwIfAborted();
  const worker = await BrokerWorker.start({
    broker,
    module,
    queue,
    workers,
    visibilityTimeout,
    grace,
  });
  const stop = () => void worker.stop();
  const signals: Deno.Signal[] = options.handleSignals === false
    ? []
    : Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  signal?.addEventListener("abort", stop, { once: true });
  if (signal?.aborted) stop();
  onStart(worker.consumer, queue);
  try {
    await worker.done;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
    signal?.removeEventListener("abort", stop);
  }
  return { consumer: worker.consumer, ...worker.served };
}

// -- Command line ------------------------------------------------------------

/** Resolves `--module`: a URL as it is, a path against the working directory. */
function moduleUrl(arg: string): string {
  if (/^[a-z][a-z0-9+.-]+:/i.test(arg)) return new URL(arg).href;
  const cwd = Deno.cwd().replace(/\\/g, "/");
  return new URL(
    arg.replace(/\\/g, "/"),
    `file://${cwd.startsWith("/") ? "" : "/"}${cwd}/`,
  ).href;
}

async function main(): Promise<void> {
  const { parseCli, intOption } = await import("./_demo.ts");
  const { values } = parseCli(
    Deno.args,
    "deno task worker --broker URL --module PATH",
    "Serves the tasks of broker pools (new Pool({ broker })) on a Redis queue, running them on N local workers, until SIGINT or SIGTERM (then it finishes or hands back what it holds, and exits 0).",
    {
      broker: {
        type: "string",
        description: "redis://[user:password@]host[:port][/db] or rediss://…",
        placeholder: "URL",
      },
      module: {
        type: "string",
        description: "the module whose exports are the tasks (path or URL)",
        placeholder: "PATH",
      },
      queue: {
        type: "string",
        description: 'the queue to serve (default "default")',
        placeholder: "NAME",
      },
      workers: {
        type: "string",
        description: `local workers (default ${cpuCount()}, the cores)`,
        placeholder: "N",
      },
      "visibility-timeout": {
        type: "string",
        description: "ms before a silent worker's tasks run elsewhere (30000)",
        placeholder: "MS",
      },
      grace: {
        type: "string",
        description: "ms a stop lets running tasks finish (10000)",
        placeholder: "MS",
      },
    },
  );
  const broker = values.broker, module = values.module;
  if (typeof broker !== "string" || typeof module !== "string") {
    console.error(
      "deno task worker: --broker and --module are required (see --help)",
    );
    Deno.exit(2);
  }
  try {
    const report = await serve({
      broker,
      module: moduleUrl(module),
      ...(typeof values.queue === "string" ? { queue: values.queue } : {}),
      workers: intOption(values.workers, "workers", cpuCount()),
      visibilityTimeout: intOption(
        values["visibility-timeout"],
        "visibility-timeout",
        DEFAULT_VISIBILITY_MS,
      ),
      grace: intOption(values.grace, "grace", DEFAULT_GRACE_MS),
    }, (consumer, queue) =>
      console.error(
        `worker ${consumer} serving queue ${queue} (SIGINT or SIGTERM stops it)`,
      ));
    console.error(
      `worker ${report.consumer} stopped: ${report.ran} task entries run, ${report.handedBack} handed back, ${report.claimed} claimed`,
    );
  } catch (e) {
    console.error(
      `deno task worker: ${e instanceof Error ? e.message : String(e)}`,
    );
    Deno.exit(1);
  }
}

if (isMainModule(import.meta)) await main();

/**
 * Process and Pool: Python's `multiprocessing.Process` and
 * `multiprocessing.Pool` on Deno workers, with the "cube" example as demo.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import Pool, Process
 *
 * def cube(x):
 *     return x ** 3
 *
 * if __name__ == "__main__":
 *     p = Process(target=print, args=("hello",))
 *     p.start(); p.join()
 *     with Pool(2) as pool:
 *         print(pool.map(cube, range(10)))
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { Pool, Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p = new Process({ target: (s: string) => console.log(s), args: ["hello"] });
 * p.start();
 * assert.equal(await p.join(), 0);
 *
 * await using pool = new Pool({ workers: 2 });
 * assert.deepEqual(
 *   await pool.map((x: number) => x ** 3, [0, 1, 2, 3]),
 *   [0, 1, 8, 27],
 * );
 * ```
 *
 * Tasks are either self-contained functions, whose source is sent to the
 * worker and compiled there once (they must not use variables from their
 * enclosing scope), or the names of exports of the pool's `module`, typed
 * from `typeof import("./tasks.ts")`.
 *
 * Workers are `node:worker_threads` threads: `terminate()` and
 * `taskTimeout` stop a worker even when it is busy in a synchronous loop —
 * its task is rejected at once, it is replaced, and the program can exit
 * (Deno 2.9.6 leaves such a thread spinning on its core until the program
 * ends). What Python's pool lacks: a worker that dies, runs past
 * `taskTimeout` or over its heap cap (`memoryLimitMb`) fails only its own
 * task (`WorkerCrashedError`, `TimeoutError`) and is replaced, so the pool
 * never hangs; no task waits behind a busy worker while another is idle.
 * As in Python, where pool workers are daemonic, an idle pool does not keep
 * the program alive; work in flight does.
 *
 * @module
 */

export {
  ClosedError,
  RemoteError,
  WorkerCrashedError,
} from "./_core/errors.ts";
export {
  type ArgOf,
  type ArgsOf,
  type ResultOf,
  type TaskFunction,
  type TaskName,
} from "./_pool/task.ts";
export { activeChildren, currentProcess, Process } from "./_pool/process.ts";
export type {
  JoinOptions,
  ProcessInfo,
  ProcessOptions,
} from "./_pool/process.ts";
export { cpuCount, Pool, type PoolOptions } from "./_pool/pool.ts";
export type { PoolStats } from "./_pool/slots.ts";
export { transfer, type Transferred } from "./_pool/transfer.ts";
export { type ApplyOptions, type MapOptions } from "./_pool/calls.ts";

import { isMainModule } from "./_core/runtime.ts";
import { cpuCount, Pool } from "./_pool/pool.ts";
import { Process } from "./_pool/process.ts";

// -- Demo ------------------------------------------------------------------

async function demo(): Promise<void> {
  const { formatDuration, formatNumber, intOption, parseCli, ProgressBar } =
    await import("./_demo.ts");
  const { values } = parseCli(
    Deno.args,
    "deno task cube",
    "Starts five processes that each print the cube of their number and wait 1 s (they run at once: about 1 s in all). With --pool N, runs a CPU-heavy map on a Pool of N workers with a progress bar and prints the speedup over a serial run.",
    {
      pool: {
        type: "string",
        description: "run a Pool map with N workers instead",
        placeholder: "N",
      },
      items: {
        type: "string",
        description:
          "with --pool: how many items the map computes (default 64)",
        placeholder: "K",
      },
    },
  );
  if (values.pool === undefined && values.items !== undefined) {
    throw new TypeError("--items sizes the Pool map: give --pool N with it");
  }
  if (values.pool === undefined) {
    const t0 = performance.now();
    const processes = [1, 2, 3, 4, 5].map((i) =>
      new Process({
        target: async (n: number) => {
          console.log(`starting process ${n}`);
          console.log(`calculating cube of ${n}... result: ${n ** 3}`);
          await new Promise((r) => setTimeout(r, 1000));
          console.log(`end process ${n}`);
        },
        args: [i],
      })
    );
    for (const p of processes) p.start();
    for (const p of processes) await p.join();
    console.log(`all done in ${formatDuration(performance.now() - t0)}`);
    return;
  }
  const workers = intOption(values.pool, "pool", cpuCount());
  const n = intOption(values.items, "items", 64);
  // A CPU-heavy cube: the sum of i³ over a long range, for each item.
  const heavy = (x: number) => {
    let s = 0;
    for (let i = 0; i < 200_000; i++) s += (i + x) ** 3 % 7;
    return s;
  };
  const items = Array.from({ length: n }, (_, i) => i);
  const t0 = performance.now();
  const serial = items.map(heavy);
  const serialMs = performance.now() - t0;
  await using pool = new Pool({ workers });
  await pool.apply(() => 0); // wait for the workers to be up
  const bar = new ProgressBar(n, "items");
  const t1 = performance.now();
  const parallel = await pool.map(heavy, items, {
    onProgress: (done) => bar.update(done),
  });
  const poolMs = performance.now() - t1;
  bar.done();
  if (parallel.some((v, i) => v !== serial[i])) {
    throw new Error("the pool's results differ from the serial run");
  }
  console.log(
    `serial: ${formatDuration(serialMs)}, pool of ${workers}: ${
      formatDuration(poolMs)
    }, speedup ${formatNumber(serialMs / poolMs)}× on ${formatNumber(n)} items`,
  );
}

if (isMainModule(import.meta)) await demo();

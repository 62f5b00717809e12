/**
 * The comparison section for `Pool` (`deno task bench:compare`), and the
 * workloads `bench/cube_bench.ts` reuses. Python's side is
 * `bench/py/cube.py`, and piscina's `bench/node/apply.mjs`, run in the same
 * comparison.
 *
 * - dispatch: `x ** 3` over 100 000 items through `imapUnordered`, with
 *   chunksize 1 and with the default (automatic) chunking; Python with
 *   chunksize 1 and 1000. Steady state: the median of 3 runs after 3
 *   warm-up runs, on both sides.
 * - CPU-heavy: 64 tasks each summing `i ** 3` over a 200 000-long range;
 *   the speedup of a 2-worker pool over a serial run on the same runtime.
 * - apply: one `apply((x) => x, [i])` round trip at a time (Python:
 *   `pool.apply(noop, (i,))`; piscina: `pool.run(i)` on 2 threads): 200
 *   warm-up calls, then 3 rounds of 2000 sequential calls; the median
 *   round, in µs per call. The piscina row runs only where
 *   `bench/node/node_modules/piscina` is installed (`npm install` in
 *   `bench/node`) and `node` may be run (`--allow-run=node`); otherwise its
 *   baseline reads "skipped".
 * - start: a 2-worker pool's creation to its first result (median of 5);
 *   Python's for each start method, `spawn`, `forkserver` and `fork`.
 * - runaway stop: a pool with `taskTimeout: 300` given a task that does not
 *   yield for 1.5 s (a busy `while` loop): the time until the call rejects
 *   with a `TimeoutError` (median of 3), then a check that the pool still
 *   serves. Ours only: Python's pool has no task timeout. Not `for (;;) {}`:
 *   Deno 2.9.6 does not interrupt a thread that never yields, which would
 *   then spin through every later row; the bounded loop ends, and the
 *   measurement waits for it.
 *
 * @module
 */

import { Pool } from "../patterns/cube.ts";
import type { CompareSection, PythonRunner, Row } from "./_compare_util.ts";

/**
 * The CPU-heavy task: the sum of `i ** 3` over `range(200 000)`, plus `x`.
 *
 * @param x The item.
 * @returns The sum.
 */
export function heavy(x: number): number {
  let s = 0;
  for (let i = 0; i < 200_000; i++) s += i ** 3;
  return s + x;
}

/**
 * Tasks per second of `x ** 3` through `imapUnordered`.
 *
 * @param pool A started pool.
 * @param n How many items.
 * @param chunksize The chunk size, or `undefined` for the default.
 * @returns Tasks per second.
 */
export async function dispatchRate(
  pool: Pool,
  n: number,
  chunksize: number | undefined,
): Promise<number> {
  const items = Array.from({ length: n }, (_, i) => i);
  const t0 = performance.now();
  let count = 0;
  for await (
    const _ of pool.imapUnordered(
      (x: number) => x ** 3,
      items,
      chunksize === undefined ? {} : { chunksize },
    )
  ) count++;
  const ms = performance.now() - t0;
  if (count !== n) throw new Error(`lost results: ${count} of ${n}`);
  return n / ms * 1000;
}

/**
 * The CPU-heavy workload, serially and through a pool of 2, alternately
 * (so a change of the machine's speed during the run hits both alike):
 * after a warm-up of each, 5 pairs; the pair with the median speedup.
 *
 * @returns Both durations in ms.
 */
export async function heavyRun(): Promise<{ serial: number; pool: number }> {
  const items = Array.from({ length: 64 }, (_, i) => i);
  const expected = items.map(heavy);
  await using pool = new Pool({ workers: 2 });
  await pool.map(heavy, items, { chunksize: 1 });
  const pairs: Array<{ serial: number; pool: number }> = [];
  for (let i = 0; i < 5; i++) {
    let t0 = performance.now();
    items.map(heavy);
    const serial = performance.now() - t0;
    t0 = performance.now();
    const par = await pool.map(heavy, items, { chunksize: 1 });
    const pooled = performance.now() - t0;
    if (par.some((v, i) => v !== expected[i])) {
      throw new Error("results differ");
    }
    pairs.push({ serial, pool: pooled });
  }
  pairs.sort((x, y) => x.serial / x.pool - y.serial / y.pool);
  return pairs[2]!;
}

/**
 * A 2-worker pool's creation to its first result.
 *
 * @returns The median of 5, in ms.
 */
export async function startToFirstResult(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await using pool = new Pool({ workers: 2 });
    await pool.apply((x: number) => x, [1]);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[2]!;
}

/**
 * Microseconds per `apply` round trip, one call at a time: 200 warm-up
 * calls, then 3 rounds of `calls` sequential calls; the median round.
 *
 * @param pool A started pool.
 * @param calls How many calls per round.
 * @returns µs per call.
 */
export async function applyRoundTripUs(
  pool: Pool,
  calls = 2000,
): Promise<number> {
  for (let i = 0; i < 200; i++) await pool.apply((x: number) => x, [i]);
  const rounds: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) {
      const y = await pool.apply((x: number) => x, [i]);
      if (y !== i) throw new Error(`wrong result for ${i}: ${y}`);
    }
    rounds.push((performance.now() - t0) / calls * 1000);
  }
  rounds.sort((a, b) => a - b);
  return rounds[1]!;
}

/**
 * A pool with `taskTimeout: 300` and a task busy for 1.5 s: the time
 * from `apply` to its rejection with a `TimeoutError`, 3 times on the same
 * (warmed-up) pool, then one ordinary call to check it still serves.
 *
 * @returns The median time to rejection in ms.
 * @throws {Error} If the task does not reject with a `TimeoutError`, or
 *   the pool no longer serves afterwards.
 */
export async function runawayStop(): Promise<number> {
  const pool = new Pool({ workers: 2, taskTimeout: 300 });
  try {
    await pool.apply((x: number) => x, [0]);
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const err = await pool.apply(() => {
        const end = Date.now() + 1_500;
        while (Date.now() < end) { /* runaway */ }
      }).then(() => null, (e: unknown) => e);
      times.push(performance.now() - t0);
      if ((err as { name?: unknown } | null)?.name !== "TimeoutError") {
        throw new Error(
          `the runaway task did not reject with a TimeoutError: ${err}`,
        );
      }
    }
    if (await pool.apply((x: number) => x, [1]) !== 1) {
      throw new Error("the pool no longer serves after a runaway task");
    }
    times.sort((a, b) => a - b);
    return times[1]!;
  } finally {
    pool.terminate();
    // The stopped threads run their loops out (see the module doc).
    await new Promise((r) => setTimeout(r, 1_600));
  }
}

/**
 * piscina's figure for the apply workload: runs `node bench/node/apply.mjs`
 * if piscina is installed there and `node` may be run.
 *
 * @returns µs per `run()` round trip, or `null` when skipped.
 */
export async function piscinaRunUs(): Promise<number | null> {
  const dir = new URL("./node/", import.meta.url);
  const skip = (why: string) => {
    console.error(`  piscina skipped: ${why}`);
    return null;
  };
  try {
    await Deno.stat(new URL("node_modules/piscina/package.json", dir));
  } catch {
    return skip("not installed (run `npm install` in bench/node)");
  }
  // Query first: a missing permission would otherwise prompt.
  const perm = await Deno.permissions.query({ name: "run", command: "node" });
  if (perm.state !== "granted") {
    return skip("no permission to run node (--allow-run=node)");
  }
  try {
    const out = await new Deno.Command("node", {
      args: [new URL("apply.mjs", dir).pathname],
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(120_000),
    }).output();
    if (!out.success) return skip(`node exited with code ${out.code}`);
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    const { run_us: us } = JSON.parse(lines[lines.length - 1]!);
    return typeof us === "number" ? us : skip("no run_us in its output");
  } catch (e) {
    if (
      e instanceof Deno.errors.NotCapable ||
      e instanceof Deno.errors.PermissionDenied ||
      e instanceof Deno.errors.NotFound
    ) {
      return skip(`cannot run node: ${e.message}`);
    }
    throw e;
  }
}

/** The Pool rows of the comparison. */
export const section: CompareSection = {
  title: "Pool (cube.ts)",
  async run(python: PythonRunner | null): Promise<Row[]> {
    const py = python ? await python("cube.py") : null;
    const piscina = await piscinaRunUs();
    let cs1: number, auto: number, apply: number;
    {
      // Steady state: a few warm-up runs (the JIT compiles the hot paths
      // of the main thread and the workers), then the median of 3.
      await using pool = new Pool({ workers: 2 });
      const steady = async (chunksize: number | undefined) => {
        for (let i = 0; i < 3; i++) {
          await dispatchRate(pool, 100_000, chunksize);
        }
        const r: number[] = [];
        for (let i = 0; i < 3; i++) {
          r.push(await dispatchRate(pool, 100_000, chunksize));
        }
        return r.sort((a, b) => a - b)[1]!;
      };
      cs1 = await steady(1);
      auto = await steady(undefined);
      apply = await applyRoundTripUs(pool);
    }
    const h = await heavyRun();
    const start = await startToFirstResult();
    // Last: the stopped threads spin their loops out (see the module doc).
    const runaway = await runawayStop();
    return [
      {
        workload: "imapUnordered x**3, 100 000 tasks, chunksize 1",
        unit: "tasks/s",
        ours: cs1,
        python: py?.imap_cs1_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 5× Python",
      },
      {
        workload:
          "imapUnordered x**3, 100 000 tasks, default chunking (Python: chunksize 1000)",
        unit: "tasks/s",
        ours: auto,
        python: py?.imap_cs1000_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 1× Python",
      },
      {
        workload:
          "CPU-heavy 64 × sum(i**3, 200 000): speedup of Pool(2) over serial",
        unit: "×",
        ours: h.serial / h.pool,
        python: py ? py.heavy_serial_ms! / py.heavy_pool_ms! : null,
        higherIsBetter: true,
        target: "≥ 1.8×",
      },
      {
        workload: "one apply() round trip at a time, 2000 sequential calls",
        unit: "µs",
        ours: apply,
        python: py?.apply_us ?? null,
        higherIsBetter: false,
        target: "≤ piscina (aim ≤ 10 µs)",
        group: "one apply() round trip at a time",
      },
      {
        workload:
          "one run() round trip, piscina (Node 20): the Python column is piscina's",
        unit: "µs",
        ours: apply,
        python: piscina,
        higherIsBetter: false,
        target: "≤ piscina (aim ≤ 10 µs)",
        baseline: "piscina",
        group: "one apply() round trip at a time",
      },
      {
        workload: "Pool(2) start to first result (Python: spawn)",
        unit: "ms",
        ours: start,
        python: py?.start_spawn_ms ?? null,
        higherIsBetter: false,
        target: "≤ Python spawn",
      },
      {
        workload: "Pool(2) start to first result (Python: forkserver)",
        unit: "ms",
        ours: start,
        python: py?.start_forkserver_ms ?? null,
        higherIsBetter: false,
        target: "(reported)",
      },
      {
        workload: "Pool(2) start to first result (Python: fork)",
        unit: "ms",
        ours: start,
        python: py?.start_fork_ms ?? py?.start_ms ?? null,
        higherIsBetter: false,
        target: "≤ 50 ms",
      },
      {
        workload:
          "taskTimeout 300 ms, a task busy for 1.5 s: time to rejection (Python: no task timeout)",
        unit: "ms",
        ours: runaway,
        python: null,
        higherIsBetter: false,
        target: "≤ 400 ms (timeout + 100)",
      },
    ];
  },
};

/**
 * The comparison section for `Pool` (`deno task bench:compare`), and the
 * workloads `bench/cube_bench.ts` reuses. Python's side is
 * `bench/py/cube.py`, run in the same comparison.
 *
 * - dispatch: `x ** 3` over 100 000 items through `imapUnordered`, with
 *   chunksize 1 and with the default (automatic) chunking; Python with
 *   chunksize 1 and 1000. Steady state: the median of 3 runs after 3
 *   warm-up runs, on both sides.
 * - CPU-heavy: 64 tasks each summing `i ** 3` over a 200 000-long range;
 *   the speedup of a 2-worker pool over a serial run on the same runtime.
 * - start: a 2-worker pool's creation to its first result (median of 5).
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

/** The Pool rows of the comparison. */
export const section: CompareSection = {
  title: "Pool (cube.ts)",
  async run(python: PythonRunner | null): Promise<Row[]> {
    const py = python ? await python("cube.py") : null;
    let cs1: number, auto: number;
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
    }
    const h = await heavyRun();
    const start = await startToFirstResult();
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
        workload: "Pool(2) start to first result",
        unit: "ms",
        ours: start,
        python: py?.start_ms ?? null,
        higherIsBetter: false,
        target: "≤ 50 ms",
      },
    ];
  },
};

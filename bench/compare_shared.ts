/**
 * The comparison section for `Value`, `SharedArray` and the locks
 * (`deno task bench:compare`), and the workloads `bench/shared_bench.ts`
 * reuses. Every workload runs in worker processes started with `Process`;
 * the workers meet at a `Barrier` and each times its own loop, so start-up
 * is not counted; a figure is the total work divided by the slower worker's
 * time. Python's side, `bench/py/shared.py`, does the same with
 * `multiprocessing.Barrier` and `time.perf_counter`.
 *
 * - locked increments: 2 workers × N `l.acquireSync(); v.value += 1;
 *   l.release()` on a `Value("i")` (its default `RLock`). Python: `with
 *   v.get_lock(): v.value += 1`.
 * - `add(1)`: 2 workers × N `v.add(1)`. Python has no atomic add: its
 *   figure is the locked increment again.
 * - array element by element: 2 workers add 1.0 to their half of a
 *   1 000 000-long `SharedArray("d")` with `set(i, get(i) + 1)`. Python:
 *   `a[i] += 1.0` on `Array("d")` (which locks per access).
 * - array view: the same through `view` (Python: through `a.get_obj()`,
 *   the raw ctypes array), and a plain (not shared) `Float64Array` loop of
 *   the same size in the same worker as the baseline. Both loops are one
 *   warmed-up function, timed on memory already touched once (the view
 *   gets an untimed first pass), best of 5 alternating passes each, so the
 *   two differ only in the memory. (Python's figure is one pass.)
 * - acquire/release pairs: one worker, uncontended; two workers contending
 *   for one `Lock`. Python: `mp.Lock`.
 *
 * @module
 */

import { Process } from "../patterns/cube.ts";
import { Barrier, Lock } from "../patterns/sync.ts";
import { Value } from "../patterns/value.ts";
import { RawArray, SharedArray } from "../patterns/array.ts";
import type { CompareSection, PythonRunner, Row } from "./_compare_util.ts";

/** The workloads a worker can run. */
export type SharedWorkload =
  | "locked"
  | "add"
  | "elements"
  | "view"
  | "pairs"
  | "contended";

/** What one run of a workload measured. */
export interface SharedResult {
  /** Operations (or elements) per second, over all workers. */
  rate: number;
  /** For `view`: the plain `Float64Array` loop's rate, same workers. */
  plainRate?: number;
}

/**
 * Runs a workload in `workers` worker processes and checks its result.
 *
 * @param kind The workload.
 * @param n Operations per worker (elements in all for the array loops).
 * @param workers How many workers (1 or 2).
 * @returns The measured rates.
 */
export async function runShared(
  kind: SharedWorkload,
  n: number,
  workers = 2,
): Promise<SharedResult> {
  const v = new Value("i", 0);
  const lock = new Lock();
  const isArray = kind === "elements" || kind === "view";
  const arr = new SharedArray("d", isArray ? n : 0, { lock: false });
  const start = new Barrier(workers, { timeout: 60_000 });
  const times = new RawArray("d", 2 * workers);
  const ps = Array.from({ length: workers }, (_, w) =>
    new Process({
      name: `bench-${kind}-${w}`,
      target: (
        kind: string,
        n: number,
        w: number,
        workers: number,
        start: Barrier,
        times: RawArray<"d">,
        v: Value<"i">,
        lock: Lock,
        arr: SharedArray<"d">,
      ) => {
        const l = v.getLock();
        const per = kind === "elements" || kind === "view"
          ? arr.length / workers
          : n;
        const lo = w * per;
        const hi = lo + per;
        // A short warm-up so the timed loop runs optimised code.
        if (kind === "locked") {
          for (let k = 0; k < 20_000; k++) {
            l.acquireSync();
            v.value += 1;
            l.release();
          }
        } else if (kind === "add") {
          for (let k = 0; k < 20_000; k++) v.add(1);
        }
        // The array loops: one function for the shared view and the plain
        // baseline, warmed up on scratch arrays of both kinds.
        const bump = (a: Float64Array, lo: number, hi: number) => {
          for (let i = lo; i < hi; i++) a[i]! += 1;
        };
        const Ctor = arr.constructor as typeof SharedArray;
        const scratch = new Ctor(
          "d",
          kind === "view" || kind === "elements" ? per : 0,
          {
            lock: false,
          },
        );
        const plain = new Float64Array(scratch.length);
        if (kind === "view") {
          for (let r = 0; r < 3; r++) {
            bump(scratch.view, 0, per);
            bump(plain, 0, per);
          }
        } else if (kind === "elements") {
          for (let r = 0; r < 3; r++) {
            for (let i = 0; i < per; i++) scratch.set(i, scratch.get(i) + 1);
          }
        } else if (kind === "pairs" || kind === "contended") {
          for (let k = 0; k < 20_000; k++) {
            lock.acquireSync();
            lock.release();
          }
        }
        // The view pass is timed on memory this worker already touched (an
        // untimed first pass), as the plain array is.
        if (kind === "view") bump(arr.view, lo, hi);
        start.waitSync();
        const t0 = performance.now();
        switch (kind) {
          case "locked":
            for (let k = 0; k < n; k++) {
              l.acquireSync();
              v.value += 1;
              l.release();
            }
            break;
          case "add":
            for (let k = 0; k < n; k++) v.add(1);
            break;
          case "elements":
            for (let i = lo; i < hi; i++) arr.set(i, arr.get(i) + 1);
            break;
          case "view": {
            // 5 alternating passes of each loop; the best of each counts.
            let bestView = Infinity;
            let bestPlain = Infinity;
            for (let r = 0; r < 5; r++) {
              const a = performance.now();
              bump(arr.view, lo, hi);
              const b = performance.now();
              bump(plain, 0, per);
              const c = performance.now();
              bestView = Math.min(bestView, b - a);
              bestPlain = Math.min(bestPlain, c - b);
            }
            times.set(workers + w, bestPlain);
            times.set(w, bestView);
            return;
          }
          case "pairs":
          case "contended":
            for (let k = 0; k < n; k++) {
              lock.acquireSync();
              lock.release();
            }
            break;
        }
        times.set(w, performance.now() - t0);
      },
      args: [kind, n, w, workers, start, times, v, lock, arr],
    }));
  for (const p of ps) p.start();
  const codes = await Promise.all(ps.map((p) => p.join()));
  if (codes.some((c) => c !== 0)) {
    throw new Error(`bench ${kind}: a worker failed (${codes.join(", ")})`);
  }
  const slowest = Math.max(...times.toArray().slice(0, workers));
  if (kind === "locked" || kind === "add") {
    const want = workers * (n + 20_000);
    if (v.value !== want) {
      throw new Error(`bench ${kind}: total ${v.value}, expected ${want}`);
    }
  }
  const passes = kind === "view" ? 6 : 1;
  if (isArray && !arr.toArray().every((x) => x === passes)) {
    throw new Error(`bench ${kind}: an element was not incremented once`);
  }
  const total = isArray ? n : workers * n;
  const result: SharedResult = { rate: total / slowest * 1000 };
  if (kind === "view") {
    const plainSlowest = Math.max(...times.toArray().slice(workers));
    result.plainRate = total / plainSlowest * 1000;
  }
  return result;
}

/** Best of `repeat` runs (each run starts fresh workers). */
async function best(
  kind: SharedWorkload,
  n: number,
  workers = 2,
  repeat = 3,
): Promise<SharedResult> {
  let top: SharedResult | undefined;
  for (let i = 0; i < repeat; i++) {
    const r = await runShared(kind, n, workers);
    if (!top || r.rate > top.rate) top = r;
  }
  return top!;
}

/** Value, SharedArray and the locks next to Python's. */
export const section: CompareSection = {
  title: "Shared memory and locks (value.ts, array.ts, sync.ts)",
  async run(python: PythonRunner | null): Promise<Row[]> {
    const py = python ? await python("shared.py") : null;
    const locked = await best("locked", 100_000);
    const add = await best("add", 1_000_000);
    const elements = await best("elements", 1_000_000);
    const view = await best("view", 1_000_000);
    const pairs = await best("pairs", 1_000_000, 1);
    const contended = await best("contended", 200_000);
    return [
      {
        workload:
          'Value("i") locked `value += 1`, 2 workers × 100 000 (Python: with get_lock())',
        unit: "ops/s",
        ours: locked.rate,
        python: py?.locked_ops_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 3× Python",
      },
      {
        workload:
          'Value("i") add(1), 2 workers × 1 000 000 (Python: locked += 1, it has no add)',
        unit: "ops/s",
        ours: add.rate,
        python: py?.locked_ops_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 10× Python",
      },
      {
        workload:
          'SharedArray("d") 1 000 000 × (+1.0) element by element, 2 workers (Python: Array("d") a[i] += 1.0)',
        unit: "elem/s",
        ours: elements.rate,
        python: py?.array_elements_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 10× Python",
      },
      {
        workload:
          'SharedArray("d") 1 000 000 × (+1.0) through view, 2 workers (Python: through get_obj())',
        unit: "elem/s",
        ours: view.rate,
        python: py?.array_raw_per_s ?? null,
        higherIsBetter: true,
      },
      {
        workload:
          "… the same loop on a plain (unshared) Float64Array, same workers (ours: plain; 'Python' column: view)",
        unit: "elem/s",
        ours: view.plainRate!,
        python: view.rate,
        higherIsBetter: true,
        target: "view within 2× of plain",
      },
      {
        workload: "Lock acquire/release pairs, 1 worker, uncontended",
        unit: "pairs/s",
        ours: pairs.rate,
        python: py?.pairs_uncontended_per_s ?? null,
        higherIsBetter: true,
      },
      {
        workload: "Lock acquire/release pairs, 2 workers × 200 000, contended",
        unit: "pairs/s",
        ours: contended.rate,
        python: py?.pairs_contended_per_s ?? null,
        higherIsBetter: true,
      },
    ];
  },
};

/**
 * The "under load" comparison section (`deno task bench:compare`): the waits
 * that matter most — a Manager dict op from a worker, a Pipe round trip, a
 * Queue with one producer and one consumer — measured while a CPU hog
 * (`yes > /dev/null`) runs beside them, for both runtimes in the same
 * conditions. A pool with as many workers as cores, plus the main thread
 * and a manager thread, is always in this situation on a small machine, so
 * a wait that spins on a core the awaited thread needs shows here.
 *
 * Each figure is the median of 3 runs, on both sides (`bench/py/load.py`).
 *
 * @module
 */

import { pipeRoundTrip, queueThroughput } from "./compare_channels.ts";
import { localDict } from "./compare_manager.ts";
import type { CompareSection, PythonRunner, Row } from "./_compare_util.ts";

/** The longest a hog lives, even if this program dies without killing it. */
const HOG_SECONDS = 300;

/**
 * Starts `yes > /dev/null` (one core's worth of busy work) under
 * `timeout`, so that it ends by itself if this program is interrupted, or
 * returns `null` where it cannot run.
 *
 * @returns The hog, which the caller kills.
 */
export function startHog(): Deno.ChildProcess | null {
  try {
    return new Deno.Command("timeout", {
      args: [String(HOG_SECONDS), "yes"],
      stdout: "null",
      stderr: "null",
      stdin: "null",
    }).spawn();
  } catch {
    return null;
  }
}

/**
 * Runs `fn` with a hog beside it.
 *
 * @param fn The work.
 * @returns What `fn` returned.
 */
export async function underLoad<T>(fn: () => Promise<T>): Promise<T> {
  const hog = startHog();
  try {
    return await fn();
  } finally {
    if (hog) {
      hog.kill("SIGTERM"); // timeout passes it on to yes
      await hog.status;
    }
  }
}

async function median3(fn: () => Promise<number>): Promise<number> {
  const runs = [await fn(), await fn(), await fn()];
  return runs.sort((a, b) => a - b)[1]!;
}

/** The three waits under one CPU hog, next to Python's under the same hog. */
export const section: CompareSection = {
  title: "Under load (one CPU hog beside)",
  async run(python: PythonRunner | null): Promise<Row[]> {
    const n = 10_000;
    const py = python
      ? await underLoad(() => python("load.py", [String(n)]))
      : null;
    const dict = await underLoad(() => median3(() => localDict(n)));
    const rt = await underLoad(() => median3(() => pipeRoundTrip(20_000)));
    const q = await underLoad(() =>
      median3(() => queueThroughput(200_000, 1, 1, "int"))
    );
    return [
      {
        workload: "loaded: Manager dict set/get from a worker",
        unit: "ops/s",
        ours: dict,
        python: py?.dict_ops_s ?? null,
        higherIsBetter: true,
        target: "≥ 2× Python",
      },
      {
        workload: "loaded: Pipe round trip, main ↔ worker",
        unit: "µs",
        ours: rt,
        python: py?.pipe_rtt_us ?? null,
        higherIsBetter: false,
        target: "≥ 4× Python",
      },
      {
        workload: "loaded: Queue ints, 1 producer / 1 consumer",
        unit: "items/s",
        ours: q,
        python: py?.queue_int_1_1 ?? null,
        higherIsBetter: true,
        target: "≥ 10× Python",
      },
    ];
  },
};

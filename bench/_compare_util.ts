/**
 * Helpers of the side-by-side comparison (`deno task bench:compare`): each
 * pattern contributes a {@linkcode CompareSection} (in
 * `bench/compare_<pattern>.ts`) whose rows put our figure next to Python's,
 * both measured in the same run.
 *
 * @module
 */

/** One measured workload: ours next to Python's. */
export interface Row {
  /** What was measured, e.g. `imapUnordered x**3, chunksize 1`. */
  workload: string;
  /** The unit of both figures, e.g. `tasks/s`, `µs`, `×`. */
  unit: string;
  /** Our figure. */
  ours: number;
  /** Python's figure, or `null` when python3 is missing or the row has none. */
  python: number | null;
  /** Whether a bigger figure is better (throughput) or worse (latency). */
  higherIsBetter: boolean;
  /** The issue's target, as text, e.g. `≥ 5× Python`. */
  target?: string;
  /** What the baseline figure is, when not Python (e.g. `piscina`). */
  baseline?: string;
  /** Rows with the same group are drawn as one bar group in the chart. */
  group?: string;
}

/** A group of rows contributed by one pattern. */
export interface CompareSection {
  /** The section's title, e.g. `Pool (cube.ts)`. */
  title: string;
  /** Measures every workload and returns the rows. */
  run(python: PythonRunner | null): Promise<Row[]>;
}

/** Runs a Python benchmark script and returns the JSON it prints last. */
export type PythonRunner = (
  script: string,
  args?: string[],
) => Promise<Record<string, number>>;

/**
 * Finds `python3`; returns a runner for `bench/py/*.py` scripts, or `null`
 * when Python is not installed (the rows then show no Python figure).
 *
 * @returns The runner or `null`.
 */
export async function findPython(): Promise<PythonRunner | null> {
  try {
    const out = await new Deno.Command("python3", {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) return null;
  } catch {
    return null;
  }
  return async (script, args = []) => {
    const path = new URL(`./py/${script}`, import.meta.url).pathname;
    const out = await new Deno.Command("python3", {
      args: [path, ...args],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) {
      throw new Error(`python3 ${script} failed with code ${out.code}`);
    }
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    return JSON.parse(lines[lines.length - 1]!);
  };
}

/**
 * Runs `fn` `repeat` times after one warm-up and returns the median of the
 * measured durations in milliseconds.
 *
 * @param fn The work to time.
 * @param repeat How many timed runs.
 * @returns The median duration in ms.
 */
export async function medianMs(
  fn: () => unknown | Promise<unknown>,
  repeat = 3,
): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

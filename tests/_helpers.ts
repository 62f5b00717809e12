/**
 * Test helpers shared by every test file: a `Deno.test` wrapper that checks
 * no worker spawned by the package is left alive when a test ends (Deno's
 * sanitizers do not report leaked workers), and small utilities.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { liveWorkerCount } from "../patterns/_core/worker.ts";

/**
 * Registers a test that must end with zero live workers. Sanitizers are on
 * for ops and resources (each test file also turns them on at its top).
 *
 * @param name What the test checks, in plain words.
 * @param fn The test body.
 * @param options Extra `Deno.test` options (e.g. `ignore`).
 */
export function mpTest(
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
  options: Omit<Deno.TestDefinition, "name" | "fn"> = {},
): void {
  Deno.test({
    ...options,
    name,
    sanitizeOps: true,
    sanitizeResources: true,
    async fn(t) {
      assert.equal(liveWorkerCount(), 0, "a worker was alive before the test");
      let threw = false;
      try {
        await fn(t);
      } catch (e) {
        threw = true;
        throw e;
      } finally {
        // A failing body's own error is the one to see: the leak check
        // would replace it (the next test still reports the leak).
        const live = liveWorkerCount();
        if (!threw) {
          assert.equal(live, 0, `${live} worker(s) left alive by the test`);
        }
      }
    },
  });
}

/**
 * A sequence `0 … n-1`.
 *
 * @param n How many.
 * @returns The numbers.
 */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** What {@linkcode runFromRoot} returns. */
export interface RunResult {
  /** The exit code. */
  code: number;
  /** Standard output, as text. */
  stdout: string;
  /** Standard error, as text. */
  stderr: string;
}

/**
 * Runs a command from the project's root with no stdin, `NO_COLOR=1` and a
 * 60 s limit, and collects its output as text.
 *
 * @param command The program (e.g. `Deno.execPath()` or `"script"`).
 * @param args Its arguments.
 * @returns Its exit code and output.
 */
export async function runFromRoot(
  command: string,
  args: string[],
): Promise<RunResult> {
  const out = await new Deno.Command(command, {
    args,
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/**
 * Whether util-linux `script` (a pseudo-terminal for prompt tests) is here.
 *
 * @returns `true` when it runs.
 */
export function hasScript(): boolean {
  try {
    return new Deno.Command("script", { args: ["--version"] }).outputSync()
      .success;
  } catch {
    return false;
  }
}

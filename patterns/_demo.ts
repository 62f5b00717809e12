/**
 * What the demos share and nothing else loads: argument parsing with
 * `--help`, a progress bar, and number and duration formatting.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { describeValue } from "./_core/errors.ts";

/**
 * One option of a demo's command line.
 */
export interface CliOption {
  /** `"string"` takes a value; `"boolean"` is a flag. */
  type: "string" | "boolean";
  /** A one-letter alias. */
  short?: string;
  /** What it does, for `--help`. */
  description: string;
  /** The value's placeholder in `--help`, e.g. `N`. */
  placeholder?: string;
}

/**
 * What {@linkcode parseCli} returns.
 */
export interface CliArgs {
  /** Option values by name. */
  values: Record<string, string | boolean | undefined>;
  /** Positional arguments. */
  positionals: string[];
}

/**
 * Parses a demo's command line with `node:util`'s `parseArgs`; prints the
 * usage and exits on `--help`, and exits with code 2 on a bad option.
 *
 * @param argv The arguments (usually `Deno.args`).
 * @param command How the demo is run, for the usage line.
 * @param summary One sentence on what it does.
 * @param options The options it takes.
 * @returns The parsed values and positionals.
 */
export function parseCli(
  argv: string[],
  command: string,
  summary: string,
  options: Record<string, CliOption> = {},
): CliArgs {
  const all: Record<string, CliOption> = {
    ...options,
    help: { type: "boolean", short: "h", description: "show this help" },
  };
  const usage = () => {
    const lines = [`Usage: ${command} [options]`, "", summary, "", "Options:"];
    for (const [name, o] of Object.entries(all)) {
      const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${
        o.type === "string" ? ` ${o.placeholder ?? "VALUE"}` : ""
      }`;
      lines.push(`  ${flag.padEnd(26)} ${o.description}`);
    }
    return lines.join("\n");
  };
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: Object.fromEntries(
        Object.entries(all).map((
          [k, o],
        ) => [
          k,
          o.short ? { type: o.type, short: o.short } : { type: o.type },
        ]),
      ),
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${usage()}`);
    Deno.exit(2);
  }
  if (parsed.values.help) {
    console.log(usage());
    Deno.exit(0);
  }
  exitOnError();
  return {
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

/**
 * Makes a demo's failure one clear line on stderr and exit code 1, instead
 * of an uncaught error with its stack (`MP_DEBUG=1` keeps the stack).
 */
export function exitOnError(): void {
  const report = (e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    let line = `error: ${err.name}: ${err.message}`;
    if (err.cause instanceof Error) line += ` (cause: ${err.cause.message})`;
    console.error(line);
    if (debugStacks()) console.error(err.stack);
    Deno.exit(1);
  };
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    report(e.reason);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    report(e.error);
  });
}

function debugStacks(): boolean {
  try {
    return Deno.permissions.querySync({ name: "env", variable: "MP_DEBUG" })
          .state === "granted" && Deno.env.get("MP_DEBUG") === "1";
  } catch {
    return false;
  }
}

/**
 * Starts a demo run as `deno task <task>`: parses `Deno.args` with
 * {@linkcode parseCli} (so `--help` prints the usage and exits).
 *
 * @param task The task's name, for the usage line.
 * @param summary One sentence on what it does.
 * @param options The options it takes.
 * @returns The parsed values and positionals.
 */
export function demoStart(
  task: string,
  summary: string,
  options: Record<string, CliOption> = {},
): CliArgs {
  return parseCli(Deno.args, `deno task ${task}`, summary, options);
}

/**
 * Reads a positive integer option of a demo, exiting with a clear message
 * when it is not one.
 *
 * @param raw The option's text.
 * @param name The option's name.
 * @param fallback The value when absent.
 * @returns The integer.
 */
export function intOption(
  raw: string | boolean | undefined,
  name: string,
  fallback: number,
): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(
      `--${name} must be a positive integer, received ${describeValue(raw)}`,
    );
    Deno.exit(2);
  }
  return n;
}

const numberFormat = new Intl.NumberFormat("en-US", {
  maximumFractionDigits: 1,
});
const smallFormat = new Intl.NumberFormat("en-US", {
  maximumSignificantDigits: 2,
});
const compactFormat = new Intl.NumberFormat("en-US", {
  notation: "compact",
  maximumFractionDigits: 2,
});

/**
 * Formats a count for people: `1,234.5`, or compact (`1.23M`).
 *
 * @param n The number.
 * @param compact Whether to use a suffix (k, M, B).
 * @returns The text.
 */
export function formatNumber(n: number, compact = false): string {
  // A ratio below 1 keeps two significant digits: 0.04, not 0.
  if (n !== 0 && Math.abs(n) < 1) return smallFormat.format(n);
  return (compact ? compactFormat : numberFormat).format(n);
}

/**
 * Formats a duration given in milliseconds: `850 µs`, `12.3 ms`, `1.25 s`.
 *
 * @param ms Milliseconds.
 * @returns The text.
 */
export function formatDuration(ms: number): string {
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

/**
 * A progress bar on stderr for long demo runs; redraws at most every 50 ms
 * and only when stderr is a terminal (otherwise it prints one final line).
 */
export class ProgressBar {
  readonly #total: number;
  readonly #label: string;
  readonly #tty: boolean;
  readonly #start = performance.now();
  #last = 0;
  #current = 0;
  #finished = false;

  /**
   * Starts a bar.
   *
   * @param total The number of steps.
   * @param label What is counted.
   */
  constructor(total: number, label: string) {
    this.#total = total;
    this.#label = label;
    this.#tty = Deno.stderr.isTerminal();
  }

  /**
   * Records progress.
   *
   * @param current Steps done so far.
   */
  update(current: number): void {
    this.#current = current;
    const now = performance.now();
    if (!this.#tty || now - this.#last < 50) return;
    this.#last = now;
    this.#draw();
  }

  #draw(): void {
    const width = 30;
    const frac = this.#total > 0 ? Math.min(1, this.#current / this.#total) : 1;
    const filled = Math.round(frac * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const pct = `${Math.floor(frac * 100)}`.padStart(3);
    // Plain ANSI, not node:util's styleText, which reads a dozen environment
    // variables (NODE_DISABLE_COLORS, TERM, CI, …) and so prompts for env
    // access in a terminal; Deno.noColor needs no permission.
    const colored = Deno.noColor ? bar : `\x1b[36m${bar}\x1b[39m`;
    const elapsed = performance.now() - this.#start;
    const rate = elapsed > 0 ? this.#current / (elapsed / 1000) : 0;
    const left = this.#total - this.#current;
    const eta = rate > 0 && left > 0
      ? `, ETA ${formatDuration((left / rate) * 1000)}`
      : "";
    const line = `${colored} ${pct}% ${formatNumber(this.#current)}/${
      formatNumber(this.#total)
    } ${this.#label} ${formatDuration(elapsed)} (${
      formatNumber(Math.round(rate), true)
    } ${this.#label}/s${eta})`;
    Deno.stderr.writeSync(
      new TextEncoder().encode(this.#tty ? `\r\x1b[2K${line}` : `${line}\n`),
    );
  }

  /** Draws the final state and ends the line. */
  done(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#current = Math.max(this.#current, 0);
    this.#draw();
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

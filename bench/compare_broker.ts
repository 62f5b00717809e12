/**
 * The "Pool on Redis" comparison section (`deno task bench:compare`): our
 * `new Pool({ broker })` against BullMQ (`bench/node/bullmq.mjs`), the JS
 * ecosystem's standard Redis job queue, on the same private Redis in the
 * same run. The table's Python column holds BullMQ's figure here (the
 * rows' `baseline`).
 *
 * Both sides have two worker processes of two workers each (ours: two
 * `patterns/worker.ts --workers 2` processes; BullMQ: two Node processes,
 * each a `Worker` with `concurrency: 2`), started before any timing.
 *
 * - throughput: 10,000 trivial tasks (`x * 2`) end to end, every result
 *   collected by the caller: ours `pool.map` at `chunksize: 1` (one Redis
 *   entry per task, as BullMQ has one job per task) and with the default
 *   chunking; BullMQ `addBulk` with a `QueueEvents` listener. The median of
 *   3 runs after a 1,000-task warm-up, on both sides.
 * - latency: one `apply` round trip (BullMQ: one `add` until its
 *   `completed` event), the median of 200 after 20 warm-ups.
 *
 * Redis is a `redis-server` this section starts on a free loopback port
 * (`--save "" --appendonly no`, under `timeout`) with the tests' starter
 * (`tests/_redis.ts`) and stops at the end; our worker processes are
 * `deno run` children (`--allow-run=deno`). Without
 * `redis-server` the section prints one line and has no rows; without
 * `node` or `bench/node/node_modules/bullmq` (`npm install` in
 * `bench/node`) the BullMQ column reads "skipped".
 *
 * @module
 */

import { Pool } from "../patterns/cube.ts";
import { queueKeys } from "../patterns/_broker/keys.ts";
import { RedisLink } from "../patterns/_broker/redis.ts";
import { countWorkers } from "../patterns/_broker/registry.ts";
import { startRedis, whyNoRedis } from "../tests/_redis.ts";
import type { CompareSection, Row } from "./_compare_util.ts";

/** Tasks per timed run. */
const TASKS = 10_000;
/** Timed runs per figure (the median is kept). */
const ROUNDS = 3;
/** Apply round trips timed (after 20 warm-ups). */
const APPLIES = 200;
/** The longest any helper process lives, even if this program dies. */
const HELPER_SECONDS = 900;

/** Resolves whether a process may be run, without prompting. */
async function mayRun(command: string): Promise<boolean> {
  const p = await Deno.permissions.query({ name: "run", command });
  return p.state === "granted";
}

/** BullMQ's figures. */
interface Figures {
  /** Tasks per second, end to end. */
  jobsPerSecond: number;
  /** One round trip, in ms. */
  applyMs: number;
}

/**
 * BullMQ's figures: runs `node bench/node/bullmq.mjs` against `port`.
 *
 * @returns The figures, or `null` (with one line saying why) when skipped.
 */
async function bullmq(port: number): Promise<Figures | null> {
  const dir = new URL("./node/", import.meta.url);
  const skip = (why: string) => {
    console.error(`  BullMQ skipped: ${why}`);
    return null;
  };
  try {
    await Deno.stat(new URL("node_modules/bullmq/package.json", dir));
  } catch {
    return skip("not installed (run `npm install` in bench/node)");
  }
  if (!await mayRun("node")) {
    return skip("no permission to run node (--allow-run=node)");
  }
  try {
    const out = await new Deno.Command("node", {
      args: [
        new URL("bullmq.mjs", dir).pathname,
        String(port),
        String(TASKS),
        String(ROUNDS),
      ],
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(300_000),
    }).output();
    if (!out.success) return skip(`node exited with code ${out.code}`);
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    const r = JSON.parse(lines[lines.length - 1]!);
    console.error(`  BullMQ ${r.bullmq} on Node ${r.node}`);
    return { jobsPerSecond: r.jobs_s, applyMs: r.apply_ms };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return skip("node not found");
    throw e;
  }
}

/** Our worker processes, stopped with SIGTERM on dispose. */
interface WorkerProcesses extends AsyncDisposable {
  children: Deno.ChildProcess[];
  /** What they wrote on stderr (shown only when something fails). */
  stderr(): string;
}

/**
 * Starts `count` worker processes (`patterns/worker.ts`), each running
 * `workers` local workers, serving `queue` on `broker`.
 */
function startWorkers(
  broker: string,
  queue: string,
  count: number,
  workers: number,
): WorkerProcesses {
  const root = new URL("../", import.meta.url);
  const children: Deno.ChildProcess[] = [];
  let log = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      log += text;
    }
  };
  const drained: Promise<void>[] = [];
  const stop = async () => {
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    const killer = setTimeout(() => {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }, 10_000);
    await Promise.all(children.map((c) => c.status));
    clearTimeout(killer);
    await Promise.all(drained);
  };
  for (let i = 0; i < count; i++) {
    children.push(
      new Deno.Command("deno", {
        args: [
          "run",
          "--allow-read=./patterns,./bench",
          "--allow-net=127.0.0.1",
          "--allow-env",
          "patterns/worker.ts",
          "--broker",
          broker,
          "--queue",
          queue,
          "--module",
          new URL("bench/_broker_tasks.ts", root).href,
          "--workers",
          String(workers),
        ],
        cwd: root.pathname,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn(),
    );
    drained.push(collect(children[i]!.stderr));
  }
  return { children, stderr: () => log, [Symbol.asyncDispose]: stop };
}

/**
 * Resolves once `want` local workers have registered on `queue` (every
 * worker process registers after its local workers started), or rejects
 * after `ms`, or when a worker process exits first.
 */
async function waitForWorkers(
  broker: string,
  queue: string,
  want: number,
  processes: WorkerProcesses,
  ms: number,
): Promise<void> {
  const link = await RedisLink.open(broker, "dmp-bench-ready");
  let exited = false;
  for (const c of processes.children) c.status.then(() => exited = true);
  try {
    const deadline = Date.now() + ms;
    while (await countWorkers(link, queueKeys(queue)) < want) {
      if (exited || Date.now() > deadline) {
        throw new Error(
          `${
            exited
              ? "a worker process exited while starting"
              : `the worker processes did not start in ${ms}ms`
          }; their output:\n${processes.stderr()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await link.close();
  }
}

async function median(fn: () => Promise<number>, n: number): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(await fn());
  return xs.sort((a, b) => a - b)[Math.floor(n / 2)]!;
}

/** Our figures at `chunksize: 1` and with the default chunking. */
interface OurFigures {
  chunk1: number;
  chunked: number;
  applyMs: number;
}

/** Our side: a broker pool and two worker processes of two workers. */
async function ours(port: number): Promise<OurFigures> {
  const broker = `redis://127.0.0.1:${port}`;
  const queue = `bench-${crypto.randomUUID()}`;
  await using workers = startWorkers(broker, queue, 2, 2);
  await waitForWorkers(broker, queue, 4, workers, 60_000);
  await using pool = new Pool<typeof import("./_broker_tasks.ts")>({
    broker,
    queue,
  });
  const items = Array.from({ length: TASKS }, (_, i) => i);
  const check = (out: number[]) => {
    for (let i = 0; i < TASKS; i++) {
      if (out[i] !== i * 2) {
        throw new Error(`wrong result for task ${i}: ${out[i]}`);
      }
    }
  };
  const run = async (chunksize?: number) => {
    const t0 = performance.now();
    const out = await pool.map(
      "double",
      items,
      chunksize ? { chunksize } : {},
    );
    const ms = performance.now() - t0;
    check(out);
    return TASKS / (ms / 1000);
  };
  // Warm-up: the JIT on both sides, and the pool's own connection.
  await pool.map("double", items.slice(0, 1000), { chunksize: 1 });
  const chunk1 = await median(() => run(1), ROUNDS);
  const chunked = await median(() => run(), ROUNDS);
  const apply = async (i: number) => {
    const t0 = performance.now();
    const r = await pool.apply("double", [i]);
    if (r !== i * 2) throw new Error(`wrong apply result: ${r}`);
    return performance.now() - t0;
  };
  for (let i = 0; i < 20; i++) await apply(i);
  const applyMs = await median(() => apply(7), APPLIES);
  pool.close();
  await pool.join();
  return { chunk1, chunked, applyMs };
}

/** The broker rows: ours against BullMQ on one private Redis. */
export const section: CompareSection = {
  title: "Pool on Redis (broker)",
  async run(): Promise<Row[]> {
    const why = await mayRun("deno")
      ? await whyNoRedis()
      : "no permission to run the worker processes (--allow-run=deno)";
    if (why) {
      console.error(`  skipped: ${why}`);
      return [];
    }
    await using redis = await startRedis({ seconds: HELPER_SECONDS });
    const bull = await bullmq(redis.port);
    const our = await ours(redis.port);
    const what = `${
      TASKS.toLocaleString("en-US")
    } trivial tasks end to end, 2 worker processes × 2 workers`;
    return [
      {
        workload: `${what}, chunksize 1 (Python column: BullMQ addBulk)`,
        unit: "tasks/s",
        ours: our.chunk1,
        python: bull?.jobsPerSecond ?? null,
        higherIsBetter: true,
        target: "≥ 1× BullMQ",
        baseline: "BullMQ",
      },
      {
        workload: `${what}, default chunking (Python column: BullMQ addBulk)`,
        unit: "tasks/s",
        ours: our.chunked,
        python: bull?.jobsPerSecond ?? null,
        higherIsBetter: true,
        target: "≥ 5× BullMQ",
        baseline: "BullMQ",
      },
      {
        workload: "one apply round trip via Redis (Python column: BullMQ add)",
        unit: "ms",
        ours: our.applyMs,
        python: bull?.applyMs ?? null,
        higherIsBetter: false,
        baseline: "BullMQ",
      },
    ];
  },
};

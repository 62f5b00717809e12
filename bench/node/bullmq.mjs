// The BullMQ baseline of the broker comparison (bench/compare_broker.ts):
// the JS ecosystem's standard Redis job queue, set up as the target
// says: two worker processes of two workers each (a `Worker` with
// `concurrency: 2` in each of 2 child processes), the caller adding jobs
// with `addBulk` and collecting every result from a `QueueEvents` listener.
//
//   node bench/node/bullmq.mjs <redis port> [tasks] [rounds]
//
// Throughput: `tasks` trivial jobs (the worker returns `x * 2`) end to end,
// from `addBulk` to the last result, after a 1,000-job warm-up; the median
// of `rounds` (default 3). Latency: one job added and its result received,
// 200 times in a row after 20 warm-ups; the median.
//
// Needs `npm install` in this folder (bullmq, ioredis). The queue's keys are
// removed at the end. Prints one JSON object:
//   jobs_s    jobs per second, end to end
//   apply_ms  one job's round trip, in ms
//   node      the Node.js version
//   bullmq    the bullmq version
import { fork } from "node:child_process";
import { createRequire } from "node:module";

// Required, not imported: `deno check bench/` resolves static imports, and
// bullmq is not a dependency of the Deno project.
const require = createRequire(import.meta.url);
const { Queue, QueueEvents, Worker } = require("bullmq");

const [role, portText, ...rest] = process.argv.slice(2);

if (role === "--worker") {
  // A worker process: `--worker <port> <queue name>`.
  const worker = new Worker(rest[0], (job) => job.data * 2, {
    connection: { host: "127.0.0.1", port: Number(portText) },
    concurrency: 2,
  });
  worker.on("error", (e) => console.error(`bullmq worker: ${e.message}`));
  await worker.waitUntilReady();
  process.send("ready");
  const stop = async () => {
    await worker.close();
    process.exit(0);
  };
  process.on("message", (m) => m === "stop" && stop());
  process.on("disconnect", stop); // the caller died: do not linger
} else {
  await caller(Number(role), Number(portText ?? 10_000), Number(rest[0] ?? 3));
}

async function caller(port, tasks, rounds) {
  if (!Number.isInteger(port) || port <= 0) {
    throw new TypeError(`usage: bullmq.mjs <redis port> [tasks] [rounds]`);
  }
  const name = `bench-bullmq-${process.pid}`;
  const connection = { host: "127.0.0.1", port };
  // The event stream keeps 10,000 entries by default: a round of 10,000
  // jobs writes several events each, so a slow listener could lose some.
  const queue = new Queue(name, {
    connection,
    streams: { events: { maxLen: 20 * tasks } },
    defaultJobOptions: { removeOnComplete: true, removeOnFail: true },
  });
  const events = new QueueEvents(name, { connection });
  // jobId → what to do with its result; ids are ours, so a result that
  // arrives before `addBulk` returns still finds its waiter.
  const waiting = new Map();
  events.on("completed", ({ jobId, returnvalue }) => {
    const done = waiting.get(jobId);
    if (done) {
      waiting.delete(jobId);
      done(
        typeof returnvalue === "string" ? JSON.parse(returnvalue) : returnvalue,
      );
    }
  });
  events.on("failed", ({ jobId, failedReason }) => {
    console.error(`bullmq job ${jobId} failed: ${failedReason}`);
    process.exit(1);
  });
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);

  const workers = [0, 1].map(() =>
    fork(new URL(import.meta.url).pathname, ["--worker", String(port), name])
  );
  await Promise.all(
    workers.map((w) => new Promise((ok) => w.once("message", ok))),
  );

  let round = 0;
  const run = async (count) => {
    const r = round++;
    const results = new Array(count);
    let left = count;
    const all = new Promise((ok) => {
      for (let i = 0; i < count; i++) {
        waiting.set(`r${r}-${i}`, (v) => {
          results[i] = v;
          if (--left === 0) ok();
        });
      }
    });
    const t0 = performance.now();
    await queue.addBulk(
      Array.from({ length: count }, (_, i) => ({
        name: "t",
        data: i,
        opts: { jobId: `r${r}-${i}` },
      })),
    );
    await all;
    const ms = performance.now() - t0;
    for (let i = 0; i < count; i++) {
      if (results[i] !== i * 2) throw new Error(`wrong result for job ${i}`);
    }
    return ms;
  };
  const applyOnce = async (i) => {
    const id = `a${round}-${i}`;
    const t0 = performance.now();
    const got = new Promise((ok) => waiting.set(id, ok));
    await queue.add("t", i, { jobId: id });
    if ((await got) !== i * 2) throw new Error(`wrong result for job ${id}`);
    return performance.now() - t0;
  };

  const watchdog = setTimeout(() => {
    console.error("bullmq.mjs: no result for 120 s, giving up");
    process.exit(1);
  }, 120_000 + rounds * tasks);
  await run(1000);
  const speeds = [];
  for (let i = 0; i < rounds; i++) {
    speeds.push(tasks / ((await run(tasks)) / 1000));
  }
  round++;
  for (let i = 0; i < 20; i++) await applyOnce(i);
  const latencies = [];
  for (let i = 0; i < 200; i++) latencies.push(await applyOnce(100 + i));
  clearTimeout(watchdog);

  await Promise.all(workers.map((w) =>
    new Promise((ok) => {
      w.once("exit", ok);
      w.send("stop");
    })
  ));
  await events.close();
  await queue.obliterate({ force: true });
  await queue.close();
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(JSON.stringify({
    jobs_s: median(speeds),
    apply_ms: median(latencies),
    node: process.versions.node,
    bullmq: require("bullmq/package.json").version,
  }));
}

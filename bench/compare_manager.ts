/**
 * The comparison section for the Manager (`deno task bench:compare`), and
 * the workloads `bench/manager_bench.ts` reuses. Each workload is timed
 * inside the worker that does it (after a warm-up), so worker start-up is
 * not counted; Python's side (`bench/py/manager.py`) does the same.
 *
 * - dict: a worker alternates `d.set("k", i)` and `d.get("k")` on a dict of
 *   an embedded manager (`Manager.start()`); ops/s counts both.
 * - lock: a worker does `acquire()` + `release()` on a manager Lock.
 * - queue: a producer worker puts N ints, a consumer worker gets them, both
 *   through a manager Queue; timed from a manager Event "go" to the last get.
 * - remote: `serve()` on 127.0.0.1 in the main thread, a worker connects
 *   over TCP and alternates set/get (Python: a `SyncManager` on TCP in its
 *   own process, a child process as client).
 * - connect: the same worker times `Manager.connect()` + `dict()` + one
 *   `set` (Python: `connect()` + `dict()` + one set).
 * - concurrent: the same server; a worker runs 8 callers at once, each an
 *   async loop alternating set/get on its own key of one dict, all in flight
 *   on the worker's single connection (Python: a child process with 8
 *   threads, each with its own proxy of one dict — Python's proxies must not
 *   be shared between threads — so 8 connections). Timed from the end of
 *   every caller's warm-up to the last caller's end; the median of 3 runs
 *   on both sides.
 *
 * @module
 */

import { Process } from "../patterns/cube.ts";
import {
  type DictProxy,
  type EventProxy,
  type LockProxy,
  Manager,
  type QueueProxy,
  serve,
} from "../patterns/server_process.ts";
import type { CompareSection, PythonRunner, Row } from "./_compare_util.ts";

/**
 * Dict set/get from a worker through an embedded manager.
 *
 * @param n Set+get pairs to time.
 * @returns Operations per second (a set and a get count as two).
 */
export async function localDict(n: number): Promise<number> {
  await using m = await Manager.start();
  const d = await m.dict<string, number>();
  const p = new Process({
    name: "dict-client",
    target: async (d: DictProxy<string, number>, n: number) => {
      for (let i = 0; i < 1000; i++) {
        await d.set("k", i);
        await d.get("k");
      }
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        await d.set("k", i);
        await d.get("k");
      }
      await d.set("ms", performance.now() - t0);
    },
    args: [d, n],
  });
  p.start();
  await p.join();
  return (2 * n) / ((await d.get("ms"))! / 1000);
}

/**
 * Lock acquire+release from a worker through an embedded manager.
 *
 * @param n Pairs to time.
 * @returns Microseconds per pair.
 */
export async function lockPair(n: number): Promise<number> {
  await using m = await Manager.start();
  const lock = await m.lock();
  const d = await m.dict<string, number>();
  const p = new Process({
    name: "lock-client",
    target: async (
      lock: LockProxy,
      d: DictProxy<string, number>,
      n: number,
    ) => {
      for (let i = 0; i < 1000; i++) {
        await lock.acquire();
        await lock.release();
      }
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        await lock.acquire();
        await lock.release();
      }
      await d.set("ms", performance.now() - t0);
    },
    args: [lock, d, n],
  });
  p.start();
  await p.join();
  return (await d.get("ms"))! * 1000 / n;
}

/**
 * A producer and a consumer worker through a manager Queue.
 *
 * @param n Items.
 * @returns Items per second.
 */
export async function queueThroughput(n: number): Promise<number> {
  await using m = await Manager.start();
  const q = await m.queue<number>();
  const go = await m.event();
  const d = await m.dict<string, number>();
  const producer = new Process({
    name: "producer",
    target: async (q: QueueProxy<number>, go: EventProxy, n: number) => {
      await go.wait();
      for (let i = 0; i < n; i++) await q.put(i);
    },
    args: [q, go, n],
  });
  const consumer = new Process({
    name: "consumer",
    target: async (
      q: QueueProxy<number>,
      go: EventProxy,
      d: DictProxy<string, number>,
      n: number,
    ) => {
      await d.set("ready", 1);
      await go.wait();
      for (let i = 0; i < n; i++) await q.get();
      await d.set("end", performance.timeOrigin + performance.now());
    },
    args: [q, go, d, n],
  });
  producer.start();
  consumer.start();
  while ((await d.get("ready")) !== 1) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const t0 = performance.timeOrigin + performance.now();
  await go.set();
  await Promise.all([producer.join(), consumer.join()]);
  return n / (((await d.get("end"))! - t0) / 1000);
}

/** What {@linkcode remote} measures. */
export interface RemoteFigures {
  /** Dict operations per second over TCP. */
  opsPerSecond: number;
  /** `Manager.connect` + `dict()` + one `set`, in ms. */
  connectMs: number;
}

/**
 * A worker connected over TCP to `serve()` in the main thread.
 *
 * @param n Set+get pairs to time.
 * @returns The figures.
 */
export async function remote(n: number): Promise<RemoteFigures> {
  const authkey = "bench-key";
  await using server = await serve({ port: 0, authkey });
  const out = new Float64Array(new SharedArrayBuffer(16));
  const p = new Process({
    name: "remote-client",
    target: async (
      url: string,
      port: number,
      authkey: string,
      n: number,
      out: Float64Array,
    ) => {
      const { Manager } = await import(url);
      const t0 = performance.now();
      await using m = await Manager.connect({ port, authkey });
      const d = await m.dict();
      await d.set("k", 0);
      out[1] = performance.now() - t0;
      for (let i = 0; i < 1000; i++) {
        await d.set("k", i);
        await d.get("k");
      }
      const t1 = performance.now();
      for (let i = 0; i < n; i++) {
        await d.set("k", i);
        await d.get("k");
      }
      out[0] = performance.now() - t1;
    },
    args: [
      new URL("../patterns/server_process.ts", import.meta.url).href,
      server.addr.port,
      authkey,
      n,
      out,
    ],
  });
  p.start();
  await p.join();
  return { opsPerSecond: (2 * n) / (out[0]! / 1000), connectMs: out[1]! };
}

/** How many callers {@linkcode remoteConcurrent} runs at once. */
export const CALLERS = 8;

/**
 * A worker connected over TCP to `serve()` in the main thread, with
 * `callers` async loops in flight at once on its one connection.
 *
 * @param callers How many loops run at once.
 * @param n Set+get pairs to time, in all (split evenly between callers).
 * @returns Operations per second (a set and a get count as two).
 */
export async function remoteConcurrent(
  callers: number,
  n: number,
): Promise<number> {
  const authkey = "bench-key";
  await using server = await serve({ port: 0, authkey });
  const out = new Float64Array(new SharedArrayBuffer(8));
  const per = Math.floor(n / callers);
  const p = new Process({
    name: "remote-callers",
    target: async (
      url: string,
      port: number,
      authkey: string,
      callers: number,
      per: number,
      out: Float64Array,
    ) => {
      const { Manager } = await import(url);
      await using m = await Manager.connect({ port, authkey });
      const d = await m.dict();
      const loop = async (key: string, pairs: number) => {
        for (let i = 0; i < pairs; i++) {
          await d.set(key, i);
          await d.get(key);
        }
      };
      const keys = Array.from({ length: callers }, (_, c) => `k${c}`);
      await Promise.all(keys.map((k) => loop(k, 200)));
      const t0 = performance.now();
      await Promise.all(keys.map((k) => loop(k, per)));
      out[0] = performance.now() - t0;
    },
    args: [
      new URL("../patterns/server_process.ts", import.meta.url).href,
      server.addr.port,
      authkey,
      callers,
      per,
      out,
    ],
  });
  p.start();
  await p.join();
  return (2 * per * callers) / (out[0]! / 1000);
}

/** The Manager rows of the comparison. */
export const section: CompareSection = {
  title: "Manager (server_process.ts)",
  async run(python: PythonRunner | null): Promise<Row[]> {
    const n = 10_000;
    const py = python
      ? await python("manager.py", [String(n), String(CALLERS)])
      : null;
    const dict = await localDict(n);
    const lock = await lockPair(n);
    const queue = await queueThroughput(n);
    const r = await remote(n);
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await remoteConcurrent(CALLERS, n));
    const concurrent = runs.sort((a, b) => a - b)[1]!;
    return [
      {
        workload: "dict set/get from a worker (local manager)",
        unit: "ops/s",
        ours: dict,
        python: py?.dict_ops_s ?? null,
        higherIsBetter: true,
        target: "≥ 4× Python",
      },
      {
        workload: "Lock acquire+release through the manager",
        unit: "µs",
        ours: lock,
        python: py?.lock_pair_us ?? null,
        higherIsBetter: false,
      },
      {
        workload: "Manager Queue, 1 producer → 1 consumer",
        unit: "items/s",
        ours: queue,
        python: py?.queue_items_s ?? null,
        higherIsBetter: true,
      },
      {
        workload: "remote dict set/get over 127.0.0.1",
        unit: "ops/s",
        ours: r.opsPerSecond,
        python: py?.remote_ops_s ?? null,
        higherIsBetter: true,
        target: "≥ 1× Python",
      },
      {
        workload:
          `remote dict set/get, ${CALLERS} concurrent callers (Python: ${CALLERS} threads)`,
        unit: "ops/s",
        ours: concurrent,
        python: py?.remote_threads_ops_s ?? null,
        higherIsBetter: true,
        target: "≥ 6× Python",
      },
      {
        workload: "remote connect + first operation",
        unit: "ms",
        ours: r.connectMs,
        python: py?.connect_ms ?? null,
        higherIsBetter: false,
        target: "≤ 10 ms",
      },
    ];
  },
};

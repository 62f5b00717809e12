/**
 * The comparison section for `Pipe` and `Queue` (`deno task bench:compare`),
 * and the workloads `bench/channels_bench.ts` reuses. Every workload runs in
 * workers started with `Process` and is timed from a "go" signal given
 * after the workers are up, so worker start-up is not counted (Python's side,
 * `bench/py/channels.py`, does the same with its processes).
 *
 * - pipe round trip: the main thread sends a small int, a worker echoes it
 *   (`recvSync` + `send`), the main thread awaits it (`recv`). Python:
 *   parent ↔ child over a `Pipe`.
 * - 1 KiB one-way: a worker `sendBytes` 1 KiB messages, the main thread
 *   awaits `recvBytes` (`pipeBytes` can also time a worker receiving with
 *   `recvBytesSync`; it is slower here). Python: child `send_bytes`, parent
 *   `recv_bytes`.
 * - 64 MiB one-way: the same with 64 MiB messages, each larger than the
 *   pipe's 256 KiB ring and so streamed through it in pieces; MB/s.
 *   Python: child `send_bytes`, parent `recv_bytes` of 64 MiB.
 * - Queue P/C: P producer workers put `N / P` items each, C consumer workers
 *   `getSync` until a sentinel; timed until every consumer is done.
 *
 * @module
 */

import { Process } from "../patterns/cube.ts";
import { Pipe } from "../patterns/pipe.ts";
import { Queue } from "../patterns/queue.ts";
import { waitAsync } from "../patterns/_core/wait.ts";
import type { CompareSection, PythonRunner, Row } from "./_compare_util.ts";

/** Waits until `word[0]` reaches `target`. */
async function waitFor(word: Int32Array, target: number): Promise<void> {
  for (;;) {
    const v = Atomics.load(word, 0);
    if (v >= target) return;
    await waitAsync(word, 0, v, { timeout: 1000 });
  }
}

/**
 * Pipe ping-pong between the main thread and a worker.
 *
 * @param trips Round trips to time (after 1 000 warm-up trips).
 * @returns Microseconds per round trip.
 */
export async function pipeRoundTrip(trips: number): Promise<number> {
  const [here, there] = Pipe();
  const warm = 1000;
  const p = new Process({
    name: "echo",
    target: (conn: ReturnType<typeof Pipe>[0], n: number) => {
      for (let i = 0; i < n; i++) conn.send(conn.recvSync());
    },
    args: [there, warm + trips],
  });
  p.start();
  for (let i = 0; i < warm; i++) {
    here.send(i);
    await here.recv();
  }
  const t0 = performance.now();
  for (let i = 0; i < trips; i++) {
    here.send(i);
    if (await here.recv() !== i) throw new Error(`echo lost ${i}`);
  }
  const us = (performance.now() - t0) * 1000 / trips;
  await p.join();
  here.close();
  return us;
}

/**
 * One-way 1 KiB `sendBytes` from a worker to the main thread (`recvBytes`)
 * or to another worker (`recvBytesSync`).
 *
 * @param count Messages.
 * @param size Bytes per message.
 * @param receiver Which thread receives.
 * @returns Messages per second.
 */
export async function pipeBytes(
  count: number,
  size = 1024,
  receiver: "main" | "worker" = "main",
): Promise<number> {
  const [here, there] = Pipe(false);
  const p = new Process({
    name: "bytes-sender",
    target: (conn: ReturnType<typeof Pipe>[1], n: number, size: number) => {
      const b = new Uint8Array(size).fill(7);
      conn.send("ready");
      for (let i = 0; i < n; i++) conn.sendBytes(b);
    },
    args: [there, count, size],
  });
  if (receiver === "worker") {
    const result = Pipe(false);
    const r = new Process({
      name: "bytes-receiver",
      target: (
        conn: ReturnType<typeof Pipe>[0],
        out: ReturnType<typeof Pipe>[1],
        n: number,
      ) => {
        conn.recvSync();
        const t0 = performance.now();
        let bytes = 0;
        for (let i = 0; i < n; i++) bytes += conn.recvBytesSync().length;
        out.send([performance.now() - t0, bytes]);
      },
      args: [here, result[1], count],
    });
    r.start();
    p.start();
    const [dt, bytes] = await result[0].recv() as [number, number];
    if (bytes !== count * size) throw new Error(`got ${bytes} bytes`);
    await p.join();
    await r.join();
    result[0].close();
    return count / dt * 1000;
  }
  p.start();
  await here.recv();
  const t0 = performance.now();
  let bytes = 0;
  for (let i = 0; i < count; i++) bytes += (await here.recvBytes()).length;
  const dt = performance.now() - t0;
  if (bytes !== count * size) throw new Error(`got ${bytes} bytes`);
  await p.join();
  here.close();
  return count / dt * 1000;
}

/**
 * Queue throughput with producer and consumer workers.
 *
 * @param items Items in all.
 * @param producers Producer workers.
 * @param consumers Consumer workers.
 * @param kind `"int"` (small ints) or `"str"` (1 KiB strings).
 * @returns Items per second.
 */
export async function queueThroughput(
  items: number,
  producers: number,
  consumers: number,
  kind: "int" | "str",
): Promise<number> {
  const q = new Queue<number | string>();
  // [0] ready, [1] go, [2] producers done, [3] consumers done, [4..] counts
  const ctl = new Int32Array(new SharedArrayBuffer(64 + 4 * consumers));
  const ready = ctl.subarray(0, 1);
  const done = ctl.subarray(3, 4);
  const per = Math.floor(items / producers);
  const procs: Process[] = [];
  for (let i = 0; i < producers; i++) {
    procs.push(
      new Process({
        name: `producer-${i}`,
        target: (
          q: Queue<number | string>,
          ctl: Int32Array,
          n: number,
          kind: string,
          consumers: number,
          producers: number,
        ) => {
          const s = "x".repeat(1024);
          Atomics.add(ctl, 0, 1);
          Atomics.notify(ctl, 0);
          while (Atomics.load(ctl, 1) === 0) Atomics.wait(ctl, 1, 0, 50);
          if (kind === "int") {
            for (let i = 0; i < n; i++) q.putSync(i & 0xffff);
          } else {
            for (let i = 0; i < n; i++) q.putSync(s);
          }
          if (Atomics.add(ctl, 2, 1) === producers - 1) {
            for (let c = 0; c < consumers; c++) q.putSync(-1);
          }
        },
        args: [q, ctl, per, kind, consumers, producers],
      }),
    );
  }
  for (let i = 0; i < consumers; i++) {
    procs.push(
      new Process({
        name: `consumer-${i}`,
        target: (q: Queue<number | string>, ctl: Int32Array, me: number) => {
          Atomics.add(ctl, 0, 1);
          Atomics.notify(ctl, 0);
          while (Atomics.load(ctl, 1) === 0) Atomics.wait(ctl, 1, 0, 50);
          let n = 0;
          while (q.getSync() !== -1) n++;
          ctl[4 + me] = n;
          Atomics.add(ctl, 3, 1);
          Atomics.notify(ctl, 3);
        },
        args: [q, ctl, i],
      }),
    );
  }
  for (const p of procs) p.start();
  await waitFor(ready, producers + consumers);
  const t0 = performance.now();
  Atomics.store(ctl, 1, 1);
  Atomics.notify(ctl, 1);
  await waitFor(done, consumers);
  const dt = performance.now() - t0;
  for (const p of procs) await p.join();
  q.close();
  let got = 0;
  for (let i = 0; i < consumers; i++) got += ctl[4 + i]!;
  if (got !== per * producers) {
    throw new Error(`consumers got ${got} items of ${per * producers}`);
  }
  return got / dt * 1000;
}

/** Pipe and Queue next to Python's `Pipe` and `Queue`. */
export const section: CompareSection = {
  title: "Pipe and Queue (pipe.ts, queue.ts)",
  async run(python: PythonRunner | null): Promise<Row[]> {
    const py = python ? await python("channels.py") : null;
    const trips = 100_000;
    const rt = await pipeRoundTrip(trips);
    // Steady state, as Python's side: the median of 3 after a warm-up run.
    await pipeBytes(100_000, 1024, "main");
    const bytesRuns: number[] = [];
    for (let i = 0; i < 3; i++) {
      bytesRuns.push(await pipeBytes(100_000, 1024, "main"));
    }
    const bytes = bytesRuns.sort((a, b) => a - b)[1]!;
    // 64 MiB messages, streamed: the median of 3 after a warm-up run.
    const large = 64 * 1024 * 1024;
    await pipeBytes(4, large, "main");
    const largeRuns: number[] = [];
    for (let i = 0; i < 3; i++) {
      largeRuns.push(await pipeBytes(4, large, "main") * large / 1e6);
    }
    const largeMBs = largeRuns.sort((a, b) => a - b)[1]!;
    const q = [
      await queueThroughput(200_000, 1, 1, "int"),
      await queueThroughput(200_000, 2, 2, "int"),
      await queueThroughput(200_000, 1, 1, "str"),
      await queueThroughput(200_000, 2, 2, "str"),
    ];
    return [
      {
        workload:
          "Pipe round trip, small int, 100 000 trips (main ↔ worker; Python parent ↔ child)",
        unit: "µs",
        ours: rt,
        python: py?.pipe_rtt_us ?? null,
        higherIsBetter: false,
        target: "≤ 1/4 of Python",
      },
      {
        workload:
          "Pipe one-way 1 KiB sendBytes (worker → main thread, await recvBytes; Python child → parent)",
        unit: "msg/s",
        ours: bytes,
        python: py?.pipe_bytes_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 3× Python",
      },
      {
        workload:
          "Pipe one-way 64 MiB sendBytes (worker → main thread, streamed through the default 256 KiB ring; Python child → parent)",
        unit: "MB/s",
        ours: largeMBs,
        python: py?.pipe_large_mb_per_s ?? null,
        higherIsBetter: true,
        target: "≥ 1× Python",
      },
      {
        workload: "Queue 200 000 small ints, 1 producer / 1 consumer",
        unit: "items/s",
        ours: q[0]!,
        python: py?.queue_int_1_1 ?? null,
        higherIsBetter: true,
        target: "≥ 10× Python",
      },
      {
        workload: "Queue 200 000 small ints, 2 producers / 2 consumers",
        unit: "items/s",
        ours: q[1]!,
        python: py?.queue_int_2_2 ?? null,
        higherIsBetter: true,
        target: "≥ 5× Python",
      },
      {
        workload: "Queue 200 000 1 KiB strings, 1 producer / 1 consumer",
        unit: "items/s",
        ours: q[2]!,
        python: py?.queue_str_1_1 ?? null,
        higherIsBetter: true,
      },
      {
        workload: "Queue 200 000 1 KiB strings, 2 producers / 2 consumers",
        unit: "items/s",
        ours: q[3]!,
        python: py?.queue_str_2_2 ?? null,
        higherIsBetter: true,
      },
    ];
  },
};

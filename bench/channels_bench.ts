/**
 * `deno bench` for `Pipe` and `Queue`, each next to the `postMessage`
 * baseline it replaces (a plain worker from a blob URL, one message per
 * item). Every iteration starts its worker, so both sides pay one spawn.
 *
 * @module
 */

import { Process } from "../patterns/cube.ts";
import { Queue } from "../patterns/queue.ts";
import { pipeBytes, pipeRoundTrip } from "./compare_channels.ts";

/** Runs `fn` with a plain worker whose body is `source`. */
async function withBlobWorker(
  source: string,
  fn: (w: Worker) => Promise<void>,
): Promise<void> {
  const url = URL.createObjectURL(
    new Blob([source], { type: "application/javascript" }),
  );
  const w = new Worker(url, { type: "module" });
  try {
    await fn(w);
  } finally {
    w.terminate();
    URL.revokeObjectURL(url);
  }
}

/** Resolves with the next message of `w`. */
function nextMessage(w: Worker): Promise<unknown> {
  return new Promise((resolve) => {
    w.onmessage = (e) => resolve(e.data);
  });
}

const TRIPS = 10_000;
const ITEMS = 100_000;
const BYTES = 20_000;

Deno.bench({
  group: "round trip",
  name: `postMessage echo, ${TRIPS} trips`,
  baseline: true,
  n: 5,
  async fn() {
    await withBlobWorker(
      "onmessage = (e) => postMessage(e.data);",
      async (w) => {
        for (let i = 0; i < TRIPS; i++) {
          const reply = nextMessage(w);
          w.postMessage(i);
          await reply;
        }
      },
    );
  },
});

Deno.bench({
  group: "round trip",
  name: `Pipe echo, ${TRIPS} trips`,
  n: 5,
  async fn() {
    await pipeRoundTrip(TRIPS);
  },
});

Deno.bench({
  group: "1 KiB one-way",
  name: `postMessage of 1 KiB, ${BYTES} messages`,
  baseline: true,
  n: 5,
  async fn() {
    await withBlobWorker(
      `onmessage = (e) => { const b = new Uint8Array(1024);
        for (let i = 0; i < e.data; i++) postMessage(b); };`,
      (w) =>
        new Promise((resolve) => {
          let n = 0;
          w.onmessage = () => {
            if (++n === BYTES) resolve();
          };
          w.postMessage(BYTES);
        }),
    );
  },
});

Deno.bench({
  group: "1 KiB one-way",
  name: `Pipe sendBytes of 1 KiB, ${BYTES} messages`,
  n: 5,
  async fn() {
    await pipeBytes(BYTES);
  },
});

Deno.bench({
  group: "items worker → main",
  name: `postMessage per int, ${ITEMS} items`,
  baseline: true,
  n: 5,
  async fn() {
    await withBlobWorker(
      "onmessage = (e) => { for (let i = 0; i < e.data; i++) postMessage(i); };",
      (w) =>
        new Promise((resolve) => {
          let n = 0;
          w.onmessage = () => {
            if (++n === ITEMS) resolve();
          };
          w.postMessage(ITEMS);
        }),
    );
  },
});

Deno.bench({
  group: "items worker → main",
  name: `Queue put/get per int, ${ITEMS} items`,
  n: 5,
  async fn() {
    const q = new Queue<number>();
    const p = new Process({
      target: (q: Queue<number>, n: number) => {
        for (let i = 0; i < n; i++) q.putSync(i);
      },
      args: [q, ITEMS],
    });
    p.start();
    for (let i = 0; i < ITEMS; i++) await q.get();
    await p.join();
    q.close();
  },
});

/**
 * `transfer()`: a buffer moved into a task (the sender's is detached, the
 * task sees the bytes) and out of one, and never handed to a busy worker.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { Pool, transfer } from "../patterns/cube.ts";
import { mpTest, range } from "./_helpers.ts";

Deno.test.sanitizer?.({ ops: true, resources: true });

const CUBE = new URL("../patterns/cube.ts", import.meta.url).href;

mpTest("transfer() moves a buffer into a task and back", async () => {
  await using pool = new Pool({ workers: 2 });
  const bytes = new Uint8Array(1 << 20);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i & 0xff;
  const sum = await pool.apply(
    (b: Uint8Array) => b.reduce((a, x) => a + x, 0),
    [transfer(bytes)],
  );
  assert.equal(sum, (1 << 20) / 256 * (255 * 256 / 2));
  assert.equal(bytes.byteLength, 0, "the sender's buffer is detached");
  // An ArrayBuffer, in a map, and a result moved back out of the task.
  const buffers = range(4).map((i) => new Uint8Array(16).fill(i).buffer);
  const back = await pool.starmap(
    async (b: ArrayBuffer, url: string) => {
      const { transfer } = await import(url);
      return transfer(new Uint8Array(b).map((x) => x + 1));
    },
    buffers.map((b) => [transfer(b), CUBE] as [ArrayBuffer, string]),
  ) as Uint8Array[];
  assert.deepEqual(back.map((b) => b[0]), [1, 2, 3, 4]);
  assert.ok(buffers.every((b) => b.byteLength === 0));
  assert.throws(() => transfer(42 as unknown as ArrayBuffer), TypeError);
});

mpTest("a job with a transferred buffer waits for an idle worker", async () => {
  const pool = new Pool({ workers: 2 });
  try {
    await pool.map((x: number) => x, range(4));
    // Worker 1 busy for 2 s, worker 2 for 200 ms. Handed ahead, the job
    // would sit behind the 2 s task (it cannot be taken back); it must wait
    // for the first idle worker instead.
    const slow = [2_000, 200].map((ms) =>
      pool.apply(
        (ms: number) => new Promise((r) => setTimeout(r, ms)),
        [ms],
      )
    );
    for (const p of slow) p.catch(() => {});
    const buf = new Uint8Array(8).fill(7);
    const t0 = performance.now();
    const got = await pool.apply(
      (b: Uint8Array) => b[0]! + b.length,
      [transfer(buf)],
    );
    const ms = performance.now() - t0;
    assert.equal(got, 15);
    assert.ok(ms < 1_500, `waited behind the busy worker (${ms} ms)`);
  } finally {
    pool.terminate();
  }
});

mpTest(
  "a large result (20 MB) and a large argument come back whole",
  async () => {
    await using pool = new Pool({ workers: 1 });
    const r = await pool.apply((n: number) => {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = i % 251;
      return out;
    }, [20_000_000]) as Uint8Array;
    assert.equal(r.length, 20_000_000);
    assert.ok(r.every((x, i) => x === i % 251));
    const sum = await pool.apply(
      (u: Uint8Array) => u.reduce((a, x) => a + x, 0),
      [r],
    );
    assert.equal(sum, r.reduce((a, x) => a + x, 0));
  },
);

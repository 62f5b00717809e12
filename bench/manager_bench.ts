/**
 * `deno bench` for the Manager: each group times one operation done through
 * the embedded manager (a worker owns the object) next to a baseline in the
 * same run. Each bench iteration starts its own manager and times 2 000
 * operations between `b.start()` and `b.end()`.
 *
 * - "round trip to a worker": a dict `set` through the manager (shared-memory
 *   rings) vs a `Pool.apply` of an identity task (one `postMessage` each way),
 *   the obvious alternative for talking to another thread.
 * - "lock": manager Lock acquire+release vs the same dict `set`.
 *
 * @module
 */

import { Pool } from "../patterns/cube.ts";
import { Manager } from "../patterns/server_process.ts";

const OPS = 2000;

/** Times `OPS` dict `set` calls through a fresh embedded manager. */
async function dictSets(b: Deno.BenchContext): Promise<void> {
  await using m = await Manager.start();
  const d = await m.dict<string, number>();
  await d.set("k", 0);
  b.start();
  for (let i = 0; i < OPS; i++) await d.set("k", i);
  b.end();
}

Deno.bench({
  group: "round trip to a worker",
  name: "Pool.apply identity (postMessage)",
  baseline: true,
  n: 5,
  warmup: 1,
  async fn(b) {
    await using pool = new Pool({ workers: 1 });
    await pool.apply((x: number) => x, [0]);
    b.start();
    for (let i = 0; i < OPS; i++) await pool.apply((x: number) => x, [i]);
    b.end();
  },
});

Deno.bench({
  group: "round trip to a worker",
  name: "manager dict set (embedded)",
  n: 5,
  warmup: 1,
  fn: dictSets,
});

Deno.bench({
  group: "lock",
  name: "manager dict set (embedded)",
  baseline: true,
  n: 5,
  warmup: 1,
  fn: dictSets,
});

Deno.bench({
  group: "lock",
  name: "manager Lock acquire+release (embedded)",
  n: 5,
  warmup: 1,
  async fn(b) {
    await using m = await Manager.start();
    const lock = await m.lock();
    b.start();
    for (let i = 0; i < OPS; i++) {
      await lock.acquire();
      await lock.release();
    }
    b.end();
  },
});

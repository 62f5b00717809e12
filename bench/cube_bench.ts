/**
 * `deno bench` for Pool: each group compares against a baseline measured in
 * the same run.
 *
 * - `heavy`: 64 CPU-heavy tasks serially (baseline) and through Pool(2).
 * - `dispatch`: 20 000 trivial tasks through `imapUnordered` with
 *   chunksize 1 (baseline) and with the default chunking.
 * - `move`: a 50 MB `Uint8Array` into a task, copied (baseline) and moved
 *   with `transfer()`.
 *
 * @module
 */

import { Pool, transfer } from "../patterns/cube.ts";
import { dispatchRate, heavy } from "./compare_cube.ts";

const items = Array.from({ length: 64 }, (_, i) => i);

Deno.bench({
  name: "64 heavy tasks, serial",
  group: "heavy",
  baseline: true,
  n: 5,
  warmup: 1,
  fn() {
    items.map(heavy);
  },
});

Deno.bench({
  name: "64 heavy tasks, Pool(2).map",
  group: "heavy",
  n: 5,
  warmup: 1,
  async fn(b) {
    await using pool = new Pool({ workers: 2 });
    await pool.apply(() => 0);
    b.start();
    await pool.map(heavy, items, { chunksize: 1 });
    b.end();
  },
});

for (
  const [name, chunksize] of [["chunksize 1", 1], [
    "default chunking",
    undefined,
  ]] as const
) {
  Deno.bench({
    name: `20 000 x**3 via imapUnordered, ${name}`,
    group: "dispatch",
    baseline: chunksize === 1,
    n: 10,
    warmup: 2,
    async fn(b) {
      await using pool = new Pool({ workers: 2 });
      await pool.apply(() => 0);
      b.start();
      await dispatchRate(pool, 20_000, chunksize);
      b.end();
    },
  });
}

for (const moved of [false, true]) {
  Deno.bench({
    name: `50 MB Uint8Array into a task, ${moved ? "transfer()" : "copied"}`,
    group: "move",
    baseline: !moved,
    n: 10,
    warmup: 2,
    async fn(b) {
      await using pool = new Pool({ workers: 1 });
      await pool.apply(() => 0);
      const bytes = new Uint8Array(50_000_000);
      b.start();
      await pool.apply((u: Uint8Array) => u.length, [
        moved ? transfer(bytes) : bytes,
      ]);
      b.end();
    },
  });
}

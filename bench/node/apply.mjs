// The piscina baseline of the Pool comparison (bench/compare_cube.ts):
// one `pool.run(i)` round trip at a time through a 2-thread pool, measured
// as ours and Python's `apply`: 200 warm-up calls, then 3 rounds of 2000
// sequential calls; the median round.
//
// Needs `npm install` in this folder. Prints one JSON object:
//   run_us   microseconds per call
//   node     the Node.js version
//   piscina  the piscina version
import { createRequire } from "node:module";

// Required, not imported: `deno check bench/` resolves static imports, and
// piscina is not a dependency of the Deno project.
const { Piscina } = createRequire(import.meta.url)("piscina");

const calls = 2000;
const pool = new Piscina({
  filename: new URL("./echo.mjs", import.meta.url).href,
  minThreads: 2,
  maxThreads: 2,
});
for (let i = 0; i < 200; i++) await pool.run(i);
const rounds = [];
for (let r = 0; r < 3; r++) {
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    if ((await pool.run(i)) !== i) throw new Error(`wrong result for ${i}`);
  }
  rounds.push((performance.now() - t0) / calls * 1000);
}
rounds.sort((a, b) => a - b);
await pool.close();
console.log(JSON.stringify({
  run_us: rounds[1],
  node: process.versions.node,
  piscina: Piscina.version,
}));

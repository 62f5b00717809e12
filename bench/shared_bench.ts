/**
 * `deno bench` for `Value`, `SharedArray` and the locks, each next to the
 * raw `Atomics` / typed-array code it wraps (the baseline), in one thread;
 * plus the two-worker increment workloads of `compare_shared.ts`.
 *
 * @module
 */

import { Lock, RLock } from "../patterns/sync.ts";
import { RawValue, Value } from "../patterns/value.ts";
import { SharedArray } from "../patterns/array.ts";
import { runShared } from "./compare_shared.ts";

const OPS = 10_000;

const word = new Int32Array(new SharedArrayBuffer(8));
const value = new Value("i", 0);
const raw = new RawValue("i", 0);

Deno.bench({
  group: "increment",
  name: "Atomics.add on a shared Int32Array",
  baseline: true,
  fn() {
    for (let k = 0; k < OPS; k++) Atomics.add(word, 0, 1);
  },
});
Deno.bench({
  group: "increment",
  name: "Value.add(1)",
  fn() {
    for (let k = 0; k < OPS; k++) value.add(1);
  },
});
Deno.bench({
  group: "increment",
  name: "RawValue value += 1",
  fn() {
    for (let k = 0; k < OPS; k++) raw.value += 1;
  },
});
Deno.bench({
  group: "increment",
  name: "Value value += 1 under getLock() (RLock)",
  fn() {
    const l = value.getLock();
    for (let k = 0; k < OPS; k++) {
      l.acquireSync();
      value.value += 1;
      l.release();
    }
  },
});

const lock = new Lock();
const rlock = new RLock();

Deno.bench({
  group: "acquire/release",
  name: "raw compareExchange + store",
  baseline: true,
  fn() {
    for (let k = 0; k < OPS; k++) {
      Atomics.compareExchange(word, 1, 0, 1);
      Atomics.store(word, 1, 0);
    }
  },
});
Deno.bench({
  group: "acquire/release",
  name: "Lock acquireSync + release",
  fn() {
    for (let k = 0; k < OPS; k++) {
      lock.acquireSync();
      lock.release();
    }
  },
});
Deno.bench({
  group: "acquire/release",
  name: "RLock acquireSync + release",
  fn() {
    for (let k = 0; k < OPS; k++) {
      rlock.acquireSync();
      rlock.release();
    }
  },
});
Deno.bench({
  group: "acquire/release",
  name: "Lock await acquire + release",
  async fn() {
    for (let k = 0; k < OPS; k++) {
      await lock.acquire();
      lock.release();
    }
  },
});

const N = 100_000;
const plain = new Float64Array(N);
const shared = new SharedArray("d", N);

Deno.bench({
  group: "array +1.0",
  name: "plain Float64Array loop",
  baseline: true,
  fn() {
    for (let i = 0; i < N; i++) plain[i]! += 1;
  },
});
Deno.bench({
  group: "array +1.0",
  name: "SharedArray view loop",
  fn() {
    const v = shared.view;
    for (let i = 0; i < N; i++) v[i]! += 1;
  },
});
Deno.bench({
  group: "array +1.0",
  name: "SharedArray get/set loop",
  fn() {
    for (let i = 0; i < N; i++) shared.set(i, shared.get(i) + 1);
  },
});

Deno.bench({
  group: "2 workers",
  name: "2 × 50 000 add(1)",
  baseline: true,
  n: 5,
  async fn() {
    await runShared("add", 50_000);
  },
});
Deno.bench({
  group: "2 workers",
  name: "2 × 50 000 locked value += 1",
  n: 5,
  async fn() {
    await runShared("locked", 50_000);
  },
});

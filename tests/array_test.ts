import { strict as assert } from "node:assert";
import { RawArray, SharedArray } from "../patterns/array.ts";
import type { Typecode } from "../patterns/value.ts";
import { Barrier, Lock, RLock } from "../patterns/sync.ts";
import { Pool, Process } from "../patterns/cube.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

// -- Construction and access --

mpTest("SharedArray of a size is zero-filled; of values holds them", () => {
  const a = new SharedArray("i", 3);
  assert.equal(a.length, 3);
  assert.deepEqual(a.toArray(), [0, 0, 0]);
  const b = new SharedArray("d", [0.5, 1.5, 2.5]);
  assert.deepEqual([...b], [0.5, 1.5, 2.5]);
  const c = new RawArray("uint8", new Set([1, 2]));
  assert.equal(c.typecode, "B");
  assert.deepEqual(c.toArray(), [1, 2]);
  assert.equal(new RawArray("i", 0).length, 0);
  assert.deepEqual(new RawArray("i", []).toArray(), []);
});

mpTest("get/set check the index; negative indices count from the end", () => {
  const a = new SharedArray("h", [1, 2, 3]);
  assert.equal(a.get(-1), 3);
  a.set(-3, 7);
  assert.equal(a.get(0), 7);
  assert.throws(() => a.get(3), RangeError);
  assert.throws(() => a.get(-4), RangeError);
  assert.throws(
    () => a.set(3, 1),
    /index 3 is out of range for an array of length 3/,
  );
  assert.throws(() => a.set(-4, 1), RangeError);
  assert.throws(() => a.get(1.5), TypeError);
  assert.throws(() => a.get("1" as unknown as number), TypeError);
  assert.throws(() => a.get(NaN), TypeError);
  assert.throws(() => new RawArray("i", 0).get(0), RangeError);
});

mpTest("values that do not fit the typecode are refused with TypeError", () => {
  const b = new SharedArray("B", 2);
  assert.throws(() => b.set(0, 300), TypeError);
  assert.throws(() => b.set(0, -1), TypeError);
  const i = new SharedArray("i", 2);
  assert.throws(() => i.set(0, 1.5), /integer from/);
  assert.throws(() => i.set(0, 1n as unknown as number), TypeError);
  const q = new SharedArray("q", 2);
  assert.throws(() => q.set(0, 1 as unknown as bigint), /write 1n/);
  assert.throws(() => new SharedArray("B", [1, 300]), /item 1/);
  assert.throws(
    () => new SharedArray("q", [1, 2] as unknown as bigint[]),
    TypeError,
  );
  const d = new SharedArray("d", 1);
  assert.throws(() => d.set(0, "x" as unknown as number), TypeError);
  assert.deepEqual(b.toArray(), [0, 0]);
});

mpTest("bad sizes, typecodes and lock options are refused", () => {
  assert.throws(() => new SharedArray("i", -1), RangeError);
  assert.throws(() => new SharedArray("i", 1.5), RangeError);
  assert.throws(
    () => new SharedArray("i", "3" as unknown as number),
    TypeError,
  );
  assert.throws(
    () => new SharedArray("z" as Typecode, 3),
    (e: unknown) =>
      e instanceof TypeError &&
      e.message.includes("b, B, h, H, i, I, l, L, q, Q, f, d"),
  );
  assert.throws(
    () => new SharedArray("i", 3, { lock: 1 as unknown as Lock }),
    /lock must be/,
  );
});

mpTest("bigint typecodes hold bigints", () => {
  const a = new SharedArray("Q", [2n ** 64n - 1n, 0n]);
  assert.deepEqual(a.toArray(), [2n ** 64n - 1n, 0n]);
  a.set(1, 5n);
  assert.equal(a.get(1), 5n);
  assert.ok(a.view instanceof BigUint64Array);
  const l = new RawArray("l", 2);
  assert.deepEqual([...l], [0n, 0n]);
  l.set(0, -(2n ** 63n));
  assert.throws(() => l.set(0, 2n ** 63n), TypeError);
  assert.ok(new RawArray("int64", 1).view instanceof BigInt64Array);
});

mpTest("view is the live typed array over the same memory", () => {
  const a = new SharedArray("f", 3);
  assert.ok(a.view instanceof Float32Array);
  a.view[1] = 2.5;
  assert.equal(a.get(1), 2.5);
  a.set(2, 4);
  assert.equal(a.view[2], 4);
  assert.equal(a.view, a.view);
  assert.ok(a.view.buffer instanceof SharedArrayBuffer);
});

mpTest(
  "getLock(): an RLock by default, the given lock, none with lock: false",
  () => {
    assert.ok(new SharedArray("i", 1).getLock() instanceof RLock);
    const lock = new Lock();
    assert.equal(new SharedArray("i", 1, { lock }).getLock(), lock);
    assert.throws(
      () => new SharedArray("i", 1, { lock: false }).getLock(),
      TypeError,
    );
    assert.equal("getLock" in new RawArray("i", 1), false);
  },
);

// -- Workers --

mpTest("a process adds 1 to every element (the demo)", async () => {
  const a = new SharedArray("i", 3);
  const p = new Process({
    target: (a: SharedArray<"i">) => {
      using _ = a.getLock().holdSync();
      for (let i = 0; i < a.length; i++) a.set(i, a.get(i) + 1);
    },
    args: [a],
  });
  p.start();
  assert.equal(await p.join(), 0);
  assert.deepEqual(a.toArray(), [1, 1, 1]);
});

mpTest(
  "two workers add 1.0 to halves of a SharedArray('d'), by get/set and by view",
  async () => {
    const n = 100_000;
    const a = new SharedArray("d", n);
    const start = new Barrier(2, { timeout: 30_000 });
    const ps = [0, 1].map((w) =>
      new Process({
        target: (a: SharedArray<"d">, start: Barrier, w: number) => {
          const half = a.length / 2;
          const lo = w * half;
          start.waitSync();
          for (let i = lo; i < lo + half; i++) a.set(i, a.get(i) + 1);
          const v = a.view;
          for (let i = lo; i < lo + half; i++) v[i]! += 1;
        },
        args: [a, start, w],
      })
    );
    for (const p of ps) p.start();
    assert.deepEqual(await Promise.all(ps.map((p) => p.join())), [0, 0]);
    assert.ok(a.toArray().every((x) => x === 2));
  },
);

mpTest(
  "arrays nested in task arguments arrive live, with their lock",
  async () => {
    const a = new SharedArray("i", 4);
    const raw = new RawArray("q", 2);
    a.getLock().acquireSync();
    await using pool = new Pool({ workers: 2 });
    const out = await pool.map(
      (
        arg: { i: number; arrays: [SharedArray<"i">, { raw: RawArray<"q"> }] },
      ) => {
        const [a, { raw }] = arg.arrays;
        a.view[arg.i] = arg.i + 1;
        Atomics.add(raw.view, 0, 1n);
        return !a.getLock().acquireSync({ timeout: 0 });
      },
      [0, 1, 2, 3].map((i) => ({ i, arrays: [a, { raw }] })),
    );
    assert.deepEqual(out, [true, true, true, true]);
    assert.deepEqual(a.toArray(), [1, 2, 3, 4]);
    assert.equal(raw.get(0), 4n);
    a.getLock().release();
  },
);

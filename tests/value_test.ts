import { strict as assert } from "node:assert";
import {
  RawValue,
  type Typecode,
  typecodeInfo,
  TYPECODES,
  Value,
} from "../patterns/value.ts";
import { Barrier, Lock, RLock } from "../patterns/sync.ts";
import { Pool, Process } from "../patterns/cube.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const N = 100_000;

/**
 * Runs `target(v, start, n)` in two processes at once (they meet at a
 * barrier first, so their loops overlap) and returns their exit codes.
 */
async function twoWorkers(
  target: (v: Value<"i">, start: Barrier, n: number) => void,
  v: Value<"i">,
  n = N,
): Promise<(number | null)[]> {
  const start = new Barrier(2, { timeout: 30_000 });
  const ps = [0, 1].map(() =>
    new Process({ target, args: [v, start, n], name: "incrementer" })
  );
  for (const p of ps) p.start();
  return await Promise.all(ps.map((p) => p.join()));
}

// -- Exact totals --

mpTest(
  "2 workers x 100 000 locked value += 1 give exactly 200 000",
  async () => {
    const v = new Value("i", 0);
    const codes = await twoWorkers((v, start, n) => {
      const l = v.getLock();
      start.waitSync();
      for (let k = 0; k < n; k++) {
        l.acquireSync();
        v.value += 1;
        l.release();
      }
    }, v);
    assert.deepEqual(codes, [0, 0]);
    assert.equal(v.value, 2 * N);
    assert.equal(v.getLock().locked(), false);
  },
);

mpTest("2 workers x 100 000 add(1) give exactly 200 000", async () => {
  const v = new Value("i", 0);
  const codes = await twoWorkers((v, start, n) => {
    start.waitSync();
    for (let k = 0; k < n; k++) v.add(1);
  }, v);
  assert.deepEqual(codes, [0, 0]);
  assert.equal(v.value, 2 * N);
});

mpTest(
  "without the lock, read-then-write increments lose updates",
  async () => {
    // The same read-modify-write as the locked test, minus the lock (and with
    // a short pause between the read and the write, as any real work has).
    // Two overlapping loops of 100 000 lose updates practically every run;
    // up to 5 runs make a false alarm impossible in practice.
    let lost = false;
    for (let attempt = 0; attempt < 5 && !lost; attempt++) {
      const v = new Value("i", 0, { lock: false });
      const codes = await twoWorkers((v, start, n) => {
        start.waitSync();
        for (let k = 0; k < n; k++) {
          const x = v.value;
          for (let spin = 0; spin < 20; spin++) void v.value;
          v.value = x + 1;
        }
      }, v);
      assert.deepEqual(codes, [0, 0]);
      assert.ok(v.value <= 2 * N);
      lost = v.value < 2 * N;
    }
    assert.ok(lost, "no update was lost in 5 runs of 2 x 100 000");
  },
);

mpTest(
  "the same read-pause-write increments under the lock lose nothing",
  async () => {
    const v = new Value("i", 0);
    const codes = await twoWorkers(
      (v, start, n) => {
        const l = v.getLock();
        start.waitSync();
        for (let k = 0; k < n; k++) {
          l.acquireSync();
          const x = v.value;
          for (let spin = 0; spin < 20; spin++) void v.value;
          v.value = x + 1;
          l.release();
        }
      },
      v,
      20_000,
    );
    assert.deepEqual(codes, [0, 0]);
    assert.equal(v.value, 40_000);
  },
);

mpTest(
  "float add() is atomic across workers (compare-and-swap loop)",
  async () => {
    const v = new RawValue("d", 0.5);
    const start = new Barrier(2, { timeout: 30_000 });
    const ps = [0, 1].map(() =>
      new Process({
        target: (v: RawValue<"d">, start: Barrier) => {
          start.waitSync();
          for (let k = 0; k < 20_000; k++) v.add(1);
        },
        args: [v, start],
      })
    );
    for (const p of ps) p.start();
    assert.deepEqual(await Promise.all(ps.map((p) => p.join())), [0, 0]);
    assert.equal(v.value, 40_000.5);
  },
);

// -- Values and typecodes --

mpTest("every typecode and alias round-trips its values", () => {
  const cases: [Typecode, number | bigint, number | bigint][] = [
    ["b", -128, 127],
    ["B", 0, 255],
    ["h", -32768, 32767],
    ["H", 0, 65535],
    ["i", -(2 ** 31), 2 ** 31 - 1],
    ["I", 0, 2 ** 32 - 1],
    ["l", -(2n ** 63n), 2n ** 63n - 1n],
    ["L", 0n, 2n ** 64n - 1n],
    ["q", -(2n ** 63n), 2n ** 63n - 1n],
    ["Q", 0n, 2n ** 64n - 1n],
    ["f", -1.5, 1.5],
    ["d", -Number.MAX_VALUE, Math.PI],
  ];
  for (const [code, lo, hi] of cases) {
    const v = new RawValue(code as "i", lo as number);
    assert.equal(v.value, lo, code);
    v.value = hi as number;
    assert.equal(v.value, hi, code);
    assert.equal(v.typecode, code);
    const alias = typecodeInfo(code, "test").alias as "i";
    assert.equal(
      new RawValue(alias).typecode,
      code === "l" ? "q" : code === "L" ? "Q" : code,
    );
  }
  assert.equal(new Value("q").value, 0n);
  assert.equal(new Value("uint64").value, 0n);
  assert.equal(new Value("d").value, 0);
  assert.equal(TYPECODES.length, 22);
});

mpTest(
  "bigint typecodes: add and compareExchange take bigints and wrap",
  () => {
    const q = new Value("q", 2n ** 63n - 1n);
    assert.equal(q.add(1n), -(2n ** 63n));
    assert.equal(q.compareExchange(-(2n ** 63n), 5n), -(2n ** 63n));
    assert.equal(q.value, 5n);
    assert.equal(q.compareExchange(4n, 9n), 5n);
    assert.equal(q.value, 5n);
    const u = new RawValue("Q", 0n);
    assert.equal(u.add(-1n), 2n ** 64n - 1n);
    assert.throws(() => q.add(1 as unknown as bigint), TypeError);
    assert.throws(() => (q.value = 1 as unknown as bigint), /write 1n/);
  },
);

mpTest(
  "integer add() wraps as C does; compareExchange returns the old value",
  () => {
    const b = new RawValue("B", 255);
    assert.equal(b.add(1), 0);
    assert.equal(b.add(-1), 255);
    const i = new Value("i", 2 ** 31 - 1);
    assert.equal(i.add(1), -(2 ** 31));
    assert.equal(i.compareExchange(-(2 ** 31), 7), -(2 ** 31));
    assert.equal(i.compareExchange(0, 8), 7);
    assert.equal(i.value, 7);
    assert.throws(() => i.add(0.5), TypeError);
    assert.throws(() => i.compareExchange(7, 1.5), TypeError);
    const f = new RawValue("f", 1);
    assert.equal(f.compareExchange(1, 2.5), 1);
    assert.equal(f.value, 2.5);
    assert.equal(f.compareExchange(NaN, 3), 2.5);
    assert.equal(`${f}`, "2.5");
  },
);

mpTest("values that do not fit the typecode are refused with TypeError", () => {
  assert.throws(() => new Value("B", 300), TypeError);
  assert.throws(() => new Value("B", -1), TypeError);
  assert.throws(() => new Value("i", 1.5), /integer from/);
  assert.throws(() => new Value("i", 2 ** 31), TypeError);
  assert.throws(() => new Value("q", 1 as unknown as bigint), TypeError);
  assert.throws(() => new Value("i", 1n as unknown as number), TypeError);
  assert.throws(() => new Value("d", "1" as unknown as number), TypeError);
  assert.throws(() => new Value("h", true as unknown as number), TypeError);
  const v = new Value("b");
  assert.throws(() => (v.value = 128), TypeError);
  assert.throws(() => (v.value = NaN), TypeError);
  assert.equal(v.value, 0);
});

mpTest("an unknown typecode is a TypeError listing the valid ones", () => {
  assert.throws(
    () => new Value("x" as Typecode),
    (e: unknown) =>
      e instanceof TypeError && /"x"/.test(e.message) &&
      e.message.includes("b, B, h, H, i, I, l, L, q, Q, f, d"),
  );
  assert.throws(() => new RawValue(7 as unknown as Typecode), TypeError);
  assert.throws(() => new Value("int128" as Typecode), /valid typecodes/);
});

mpTest(
  "getLock(): an RLock by default, the given lock, none with lock: false",
  () => {
    assert.ok(new Value("i").getLock() instanceof RLock);
    const lock = new Lock();
    const v = new Value("i", 0, { lock });
    assert.equal(v.getLock(), lock);
    const r = new RLock();
    assert.equal(new Value("d", 0, { lock: r }).getLock(), r);
    assert.ok(new Value("i", 0, { lock: true }).getLock() instanceof RLock);
    assert.throws(
      () => new Value("i", 0, { lock: false }).getLock(),
      TypeError,
    );
    assert.throws(
      () => new Value("i", 0, { lock: {} as unknown as Lock }),
      /lock must be/,
    );
    assert.throws(
      () => new Value("i", 0, { lock: "yes" as unknown as Lock }),
      TypeError,
    );
    assert.equal("getLock" in new RawValue("i"), false);
  },
);

// -- Sharing --

mpTest(
  "values nested in task arguments arrive live, with their lock",
  async () => {
    const a = new Value("i", 1);
    const b = new RawValue("q", 10n);
    const shared = new Lock();
    const c = new Value("d", 0.25, { lock: shared });
    a.getLock().acquireSync(); // held by the main thread
    await using pool = new Pool({ workers: 2 });
    const out = await pool.map(
      (
        arg: {
          v: [Value<"i">, { b: RawValue<"q"> }];
          m: Map<string, Value<"d">>;
        },
      ) => {
        const [a, { b }] = arg.v;
        const c = arg.m.get("c")!;
        a.add(1);
        b.add(5n);
        c.add(1);
        return {
          aLockBusy: !a.getLock().acquireSync({ timeout: 0 }),
          cLockLocked: c.getLock().locked(),
        };
      },
      [0, 1].map(() => ({ v: [a, { b }], m: new Map([["c", c]]) })),
    );
    assert.deepEqual(out, [
      { aLockBusy: true, cLockLocked: false },
      { aLockBusy: true, cLockLocked: false },
    ]);
    assert.equal(a.value, 3);
    assert.equal(b.value, 20n);
    assert.equal(c.value, 2.25);
    a.getLock().release();
    // The result travels back live too.
    const back = await pool.apply((v: Value<"i">) => v, [a]);
    assert.ok(back instanceof Value);
    back.value = 42;
    assert.equal(a.value, 42);
  },
);

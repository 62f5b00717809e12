/**
 * An object referenced twice inside one message arrives as one object
 * referenced twice, on every path (structured clone and pickle both keep
 * this): Queue items, pipe messages, Pool and Process arguments and
 * results.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { Pipe, Pool, Process, Queue } from "../mod.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer?.({ ops: true, resources: true });

mpTest(
  "a Queue item keeps an object referenced twice as one object",
  async () => {
    const q = new Queue<unknown>();
    const o = { x: 1, list: [1, 2] };
    await q.put([o, o, { inner: o }]);
    const got = await q.get() as [typeof o, typeof o, { inner: typeof o }];
    assert.deepEqual(got[0], o);
    assert.equal(got[0], got[1]);
    assert.equal(got[2].inner, got[0]);
    // A value without repeats still comes back equal.
    await q.put({ a: [1, 2], b: [1, 2] });
    const plain = await q.get() as { a: number[]; b: number[] };
    assert.deepEqual(plain, { a: [1, 2], b: [1, 2] });
    assert.notEqual(plain.a, plain.b);
    q.close();
  },
);

mpTest(
  "a pipe message keeps an object referenced twice as one object",
  async () => {
    const [a, b] = Pipe();
    const shared = [1, 2, 3];
    a.send({ p: shared, q: shared });
    const m = await b.recv() as { p: number[]; q: number[] };
    assert.deepEqual(m.p, shared);
    assert.equal(m.p, m.q);
    a.close();
    b.close();
  },
);

mpTest("Pool and Process arguments and results keep identity", async () => {
  await using pool = new Pool({ workers: 1 });
  const o = { n: 5 };
  assert.equal(
    await pool.apply((a: object, b: object) => a === b, [o, o]),
    true,
  );
  const r = await pool.apply(() => {
    const x = { v: 1 };
    return [x, x];
  }) as Array<{ v: number }>;
  assert.equal(r[0], r[1]);
  const q = new Queue<boolean>();
  const p = new Process({
    target: (q: Queue<boolean>, pair: [object, object]) =>
      q.putSync(pair[0] === pair[1]),
    args: [q, [o, o]],
  });
  p.start();
  assert.equal(await q.get({ timeout: 10_000 }), true);
  assert.equal(await p.join(), 0);
  q.close();
});

mpTest(
  "a shared object inside a Queue item or pipe message arrives live, not as an empty object",
  async () => {
    const q = new Queue<unknown>();
    const [a, b] = Pipe();
    const { Lock } = await import("../patterns/sync.ts");
    const { Value } = await import("../patterns/value.ts");
    const { transfer } = await import("../patterns/cube.ts");
    const lock = new Lock();
    await q.put({ lock });
    const got = (await q.get()) as { lock: InstanceType<typeof Lock> };
    assert.ok(got.lock instanceof Lock);
    lock.acquireSync();
    assert.equal(got.lock.locked(), true, "the same lock memory");
    got.lock.release();
    const v = new Value("i", 1);
    q.putNowait([1, v]);
    const [, v2] = q.getNowait() as [number, InstanceType<typeof Value>];
    v2.value = 7;
    assert.equal(v.value, 7);
    const [c, d] = Pipe();
    a.send({ inner: c });
    c.close();
    const { inner } = (await b.recv()) as { inner: typeof c };
    inner.send("through the received end");
    assert.equal(await d.recv(), "through the received end");
    inner.close();
    // A transferred buffer cannot be in two places: refused, nothing put.
    assert.throws(
      () => q.putNowait({ t: transfer(new ArrayBuffer(8)) }),
      (e) => e instanceof TypeError && /transferred/.test(e.message),
    );
    assert.equal(q.qsize(), 0, "nothing half-put");
    for (const x of [a, b, d]) x.close();
    q.close();
  },
);

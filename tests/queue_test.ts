import { strict as assert } from "node:assert";
import { Pool, Process } from "../patterns/cube.ts";
import {
  ClosedError,
  EmptyError,
  FullError,
  JoinableQueue,
  Queue,
  SimpleQueue,
} from "../patterns/queue.ts";
import { kShare, type ShareContext } from "../patterns/_core/share.ts";
import { waitAsync } from "../patterns/_core/wait.ts";
import { mpTest, range } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

/** The queue's shared memory, as it travels into a worker. */
function memoryOf(q: Queue<unknown>): SharedArrayBuffer {
  const ctx: ShareContext = { transfer: [], afterSend() {} };
  return (q[kShare](ctx).data as { buffer: SharedArrayBuffer }).buffer;
}

/** Waits until `word[index]` reaches `target`. */
async function waitUntil(
  word: Int32Array,
  index: number,
  target: number,
): Promise<void> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    const v = Atomics.load(word, index);
    if (v >= target) return;
    assert.ok(performance.now() < deadline, `word ${index} stuck at ${v}`);
    await waitAsync(word, index, v, { timeout: 100 });
  }
}

// -- Basics --------------------------------------------------------------

mpTest("Queue keeps FIFO order and counts items", async () => {
  const q = new Queue<number>({ maxsize: 3 });
  assert.equal(q.empty(), true);
  assert.equal(q.full(), false);
  await q.put(1);
  q.putSync(2);
  q.putNowait(3);
  assert.equal(q.qsize(), 3);
  assert.equal(q.full(), true);
  assert.throws(() => q.putNowait(4), FullError);
  assert.equal(await q.get(), 1);
  assert.equal(q.getSync(), 2);
  assert.equal(q.getNowait(), 3);
  assert.equal(q.empty(), true);
  assert.throws(() => q.getNowait(), EmptyError);
  q.close();
});

mpTest("Queue carries every kind of structured-clone value", async () => {
  const q = new Queue<unknown>();
  const values: unknown[] = [
    0,
    -0,
    7,
    -2147483648,
    2 ** 40,
    1.5,
    NaN,
    Infinity,
    "",
    "héllo wörld 😀",
    "lone \ud800 surrogate",
    "x".repeat(100_000),
    true,
    null,
    undefined,
    [1, "a", { b: [null] }],
    { nested: { deep: [1, 2, 3] }, s: "t" },
    [, 1],
    { neg: -0 },
    new Map([[1, "one"]]),
    new Set(["a"]),
    new Date(1234),
    10n ** 30n,
    new Uint8Array([1, 2, 3]),
    /re+/g,
  ];
  for (const v of values) await q.put(v);
  for (const v of values) {
    const got = await q.get();
    if (typeof v === "number" && Object.is(v, -0)) {
      assert.ok(Object.is(got, -0));
    } else assert.deepEqual(got, v);
  }
  q.close();
});

mpTest(
  "Queue maxsize <= 0 is unbounded in items, bounded by bytes",
  async () => {
    for (const maxsize of [0, -1]) {
      const q = new Queue<number>({ maxsize });
      for (let i = 0; i < 50_000; i++) q.putNowait(i);
      assert.equal(q.qsize(), 50_000);
      assert.equal(q.full(), false);
      for (let i = 0; i < 50_000; i++) assert.equal(q.getNowait(), i);
      q.close();
    }
    const small = new Queue<number>({ capacityBytes: 64 });
    for (let i = 0; i < 8; i++) small.putNowait(i); // 8 bytes per small int
    assert.throws(() => small.putNowait(8), FullError);
    await assert.rejects(small.put(8, { timeout: 5 }), FullError);
    assert.equal(small.getNowait(), 0);
    small.putNowait(8);
    small.close();
  },
);

mpTest("Queue records wrap around the ring intact", () => {
  const q = new Queue<string | number>({ capacityBytes: 256 });
  let seed = 1;
  const rand = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const pending: (string | number)[] = [];
  for (let i = 0; i < 20_000; i++) {
    const v = rand() < 0.5 ? "é".repeat(Math.floor(rand() * 60)) : rand();
    try {
      q.putNowait(v);
      pending.push(v);
    } catch (e) {
      assert.ok(e instanceof FullError);
      while (pending.length > 0) assert.equal(q.getNowait(), pending.shift());
    }
  }
  while (pending.length > 0) assert.equal(q.getNowait(), pending.shift());
  assert.equal(q.empty(), true);
  q.close();
});

// -- Bad input -----------------------------------------------------------

mpTest(
  "Queue refuses an uncloneable item with TypeError, unchanged",
  async () => {
    const q = new Queue<unknown>();
    q.putNowait("before");
    for (const bad of [() => 1, Symbol("s"), { f() {} }, [1, new WeakMap()]]) {
      assert.throws(() => q.putNowait(bad), TypeError);
      assert.throws(() => q.putSync(bad), TypeError);
      await assert.rejects(q.put(bad), TypeError);
    }
    assert.throws(() => q.putNowait(() => 1), /cannot be cloned/);
    assert.equal(q.qsize(), 1);
    q.putNowait("after");
    assert.equal(q.getNowait(), "before");
    assert.equal(q.getNowait(), "after");
    q.close();
  },
);

mpTest(
  "Queue streams an item larger than its capacity; putNowait refuses it",
  async () => {
    const q = new Queue<unknown>({ capacityBytes: 1024 });
    q.putNowait(1);
    assert.throws(() => q.putNowait("x".repeat(2000)), RangeError);
    assert.throws(() => q.putNowait("x".repeat(2000)), /put\(\) and putSync/);
    const [, , big] = await Promise.all([
      q.put(new Uint8Array(4096).fill(9)),
      q.getNowait(),
      q.get(),
    ]);
    assert.deepEqual(big, new Uint8Array(4096).fill(9));
    assert.equal(q.qsize(), 0);
    // An item that never finds room times out whole.
    const full = new Queue<unknown>({ maxsize: 1, capacityBytes: 1024 });
    full.putNowait(1);
    await assert.rejects(full.put("z".repeat(5000), { timeout: 5 }), FullError);
    assert.equal(full.getNowait(), 1);
    assert.throws(() => full.getNowait(), EmptyError);
    full.close();
    q.close();
  },
);

mpTest("Queue options are checked", () => {
  assert.throws(() => new Queue({ maxsize: 1.5 }), TypeError);
  assert.throws(() => new Queue({ capacityBytes: 8 }), RangeError);
  assert.throws(() => new SimpleQueue({ capacityBytes: -1 }), RangeError);
});

// -- Close ---------------------------------------------------------------

mpTest(
  "Queue.close() refuses puts and drains gets before ClosedError",
  async () => {
    const q = new Queue<number>();
    await q.put(1);
    q.close();
    q.close();
    assert.equal(q.closed, true);
    await assert.rejects(q.put(2), ClosedError);
    assert.throws(() => q.putSync(2), ClosedError);
    assert.throws(() => q.putNowait(2), ClosedError);
    assert.equal(await q.get(), 1);
    await assert.rejects(q.get(), ClosedError);
    assert.throws(() => q.getSync(), ClosedError);
    assert.throws(() => q.getNowait(), ClosedError);
  },
);

mpTest("Queue.close() wakes a waiting get and a waiting put", async () => {
  const q = new Queue<number>({ maxsize: 1 });
  const get = new Queue<number>();
  const waitingGet = get.get();
  q.putNowait(1);
  const waitingPut = q.put(2);
  get.close();
  q.close();
  await assert.rejects(waitingGet, ClosedError);
  await assert.rejects(waitingPut, ClosedError);
});

mpTest(
  "for await over a Queue ends when it is closed and drained",
  async () => {
    const q = new Queue<number>();
    const seen: number[] = [];
    const loop = (async () => {
      for await (const x of q) {
        seen.push(x);
        if (x === 2) q.close();
      }
    })();
    await q.put(1);
    await q.put(2);
    await loop;
    assert.deepEqual(seen, [1, 2]);
  },
);

// -- Timeouts and aborts -------------------------------------------------

mpTest("Queue blocking calls honour timeout", async () => {
  const q = new Queue<number>({ maxsize: 1 });
  await assert.rejects(q.get({ timeout: 5 }), EmptyError);
  await assert.rejects(q.get({ timeout: 0 }), EmptyError);
  assert.throws(() => q.getSync({ timeout: 5 }), EmptyError);
  q.putNowait(1);
  await assert.rejects(q.put(2, { timeout: 5 }), FullError);
  assert.throws(() => q.putSync(2, { timeout: 5 }), FullError);
  assert.throws(() => q.putSync(2, { timeout: 0 }), FullError);
  await assert.rejects(q.get({ timeout: -1 }), RangeError);
  q.close();
});

mpTest("Queue blocking calls reject with the signal's reason", async () => {
  const q = new Queue<number>({ maxsize: 1 });
  const reason = new Error("stop");
  await assert.rejects(q.get({ signal: AbortSignal.abort(reason) }), reason);
  assert.throws(() => q.getSync({ signal: AbortSignal.abort(reason) }), reason);
  const c1 = new AbortController();
  const waiting = q.get({ signal: c1.signal });
  c1.abort(reason);
  await assert.rejects(waiting, reason);
  q.putNowait(1);
  await assert.rejects(q.put(2, { signal: AbortSignal.abort(reason) }), reason);
  assert.throws(
    () => q.putSync(2, { signal: AbortSignal.abort(reason) }),
    reason,
  );
  const c2 = new AbortController();
  const waitingPut = q.put(2, { signal: c2.signal });
  c2.abort(reason);
  await assert.rejects(waitingPut, reason);
  // The aborted put left nothing behind.
  assert.equal(q.qsize(), 1);
  q.close();
});

// -- JoinableQueue and SimpleQueue --------------------------------------

mpTest("JoinableQueue.join() with and without outstanding tasks", async () => {
  const q = new JoinableQueue<string>();
  assert.equal(await q.join(), true);
  await q.put("a");
  q.putNowait("b");
  assert.equal(await q.join({ timeout: 5 }), false);
  const joined = q.join();
  await q.get();
  q.taskDone();
  assert.equal(await q.join({ timeout: 0 }), false);
  q.getNowait();
  q.taskDone();
  assert.equal(await joined, true);
  assert.throws(() => q.taskDone(), RangeError);
  const reason = new Error("abort join");
  await q.put("c");
  await assert.rejects(q.join({ signal: AbortSignal.abort(reason) }), reason);
  q.close();
});

mpTest("JoinableQueue counts no task for a put that fails", async () => {
  const q = new JoinableQueue<unknown>({ maxsize: 1, capacityBytes: 64 });
  await q.put(1);
  const reason = new Error("stop");
  assert.throws(() => q.putNowait(2), FullError);
  assert.throws(() => q.putSync(2, { timeout: 1 }), FullError);
  await assert.rejects(q.put(2, { timeout: 1 }), FullError);
  await assert.rejects(q.put(2, { signal: AbortSignal.abort(reason) }), reason);
  const c = new AbortController();
  const waiting = q.put(2, { signal: c.signal });
  c.abort(reason);
  await assert.rejects(waiting, reason);
  assert.throws(() => q.putNowait(() => 1), TypeError);
  // An item larger than the ring streams; timed out, it counts no task.
  await assert.rejects(q.put("x".repeat(100), { timeout: 1 }), FullError);
  q.getNowait();
  q.taskDone();
  assert.equal(await q.join({ timeout: 0 }), true);
  q.close();
  assert.throws(() => q.putSync(3), ClosedError);
  await assert.rejects(q.put(3), ClosedError);
  assert.equal(await q.join({ timeout: 0 }), true);
  assert.throws(() => q.taskDone(), RangeError);
});

mpTest("SimpleQueue puts, gets, reports empty and closes", async () => {
  const q = new SimpleQueue<number>();
  assert.equal(q.empty(), true);
  await q.put(1);
  assert.equal(q.empty(), false);
  assert.equal(await q.get(), 1);
  await assert.rejects(q.get({ timeout: 1 }), EmptyError);
  q.close();
  await assert.rejects(q.put(2), ClosedError);
  await assert.rejects(q.get(), ClosedError);
});

// -- The lock ------------------------------------------------------------

mpTest("Queue takes over a lock whose holder thread is gone", () => {
  const q = new Queue<number>();
  q.putNowait(1);
  const words = new Int32Array(memoryOf(q), 0, 32);
  Atomics.store(words, 0, 0x7ffffff0); // an id no live thread has
  q.putNowait(2); // waits out the grace period, then takes the lock over
  assert.equal(q.getNowait(), 1);
  assert.equal(q.getNowait(), 2);
  assert.equal(Atomics.load(words, 0), 0);
  q.close();
});

// -- In workers ----------------------------------------------------------

const N = 100_000;

mpTest(
  "2 producers x 2 consumers x 100 000 items in Processes, bounded",
  async () => {
    const q = new Queue<number>({ maxsize: 100 });
    // One slot per item; consumers count what they see.
    const seen = new Uint8Array(new SharedArrayBuffer(2 * N));
    // [0..1] count per consumer, [2..3] order violations, [4..5] sums (mod 2^31)
    const stats = new Int32Array(new SharedArrayBuffer(4 * 8));
    const producer = (q: Queue<number>, p: number, n: number) => {
      for (let i = 0; i < n; i++) q.putSync(p * 1_000_000 + i);
    };
    const consumer = (
      q: Queue<number>,
      me: number,
      seen: Uint8Array,
      stats: Int32Array,
      n: number,
    ) => {
      const last = [-1, -1];
      let count = 0, sum = 0, disorder = 0;
      for (;;) {
        let v: number;
        try {
          v = q.getSync();
        } catch (e) {
          if ((e as Error).name === "ClosedError") break;
          throw e;
        }
        const p = Math.floor(v / 1_000_000), i = v % 1_000_000;
        if (i <= last[p]!) disorder++;
        last[p] = i;
        Atomics.add(seen, p * n + i, 1);
        count++;
        sum = (sum + v) % 0x7fffffff;
      }
      stats[me] = count;
      stats[2 + me] = disorder;
      stats[4 + me] = sum;
    };
    const procs = [
      new Process({ target: producer, args: [q, 0, N] }),
      new Process({ target: producer, args: [q, 1, N] }),
      new Process({ target: consumer, args: [q, 0, seen, stats, N] }),
      new Process({ target: consumer, args: [q, 1, seen, stats, N] }),
    ];
    for (const p of procs) p.start();
    assert.equal(await procs[0]!.join(), 0);
    assert.equal(await procs[1]!.join(), 0);
    q.close();
    assert.equal(await procs[2]!.join(), 0);
    assert.equal(await procs[3]!.join(), 0);
    assert.equal(stats[0]! + stats[1]!, 2 * N);
    assert.equal(stats[2], 0, "consumer 0 saw a producer's items out of order");
    assert.equal(stats[3], 0, "consumer 1 saw a producer's items out of order");
    let expected = 0;
    for (let p = 0; p < 2; p++) {
      for (let i = 0; i < N; i++) {
        expected = (expected + p * 1_000_000 + i) %
          0x7fffffff;
      }
    }
    assert.equal((stats[4]! + stats[5]!) % 0x7fffffff, expected);
    assert.ok(seen.every((x) => x === 1), "an item was lost or duplicated");
  },
);

mpTest(
  "2 producers x 2 consumers x 100 000 items through Pool tasks",
  async () => {
    await using pool = new Pool({ workers: 4 });
    const q = new Queue<number>({ maxsize: 100 });
    const produce = (q: Queue<number>, p: number, n: number) => {
      for (let i = 0; i < n; i++) q.putSync(p * 1_000_000 + i);
      return n;
    };
    const consume = (q: Queue<number>) => {
      const last = [-1, -1];
      const items: number[] = [];
      let disorder = 0;
      for (;;) {
        let v: number;
        try {
          v = q.getSync();
        } catch (e) {
          if ((e as Error).name === "ClosedError") break;
          throw e;
        }
        const p = Math.floor(v / 1_000_000), i = v % 1_000_000;
        if (i <= last[p]!) disorder++;
        last[p] = i;
        items.push(v);
      }
      return { items, disorder };
    };
    const consumers = [pool.apply(consume, [q]), pool.apply(consume, [q])];
    const produced = await Promise.all([
      pool.apply(produce, [q, 0, N]),
      pool.apply(produce, [q, 1, N]),
    ]);
    assert.deepEqual(produced, [N, N]);
    q.close();
    const results = await Promise.all(consumers);
    assert.equal(results[0]!.disorder + results[1]!.disorder, 0);
    const all = [...results[0]!.items, ...results[1]!.items].sort((a, b) =>
      a - b
    );
    assert.equal(all.length, 2 * N);
    for (let p = 0; p < 2; p++) {
      for (let i = 0; i < N; i++) {
        assert.equal(
          all[p * N + i],
          p * 1_000_000 + i,
        );
      }
    }
  },
);

mpTest(
  "a consumer terminated while blocked in getSync loses no item",
  async () => {
    const q = new Queue<number>();
    const ctl = new Int32Array(new SharedArrayBuffer(16));
    const victim = new Process({
      name: "victim",
      target: (q: Queue<number>, ctl: Int32Array) => {
        Atomics.store(ctl, 0, 1);
        Atomics.notify(ctl, 0);
        q.getSync();
        Atomics.store(ctl, 1, 1); // never reached: nothing is put before it dies
      },
      args: [q, ctl],
    });
    victim.start();
    await waitUntil(ctl, 0, 1);
    victim.terminate();
    assert.equal(await victim.join(), -15);
    const items = 5_000;
    const drain = (q: Queue<number>) => {
      let count = 0, sum = 0;
      for (;;) {
        try {
          sum += q.getSync();
          count++;
        } catch (e) {
          if ((e as Error).name === "ClosedError") return { count, sum };
          throw e;
        }
      }
    };
    await using pool = new Pool({ workers: 2 });
    const results = [pool.apply(drain, [q]), pool.apply(drain, [q])];
    for (let i = 0; i < items; i++) await q.put(i);
    q.close();
    const [a, b] = await Promise.all(results);
    assert.equal(a!.count + b!.count, items);
    assert.equal(a!.sum + b!.sum, (items * (items - 1)) / 2);
    assert.equal(Atomics.load(ctl, 1), 0);
  },
);

mpTest(
  "a JoinableQueue passed to a Process is joined when tasks are done",
  async () => {
    const q = new JoinableQueue<number>();
    for (let i = 0; i < 100; i++) await q.put(i);
    const p = new Process({
      target: (q: JoinableQueue<number>) => {
        for (let i = 0; i < 100; i++) {
          q.getSync();
          q.taskDone();
        }
      },
      args: [q],
    });
    p.start();
    assert.equal(await q.join({ timeout: 30_000 }), true);
    assert.equal(await p.join(), 0);
    q.close();
  },
);

mpTest(
  "JoinableQueue.join() holds while a producer races 2-4 consumers",
  async () => {
    const ROUNDS = 24, ITEMS = 200;
    await using pool = new Pool({ workers: 5 });
    const consume = (
      q: JoinableQueue<number>,
      seen: Uint8Array,
      ctl: Int32Array,
    ) => {
      Atomics.add(ctl, 0, 1);
      Atomics.notify(ctl, 0);
      let count = 0, sum = 0;
      for (;;) {
        let v: number;
        try {
          v = q.getSync({ timeout: 5_000 });
        } catch (e) {
          if ((e as Error).name === "ClosedError") return { count, sum };
          throw e;
        }
        Atomics.add(seen, v, 1);
        count++;
        sum += v;
        q.taskDone();
      }
    };
    const produce = (q: JoinableQueue<number>, n: number) => {
      for (let i = 0; i < n; i++) q.putSync(i);
      return n;
    };
    for (let round = 0; round < ROUNDS; round++) {
      const consumers = 2 + round % 3;
      const inWorker = round % 2 === 1;
      // Half the rounds bounded, so puts also wait for room.
      const q = new JoinableQueue<number>({ maxsize: round % 4 < 2 ? 0 : 8 });
      const seen = new Uint8Array(new SharedArrayBuffer(ITEMS));
      const ctl = new Int32Array(new SharedArrayBuffer(4));
      const tasks = range(consumers).map(() =>
        pool.apply(consume, [q, seen, ctl])
      );
      const stop = new AbortController();
      let producer: Promise<number> = Promise.resolve(0);
      try {
        await waitUntil(ctl, 0, consumers);
        producer = inWorker ? pool.apply(produce, [q, ITEMS]) : (async () => {
          for (let i = 0; i < ITEMS; i++) await q.put(i);
          return ITEMS;
        })();
        // A consumer's failing taskDone() rejects its task: fail the round
        // at once instead of waiting on a join that can never return.
        const failed = Promise.all(tasks).then(
          () => "every consumer ended first",
          (e: unknown) => (e as Error).message,
        );
        const where = `round ${round} (${consumers} consumers, producer in ${
          inWorker ? "a worker" : "the main thread"
        })`;
        const put = await Promise.race([producer, failed]);
        assert.equal(put, ITEMS, `${where}: ${put}`);
        const joined = q.join({ signal: stop.signal });
        joined.catch(() => {});
        const done = await Promise.race([joined, failed]);
        assert.equal(done, true, `${where}: ${done}`);
        assert.equal(q.qsize(), 0);
        q.close();
        const results = await Promise.all(tasks);
        const count = results.reduce((n, r) => n + r.count, 0);
        const sum = results.reduce((n, r) => n + r.sum, 0);
        assert.equal(count, ITEMS, `round ${round}: items taken`);
        assert.equal(sum, (ITEMS * (ITEMS - 1)) / 2, `round ${round}: sum`);
        assert.ok(
          seen.every((x) => x === 1),
          `round ${round}: an item was lost or taken twice`,
        );
        assert.throws(() => q.taskDone(), RangeError);
      } finally {
        stop.abort();
        q.close();
        await Promise.allSettled([producer, ...tasks]);
      }
    }
  },
);

import { strict as assert } from "node:assert";
import {
  AbandonedError,
  Barrier,
  BoundedSemaphore,
  BrokenBarrierError,
  Condition,
  Event,
  Lock,
  RLock,
  Semaphore,
} from "../patterns/sync.ts";
import { Pool, Process } from "../patterns/cube.ts";
import { RawArray } from "../patterns/array.ts";
import { RawValue } from "../patterns/value.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

/** Waits (polling, with a deadline) until `pred()` holds. */
async function until(pred: () => boolean, what: string, ms = 10_000) {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function isReason(signal: AbortSignal) {
  return (e: unknown) => e === signal.reason;
}

/** Starts a process whose target holds `lock` until `go` is set. */
function holder(
  lock: Lock | RLock | Semaphore,
  held: Event,
  go: Event,
): Process {
  const p = new Process({
    target: (lock: Lock | RLock | Semaphore, held: Event, go: Event) => {
      lock.acquireSync();
      held.set();
      go.waitSync();
      lock.release();
    },
    args: [lock, held, go],
  });
  p.start();
  return p;
}

// -- Lock --

mpTest(
  "Lock.acquire() takes a free lock and timeout 0 only tries",
  async () => {
    const lock = new Lock();
    assert.equal(lock.locked(), false);
    assert.equal(await lock.acquire(), true);
    assert.equal(lock.locked(), true);
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    assert.equal(lock.acquireSync({ timeout: 0 }), false);
    lock.release();
    assert.equal(lock.acquireSync(), true);
    lock.release();
  },
);

mpTest("Lock.release() of an unheld lock throws RangeError", () => {
  const lock = new Lock();
  assert.throws(() => lock.release(), RangeError);
  lock.acquireSync();
  lock.release();
  assert.throws(() => lock.release(), /not held/);
});

mpTest("Lock.hold() releases at the end of the using block", async () => {
  const lock = new Lock();
  {
    using _ = await lock.hold();
    assert.ok(lock.locked());
  }
  assert.ok(!lock.locked());
  {
    using _ = lock.holdSync();
    assert.ok(lock.locked());
    await assert.rejects(lock.hold({ timeout: 1 }), { name: "TimeoutError" });
    assert.throws(() => lock.holdSync({ timeout: 0 }), {
      name: "TimeoutError",
    });
  }
  assert.ok(!lock.locked());
});

mpTest(
  "Lock.acquire() times out and aborts while another thread holds it",
  async () => {
    const lock = new Lock();
    const held = new Event();
    const go = new Event();
    const p = holder(lock, held, go);
    try {
      assert.ok(await held.wait({ timeout: 10_000 }));
      assert.equal(await lock.acquire({ timeout: 20 }), false);
      assert.equal(lock.acquireSync({ timeout: 5 }), false);
      const signal = AbortSignal.timeout(10);
      await assert.rejects(lock.acquire({ signal }), isReason(signal));
      await assert.rejects(
        lock.acquire({ signal: AbortSignal.abort(new Error("stop")) }),
        /stop/,
      );
      assert.throws(
        () => lock.acquireSync({ signal: AbortSignal.abort(new Error("x")) }),
        /x/,
      );
      go.set();
      assert.equal(await lock.acquire({ timeout: 10_000 }), true);
      lock.release();
      assert.equal(await p.join(), 0);
    } finally {
      p.terminate();
    }
  },
);

mpTest("Lock acquire rejects bad timeouts", async () => {
  const lock = new Lock();
  await assert.rejects(lock.acquire({ timeout: -1 }), RangeError);
  await assert.rejects(
    lock.acquire({ timeout: "5" as unknown as number }),
    TypeError,
  );
  assert.throws(() => lock.acquireSync({ timeout: NaN }), RangeError);
  assert.equal(lock.locked(), false);
});

// -- Abandoned locks --

mpTest(
  "Lock held by a terminated worker is taken over with AbandonedError",
  async () => {
    const lock = new Lock();
    const held = new Event();
    const never = new Event();
    const p = holder(lock, held, never);
    assert.ok(await held.wait({ timeout: 10_000 }));
    assert.ok(lock.locked());
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    p.terminate();
    assert.equal(await p.join(), -15);
    await assert.rejects(lock.acquire({ timeout: 10_000 }), AbandonedError);
    assert.ok(lock.locked(), "the caller holds the lock after AbandonedError");
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    lock.release();
    assert.equal(await lock.acquire({ timeout: 0 }), true);
    lock.release();
  },
);

mpTest(
  "RLock held by a terminated worker: acquireSync throws AbandonedError, caller owns it",
  async () => {
    const rlock = new RLock();
    const held = new Event();
    const never = new Event();
    const p = holder(rlock, held, never);
    assert.ok(await held.wait({ timeout: 10_000 }));
    assert.throws(() => rlock.release(), /held by another thread/);
    p.terminate();
    await p.join();
    assert.throws(() => rlock.acquireSync({ timeout: 10_000 }), AbandonedError);
    // The main thread now owns it at depth 1: it can re-enter and release.
    assert.ok(rlock.acquireSync({ timeout: 0 }));
    rlock.release();
    rlock.release();
    assert.ok(!rlock.locked());
  },
);

mpTest(
  "Semaphore permit held by a terminated worker comes back with AbandonedError",
  async () => {
    const sem = new Semaphore(1);
    const held = new Event();
    const never = new Event();
    const p = holder(sem, held, never);
    assert.ok(await held.wait({ timeout: 10_000 }));
    assert.equal(sem.getValue(), 0);
    assert.equal(await sem.acquire({ timeout: 0 }), false);
    p.terminate();
    await p.join();
    await assert.rejects(sem.acquire({ timeout: 10_000 }), AbandonedError);
    assert.equal(sem.getValue(), 0, "the caller holds the recovered permit");
    sem.release();
    assert.equal(sem.getValue(), 1);
    assert.equal(await sem.acquire({ timeout: 0 }), true, "no second error");
    sem.release();
  },
);

mpTest(
  "Semaphore(0) used as a signal gains no permits when its consumer dies",
  async () => {
    const sem = new Semaphore(0);
    sem.release(2);
    const p = new Process({
      target: (sem: Semaphore) => {
        sem.acquireSync();
        sem.acquireSync();
      },
      args: [sem],
    });
    p.start();
    assert.equal(await p.join(), 0);
    assert.equal(sem.getValue(), 0);
    assert.equal(await sem.acquire({ timeout: 20 }), false);
  },
);

// -- RLock --

mpTest("RLock re-enters in its thread and counts releases", async () => {
  const rlock = new RLock();
  assert.ok(await rlock.acquire());
  assert.ok(await rlock.acquire({ timeout: 0 }));
  assert.ok(rlock.acquireSync({ timeout: 0 }));
  rlock.release();
  rlock.release();
  assert.ok(rlock.locked());
  rlock.release();
  assert.ok(!rlock.locked());
  assert.throws(() => rlock.release(), RangeError);
  {
    using _a = rlock.holdSync();
    using _b = await rlock.hold();
    assert.ok(rlock.locked());
  }
  assert.ok(!rlock.locked());
});

mpTest(
  "RLock is owned by the thread that took it: others cannot release or take it",
  async () => {
    const rlock = new RLock();
    const held = new Event();
    const go = new Event();
    const p = holder(rlock, held, go);
    try {
      assert.ok(await held.wait({ timeout: 10_000 }));
      assert.throws(() => rlock.release(), RangeError);
      assert.equal(await rlock.acquire({ timeout: 10 }), false);
      assert.equal(rlock.acquireSync({ timeout: 0 }), false);
      const signal = AbortSignal.timeout(5);
      await assert.rejects(rlock.acquire({ signal }), isReason(signal));
      go.set();
      assert.ok(await rlock.acquire({ timeout: 10_000 }));
      rlock.release();
      assert.equal(await p.join(), 0);
    } finally {
      p.terminate();
    }
    // A worker cannot release the main thread's RLock.
    rlock.acquireSync();
    const q = new Process({
      target: (rlock: RLock) => {
        try {
          rlock.release();
        } catch (e) {
          if ((e as Error).name === "RangeError") return;
        }
        throw new Error("release by a non-owner did not throw RangeError");
      },
      args: [rlock],
    });
    q.start();
    assert.equal(await q.join(), 0);
    rlock.release();
  },
);

// -- Semaphore --

mpTest(
  "Semaphore counts permits; release(n) adds n; timeouts and aborts",
  async () => {
    const sem = new Semaphore(2);
    assert.ok(await sem.acquire());
    assert.ok(sem.acquireSync());
    assert.equal(sem.getValue(), 0);
    assert.equal(await sem.acquire({ timeout: 0 }), false);
    assert.equal(await sem.acquire({ timeout: 10 }), false);
    assert.equal(sem.acquireSync({ timeout: 5 }), false);
    const signal = AbortSignal.timeout(5);
    await assert.rejects(sem.acquire({ signal }), isReason(signal));
    sem.release(2);
    sem.release(); // a plain Semaphore may go past its start value
    assert.equal(sem.getValue(), 3);
    {
      using _ = await sem.hold();
      assert.equal(sem.getValue(), 2);
    }
    assert.equal(sem.getValue(), 3);
  },
);

mpTest("BoundedSemaphore refuses a release past its initial value", () => {
  const sem = new BoundedSemaphore(2);
  assert.ok(sem instanceof Semaphore);
  assert.throws(() => sem.release(), RangeError);
  assert.ok(sem.acquireSync());
  assert.throws(() => sem.release(2), /more than its initial value 2/);
  sem.release();
  assert.equal(sem.getValue(), 2);
  assert.throws(() => sem.release(), RangeError);
});

mpTest("Semaphore rejects bad values", () => {
  assert.throws(() => new Semaphore(-1), RangeError);
  assert.throws(() => new Semaphore(1.5), RangeError);
  assert.throws(() => new BoundedSemaphore(-3), RangeError);
  assert.throws(() => new Semaphore("2" as unknown as number), TypeError);
  const sem = new Semaphore(0);
  assert.throws(() => sem.release(0), RangeError);
  assert.throws(() => sem.release(-1), RangeError);
  assert.equal(new Semaphore().getValue(), 1);
});

mpTest("Semaphore limits concurrency across workers exactly", async () => {
  // 4 tasks in 2 workers, a BoundedSemaphore(1): the in-section counter
  // never exceeds 1.
  const sem = new BoundedSemaphore(1);
  const inside = new RawValue("i", 0);
  const worst = new RawValue("i", 0);
  await using pool = new Pool({ workers: 2 });
  await pool.map(
    (args: [BoundedSemaphore, RawValue<"i">, RawValue<"i">]) => {
      const [sem, inside, worst] = args;
      for (let k = 0; k < 2000; k++) {
        sem.acquireSync();
        const n = inside.add(1);
        if (n > worst.value) worst.value = n;
        inside.add(-1);
        sem.release();
      }
    },
    [0, 1, 2, 3].map(() => [sem, inside, worst]),
  );
  assert.equal(worst.value, 1);
  assert.equal(sem.getValue(), 1);
});

// -- Condition --

mpTest(
  "Condition: a worker producer and a main consumer with waitFor",
  async () => {
    const N = 200;
    const cond = new Condition();
    const buf = new RawArray("i", N + 1); // [0] = count produced, then items
    const p = new Process({
      target: (cond: Condition, buf: RawArray<"i">, n: number) => {
        for (let k = 1; k <= n; k++) {
          cond.acquireSync();
          buf.set(k, k * 3);
          buf.set(0, k);
          cond.notify();
          cond.release();
        }
      },
      args: [cond, buf, N],
    });
    p.start();
    let consumed = 0;
    let sum = 0;
    await cond.acquire();
    try {
      while (consumed < N) {
        const ok = await cond.waitFor(() => buf.get(0) > consumed, {
          timeout: 10_000,
        });
        assert.ok(ok, "producer stalled");
        const produced = buf.get(0);
        while (consumed < produced) sum += buf.get(++consumed);
      }
    } finally {
      cond.release();
    }
    assert.equal(await p.join(), 0);
    assert.equal(sum, (3 * N * (N + 1)) / 2);
  },
);

mpTest(
  "Condition: a main producer and two worker consumers with waitForSync",
  async () => {
    const N = 100;
    const cond = new Condition(new Lock());
    // [0] produced, [1] next to take, [2] sum taken
    const state = new RawArray("i", 3);
    const consumer = (cond: Condition, state: RawArray<"i">, n: number) => {
      for (;;) {
        cond.acquireSync();
        try {
          const ok = cond.waitForSync(
            () => state.get(1) < state.get(0) || state.get(1) >= n,
            { timeout: 10_000 },
          );
          if (!ok) throw new Error("consumer starved");
          if (state.get(1) >= n) return;
          const k = state.get(1) + 1;
          state.set(1, k);
          state.set(2, state.get(2) + k);
        } finally {
          cond.release();
        }
      }
    };
    const ps = [0, 1].map(() =>
      new Process({ target: consumer, args: [cond, state, N] })
    );
    for (const p of ps) p.start();
    for (let k = 1; k <= N; k++) {
      using _ = await cond.hold();
      state.set(0, k);
      cond.notify();
    }
    {
      using _ = await cond.hold();
      cond.notifyAll();
    }
    const codes = await Promise.all(ps.map((p) => p.join()));
    assert.deepEqual(codes, [0, 0]);
    assert.equal(state.get(1), N);
    assert.equal(state.get(2), (N * (N + 1)) / 2);
  },
);

mpTest(
  "Condition.wait needs the lock, times out, and keeps RLock depth",
  async () => {
    const cond = new Condition();
    await assert.rejects(cond.wait(), RangeError);
    assert.throws(() => cond.waitSync(), RangeError);
    assert.throws(() => cond.notify(), RangeError);
    assert.throws(() => cond.notifyAll(), RangeError);
    await assert.rejects(cond.waitFor(() => true), RangeError);
    await cond.acquire();
    await cond.acquire(); // depth 2
    assert.equal(await cond.wait({ timeout: 5 }), false);
    assert.equal(cond.waitSync({ timeout: 1 }), false);
    assert.equal(await cond.waitFor(() => 0, { timeout: 5 }), 0);
    assert.equal(cond.waitForSync(() => "", { timeout: 1 }), "");
    assert.throws(() => cond.notify(-1), RangeError);
    const signal = AbortSignal.timeout(5);
    await assert.rejects(cond.wait({ signal }), isReason(signal));
    cond.release();
    cond.release(); // depth restored to 2 after every wait
    assert.throws(() => cond.release(), RangeError);
    assert.throws(
      () => new Condition({} as unknown as Lock),
      /must be a Lock or an RLock/,
    );
  },
);

mpTest("Condition.notify(n) wakes n waiters, oldest first", async () => {
  // Three waiters in the main thread; a Lock (not re-entrant) keeps them
  // apart. Each one releases the lock only once it is enlisted, so taking
  // the lock after starting a waiter proves it waits.
  const cond = new Condition(new Lock());
  const order: number[] = [];
  const waits: Promise<void>[] = [];
  for (const i of [0, 1, 2]) {
    waits.push((async () => {
      await cond.acquire();
      const ok = await cond.wait({ timeout: 10_000 });
      order.push(ok ? i : -1);
      cond.release();
    })());
    await cond.acquire({ timeout: 10_000 });
    cond.release();
  }
  await cond.acquire();
  cond.notify(2);
  cond.release();
  await until(() => order.length === 2, "two waiters woken");
  assert.deepEqual(order, [0, 1]);
  await cond.acquire();
  cond.notifyAll();
  cond.release();
  await Promise.all(waits);
  assert.deepEqual(order, [0, 1, 2]);
});

// -- Event --

mpTest("Event.wait times out, returns true once set, and aborts", async () => {
  const ev = new Event();
  assert.equal(ev.isSet(), false);
  assert.equal(await ev.wait({ timeout: 10 }), false);
  assert.equal(await ev.wait({ timeout: 0 }), false);
  assert.equal(ev.waitSync({ timeout: 5 }), false);
  const signal = AbortSignal.timeout(5);
  await assert.rejects(ev.wait({ signal }), isReason(signal));
  ev.set();
  assert.equal(await ev.wait({ timeout: 0 }), true);
  assert.equal(ev.waitSync(), true);
  ev.clear();
  assert.equal(ev.isSet(), false);
  await assert.rejects(ev.wait({ timeout: -5 }), RangeError);
});

mpTest(
  "Event set by a worker wakes the main thread, and the other way round",
  async () => {
    const ping = new Event();
    const pong = new Event();
    const p = new Process({
      target: (ping: Event, pong: Event) => {
        if (!ping.waitSync({ timeout: 10_000 })) throw new Error("no ping");
        pong.set();
      },
      args: [ping, pong],
    });
    p.start();
    ping.set();
    assert.equal(await pong.wait({ timeout: 10_000 }), true);
    assert.equal(await p.join(), 0);
  },
);

// -- Barrier --

mpTest(
  "Barrier: three parties, five rounds, the action runs once per pass",
  async () => {
    const ROUNDS = 5;
    const passes = new RawValue("i", 0);
    const indexSum = new RawValue("i", 0);
    const barrier = new Barrier(3, {
      action: (passes: RawValue<"i">) => passes.add(1),
      actionArgs: [passes],
      timeout: 10_000,
    });
    assert.equal(barrier.parties, 3);
    const party = (b: Barrier, passes: RawValue<"i">, sum: RawValue<"i">) => {
      for (let r = 1; r <= 5; r++) {
        sum.add(b.waitSync());
        // The action ran before any party was released.
        if (passes.value < r) throw new Error(`round ${r}: action not run`);
      }
    };
    const ps = [0, 1].map(() =>
      new Process({ target: party, args: [barrier, passes, indexSum] })
    );
    for (const p of ps) p.start();
    for (let r = 1; r <= ROUNDS; r++) {
      indexSum.add(await barrier.wait());
      assert.ok(passes.value >= r);
    }
    assert.deepEqual(await Promise.all(ps.map((p) => p.join())), [0, 0]);
    assert.equal(passes.value, ROUNDS);
    assert.equal(indexSum.value, ROUNDS * (0 + 1 + 2));
    assert.equal(barrier.broken, false);
    assert.equal(barrier.nWaiting, 0);
  },
);

mpTest(
  "Barrier breaks on timeout: every waiter gets BrokenBarrierError",
  async () => {
    const barrier = new Barrier(3);
    const other = barrier.wait({ timeout: 10_000 });
    await assert.rejects(barrier.wait({ timeout: 20 }), BrokenBarrierError);
    await assert.rejects(other, BrokenBarrierError);
    assert.equal(barrier.broken, true);
    assert.equal(barrier.nWaiting, 0);
    await assert.rejects(barrier.wait(), BrokenBarrierError);
    assert.throws(() => barrier.waitSync(), BrokenBarrierError);
    barrier.reset();
    assert.equal(barrier.broken, false);
    const b1 = new Barrier(1, { timeout: 5 });
    assert.equal(b1.waitSync(), 0);
    const b2 = new Barrier(2, { timeout: 5 });
    assert.throws(() => b2.waitSync(), BrokenBarrierError);
  },
);

mpTest("Barrier.abort() breaks it for a waiting worker", async () => {
  const barrier = new Barrier(3);
  const outcome = new RawValue("i", 0);
  const p = new Process({
    target: (b: Barrier, outcome: RawValue<"i">) => {
      try {
        b.waitSync({ timeout: 10_000 });
        outcome.value = 1;
      } catch (e) {
        outcome.value = (e as Error).name === "BrokenBarrierError" ? 2 : 3;
      }
    },
    args: [barrier, outcome],
  });
  p.start();
  const mine = barrier.wait();
  await until(() => barrier.nWaiting === 2, "the worker arrived");
  barrier.abort();
  await assert.rejects(mine, BrokenBarrierError);
  assert.equal(await p.join(), 0);
  assert.equal(outcome.value, 2);
  assert.ok(barrier.broken);
  barrier.reset();
  assert.ok(!barrier.broken);
});

mpTest(
  "Barrier.reset() breaks current waiters; abort signal breaks the barrier",
  async () => {
    const barrier = new Barrier(2);
    const w = barrier.wait();
    assert.equal(barrier.nWaiting, 1);
    barrier.reset();
    await assert.rejects(w, BrokenBarrierError);
    assert.equal(barrier.broken, false);
    const signal = AbortSignal.timeout(5);
    await assert.rejects(barrier.wait({ signal }), isReason(signal));
    assert.equal(barrier.broken, true);
    barrier.reset();
    const [a, b] = await Promise.all([barrier.wait(), barrier.wait()]);
    assert.deepEqual([a, b].sort(), [0, 1]);
  },
);

mpTest(
  "Barrier action that throws breaks the barrier; the last party gets its error",
  async () => {
    const barrier = new Barrier(2, {
      action: () => {
        throw new SyntaxError("action failed");
      },
    });
    const first = barrier.wait({ timeout: 10_000 });
    await assert.rejects(barrier.wait(), SyntaxError);
    await assert.rejects(first, BrokenBarrierError);
    assert.ok(barrier.broken);
  },
);

mpTest("Barrier rejects bad parties and options", () => {
  assert.throws(() => new Barrier(0), RangeError);
  assert.throws(() => new Barrier(-2), RangeError);
  assert.throws(() => new Barrier(1.5), RangeError);
  assert.throws(() => new Barrier("3" as unknown as number), TypeError);
  assert.throws(
    () => new Barrier(2, { action: 5 as unknown as () => void }),
    TypeError,
  );
  assert.throws(() => new Barrier(2, { timeout: -1 }), RangeError);
});

// -- Sharing --

mpTest("sync objects nested in task arguments arrive live", async () => {
  const lock = new Lock();
  const rlock = new RLock();
  const sem = new BoundedSemaphore(3);
  const ev = new Event();
  const cond = new Condition(lock);
  const barrier = new Barrier(1);
  lock.acquireSync();
  sem.acquireSync();
  await using pool = new Pool({ workers: 1 });
  const r = await pool.apply(
    (arg: {
      deep: [Lock, { r: RLock }];
      m: Map<string, BoundedSemaphore>;
      s: Set<Event>;
      cond: Condition;
      barrier: Barrier;
    }) => {
      const [lock, { r: rlock }] = arg.deep;
      const sem = arg.m.get("sem")!;
      const [ev] = [...arg.s];
      const out = {
        lockHeld: lock.locked(),
        lockFree: lock.acquireSync({ timeout: 0 }),
        semValue: sem.getValue(),
        rlockTaken: rlock.acquireSync({ timeout: 0 }),
        barrierIndex: arg.barrier.waitSync(),
        condNeedsLock: false,
      };
      rlock.release();
      try {
        arg.cond.notify();
      } catch (e) {
        out.condNeedsLock = (e as Error).name === "RangeError";
      }
      ev.set();
      sem.release();
      return out;
    },
    [{
      deep: [lock, { r: rlock }],
      m: new Map([["sem", sem]]),
      s: new Set([ev]),
      cond,
      barrier,
    }],
  );
  assert.deepEqual(r, {
    lockHeld: true,
    lockFree: false,
    semValue: 2,
    rlockTaken: true,
    barrierIndex: 0,
    condNeedsLock: true,
  });
  assert.ok(ev.isSet());
  assert.equal(sem.getValue(), 3);
  lock.release();
});

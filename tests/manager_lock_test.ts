import { strict as assert } from "node:assert";
import {
  AbandonedError,
  type ConditionProxy,
  type LockProxy,
  Manager,
  type RLockProxy,
  type SemaphoreProxy,
  serve,
} from "../patterns/server_process.ts";
import { Process } from "../patterns/cube.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

type Acquirable = LockProxy | RLockProxy | SemaphoreProxy | ConditionProxy;

/**
 * Acquires `proxy` `times` times in a Process, and waits until it ended
 * (without releasing) and the server has seen its connection go (`stats`
 * first handles what every other local connection sent, its goodbye
 * included).
 */
async function acquireInChild(
  m: Manager,
  proxy: Acquirable,
  times = 1,
): Promise<void> {
  const p = new Process({
    target: async (l: Acquirable, times: number) => {
      for (let i = 0; i < times; i++) await l.acquire();
    },
    args: [proxy, times],
  });
  p.start();
  assert.equal(await p.join(), 0);
  assert.equal((await m.stats()).connections, 1, "the child's connection left");
}

// CPython's TestSyncManagerTypes: a child acquires, the parent releases.

mpTest(
  "a lock a child acquired stays held after it leaves; the parent may release it (CPython's idiom)",
  async () => {
    await using m = await Manager.start();
    const lock = await m.lock();
    await acquireInChild(m, lock);
    assert.equal(await lock.locked(), true, "held, abandoned");
    await lock.release();
    assert.equal(await lock.locked(), false);
    await assert.rejects(lock.release(), /not held/);
    // Released by the parent, it is an ordinary free lock again.
    assert.equal(await lock.acquire({ timeout: 0 }), true);
    await lock.release();
  },
);

mpTest(
  "semaphores: a permit a child took stays taken after it leaves; the parent gives it back",
  async () => {
    await using m = await Manager.start();
    for (const make of ["semaphore", "boundedSemaphore"] as const) {
      const sem = await m[make](1);
      await acquireInChild(m, sem);
      assert.equal(await sem.getValue(), 0, `${make}: the permit is held`);
      // For a bounded semaphore this release would exceed the bound had the
      // child's permit come back on its own.
      await sem.release();
      assert.equal(await sem.getValue(), 1);
      if (make === "boundedSemaphore") {
        await assert.rejects(sem.release(), /exceed its initial value/);
      }
      assert.equal(await sem.acquire({ timeout: 0 }), true, "not abandoned");
      await sem.release();
    }
  },
);

mpTest(
  "the next acquirer of an abandoned lock or permit takes it over with AbandonedError",
  async () => {
    await using m = await Manager.start();
    const lock = await m.lock();
    await acquireInChild(m, lock);
    await assert.rejects(lock.acquire({ timeout: 0 }), AbandonedError);
    // The caller holds it now, as an ordinary lock.
    assert.equal(await lock.locked(), true);
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    await lock.release();
    assert.equal(await lock.locked(), false);

    const sem = await m.boundedSemaphore(2);
    await acquireInChild(m, sem, 2);
    assert.equal(await sem.getValue(), 0);
    await assert.rejects(sem.acquire({ timeout: 0 }), AbandonedError);
    await assert.rejects(sem.acquire({ timeout: 0 }), AbandonedError);
    assert.equal(await sem.acquire({ timeout: 0 }), false, "both taken over");
    await sem.release(2);
    assert.equal(await sem.getValue(), 2);
  },
);

mpTest(
  "an abandoned RLock is taken over by the next acquirer, or released by anyone",
  async () => {
    await using m = await Manager.start();
    const rlock = await m.rlock();
    await acquireInChild(m, rlock, 2);
    assert.equal(await rlock.locked(), true);
    // Not the parent's, but its holder is gone: any client releases all
    // of its holds at once.
    await rlock.release();
    assert.equal(await rlock.locked(), false);
    await acquireInChild(m, rlock);
    await assert.rejects(rlock.acquire({ timeout: 0 }), AbandonedError);
    // Taken over, it is the caller's: re-entrant for it.
    assert.equal(await rlock.acquire({ timeout: 0 }), true);
    await rlock.release();
    await rlock.release();
    assert.equal(await rlock.locked(), false);
  },
);

mpTest(
  "remote: a client parked on a lock or a semaphore gets it with AbandonedError when the holder disconnects",
  async () => {
    await using server = await serve({ port: 0, authkey: "abandon" });
    const where = { port: server.addr.port, authkey: "abandon" };
    await using waiter = await Manager.connect(where);
    const lock = await waiter.lock();
    const sem = await waiter.semaphore(1);
    await waiter.named("lock", () => lock);
    await waiter.named("sem", () => sem);
    const holder = await Manager.connect(where);
    const hl = (await holder.lookup<LockProxy>("lock"))!;
    const hs = (await holder.lookup<SemaphoreProxy>("sem"))!;
    assert.equal(await hl.acquire(), true);
    assert.equal(await hs.acquire(), true);
    const gotLock = lock.acquire({ timeout: 30_000 });
    const gotSem = sem.acquire({ timeout: 30_000 });
    // Both calls are parked on the server before the holder leaves.
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    assert.equal(await sem.acquire({ timeout: 0 }), false);
    await holder.shutdown();
    await assert.rejects(gotLock, AbandonedError);
    await assert.rejects(gotSem, AbandonedError);
    assert.equal(await lock.locked(), true, "the waiter holds it");
    assert.equal(await sem.getValue(), 0, "the waiter holds the permit");
    await lock.release();
    await sem.release();
    assert.equal(await lock.locked(), false);
    assert.equal(await sem.getValue(), 1);
  },
);

mpTest(
  "a semaphore used as a signal leaves no abandoned permit behind",
  async () => {
    await using m = await Manager.start();
    const signal = await m.semaphore(0);
    await signal.release();
    await signal.release();
    // The child takes the two permits the parent released and leaves.
    await acquireInChild(m, signal, 2);
    assert.equal(await signal.getValue(), 0);
    assert.equal(await signal.acquire({ timeout: 0 }), false, "no phantom");
    await signal.release();
    assert.equal(await signal.acquire({ timeout: 0 }), true);
  },
);

mpTest(
  "an abandoned condition: nobody may notify until an acquirer takes it over",
  async () => {
    await using m = await Manager.start();
    const cond = await m.condition();
    await acquireInChild(m, cond);
    await assert.rejects(cond.notify(), /not held by the caller/);
    await assert.rejects(cond.acquire({ timeout: 0 }), AbandonedError);
    await cond.notify();
    assert.equal(
      await cond.wait({ timeout: 1 }),
      false,
      "it waits and times out",
    );
    await cond.release();
    await assert.rejects(cond.notify(), /not held by the caller/);
    assert.equal(await cond.acquire({ timeout: 0 }), true, "free again");
    await cond.release();
  },
);

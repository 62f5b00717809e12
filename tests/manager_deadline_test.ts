import { strict as assert } from "node:assert";
import {
  BrokenBarrierError,
  ClosedError,
  type ConditionProxy,
  EmptyError,
  Manager,
  type QueueProxy,
} from "../patterns/server_process.ts";
import { Process } from "../patterns/cube.ts";
import { setPingTimes } from "../patterns/_manager/client.ts";
import { stateOf } from "../patterns/_manager/proxies/base.ts";
import type { BaseProxy } from "../patterns/_manager/proxies/base.ts";
import { mpTest, range } from "./_helpers.ts";
import type { Busy } from "./fixtures/manager_deadline_busy.ts";

Deno.test.sanitizer({ ops: true, resources: true });

// Deadlines on the caller's clock: a manager server that stops answering
// (frozen with SIGSTOP, as a hung host or a network partition looks) never
// makes a timed call overstay its timeout, and a call given up on the
// client leaves no trace on the server.

/** How far past its timeout a call may settle (the bound). */
const SLACK_MS = 500;

const AUTHKEY = "deadline-test-key";

/** A manager server in its own OS process, to freeze and thaw. */
interface ServerProcess {
  port: number;
  /** A client of it. */
  connect(): Promise<Manager>;
  freeze(): void;
  thaw(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

async function startServer(): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read=./patterns,./tests",
      "--allow-net=127.0.0.1",
      "--allow-env=MP_AUTHKEY",
      "tests/fixtures/manager_deadline_server.ts",
    ],
    env: { MP_AUTHKEY: AUTHKEY },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let frozen = false;
  const stop = async () => {
    if (frozen) Deno.kill(child.pid, "SIGCONT");
    child.kill("SIGKILL");
    await child.status;
  };
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the server process ended before serving");
      text += value;
    }
    await reader.cancel();
    const port = (JSON.parse(text.slice(0, text.indexOf("\n"))) as {
      port: number;
    }).port;
    return {
      port,
      connect: () => Manager.connect({ port, authkey: AUTHKEY }),
      freeze() {
        Deno.kill(child.pid, "SIGSTOP");
        frozen = true;
      },
      thaw() {
        Deno.kill(child.pid, "SIGCONT");
        frozen = false;
      },
      [Symbol.asyncDispose]: stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** How long `promise` takes to settle, and how. */
async function timed<T>(
  promise: Promise<T>,
): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await promise;
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}

/**
 * `promise`, or a failure after `ms` (so that a call that never settles
 * fails the test instead of hanging it).
 */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`still pending after ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it holds, for at most `ms`. */
async function eventually(
  what: string,
  check: () => Promise<boolean>,
  ms = 10_000,
): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) assert.fail(`${what}: not within ${ms} ms`);
    await delay(20);
  }
}

/** An AbortSignal that aborts after `ms`, and how to stop its timer. */
function abortAfter(ms: number): { signal: AbortSignal; clear(): void } {
  const ac = new AbortController();
  const timer = setTimeout(
    () => ac.abort(new Error(`aborted after ${ms} ms`)),
    ms,
  );
  return { signal: ac.signal, clear: () => clearTimeout(timer) };
}

/** The number of late grants the proxy's connection undid. */
function undone(proxy: BaseProxy): number {
  return stateOf(proxy).client.undone;
}

// -- A frozen remote server ----------------------------------------------------

mpTest(
  "remote, server SIGSTOPped: timed and aborted calls settle on the caller's clock",
  async () => {
    await using server = await startServer();
    await using m = await server.connect();
    const lock = await m.lock();
    const q = await m.queue<number>();
    const sem = await m.semaphore(0);
    const ev = await m.event();
    const barrier = await m.barrier(2);
    const cond = await m.condition();
    const jq = await m.joinableQueue<number>();
    await jq.put(1);
    assert.equal(await lock.acquire(), true);
    assert.equal(await cond.acquire(), true);

    server.freeze();
    const abort = abortAfter(300);
    const [acq, get, semAcq, evWait, bWait, cWait, join, nowait, aborted] =
      await within(
        Promise.all([
          timed(lock.acquire({ timeout: 1000 })),
          timed(q.get({ timeout: 1000 })),
          timed(sem.acquire({ timeout: 1000 })),
          timed(ev.wait({ timeout: 1000 })),
          timed(barrier.wait({ timeout: 1000 })),
          timed(cond.wait({ timeout: 1000 })),
          timed(jq.join({ timeout: 1000 })),
          timed(q.getNowait()),
          timed(q.get({ signal: abort.signal })),
        ]),
        10_000,
      );
    abort.clear();
    let worst = 0;
    for (
      const [what, r, timeout] of [
        ["lock.acquire", acq, 1000],
        ["queue.get", get, 1000],
        ["semaphore.acquire", semAcq, 1000],
        ["event.wait", evWait, 1000],
        ["barrier.wait", bWait, 1000],
        ["condition.wait", cWait, 1000],
        ["joinableQueue.join", join, 1000],
        ["queue.getNowait", nowait, 0],
        ["aborted queue.get", aborted, 300],
      ] as const
    ) {
      assert.ok(
        r.ms >= timeout - 20 && r.ms <= timeout + SLACK_MS,
        `${what} settled after ${r.ms.toFixed(0)} ms (timeout ${timeout})`,
      );
      worst = Math.max(worst, r.ms - timeout);
    }
    console.log(`  worst overstay: ${worst.toFixed(0)} ms`);
    assert.equal(acq.value, false);
    assert.ok(get.error instanceof EmptyError, String(get.error));
    assert.equal(semAcq.value, false);
    assert.equal(evWait.value, false);
    assert.ok(bWait.error instanceof BrokenBarrierError, String(bWait.error));
    assert.equal(cWait.value, false);
    assert.equal(join.value, false);
    assert.ok(nowait.error instanceof EmptyError, String(nowait.error));
    assert.match(String(aborted.error), /aborted after 300 ms/);

    // Thawed, the server serves on and the given-up calls left nothing:
    // the lock is still ours alone, the queue empty, no permit taken.
    server.thaw();
    assert.equal(await lock.locked(), true);
    await lock.release();
    assert.equal(await lock.acquire({ timeout: 0 }), true);
    await lock.release();
    await q.put(7);
    assert.equal(await q.get({ timeout: 5000 }), 7);
    await sem.release();
    assert.equal(await sem.getValue(), 1);
    await cond.release();
  },
);

mpTest(
  "remote, server SIGSTOPped: the connection closes at once, rejecting what waits",
  async () => {
    await using server = await startServer();
    const m = await server.connect();
    const q = await m.queue<number>();
    server.freeze();
    const waiting = timed(q.get());
    const d = timed(m.dict({ a: 1 }));
    // A get given up on: the closing client waits a little for its answer
    // (an item it may have to put back), not for ever.
    await assert.rejects(q.get({ timeout: 50 }), EmptyError);
    const shut = await within(timed(m.shutdown()), 10_000);
    assert.ok(shut.ms < 2500, `shutdown took ${shut.ms.toFixed(0)} ms`);
    const w = await waiting;
    assert.ok(w.error instanceof ClosedError, String(w.error));
    assert.ok((await d).error instanceof ClosedError);
    await assert.rejects(q.qsize(), ClosedError);
  },
);

mpTest(
  "remote ping: an untimed wait on a SIGSTOPped server ends with ClosedError after the ping deadline",
  async () => {
    const old = setPingTimes({ interval: 200, deadline: 800 });
    try {
      await using server = await startServer();
      await using m = await server.connect();
      const q = await m.queue<string>();

      // A live server answers the pings: a wait much longer than the
      // ping's deadline is not cut short.
      const long = timed(q.get());
      await delay(2500);
      await using other = await server.connect();
      const ready = await other.event();
      await ready.set();
      await q.put("after 2.5 s");
      const r = await long;
      assert.equal(r.value, "after 2.5 s", String(r.error));

      // A frozen one does not: everything on the connection ends.
      server.freeze();
      const untimed = timed(q.get());
      const release = timed(ready.clear());
      const u = await within(untimed, 10_000);
      assert.ok(u.error instanceof ClosedError, String(u.error));
      assert.match((u.error as Error).message, /did not answer a ping/);
      // Within a ping interval plus the deadline (a ping already in
      // flight when the server froze may end it a little sooner).
      assert.ok(
        u.ms >= 800 - 200 && u.ms <= 200 + 800 + 2000,
        `the dead connection was noticed after ${u.ms.toFixed(0)} ms`,
      );
      await assert.rejects(q.qsize(), ClosedError);
      // `other`'s connection had only this call in flight: it ends too.
      const rel = await release;
      assert.ok(rel.error instanceof ClosedError, String(rel.error));
    } finally {
      setPingTimes(old);
    }
  },
);

// -- Late grants are undone ------------------------------------------------------

mpTest(
  "remote: a lock, permit or item the server grants after the caller gave up is given back",
  async () => {
    await using server = await startServer();
    await using m = await server.connect();
    const lock = await m.lock();
    const q = await m.queue<string>();
    const jq = await m.joinableQueue<string>();
    const sem = await m.boundedSemaphore(1);
    assert.equal(await lock.acquire(), true);
    assert.equal(await sem.acquire(), true);
    await q.put("first");
    await q.put("second");
    assert.equal(await q.get(), "first");

    // Frozen, the server holds these in its socket in this order: each
    // wait, then what grants it; the client gives up on each wait (and
    // sends its cancel) before the server reads any of it.
    server.freeze();
    const acq = lock.acquire({ timeout: 100 });
    const released = lock.release();
    const jgot = jq.get({ timeout: 100 });
    const jput = jq.put("joinable");
    const semAcq = sem.acquire({ timeout: 100 });
    const semRel = sem.release();
    const qget = q.get({ timeout: 100 });
    const qput = q.put("third");
    assert.equal(await acq, false);
    await assert.rejects(jgot, EmptyError);
    assert.equal(await semAcq, false);
    await assert.rejects(qget, EmptyError);
    assert.equal(undone(lock), 0);

    server.thaw();
    await Promise.all([released, jput, semRel, qput]);
    await eventually("the late grants are undone", async () => {
      return undone(lock) === 4 && !(await lock.locked()) &&
        await sem.getValue() === 1 && await q.qsize() === 2 &&
        await jq.qsize() === 1;
    });
    // The late item went back to the front: the order is kept.
    assert.equal(await q.get(), "second");
    assert.equal(await q.get(), "third");
    assert.equal(await jq.get(), "joinable");
    // put back, not put again: one taskDone is all the join waits for.
    await jq.taskDone();
    assert.equal(await jq.join({ timeout: 5000 }), true);
    assert.equal(await lock.acquire({ timeout: 0 }), true);
  },
);

mpTest(
  "remote: an item handed out as its client closes goes back to the queue",
  async () => {
    await using server = await startServer();
    const m1 = await server.connect();
    await using m2 = await server.connect();
    const q1 = await m1.named("late item", () => m1.queue<string>());
    const q2 = await m2.lookup<QueueProxy<string>>("late item");
    assert.ok(q2);
    // The server hands "x" to the get, which the client already gave up:
    // the answer comes while the client closes, and "x" goes back.
    const ac = new AbortController();
    const got = q1.get({ signal: ac.signal }).catch(() => "aborted");
    const put = q1.put("x").catch((e) => e);
    ac.abort();
    const shut = await within(timed(m1.shutdown()), 10_000);
    assert.ok(shut.ms < 2000, `shutdown took ${shut.ms.toFixed(0)} ms`);
    assert.equal(await got, "aborted");
    await put;
    assert.equal(await q2.get({ timeout: 5000 }), "x");
    assert.equal(await q2.qsize(), 0);
    assert.equal(await m2.unname("late item"), true);
  },
);

mpTest(
  "remote: a condition wait aborted while the lock is taken: release waits for the server's re-acquire",
  async () => {
    await using server = await startServer();
    await using m1 = await server.connect();
    await using m2 = await server.connect();
    const c1 = await m1.named("cond", () => m1.condition());
    const c2 = await m2.lookup<ConditionProxy>("cond");
    assert.ok(c2);
    assert.equal(await c1.acquire(), true);
    const ac = new AbortController();
    const waiting = c1.wait({ signal: ac.signal }).catch((e) => e);
    // The wait let the lock go: another client takes it.
    assert.equal(await c2.acquire({ timeout: 5000 }), true);
    ac.abort(new Error("stop waiting"));
    assert.match(String(await waiting), /stop waiting/);
    // A timed call behind the re-acquire keeps to its own deadline.
    const again = await within(timed(c1.wait({ timeout: 100 })), 10_000);
    assert.equal(again.value, false, String(again.error));
    assert.ok(
      again.ms >= 80 && again.ms <= 100 + SLACK_MS,
      `wait settled after ${again.ms.toFixed(0)} ms`,
    );
    // The server re-acquires the lock for c1 only once c2 lets it go; c1's
    // release must not overtake that (it would find the lock c2's).
    const released = timed(c1.release());
    await delay(200);
    await c2.release();
    const r = await within(released, 10_000);
    assert.equal(r.error, undefined, String(r.error));
    assert.ok(r.ms >= 150, `c1's release came after ${r.ms.toFixed(0)} ms`);
    assert.equal(await c2.acquire({ timeout: 0 }), true);
    await c2.release();
    assert.equal(await m1.unname("cond"), true);
  },
);

mpTest(
  "remote: gets aborted as items arrive, looped, receive every item exactly once",
  async () => {
    await using server = await startServer();
    await using m = await server.connect();
    const n = 400;
    const q = await m.queue<number>();
    // The producer has its own connection (a worker connects itself).
    const producer = new Process({
      target: async (q: QueueProxy<number>, n: number) => {
        for (let i = 0; i < n; i++) {
          await q.put(i);
          if (i % 4 === 3) await new Promise((r) => setTimeout(r, 1));
        }
      },
      args: [q, n],
    });
    producer.start();
    const got: number[] = [];
    let aborts = 0;
    const deadline = performance.now() + 20_000;
    const consumer = async () => {
      while (got.length < n && performance.now() < deadline) {
        const a = abortAfter(Math.random() * 2);
        try {
          got.push(await q.get({ signal: a.signal }));
        } catch (e) {
          if (!/aborted after/.test(String(e))) throw e;
          aborts++;
        } finally {
          a.clear();
        }
      }
    };
    await Promise.all([consumer(), consumer(), consumer()]);
    assert.equal(await producer.join(), 0);
    // Every item came exactly once, and nothing is left over.
    assert.equal(got.length, n, `got ${got.length} of ${n} items`);
    assert.deepEqual([...got].sort((a, b) => a - b), range(n));
    assert.equal(await q.qsize(), 0);
    assert.ok(aborts > 0, "no get was aborted");
    assert.ok(undone(q) > 0, "no get was aborted after its item was taken");
    console.log(
      `  ${aborts} aborted gets, ${undone(q)} late items put back`,
    );
  },
);

mpTest(
  "remote: acquires aborted as the lock is released, looped, leave the lock free",
  async () => {
    await using server = await startServer();
    await using m = await server.connect();
    const lock = await m.lock();
    const sem = await m.semaphore(0);
    const rounds = 200;
    let granted = 0;
    for (let i = 0; i < rounds; i++) {
      assert.equal(await lock.acquire({ timeout: 5000 }), true, `round ${i}`);
      const ac = new AbortController();
      const waiting = lock.acquire({ signal: ac.signal }).catch(() => false);
      const permit = sem.acquire({ signal: ac.signal }).catch(() => false);
      // The releases grant both waits at once; the abort comes before the
      // grants can be read (rounds 0 and 1 of 4), or about when they arrive.
      const releasing = Promise.all([lock.release(), sem.release()]);
      if (i % 4 === 1) await Promise.resolve();
      else if (i % 4 === 2) await delay(0);
      else if (i % 4 === 3) await delay(Math.random() * 2);
      ac.abort(new Error("aborted"));
      await releasing;
      if (await waiting) {
        granted++;
        await lock.release();
      }
      if (await permit) granted++;
      // Given back or never taken: the permit is there for the next taker.
      else assert.equal(await sem.acquire({ timeout: 5000 }), true);
    }
    await eventually("the lock is free", async () => !(await lock.locked()));
    assert.equal(await sem.getValue(), 0);
    // Every abort before the grants could be read left a late grant.
    assert.ok(undone(lock) >= rounds, `only ${undone(lock)} grants undone`);
    console.log(`  ${granted} grants in time, ${undone(lock)} undone`);
  },
);

// -- An embedded server that does not answer -------------------------------------

mpTest(
  "embedded: with the server worker busy, timed calls settle on the caller's clock and late grants are undone",
  async () => {
    await using m = await Manager.start({
      register: {
        Busy: {
          module:
            new URL("./fixtures/manager_deadline_busy.ts", import.meta.url)
              .href,
          export: "Busy",
        },
      },
    });
    const busy = await m.create<Busy>("Busy");
    const lock = await m.lock();
    const q = await m.queue<string>();
    const sem = await m.semaphore(1);
    const ev = await m.event();
    await q.put("x");

    const spinning = busy.spin(2000);
    const abort = abortAfter(200);
    const [acq, get, semAcq, evWait] = await within(
      Promise.all([
        timed(lock.acquire({ timeout: 100 })),
        timed(q.get({ timeout: 100 })),
        timed(sem.acquire({ timeout: 100 })),
        timed(ev.wait({ signal: abort.signal })),
      ]),
      10_000,
    );
    abort.clear();
    for (
      const [what, r, t] of [
        ["lock.acquire", acq, 100],
        ["queue.get", get, 100],
        ["semaphore.acquire", semAcq, 100],
        ["aborted event.wait", evWait, 200],
      ] as const
    ) {
      assert.ok(
        r.ms >= t - 20 && r.ms <= t + SLACK_MS,
        `${what} settled after ${r.ms.toFixed(0)} ms (timeout ${t})`,
      );
    }
    assert.equal(acq.value, false);
    assert.ok(get.error instanceof EmptyError, String(get.error));
    assert.equal(semAcq.value, false);
    assert.match(String(evWait.error), /aborted after 200 ms/);

    // The server, free again, granted all three at once: each is undone.
    assert.equal(await spinning, true);
    await eventually("the late grants are undone", async () => {
      return undone(lock) === 3 && !(await lock.locked()) &&
        await sem.getValue() === 1 && await q.qsize() === 1;
    });
    assert.equal(await q.get(), "x");
    assert.equal(await ev.isSet(), false);
  },
);

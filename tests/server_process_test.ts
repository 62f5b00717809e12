import { strict as assert } from "node:assert";
import {
  AbandonedError,
  AuthenticationError,
  BrokenBarrierError,
  ClosedError,
  type ConditionProxy,
  type DictProxy,
  EmptyError,
  FullError,
  type ListProxy,
  type LockProxy,
  Manager,
  serve,
} from "../patterns/server_process.ts";
import { Pool, Process } from "../patterns/cube.ts";
import { FramedSocket } from "../patterns/_manager/frames.ts";
import { hmacKey, nonce, proof } from "../patterns/_manager/handshake.ts";
import { PROTOCOL, PROTOCOL_VERSION } from "../patterns/_manager/protocol.ts";
import { mpTest } from "./_helpers.ts";
import type { Counter } from "./fixtures/manager_counter.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const COUNTER = {
  Counter: {
    module: new URL("./fixtures/manager_counter.ts", import.meta.url).href,
    export: "Counter",
  },
};

// -- Containers ---------------------------------------------------------------

mpTest("Manager dict proxy: every method", async () => {
  await using m = await Manager.start();
  const d = await m.dict<string | number, unknown>({ a: 1 });
  await d.set("b", [1, 2]);
  await d.set(3, "three");
  assert.equal(await d.get("a"), 1);
  assert.equal(await d.get("zz"), undefined);
  assert.equal(await d.get("zz", 9), 9);
  assert.equal(await d.has("b"), true);
  assert.equal(await d.has("3"), false);
  assert.deepEqual(await d.keys(), ["a", "b", 3]);
  assert.deepEqual(await d.values(), [1, [1, 2], "three"]);
  assert.deepEqual(await d.entries(), [["a", 1], ["b", [1, 2]], [3, "three"]]);
  assert.equal(await d.size(), 3);
  assert.equal(await d.delete(3), true);
  assert.equal(await d.delete(3), false);
  await d.update({ c: 3 });
  await d.update(new Map([["e", 5]]));
  await d.update([["f", 6]]);
  assert.equal(await d.pop("c"), 3);
  assert.equal(await d.pop("c", "none"), "none");
  await assert.rejects(d.pop("c"), RangeError);
  assert.equal(await d.setDefault("g", 7), 7);
  assert.equal(await d.setDefault("g", 8), 7);
  assert.deepEqual(await d.toObject(), {
    a: 1,
    b: [1, 2],
    e: 5,
    f: 6,
    g: 7,
  });
  await assert.rejects(d.set({} as never, 1), TypeError);
  await d.set("big", { n: 10n, s: new Set([1]), u: undefined, nan: NaN });
  const big = await d.get("big") as Record<string, unknown>;
  assert.deepEqual({ ...big, s: [...big.s as Set<number>] }, {
    n: 10n,
    s: [1],
    u: undefined,
    nan: NaN,
  });
  await d.clear();
  assert.equal(await d.size(), 0);
});

mpTest("Manager list proxy: every method", async () => {
  await using m = await Manager.start();
  const l = await m.list<number>([5, 1]);
  await l.append(3);
  await l.extend([4, 4]);
  assert.deepEqual(await l.toArray(), [5, 1, 3, 4, 4]);
  assert.equal(await l.get(0), 5);
  assert.equal(await l.get(-1), 4);
  await assert.rejects(l.get(5), RangeError);
  await l.set(1, 2);
  await l.insert(0, 0);
  assert.deepEqual(await l.toArray(), [0, 5, 2, 3, 4, 4]);
  assert.equal(await l.pop(), 4);
  assert.equal(await l.pop(0), 0);
  await l.remove(4);
  await assert.rejects(l.remove(42), RangeError);
  assert.equal(await l.index(2), 1);
  await assert.rejects(l.index(42), RangeError);
  assert.equal(await l.count(5), 1);
  await l.sort();
  assert.deepEqual(await l.toArray(), [2, 3, 5]);
  await l.sort({ reverse: true });
  assert.deepEqual(await l.toArray(), [5, 3, 2]);
  await l.reverse();
  assert.deepEqual(await l.toArray(), [2, 3, 5]);
  assert.equal(await l.length(), 3);
  await l.append("x" as never);
  await assert.rejects(l.sort(), TypeError);
  await l.clear();
  assert.equal(await l.length(), 0);
  await assert.rejects(l.pop(), RangeError);
});

mpTest("Manager namespace proxy: get, set, delete, toObject", async () => {
  await using m = await Manager.start();
  const ns = await m.namespace<{ x: number; y?: string }>({ x: 1 });
  await ns.set("y", "why");
  assert.equal(await ns.get("x"), 1);
  assert.equal(await ns.get("y"), "why");
  assert.equal(await ns.delete("y"), true);
  assert.equal(await ns.get("y"), undefined);
  assert.deepEqual(await ns.toObject(), { x: 1 });
});

mpTest("Manager value and array proxies check their typecode", async () => {
  await using m = await Manager.start();
  const v = await m.value("i", 4);
  assert.equal(await v.get(), 4);
  assert.equal(await v.add(2), 6);
  await v.set(-1);
  assert.equal(await v.get(), -1);
  await assert.rejects(v.set(1.5), TypeError);
  await assert.rejects(v.set(2 ** 31), TypeError);
  const big = await m.value<bigint>("q", 1n);
  assert.equal(await big.add(2n), 3n);
  await assert.rejects(big.set(1 as never), TypeError);
  await assert.rejects(m.value("z", 1), TypeError);
  const a = await m.array("d", [1.5, 2]);
  assert.equal(await a.length(), 2);
  await a.set(1, 3.25);
  assert.equal(await a.get(1), 3.25);
  assert.deepEqual(await a.toArray(), [1.5, 3.25]);
  await assert.rejects(a.get(2), RangeError);
  const z = await m.array("B", 3);
  assert.deepEqual(await z.toArray(), [0, 0, 0]);
  await assert.rejects(z.set(0, 300), TypeError);
});

// -- Synchronisation ------------------------------------------------------------

mpTest(
  "Manager lock: acquire, timeout, release by any client, signal",
  async () => {
    await using m = await Manager.start();
    const lock = await m.lock();
    assert.equal(await lock.acquire(), true);
    assert.equal(await lock.locked(), true);
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    assert.equal(await lock.acquire({ timeout: 20 }), false);
    const reason = new Error("stop waiting");
    const ac = new AbortController();
    const waiting = lock.acquire({ signal: ac.signal });
    ac.abort(reason);
    await assert.rejects(waiting, (e) => e === reason);
    await assert.rejects(
      lock.acquire({ signal: AbortSignal.abort(reason) }),
      (e) => e === reason,
    );
    // A waiter is granted the lock when it is released.
    const next = lock.acquire();
    await lock.release();
    assert.equal(await next, true);
    await lock.release();
    await assert.rejects(lock.release(), RangeError);
    {
      await using _ = await lock.hold();
      assert.equal(await lock.locked(), true);
    }
    assert.equal(await lock.locked(), false);
  },
);

mpTest("Manager rlock: re-entrant, owned by the acquiring thread", async () => {
  await using m = await Manager.start();
  const r = await m.rlock();
  assert.ok(await r.acquire());
  assert.ok(await r.acquire());
  await r.release();
  assert.equal(await r.locked(), true);
  // Another thread cannot release it, nor take it.
  const flags = await m.dict<string, unknown>();
  const p = new Process({
    target: async (r: LockProxy, flags: DictProxy<string, unknown>) => {
      try {
        await r.release();
        await flags.set("release", "no error");
      } catch (e) {
        await flags.set("release", (e as Error).name);
      }
      await flags.set("acquire", await r.acquire({ timeout: 0 }));
    },
    args: [r, flags],
  });
  p.start();
  assert.equal(await p.join(), 0);
  assert.equal(await flags.get("release"), "RangeError");
  assert.equal(await flags.get("acquire"), false);
  await r.release();
  assert.equal(await r.locked(), false);
});

mpTest("Manager semaphores: permits, bounded release", async () => {
  await using m = await Manager.start();
  const s = await m.semaphore(2);
  assert.ok(await s.acquire());
  assert.ok(await s.acquire());
  assert.equal(await s.acquire({ timeout: 0 }), false);
  const waiting = s.acquire();
  await s.release();
  assert.equal(await waiting, true);
  await s.release(2);
  assert.equal(await s.getValue(), 2);
  const b = await m.boundedSemaphore(1);
  await assert.rejects(b.release(), RangeError);
  assert.ok(await b.acquire());
  await b.release();
  await assert.rejects(m.semaphore(-1), RangeError);
});

mpTest("Manager condition: wait, notify across threads, waitFor", async () => {
  await using m = await Manager.start();
  const c = await m.condition();
  const state = await m.dict<string, number>({ ready: 0 });
  await assert.rejects(c.notify(), RangeError);
  await assert.rejects(c.wait(), RangeError);
  await c.acquire();
  assert.equal(await c.wait({ timeout: 10 }), false);
  assert.equal(await c.waitFor(() => false, { timeout: 10 }), false);
  const p = new Process({
    target: async (
      c: ConditionProxy,
      state: DictProxy<string, number>,
    ) => {
      await c.acquire();
      await state.set("ready", 1);
      await c.notifyAll();
      await c.release();
    },
    args: [c, state],
  });
  p.start();
  // wait releases the lock (so the process can take it) and re-acquires it.
  const got = await c.waitFor(async () => (await state.get("ready")) === 1, {
    timeout: 10_000,
  });
  assert.equal(got, true);
  await c.notify(1);
  await c.release();
  assert.equal(await p.join(), 0);
});

mpTest("Manager event: set, clear, wait with timeout", async () => {
  await using m = await Manager.start();
  const e = await m.event();
  assert.equal(await e.isSet(), false);
  assert.equal(await e.wait({ timeout: 0 }), false);
  assert.equal(await e.wait({ timeout: 10 }), false);
  const waiting = e.wait();
  await e.set();
  assert.equal(await waiting, true);
  assert.equal(await e.isSet(), true);
  await e.clear();
  assert.equal(await e.isSet(), false);
});

mpTest(
  "Manager barrier: indices, timeout breaks it, abort and reset",
  async () => {
    await using m = await Manager.start();
    const b = await m.barrier(3);
    assert.equal(await b.parties(), 3);
    const all = Promise.all([b.wait(), b.wait(), b.wait()]);
    assert.deepEqual((await all).sort(), [0, 1, 2]);
    const one = assert.rejects(b.wait(), BrokenBarrierError);
    const two = assert.rejects(b.wait({ timeout: 20 }), BrokenBarrierError);
    await Promise.all([one, two]);
    assert.equal(await b.broken(), true);
    await assert.rejects(b.wait(), BrokenBarrierError);
    await b.reset();
    assert.equal(await b.broken(), false);
    const w = assert.rejects(b.wait(), BrokenBarrierError);
    // Calls on one connection are handled in order: the wait is registered.
    assert.equal(await b.nWaiting(), 1);
    await b.abort();
    await w;
  },
);

mpTest("Manager queue: FIFO, Empty/Full, close, timeouts", async () => {
  await using m = await Manager.start();
  const q = await m.queue<number>(2);
  assert.equal(await q.empty(), true);
  await q.put(1);
  await q.putNowait(2);
  assert.equal(await q.full(), true);
  assert.equal(await q.qsize(), 2);
  await assert.rejects(q.putNowait(3), FullError);
  await assert.rejects(q.put(3, { timeout: 10 }), FullError);
  const blocked = q.put(3);
  assert.equal(await q.get(), 1);
  await blocked;
  assert.equal(await q.getNowait(), 2);
  assert.equal(await q.get(), 3);
  await assert.rejects(q.getNowait(), EmptyError);
  await assert.rejects(q.get({ timeout: 10 }), EmptyError);
  const waitingGet = q.get();
  await q.put(4);
  assert.equal(await waitingGet, 4);
  await q.put(5);
  const starved = await m.queue<number>();
  const pending = assert.rejects(starved.get(), ClosedError);
  await starved.close();
  await pending;
  await q.close();
  await assert.rejects(q.put(6), ClosedError);
  const rest: number[] = [];
  for await (const x of q) rest.push(x);
  assert.deepEqual(rest, [5]);
  await assert.rejects(q.get(), ClosedError);
});

mpTest("Manager joinableQueue: taskDone and join", async () => {
  await using m = await Manager.start();
  const q = await m.joinableQueue<string>();
  assert.equal(await q.join({ timeout: 0 }), true);
  await q.put("a");
  await q.put("b");
  assert.equal(await q.join({ timeout: 10 }), false);
  const joined = q.join();
  await q.get();
  await q.taskDone();
  await q.get();
  await q.taskDone();
  assert.equal(await joined, true);
  await assert.rejects(q.taskDone(), RangeError);
});

// -- Nested values and proxies inside containers --------------------------------

mpTest(
  "values read from a dict are frozen: nested mutation throws, never lost",
  async () => {
    await using m = await Manager.start();
    const d = await m.dict<string, unknown>({ k: [1], o: { a: 1 } });
    const k = await d.get("k") as number[];
    assert.throws(() => k.push(2), TypeError);
    const o = await d.get("o") as Record<string, number>;
    assert.throws(() => {
      o.a = 2;
    }, TypeError);
    await d.set("m", new Map([[1, 2]]));
    const map = await d.get("m") as Map<number, number>;
    assert.throws(() => map.set(3, 4), /read-only copy/);
    assert.deepEqual(await d.get("k"), [1]);
    // toObject hands out a detached, mutable copy.
    const copy = await d.toObject() as { k: number[] };
    copy.k.push(2);
    assert.deepEqual(await d.get("k"), [1]);
  },
);

mpTest(
  "a proxy stored in a dict comes back live and mutates in place",
  async () => {
    await using m = await Manager.start();
    const d = await m.dict<string, unknown>();
    const l = await m.list<number>([1]);
    await d.set("l", l);
    const again = await d.get("l") as ListProxy<number>;
    await again.append(2);
    assert.deepEqual(await l.toArray(), [1, 2]);
    const nested = await m.dict<string, unknown>({ inner: l });
    assert.deepEqual(
      await ((await nested.get("inner")) as ListProxy<number>).toArray(),
      [1, 2],
    );
  },
);

// -- Lifetimes ----------------------------------------------------------------

mpTest(
  "objects are freed when their proxies are dropped, and stored ones live on",
  async () => {
    await using m = await Manager.start();
    assert.equal((await m.stats()).objects, 0);
    {
      using d = await m.dict();
      using _l = await m.list();
      using inner = await m.list([1]);
      await d.set("x", inner);
      assert.equal((await m.stats()).objects, 3);
    }
    assert.equal((await m.stats()).objects, 0);
    const d = await m.dict<string, unknown>();
    {
      using inner = await m.list([1]);
      await d.set("x", inner);
    }
    // The dict still holds the list.
    assert.equal((await m.stats()).objects, 2);
    await d.delete("x");
    assert.equal((await m.stats()).objects, 1);
    d.drop();
    await assert.rejects(d.size(), ClosedError);
    assert.equal((await m.stats()).objects, 0);
  },
);

mpTest(
  "a worker's connection closes with its process and counts go back",
  async () => {
    await using m = await Manager.start();
    const d = await m.dict<string, unknown>();
    const p = new Process({
      target: async (d: DictProxy<string, unknown>) => {
        await d.set("seen", true);
        // Objects the worker reads stay referenced only by its connection.
        await d.get("seen");
      },
      args: [d],
    });
    p.start();
    assert.equal(await p.join(), 0);
    assert.equal(await d.get("seen"), true);
    const s = await m.stats();
    assert.deepEqual(s, { objects: 1, connections: 1 });
  },
);

mpTest(
  "a lock held by a client that disconnects stays held, abandoned: the next acquirer takes it over",
  async () => {
    await using m = await Manager.start();
    const lock = await m.lock();
    const p = new Process({
      target: async (lock: LockProxy) => {
        await lock.acquire();
      },
      args: [lock],
    });
    p.start();
    assert.equal(await p.join(), 0);
    await assert.rejects(lock.acquire({ timeout: 10_000 }), AbandonedError);
    // The caller now holds it.
    assert.equal(await lock.locked(), true);
    assert.equal(await lock.acquire({ timeout: 0 }), false);
    await lock.release();
  },
);

// -- Concurrency ---------------------------------------------------------------

mpTest(
  "two workers increment a dict counter under a manager lock: exact total",
  async () => {
    await using m = await Manager.start();
    const d = await m.dict<string, number>({ n: 0 });
    const lock = await m.lock();
    const task = async (
      d: DictProxy<string, number>,
      lock: LockProxy,
      k: number,
    ) => {
      for (let i = 0; i < k; i++) {
        await lock.acquire();
        const n = (await d.get("n"))!;
        await d.set("n", n + 1);
        await lock.release();
      }
    };
    const ps = [0, 1].map(() =>
      new Process({ target: task, args: [d, lock, 500] })
    );
    for (const p of ps) p.start();
    assert.deepEqual(await Promise.all(ps.map((p) => p.join())), [0, 0]);
    assert.equal(await d.get("n"), 1000);
    assert.equal(await lock.locked(), false);
  },
);

// -- Registered types ------------------------------------------------------------

mpTest("registered types: create, public methods only", async () => {
  await using m = await Manager.start({ register: COUNTER });
  const c = await m.create<Counter>("Counter", 5);
  assert.equal(await c.increment(2), 7);
  assert.equal(await c.read(), 7);
  await assert.rejects(c.fail(), RangeError);
  for (
    const name of [
      "_reset",
      "constructor",
      "toString",
      "__proto__",
      "value",
      "valueOf",
      "hasOwnProperty",
    ]
  ) {
    await assert.rejects(c.call(name), TypeError, name);
  }
  await assert.rejects(m.create("Nope"), TypeError);
  assert.equal(await c.increment(), 8);
});

// -- Shutdown ---------------------------------------------------------------------

mpTest("after shutdown, proxy calls reject with ClosedError", async () => {
  const m = await Manager.start();
  const d = await m.dict();
  const q = await m.queue();
  const waiting = q.get();
  await m.shutdown();
  await assert.rejects(waiting, ClosedError);
  await assert.rejects(d.size(), ClosedError);
  await assert.rejects(m.dict(), ClosedError);
  await m.shutdown();
});

// -- Remote ----------------------------------------------------------------------

mpTest(
  "serve/connect: authkey must be a non-empty string or Uint8Array",
  async () => {
    await assert.rejects(serve({ port: 0, authkey: "" }), TypeError);
    await assert.rejects(serve({ port: 0, authkey: 42 as never }), TypeError);
    await assert.rejects(
      Manager.connect({ port: 1, authkey: new Uint8Array() }),
      TypeError,
    );
  },
);

mpTest(
  "remote: a wrong key is refused; objects are freed on disconnect",
  async () => {
    await using server = await serve({ port: 0, authkey: "right" });
    const port = server.addr.port;
    await assert.rejects(
      Manager.connect({ port, authkey: "wrong" }),
      AuthenticationError,
    );
    const m = await Manager.connect({
      port,
      authkey: new TextEncoder().encode("right"),
    });
    const d = await m.dict<string, unknown>({ a: 1 });
    const l = await m.list([1, 2]);
    await d.set("l", l);
    assert.deepEqual(server.stats(), { objects: 2, connections: 1 });
    await m.shutdown();
    await assert.rejects(d.get("a"), ClosedError);
    // The server notices the disconnect on its read loop.
    while (server.stats().connections !== 0) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(server.stats(), { objects: 0, connections: 0 });
  },
);

mpTest(
  "remote: a proxy passed to a Process connects from the worker",
  async () => {
    await using server = await serve({ port: 0, authkey: "k" });
    await using m = await Manager.connect({
      port: server.addr.port,
      authkey: "k",
    });
    const d = await m.dict<string, string>();
    const l = await m.list([9, 3]);
    const p = new Process({
      target: async (d: DictProxy<string, string>, l: ListProxy<number>) => {
        await d.set("car", "ford");
        await l.sort();
      },
      args: [d, l],
    });
    p.start();
    assert.equal(await p.join(), 0);
    assert.deepEqual(await d.toObject(), { car: "ford" });
    assert.deepEqual(await l.toArray(), [3, 9]);
  },
);

mpTest(
  "remote: a server started as a separate OS process serves a client",
  async () => {
    const authkey = "os-process-key";
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read=./patterns",
        "--allow-net=127.0.0.1",
        "--allow-env=MP_AUTHKEY",
        "patterns/server_process.ts",
        "serve",
        "--port",
        "0",
      ],
      env: { MP_AUTHKEY: authkey },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      while (!/:(\d+)\s*$/m.test(text)) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      const port = Number(/:(\d+)\s*$/m.exec(text)![1]);
      await using m = await Manager.connect({ port, authkey });
      const q = await m.queue<string>();
      await q.put("over tcp");
      assert.equal(await q.get(), "over tcp");
      await m.shutdown();
      await reader.cancel();
    } finally {
      child.kill("SIGTERM");
      await child.status;
    }
  },
);

// -- Hostile peers -----------------------------------------------------------------

/** A hand-made client over a raw socket. */
async function rawConnect(port: number): Promise<FramedSocket> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  return new FramedSocket(tcp, 1 << 20);
}

async function rawAuthenticated(
  port: number,
  key: string,
): Promise<FramedSocket> {
  const s = await rawConnect(port);
  const hello = await s.next() as { challenge: string };
  const k = await hmacKey(new TextEncoder().encode(key));
  const mine = nonce();
  s.send({
    proto: PROTOCOL,
    version: PROTOCOL_VERSION,
    response: await proof(k, "client", hello.challenge, mine),
    challenge: mine,
  });
  const answer = await s.next() as { ok: boolean };
  assert.equal(answer.ok, true);
  return s;
}

async function assertServed(
  port: number,
  key: string,
  good: Manager,
): Promise<void> {
  const d = await good.dict({ ok: 1 });
  assert.equal(await d.get("ok"), 1);
  d.drop();
  await using fresh = await Manager.connect({ port, authkey: key });
  assert.equal(await (await fresh.value("i", 3)).get(), 3);
}

mpTest(
  "remote: hostile input never hurts the server or other clients",
  async () => {
    const key = "hostile-test";
    await using server = await serve({
      port: 0,
      authkey: key,
      maxFrameBytes: 4096,
    });
    const port = server.addr.port;
    await using good = await Manager.connect({ port, authkey: key });
    const enc = new TextEncoder();

    // A missing key: the peer answers the challenge without a response.
    {
      const s = await rawConnect(port);
      await s.next();
      s.send({
        proto: PROTOCOL,
        version: PROTOCOL_VERSION,
        challenge: nonce(),
      });
      const answer = await s.next() as { e: { name: string } };
      assert.equal(answer.e.name, "AuthenticationError");
      assert.equal(
        await s.next(),
        undefined,
        "the server closed the connection",
      );
      await s.close();
      await assertServed(port, key, good);
    }
    // A wrong protocol version.
    {
      const s = await rawConnect(port);
      await s.next();
      s.send({
        proto: PROTOCOL,
        version: 999,
        challenge: nonce(),
        response: "x",
      });
      const answer = await s.next() as { e: { name: string } };
      assert.equal(answer.e.name, "AuthenticationError");
      await s.close();
      await assertServed(port, key, good);
    }
    // Garbage bytes before authenticating.
    {
      const s = await rawConnect(port);
      await s.next();
      s.sendRaw(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      assert.equal(await s.next(), undefined);
      await s.close();
      await assertServed(port, key, good);
    }
    // After authenticating: a frame that is not JSON, then a good call.
    {
      const s = await rawAuthenticated(port, key);
      const junk = enc.encode("{not json");
      const bytes = new Uint8Array(4 + junk.length);
      new DataView(bytes.buffer).setUint32(0, junk.length);
      bytes.set(junk, 4);
      s.sendRaw(bytes);
      const e1 = await s.next() as { e: { name: string } };
      assert.equal(e1.e.name, "TypeError");
      // JSON that is not a message, bad tags, unknown ids and methods.
      const bad: Array<[unknown, string]> = [
        [{ i: 1, o: 0, m: "new", a: ["dict"] }, "TypeError"],
        [[1, 2], "TypeError"],
        [[1, 9999, "get", []], "RangeError"],
        [[2, 0, "eval", []], "TypeError"],
        [[3, 0, "constructor", []], "TypeError"],
        [[4, 0, "__proto__", []], "TypeError"],
        [[5, 0, "toString", []], "TypeError"],
        [[6, 0, "new", ["dict", { $t: "nope" }]], "TypeError"],
        // Ids are strings: a numeric one is malformed, a guessed one unknown.
        [
          [7, 0, "new", ["dict", { $t: "ref", id: 4242, type: "dict" }]],
          "TypeError",
        ],
        [
          [7, 0, "new", ["dict", {
            $t: "ref",
            id: "AAAAAAAAAAAAAAAA",
            type: "dict",
          }]],
          "RangeError",
        ],
        [[8, -1, "get", []], "TypeError"],
        [[9, 0, "new", ["Function", "return 1"]], "TypeError"],
        [[10, 0, "new", "not an array"], "TypeError"],
        [[-5, 0, "stats", []], "TypeError"],
      ];
      for (const [msg, name] of bad) {
        s.send(msg);
        const r = await s.next() as { e: { name: string } };
        assert.equal(r?.e?.name, name, JSON.stringify(msg));
      }
      // A real object, then its forbidden methods.
      s.send([20, 0, "new", ["dict"], 0]);
      const made = await s.next() as [number, { id: string }];
      for (const m of ["constructor", "__proto__", "toString", "map", "put"]) {
        s.send([21, made[1].id, m, [], 0]);
        const r = await s.next() as { e: { name: string } };
        assert.equal(r.e.name, "TypeError", m);
      }
      s.send([22, made[1].id, "set", ["__proto__", { polluted: true }], 0]);
      assert.deepEqual(await s.next(), [22, { $t: "u" }]);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      s.send([23, made[1].id, "toObject", [], 0]);
      const obj = await s.next() as [number, Record<string, unknown>];
      assert.ok(
        Object.hasOwn(obj[1], "__proto__"),
        "a plain key, not a prototype",
      );
      await assertServed(port, key, good);
      // An oversized length closes that connection only.
      const huge = new Uint8Array(4);
      new DataView(huge.buffer).setUint32(0, 0xfffffff0);
      s.sendRaw(huge);
      assert.equal(await s.next(), undefined);
      await s.close();
      await assertServed(port, key, good);
    }
    // A truncated frame, then the peer hangs up.
    {
      const s = await rawAuthenticated(port, key);
      const part = new Uint8Array(6);
      new DataView(part.buffer).setUint32(0, 100);
      s.sendRaw(part);
      await s.flushed();
      await s.close();
      await assertServed(port, key, good);
    }
    // Everything the hostile peers made is gone with them.
    while (server.stats().connections !== 1) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(server.stats(), { objects: 0, connections: 1 });
  },
);

mpTest(
  "proxies passed to Pool tasks work in every task; connections close with the tasks",
  async () => {
    await using m = await Manager.start();
    const d = await m.dict<string, number>();
    const lock = await m.lock();
    {
      await using pool = new Pool({ workers: 2 });
      const items = Array.from({ length: 20 }, (_, i) => i);
      const got = await pool.map(
        async (
          [i, d, lock]: [number, DictProxy<string, number>, LockProxy],
        ) => {
          await d.set(`k${i}`, i * i);
          await lock.acquire();
          await d.set("total", ((await d.get("total")) ?? 0) + i);
          await lock.release();
          return i;
        },
        items.map((i) =>
          [i, d, lock] as [number, DictProxy<string, number>, LockProxy]
        ),
      );
      assert.deepEqual(got, items);
    }
    assert.equal(await d.size(), 21);
    assert.equal(await d.get("total"), 190);
    assert.equal(await d.get("k7"), 49);
    assert.deepEqual(await m.stats(), { objects: 2, connections: 1 });
  },
);

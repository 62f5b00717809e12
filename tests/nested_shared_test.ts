import { strict as assert } from "node:assert";
import { Pool, Process } from "../patterns/cube.ts";
import { EOFError, Pipe } from "../patterns/pipe.ts";
import { FullError, Queue } from "../patterns/queue.ts";
import { Lock } from "../patterns/sync.ts";
import { Value } from "../patterns/value.ts";
import { depositCount } from "../patterns/_core/exchange.ts";
import { mpTest, range } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

interface Bundle {
  v: Value<"i">;
  lock: Lock;
  inner: Queue<string>;
  conn: import("../patterns/pipe.ts").Connection;
}

mpTest(
  "a Value, Lock, Queue and pipe end nested in a queue item arrive live in a Process",
  async () => {
    const q = new Queue<Bundle>();
    const inner = new Queue<string>();
    const v = new Value("i", 0);
    const lock = new Lock();
    const [mine, theirs] = Pipe();
    q.put({ v, lock, inner, conn: theirs });
    theirs.close(); // the item holds its own copy
    lock.acquireSync();
    const p = new Process({
      target: async (q: Queue<Bundle>) => {
        const { v, lock, inner, conn } = await q.get();
        // The parent holds the lock: the same lock, not a copy.
        v.value = lock.acquireSync({ timeout: 0 }) ? -1 : 1;
        conn.send("through the received end");
        inner.put("through the received queue");
        await lock.acquire();
        v.value += 10;
        lock.release();
      },
      args: [q],
    });
    p.start();
    assert.equal(
      await mine.recv({ timeout: 30_000 }),
      "through the received end",
    );
    assert.equal(
      await inner.get({ timeout: 30_000 }),
      "through the received queue",
    );
    assert.equal(v.value, 1);
    lock.release();
    await p.join();
    assert.equal(p.exitCode, 0);
    assert.equal(v.value, 11);
    // The process's copy closed with it: the parent sees the end of the pipe.
    await assert.rejects(mine.recv({ timeout: 10_000 }), EOFError);
    assert.equal(depositCount(), 0);
    mine.close();
    q.close();
    inner.close();
  },
);

mpTest(
  "shared objects nested in pipe messages arrive live: worker to main and worker to worker",
  async () => {
    const [toMain, fromWorker] = Pipe();
    const [toPeer, fromPeer] = Pipe();
    const producer = new Process({
      target: async (
        out: typeof toMain,
        peer: typeof toPeer,
        valueModule: string,
      ) => {
        const { Value } = await import(valueModule);
        const made = new Value("d", 2.5);
        out.send({ made, note: "made in a worker" });
        peer.send([made, new Map([["again", made]])]);
      },
      args: [
        toMain,
        toPeer,
        new URL("../patterns/value.ts", import.meta.url).href,
      ],
    });
    const consumer = new Process({
      target: async (inbox: typeof fromPeer) => {
        const [made, byName] = await inbox.recv({ timeout: 30_000 }) as [
          Value<"d">,
          Map<string, Value<"d">>,
        ];
        // One object referenced twice arrives as one object.
        if (byName.get("again") !== made) throw new Error("identity lost");
        made.value *= 4;
      },
      args: [fromPeer],
    });
    producer.start();
    consumer.start();
    const got = await fromWorker.recv({ timeout: 30_000 }) as {
      made: Value<"d">;
      note: string;
    };
    assert.equal(got.note, "made in a worker");
    await consumer.join();
    await producer.join();
    assert.equal(consumer.exitCode, 0);
    assert.equal(got.made.value, 10);
    assert.equal(depositCount(), 0);
    for (const end of [toMain, fromWorker, toPeer, fromPeer]) end.close();
  },
);

mpTest(
  "producers putting counters while consumers run: every increment lands exactly once",
  async () => {
    const PRODUCERS = 2, CONSUMERS = 3, ITEMS = 150;
    const q = new Queue<{ counter: Value<"i">; n: number } | null>();
    const counters = range(4).map(() => new Value("i", 0));
    const consumers = range(CONSUMERS).map(() =>
      new Process({
        target: async (q: Queue<{ counter: Value<"i">; n: number } | null>) => {
          for (;;) {
            const item = await q.get();
            if (item === null) return;
            item.counter.add(item.n);
          }
        },
        args: [q],
      })
    );
    for (const c of consumers) c.start();
    const producers = range(PRODUCERS).map((p) =>
      new Process({
        target: (
          q: Queue<{ counter: Value<"i">; n: number } | null>,
          counters: Value<"i">[],
          p: number,
          items: number,
        ) => {
          for (let i = 0; i < items; i++) {
            q.putSync({ counter: counters[(p + i) % counters.length]!, n: 1 });
          }
        },
        args: [q, counters, p, ITEMS],
      })
    );
    for (const p of producers) p.start();
    for (const p of producers) await p.join();
    for (let i = 0; i < CONSUMERS; i++) await q.put(null);
    for (const c of consumers) await c.join();
    const total = counters.reduce((s, c) => s + c.value, 0);
    assert.equal(total, PRODUCERS * ITEMS);
    assert.deepEqual(
      [...producers, ...consumers].map((p) => p.exitCode),
      range(PRODUCERS + CONSUMERS).map(() => 0),
    );
    assert.equal(depositCount(), 0);
    q.close();
  },
);

mpTest(
  "a pipe end received through a queue by a Pool task closes when the task ends",
  async () => {
    await using pool = new Pool({ workers: 2 });
    const q = new Queue<{ conn: import("../patterns/pipe.ts").Connection }>();
    const [mine, theirs] = Pipe();
    await q.put({ conn: theirs });
    theirs.close();
    const sent = await pool.apply(
      async (q: Queue<{ conn: import("../patterns/pipe.ts").Connection }>) => {
        const { conn } = await q.get();
        conn.send("hello from a task");
        return "sent";
      },
      [q],
    );
    assert.equal(sent, "sent");
    assert.equal(await mine.recv({ timeout: 30_000 }), "hello from a task");
    await assert.rejects(mine.recv({ timeout: 10_000 }), EOFError);
    mine.close();
    q.close();
  },
);

mpTest(
  "a Lock, Queue, Value and pipe end inside a pipe message are used live by a Process",
  async () => {
    const [toChild, childEnd] = Pipe();
    const lock = new Lock();
    const q = new Queue<number>();
    const v = new Value("i", 0);
    const [mine, theirs] = Pipe<string>();
    toChild.send({ lock, q, v, conn: theirs });
    theirs.close();
    lock.acquireSync();
    const p = new Process({
      target: async (inbox: typeof childEnd) => {
        const { lock, q, v, conn } = await inbox.recv({ timeout: 30_000 }) as {
          lock: Lock;
          q: Queue<number>;
          v: Value<"i">;
          conn: import("../patterns/pipe.ts").Connection<string>;
        };
        q.put(lock.locked() ? 1 : 0); // the parent holds it
        await lock.acquire({ timeout: 30_000 });
        v.value = 99;
        lock.release();
        conn.send("done");
      },
      args: [childEnd],
    });
    p.start();
    assert.equal(await q.get({ timeout: 30_000 }), 1);
    lock.release();
    assert.equal(await mine.recv({ timeout: 30_000 }), "done");
    await p.join();
    assert.equal(p.exitCode, 0);
    assert.equal(v.value, 99);
    assert.equal(depositCount(), 0);
    for (const x of [toChild, childEnd, mine]) x.close();
    q.close();
  },
);

mpTest(
  "a Value put by a grandchild process arrives live in the main thread and in its parent",
  async () => {
    type Item = { v: Value<"i"> };
    const toMain = new Queue<Item>();
    const toParent = new Queue<Item>();
    const cube = new URL("../patterns/cube.ts", import.meta.url).href;
    const value = new URL("../patterns/value.ts", import.meta.url).href;
    const p = new Process({
      target: async (
        toMain: Queue<Item>,
        toParent: Queue<Item>,
        cube: string,
        value: string,
      ) => {
        const { Process } = await import(cube);
        const spawn = (q: Queue<Item>, n: number) => {
          const child = new Process({
            target: async (q: Queue<Item>, value: string, n: number) => {
              const { Value } = await import(value);
              q.putSync({ v: new Value("i", n) });
            },
            args: [q, value, n],
          });
          child.start();
          return child;
        };
        // One grandchild puts for the main thread, one for this process.
        const first = spawn(toMain, 7), second = spawn(toParent, 9);
        const { v } = await toParent.get({ timeout: 30_000 });
        v.value += 1;
        await first.join();
        await second.join();
        toMain.putSync({ v });
      },
      args: [toMain, toParent, cube, value],
    });
    p.start();
    const got = [
      await toMain.get({ timeout: 30_000 }),
      await toMain.get({ timeout: 30_000 }),
    ].map((item) => item.v.value).sort((a, b) => a - b);
    assert.deepEqual(got, [7, 10]);
    await p.join();
    assert.equal(p.exitCode, 0);
    assert.equal(depositCount(), 0);
    toMain.close();
    toParent.close();
  },
);

mpTest(
  "a put that fails leaves nothing behind: no deposit, and a pipe end inside it adds no copy",
  async () => {
    const q = new Queue<unknown>({ maxsize: 1 });
    q.putNowait("filler");
    const [mine, theirs] = Pipe();
    assert.throws(() => q.putNowait({ end: theirs }), FullError);
    await assert.rejects(q.put({ end: theirs }, { timeout: 10 }), FullError);
    const aborted = AbortSignal.abort();
    await assert.rejects(q.put({ end: theirs }, { signal: aborted }));
    assert.equal(depositCount(), 0);
    // Only the first copy of `theirs` is left: closing it ends the pipe.
    theirs.close();
    await assert.rejects(mine.recv({ timeout: 10_000 }), EOFError);
    mine.close();
    q.close();
  },
);

mpTest(
  "a typed array over a SharedArrayBuffer stays shared: as a Pool task argument, in a queue item, in a pipe message",
  async () => {
    const words = new Int32Array(new SharedArrayBuffer(8));
    await using pool = new Pool({ workers: 1 });
    // A small job goes through the pool's shared-memory mailbox.
    await pool.apply((w: Int32Array) => Atomics.add(w, 0, 1), [words]);
    assert.equal(words[0], 1, "the task's view is over the same memory");
    const q = new Queue<{ w: Int32Array }>();
    const [a, b] = Pipe<[Int32Array]>();
    await q.put({ w: words });
    a.send([words]);
    const p = new Process({
      target: async (
        q: Queue<{ w: Int32Array }>,
        b: import("../patterns/pipe.ts").Connection<[Int32Array]>,
      ) => {
        const { w } = await q.get({ timeout: 30_000 });
        Atomics.add(w, 0, 10);
        const [w2] = await b.recv({ timeout: 30_000 });
        Atomics.add(w2, 1, 100);
      },
      args: [q, b],
    });
    p.start();
    await p.join();
    assert.equal(p.exitCode, 0);
    assert.deepEqual([...words], [11, 100]);
    assert.equal(depositCount(), 0);
    a.close();
    b.close();
    q.close();
  },
);

mpTest(
  "a pipe end passed to a Process whose target cannot be found is closed when it exits",
  async () => {
    const [mine, theirs] = Pipe();
    const p = new Process<typeof import("./fixtures/tasks.ts")>({
      target: "nope" as "cube",
      module: new URL("./fixtures/tasks.ts", import.meta.url).href,
      args: [theirs as never],
    });
    p.start();
    theirs.close();
    assert.equal(await p.join(), 1);
    // The process's copy closed with it: the peer sees the end of the pipe.
    await assert.rejects(mine.recv({ timeout: 10_000 }), EOFError);
    mine.close();
  },
);

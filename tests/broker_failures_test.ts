/**
 * The Pool on Redis when things go wrong: a broker that stops answering or
 * restarts empty, a worker that is frozen or stopped, a pool terminated
 * mid-call, keys created and expired, entries claimed behind live ones.
 * Each test is a case that once lost, doubled or hung something.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { Pool, WorkerCrashedError } from "../patterns/cube.ts";
import {
  runWorker,
  type WorkerOptions,
  type WorkerReport,
} from "../patterns/worker.ts";
import { mpTest, range } from "./_helpers.ts";
import {
  type RedisServer,
  startRedis,
  startWorkerProcess,
  waitUntil,
  whyNoRedis,
} from "./_redis.ts";

Deno.test.sanitizer({ ops: true, resources: true });

type Tasks = typeof import("./fixtures/broker_tasks.ts");
const MODULE = new URL("./fixtures/broker_tasks.ts", import.meta.url).href;
const noRedis = await whyNoRedis();

// Without Redis, broker_test.ts says so in one line for every Redis test.
if (!noRedis) {
  mpTest(
    "a pool whose only call fails before sending leaves no key without a TTL",
    async () => {
      await using redis = await startRedis();
      {
        await using pool = new Pool<Tasks>({ broker: redis.url, queue: "ttl" });
        await assert.rejects(
          pool.map("echo", [new SharedArrayBuffer(8)]),
          TypeError,
        );
      }
      for (const k of await redis.keys()) {
        const ttl = Number(await redis.command(["PTTL", k]));
        assert.ok(ttl > 0, `${k} has no TTL (${ttl})`);
      }
    },
  );

  mpTest(
    "a pool whose user may not create the queue's group fails the call and closes its links",
    async () => {
      await using redis = await startRedis();
      await redis.command([
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-xgroup",
      ]);
      // Connected, then refused: the sanitizers catch a link left open.
      await using pool = new Pool<Tasks>({
        broker: `redis://limited:pw@127.0.0.1:${redis.port}`,
        queue: "acl",
      });
      await assert.rejects(pool.apply("add", [1, 2]), /NOPERM/);
    },
  );

  mpTest(
    "a call claimed at its 6th delivery fails with WorkerCrashedError; at its 5th it runs",
    async () => {
      await using redis = await startRedis();
      const q = "poison";
      await using pool = new Pool<Tasks>({ broker: redis.url, queue: q });
      const a = pool.apply("add", [1, 2]);
      const b = pool.apply("add", [3, 4]);
      const tasks = `dmp:${q}:tasks`;
      await waitUntil(
        async () => Number(await redis.command(["XLEN", tasks])) === 2,
        "the entries",
      );
      // A consumer that takes both and dies.
      const read = await redis.command([
        "XREADGROUP",
        "GROUP",
        "workers",
        "dead",
        "COUNT",
        "10",
        "STREAMS",
        tasks,
        ">",
      ]) as Array<[string, Array<[string, string[]]>]>;
      const [ida, idb] = read[0]![1].map((e) => e[0]);
      await redis.command([
        "XCLAIM",
        tasks,
        "workers",
        "dead",
        "0",
        ida!,
        "RETRYCOUNT",
        "5",
        "JUSTID",
      ]);
      await redis.command([
        "XCLAIM",
        tasks,
        "workers",
        "dead",
        "0",
        idb!,
        "RETRYCOUNT",
        "4",
        "JUSTID",
      ]);
      const { stop, done: worker } = inProcessWorker(redis.url, q, {
        visibilityTimeout: 300,
      });
      try {
        await assert.rejects(a, WorkerCrashedError);
        assert.equal(await b, 7);
      } finally {
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "a worker's queue stream has a TTL from the start",
    async () => {
      await using redis = await startRedis();
      const { stop, done: worker } = inProcessWorker(redis.url, "wttl");
      try {
        await waitUntil(
          async () =>
            Number(await redis.command(["EXISTS", "dmp:wttl:tasks"])) === 1,
          "the stream",
        );
        const ttl = Number(await redis.command(["PTTL", "dmp:wttl:tasks"]));
        assert.ok(ttl > 0, `no TTL (${ttl})`);
      } finally {
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "Redis going away mid-map settles the call with an error",
    async () => {
      const redis = await startRedis();
      const { stop, done } = inProcessWorker(redis.url, "gone", { workers: 2 });
      const worker = done.then(() => null, (e) => e);
      const pool = new Pool<Tasks>({ broker: redis.url, queue: "gone" });
      try {
        const call = pool.map("sleepy", range(20).map(() => 500), {
          chunksize: 1,
        })
          .then(() => null, (e) => e);
        await pool.apply("cube", [2]);
        const t0 = Date.now();
        await redis[Symbol.asyncDispose]();
        const e = await call;
        assert.ok(e instanceof Deno.errors.ConnectionReset, String(e));
        assert.ok(Date.now() - t0 < 40_000);
        // Not told to stop, the worker gives up on the lost broker by itself
        // (after its reconnect attempts), with an error.
        const outcome = await within(worker, 60_000);
        assert.ok(outcome instanceof Error, String(outcome));
      } finally {
        stop.abort();
        pool.terminate();
        await pool.join();
        await redis[Symbol.asyncDispose]();
      }
    },
  );

  mpTest(
    "a stopped worker exits soon when Redis is gone",
    async () => {
      const redis = await startRedis();
      const { stop, done } = inProcessWorker(redis.url, "gone2");
      const worker = done.then(() => null, (e) => e);
      try {
        await waitUntil(
          async () =>
            Number(await redis.command(["SCARD", "dmp:gone2:workers"])) === 1,
          "the worker",
        );
        await redis[Symbol.asyncDispose]();
        await new Promise((r) => setTimeout(r, 300));
        const t0 = Date.now();
        stop.abort();
        assert.equal(await worker, null);
        assert.ok(Date.now() - t0 < 15_000);
        // node-redis's reconnect backoff (at most 1 s) is not cancellable.
        await new Promise((r) => setTimeout(r, 1_200));
      } finally {
        stop.abort();
        await redis[Symbol.asyncDispose]();
      }
    },
  );

  mpTest(
    "imap of an endless input, broken off, ends and leaves no keys",
    async () => {
      await using redis = await startRedis();
      const { stop, done: worker } = inProcessWorker(redis.url, "lazy", {
        workers: 2,
      });
      try {
        let pulled = 0;
        const endless = function* () {
          for (let i = 0;; i++) {
            pulled++;
            yield i;
          }
        };
        const pool = new Pool<Tasks>({ broker: redis.url, queue: "lazy" });
        const got: number[] = [];
        for await (const y of pool.imap("cube", endless())) {
          got.push(y);
          if (got.length === 5000) break;
        }
        assert.deepEqual(got, range(5000).map((x) => x ** 3));
        // Bounded by the calls' window (65,536 items ahead of the consumer).
        assert.ok(pulled <= 5000 + 65_536 + 4096, `pulled ${pulled}`);
        const slow = async function* () {
          for (let i = 0;; i++) {
            await new Promise((r) => setTimeout(r, 1));
            yield i;
          }
        };
        const got2: number[] = [];
        for await (const y of pool.imapUnordered("cube", slow())) {
          got2.push(y);
          if (got2.length === 300) break;
        }
        assert.equal(got2.length, 300);
        const ac = new AbortController();
        const aborted = pool.map("sleepy", range(40).map(() => 200), {
          chunksize: 1,
          signal: ac.signal,
        });
        setTimeout(() => ac.abort(new Error("enough")), 300);
        await assert.rejects(aborted, /enough/);
        assert.equal(await pool.apply("add", [1, 2]), 3);
        pool.close();
        await pool.join();
        await waitUntil(
          async () => (await redis.keys()).every((k) => !k.includes(":pool:")),
          "no pool keys",
          10_000,
        );
        await waitUntil(
          async () =>
            Number(await redis.command(["XLEN", "dmp:lazy:tasks"])) === 0,
          "an empty queue",
          10_000,
        );
      } finally {
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "a frozen worker's tasks run elsewhere; when it wakes, each result arrives once, in order",
    async () => {
      await using redis = await startRedis();
      const q = "frozen";
      const args = [
        "--broker",
        redis.url,
        "--module",
        "tests/fixtures/broker_tasks.ts",
        "--queue",
        q,
        "--workers",
        "2",
        "--visibility-timeout",
        "1000",
      ];
      await using a = startWorkerProcess(args);
      await using b = startWorkerProcess(args);
      await waitUntil(
        async () =>
          Number(await redis.command(["SCARD", `dmp:${q}:workers`])) === 2,
        "the workers",
        60_000,
      );
      const names = await redis.command([
        "SMEMBERS",
        `dmp:${q}:workers`,
      ]) as string[];
      const aName = names.find((n) => n.startsWith(`${a.child.pid}-`))!;
      const heldByA = async () =>
        (await redis.command([
          "XPENDING",
          `dmp:${q}:tasks`,
          "workers",
          "-",
          "+",
          "100",
          aName,
        ]) as unknown[]).length;
      await using pool = new Pool<Tasks>({ broker: redis.url, queue: q });
      const items = range(8);
      const call = pool.starmap("sleepy", items.map((i) => [1_500, i]), {
        chunksize: 1,
      });
      await waitUntil(async () => await heldByA() >= 2, "a to take tasks");
      a.kill("SIGSTOP");
      // b claims what a holds once it was idle for the visibility timeout.
      await waitUntil(async () => await heldByA() === 0, "b to claim them");
      a.kill("SIGCONT");
      assert.deepEqual(await call, items);
      assert.deepEqual(
        await pool.map("cube", range(100)),
        range(100).map((x) => x ** 3),
      );
      a.kill("SIGTERM");
      b.kill("SIGTERM");
      const ea = await a.exited();
      const eb = await b.exited();
      // b ran a's claimed tasks too: their second results were dropped.
      assert.match(eb.stderr, /[1-9]\d* claimed/);
      assert.equal(ea.code, 0, ea.stderr);
      assert.equal(eb.code, 0, eb.stderr);
    },
  );

  mpTest(
    "a caller killed with kill -9 mid-map leaves only keys with a TTL",
    async () => {
      await using redis = await startRedis();
      const q = "killed";
      const { stop, done: worker } = inProcessWorker(redis.url, q, {
        workers: 2,
      });
      try {
        const cube = new URL("../patterns/cube.ts", import.meta.url).href;
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "eval",
            `import { Pool } from ${JSON.stringify(cube)};
            const pool = new Pool({ broker: ${
              JSON.stringify(redis.url)
            }, queue: "${q}" });
            await pool.map("sleepy", Array(400).fill(50), { chunksize: 1 });`,
          ],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        await waitUntil(
          async () =>
            Number(
              await redis.command(["XLEN", `dmp:${q}:tasks`]),
            ) > 100,
          "the caller's tasks",
        );
        await waitUntil(
          async () => (await redis.keys()).some((k) => k.endsWith(":results")),
          "some results",
        );
        child.kill("SIGKILL");
        await child.status;
        for (const k of await redis.keys()) {
          const ttl = Number(await redis.command(["PTTL", k]));
          assert.ok(ttl > 0, `${k} has no TTL (${ttl})`);
        }
      } finally {
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "entries of four task timeouts read at once all run (no local pool retired before use)",
    async () => {
      await using redis = await startRedis();
      const q = "timeouts";
      await using stack = new AsyncDisposableStack();
      const pools = [20_001, 20_002, 20_003, 20_004].map((t) =>
        stack.use(
          new Pool<Tasks>({ broker: redis.url, queue: q, taskTimeout: t }),
        )
      );
      // Queued before any worker serves: its first read takes all four.
      const calls = pools.map((p, i) => p.apply("add", [i, 1]));
      await waitUntil(
        async () =>
          Number(await redis.command(["XLEN", `dmp:${q}:tasks`])) === 4,
        "the entries",
      );
      const { stop, done: worker } = inProcessWorker(redis.url, q, {
        workers: 4,
      });
      try {
        assert.deepEqual(await Promise.all(calls), [1, 2, 3, 4]);
      } finally {
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "terminate() right after a call leaves none of its entries on the queue",
    async () => {
      await using redis = await startRedis();
      const q = "term";
      const pool = new Pool<Tasks>({ broker: redis.url, queue: q });
      // Connected, no worker serving.
      assert.equal(
        await Promise.race([
          pool.apply("add", [1, 2]).catch(() => 0),
          new Promise((r) => setTimeout(() => r("waiting"), 300)),
        ]),
        "waiting",
      );
      const call = pool.map("cube", range(2_000), { chunksize: 1 });
      call.catch(() => {});
      await new Promise((r) => setTimeout(r, 0));
      pool.terminate();
      await pool.join();
      assert.deepEqual(
        (await redis.keys()).filter((k) => k.includes(":pool:")),
        [],
      );
      assert.equal(
        Number(await redis.command(["XLEN", `dmp:${q}:tasks`])),
        0,
      );
    },
  );

  mpTest(
    "a stopped worker exits when Redis stops answering (a lost network)",
    async () => {
      await using redis = await startRedis();
      const pid = await redisPid(redis.command);
      const { stop, done } = inProcessWorker(redis.url, "frozen-w", {
        grace: 1_000,
        visibilityTimeout: 2_000,
      });
      const worker = done.then(() => "stopped", (e) => e);
      await waitUntil(
        async () =>
          Number(await redis.command(["SCARD", "dmp:frozen-w:workers"])) === 1,
        "the worker",
      );
      Deno.kill(pid, "SIGSTOP");
      try {
        await new Promise((r) => setTimeout(r, 1_000));
        stop.abort();
        const outcome = await within(worker, 20_000);
        assert.notEqual(outcome, "hung");
      } finally {
        Deno.kill(pid, "SIGCONT");
        await worker;
      }
    },
  );

  mpTest(
    "a call settles with an error when Redis stops answering mid-map",
    async () => {
      await using redis = await startRedis();
      const pid = await redisPid(redis.command);
      const q = "frozen-p";
      const { stop, done } = inProcessWorker(redis.url, q, { workers: 2 });
      const worker = done.then(() => "stopped", (e) => e);
      const pool = new Pool<Tasks>({ broker: redis.url, queue: q });
      let frozen = false;
      try {
        assert.equal(await pool.apply("add", [1, 2]), 3);
        const call = pool.map("sleepy", range(20).map(() => 300), {
          chunksize: 1,
        }).then(() => "done", (e) => e);
        Deno.kill(pid, "SIGSTOP");
        frozen = true;
        const outcome = await within(call, 40_000);
        assert.ok(outcome instanceof Error, String(outcome));
        pool.terminate();
        await pool.join();
      } finally {
        if (frozen) Deno.kill(pid, "SIGCONT");
        pool.terminate();
        await pool.join();
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "a task longer than the visibility timeout is not claimed while its worker lives",
    async () => {
      await using redis = await startRedis();
      const q = "long";
      const one = inProcessWorker(redis.url, q, { visibilityTimeout: 300 });
      const two = inProcessWorker(redis.url, q, { visibilityTimeout: 300 });
      try {
        await waitUntil(
          async () =>
            Number(await redis.command(["SCARD", `dmp:${q}:workers`])) === 2,
          "the workers",
        );
        await using pool = new Pool<Tasks>({ broker: redis.url, queue: q });
        assert.deepEqual(
          await pool.starmap("sleepy", [[2_000, 1], [2_000, 2]], {
            chunksize: 1,
          }),
          [1, 2],
        );
      } finally {
        one.stop.abort();
        two.stop.abort();
      }
      const reports = await Promise.all([one.done, two.done]);
      assert.deepEqual(reports.map((r) => r.claimed), [0, 0]);
      assert.equal(reports[0]!.ran + reports[1]!.ran, 2);
    },
  );

  mpTest(
    "a silent worker's entry is claimed even behind many held by a live one",
    async () => {
      await using redis = await startRedis();
      const q = "behind";
      const tasks = `dmp:${q}:tasks`;
      const pool = new Pool<Tasks>({ broker: redis.url, queue: q });
      const call = pool.map("add", range(31), { chunksize: 1 });
      call.catch(() => {});
      await waitUntil(
        async () => Number(await redis.command(["XLEN", tasks])) === 31,
        "the entries",
      );
      const take = async (consumer: string, count: number) =>
        ((await redis.command([
          "XREADGROUP",
          "GROUP",
          "workers",
          consumer,
          "COUNT",
          String(count),
          "STREAMS",
          tasks,
          ">",
        ])) as Array<[string, Array<[string, string[]]>]>)[0]![1].map((e) =>
          e[0]
        );
      // A live consumer holds the 30 oldest and shows it is alive; a
      // silent one holds the newest.
      const live = await take("live", 30);
      await take("silent", 1);
      const { stop, done: worker } = inProcessWorker(redis.url, q, {
        visibilityTimeout: 300,
      });
      try {
        await waitUntil(
          async () => {
            await redis.command([
              "XCLAIM",
              tasks,
              "workers",
              "live",
              "0",
              ...live,
              "JUSTID",
            ]);
            const held = await redis.command([
              "XPENDING",
              tasks,
              "workers",
              "-",
              "+",
              "10",
              "silent",
            ]) as unknown[];
            return held.length === 0;
          },
          "the silent consumer's entry to be claimed",
          10_000,
        );
      } finally {
        pool.terminate();
        await pool.join();
        stop.abort();
        await worker;
      }
    },
  );

  mpTest(
    "a call fails clearly when Redis restarts without its data mid-map",
    async () => {
      await using redis = await startRedis();
      const q = "restart";
      const { stop, done } = inProcessWorker(redis.url, q, { workers: 2 });
      const worker = done.then(() => "stopped", (e) => e);
      const pool = new Pool<Tasks>({ broker: redis.url, queue: q });
      let again: RedisServer | undefined;
      try {
        assert.equal(await pool.apply("add", [1, 2]), 3);
        const call = pool.map("sleepy", range(40).map(() => 500), {
          chunksize: 1,
        }).then(() => "done", (e) => e);
        await new Promise((r) => setTimeout(r, 300));
        // The server dies and comes back empty on the same port.
        Deno.kill(await redisPid(redis.command), "SIGKILL");
        again = await startRedis({ port: redis.port });
        const outcome = await within(call, 60_000);
        assert.ok(outcome instanceof Error, String(outcome));
      } finally {
        pool.terminate();
        await pool.join();
        stop.abort();
        await worker;
        await again?.[Symbol.asyncDispose]();
      }
    },
  );
}

/**
 * A worker serving `queue` in this process on the fixture module (one
 * local worker unless `options` say otherwise); `stop.abort()` stops it.
 */
function inProcessWorker(
  url: string,
  queue: string,
  options: Pick<WorkerOptions, "workers" | "grace" | "visibilityTimeout"> = {},
): { stop: AbortController; done: Promise<WorkerReport> } {
  const stop = new AbortController();
  const done = runWorker({
    broker: url,
    module: MODULE,
    queue,
    workers: 1,
    ...options,
    signal: stop.signal,
    handleSignals: false,
  });
  return { stop, done };
}

/** What `p` settles to, or `"hung"` if it has not within `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | "hung"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<"hung">((r) => timer = setTimeout(() => r("hung"), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The pid of the redis-server behind `command`. */
async function redisPid(
  command: (args: string[]) => Promise<unknown>,
): Promise<number> {
  const info = String(await command(["INFO", "server"]));
  return Number(/process_id:(\d+)/.exec(info)![1]);
}

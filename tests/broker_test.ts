import { strict as assert } from "node:assert";
import { ClosedError, Pool, RemoteError } from "../patterns/cube.ts";
import { AuthenticationError } from "../patterns/server_process.ts";
import { runWorker, type WorkerReport } from "../patterns/worker.ts";
import { Value } from "../patterns/value.ts";
import { hasScript, mpTest, range, runFromRoot } from "./_helpers.ts";
import {
  startRedis,
  startWorkerProcess,
  waitUntil,
  whyNoRedis,
  type WorkerProcess,
} from "./_redis.ts";

Deno.test.sanitizer({ ops: true, resources: true });

type Tasks = typeof import("./fixtures/broker_tasks.ts");
const MODULE = new URL("./fixtures/broker_tasks.ts", import.meta.url).href;
const noRedis = await whyNoRedis();

/** How many local workers the queue's registered worker processes run. */
async function servingWorkers(
  command: (args: string[]) => Promise<unknown>,
  queue: string,
): Promise<number> {
  const names = await command(["SMEMBERS", `dmp:${queue}:workers`]) as string[];
  let n = 0;
  for (const c of names) {
    n += Number(await command(["GET", `dmp:${queue}:worker:${c}`]) ?? 0);
  }
  return n;
}

/** Starts worker processes from the CLI and waits until they serve. */
async function workers(
  url: string,
  command: (args: string[]) => Promise<unknown>,
  queue: string,
  count: number,
  extra: string[] = [],
): Promise<WorkerProcess[]> {
  const before = await servingWorkers(command, queue);
  const procs = range(count).map(() =>
    startWorkerProcess([
      "--broker",
      url,
      "--module",
      "tests/fixtures/broker_tasks.ts",
      "--queue",
      queue,
      "--workers",
      "2",
      ...extra,
    ])
  );
  try {
    await waitUntil(
      async () => await servingWorkers(command, queue) >= before + 2 * count,
      "the worker processes to serve",
      60_000,
    );
  } catch (e) {
    for (const p of procs) await p[Symbol.asyncDispose]();
    throw e;
  }
  return procs;
}

/** The stop report a worker process printed on stderr. */
function reportOf(
  stderr: string,
): { ran: number; back: number; claimed: number } {
  const m = stderr.match(
    /(\d+) task entries run, (\d+) handed back, (\d+) claimed/,
  );
  assert.ok(m, `no stop report in:\n${stderr}`);
  return { ran: Number(m[1]), back: Number(m[2]), claimed: Number(m[3]) };
}

/** Runs `fn` with an in-process worker serving `queue`. */
async function withWorker(
  url: string,
  queue: string,
  fn: () => Promise<void>,
  extra: { visibilityTimeout?: number } = {},
): Promise<WorkerReport> {
  const stop = new AbortController();
  const worker = runWorker({
    broker: url,
    module: MODULE,
    queue,
    workers: 2,
    signal: stop.signal,
    handleSignals: false,
    ...extra,
  });
  try {
    await fn();
  } finally {
    stop.abort();
  }
  return await worker;
}

/** Runs `deno task …` in a pseudo-terminal (util-linux `script`). */
function inTerminal(task: string): Deno.ChildProcess {
  return new Deno.Command("script", {
    args: ["-qec", `${Deno.execPath()} task ${task}`, "/dev/null"],
    cwd: new URL("..", import.meta.url).pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal: AbortSignal.timeout(60_000),
  }).spawn();
}

async function outputOf(child: Deno.ChildProcess): Promise<[number, string]> {
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  return [out.code, text];
}

const PROMPT = /Deno requests|Allow\?|NotCapable/;

mpTest(
  "deno task worker --help runs in a terminal with no prompt",
  async () => {
    const [code, text] = await outputOf(inTerminal("worker --help"));
    assert.doesNotMatch(text, PROMPT, text);
    assert.match(text, /--broker URL/);
    assert.equal(code, 0, text);
  },
  { ignore: !hasScript() },
);

if (noRedis) {
  // One line on a machine without Redis, instead of one per test.
  Deno.test({
    name: `broker tests skipped: ${noRedis}`,
    ignore: true,
    fn() {},
  });
} else {
  // -- Worker processes from the CLI ------------------------------------------

  mpTest(
    "Pool({ broker }): two CLI worker processes share a 10,000-task map, exact and in order",
    async () => {
      await using redis = await startRedis();
      const queue = "share";
      await using stack = new AsyncDisposableStack();
      const procs = await workers(redis.url, redis.command, queue, 2);
      for (const p of procs) stack.use(p);
      try {
        await using pool = new Pool<Tasks>({ broker: redis.url, queue });
        const items = range(10_000);
        const want = items.map((x) => x ** 3);
        let progress = 0;
        assert.deepEqual(
          await pool.map("cube", items, {
            chunksize: 1,
            onProgress: (n) => progress = n,
          }),
          want,
        );
        assert.equal(progress, 10_000);
        assert.deepEqual(await pool.map("cube", items), want);
        assert.deepEqual(
          await pool.starmap("add", items.map((x) => [x, 1])),
          items.map((x) => x + 1),
        );
        assert.equal(await pool.apply("add", [40, 2]), 42);
        const ordered: number[] = [];
        for await (const y of pool.imap("cube", range(500))) ordered.push(y);
        assert.deepEqual(ordered, range(500).map((x) => x ** 3));
        const unordered: number[] = [];
        for await (const y of pool.imapUnordered("cube", range(500))) {
          unordered.push(y);
        }
        assert.deepEqual(
          unordered.sort((a, b) => a - b),
          range(500).map((x) => x ** 3),
        );
        const s = pool.stats();
        assert.equal(s.completed, 10_000 * 3 + 1 + 1000);
        assert.equal(s.failed, 0);
        assert.equal(s.queued, 0);
      } finally {
        for (const p of procs) p.kill("SIGTERM");
      }
      const reports = [];
      for (const p of procs) {
        const { code, stderr } = await p.exited();
        assert.equal(code, 0, stderr);
        reports.push(reportOf(stderr));
      }
      // Both processes took part.
      for (const r of reports) assert.ok(r.ran > 0, JSON.stringify(reports));
      assert.ok(reports[0]!.ran + reports[1]!.ran >= 10_000);
    },
  );

  mpTest(
    "Pool({ broker }): a worker process killed with kill -9 mid-run; every result arrives exactly once",
    async () => {
      await using redis = await startRedis();
      const queue = "kill";
      const [victim, survivor] = await workers(
        redis.url,
        redis.command,
        queue,
        2,
        ["--visibility-timeout", "1000"],
      );
      await using stack = new AsyncDisposableStack();
      stack.use(victim!);
      stack.use(survivor!);
      try {
        await using pool = new Pool<Tasks>({ broker: redis.url, queue });
        const items = range(400);
        let done = 0;
        const results = pool.starmap("sleepy", items.map((x) => [10, x]), {
          chunksize: 1,
          onProgress: (n) => done = n,
        });
        // Kill while the victim holds entries.
        await waitUntil(() => done >= 40, "some results");
        await waitUntil(async () => {
          const c = await redis.command([
            "XINFO",
            "CONSUMERS",
            `dmp:${queue}:tasks`,
            "workers",
          ]) as unknown[][];
          // The victim's consumer name starts with its process id.
          return c.some((info) =>
            String(info[1]).startsWith(`${victim!.child.pid}-`) &&
            Number(info[3]) > 0
          );
        }, "the victim to hold entries");
        victim!.kill("SIGKILL");
        assert.equal((await victim!.exited()).code, 137);
        const out = await results;
        assert.deepEqual(out, items);
        // Nothing was counted twice.
        assert.equal(pool.stats().completed, 400);
      } finally {
        survivor!.kill("SIGTERM");
      }
      const { code, stderr } = await survivor!.exited();
      assert.equal(code, 0, stderr);
      // The survivor ran the victim's entries again.
      assert.ok(reportOf(stderr).claimed > 0, stderr);
    },
  );

  mpTest(
    "worker process: SIGTERM hands its work back to the queue and it exits 0",
    async () => {
      await using redis = await startRedis();
      const queue = "term";
      await using stack = new AsyncDisposableStack();
      const [first] = await workers(redis.url, redis.command, queue, 1, [
        "--grace",
        "200",
      ]);
      stack.use(first!);
      await using pool = new Pool<Tasks>({ broker: redis.url, queue });
      const results = pool.starmap("sleepy", [[1500, 1], [1500, 2], [
        1500,
        3,
      ], [1500, 4]], { chunksize: 1 });
      let held = 0;
      await waitUntil(async () => {
        const p = await redis.command([
          "XPENDING",
          `dmp:${queue}:tasks`,
          "workers",
        ]) as [number];
        held = Number(p[0]);
        return held > 0;
      }, "the worker to hold entries");
      // It runs what it holds (1.5 s each) and takes no more meanwhile.
      first!.kill("SIGTERM");
      const { code, stderr } = await first!.exited();
      assert.equal(code, 0, stderr);
      assert.equal(reportOf(stderr).back, held, stderr);
      assert.equal(reportOf(stderr).ran, 0, stderr);
      // A new worker (its visibility timeout far away: nothing is claimed)
      // finds them on the queue.
      const [second] = await workers(redis.url, redis.command, queue, 1, [
        "--visibility-timeout",
        "600000",
      ]);
      stack.use(second!);
      try {
        assert.deepEqual(await results, [1, 2, 3, 4]);
      } finally {
        second!.kill("SIGTERM");
      }
      const end = await second!.exited();
      assert.equal(end.code, 0, end.stderr);
      assert.equal(reportOf(end.stderr).claimed, 0);
    },
  );

  mpTest(
    "deno task worker started in a terminal serves with no prompt and stops on SIGTERM",
    async () => {
      await using redis = await startRedis();
      const queue = "tty";
      const child = inTerminal(
        `worker --broker ${redis.url} --module tests/fixtures/broker_tasks.ts --queue ${queue} --workers 1`,
      );
      const output = outputOf(child);
      let pid = 0;
      try {
        await waitUntil(
          async () => {
            const names = await redis.command([
              "SMEMBERS",
              `dmp:${queue}:workers`,
            ]) as string[];
            pid = names.length ? Number.parseInt(names[0]!, 10) : 0;
            return pid > 0;
          },
          "the worker to serve",
          60_000,
        );
        await using pool = new Pool<Tasks>({ broker: redis.url, queue });
        assert.deepEqual(await pool.map("cube", [1, 2, 3]), [1, 8, 27]);
      } finally {
        // The consumer name starts with the worker's process id.
        if (pid > 0) Deno.kill(pid, "SIGTERM");
        else child.kill("SIGKILL");
      }
      const [code, text] = await output;
      assert.doesNotMatch(text, PROMPT, text);
      assert.match(text, /serving queue tty/);
      assert.equal(code, 0, text);
    },
    { ignore: !hasScript() },
  );

  // -- In-process worker ------------------------------------------------------

  mpTest(
    "Pool({ broker }): a throwing task is a RemoteError with the item's index and the worker's name",
    async () => {
      await using redis = await startRedis();
      await withWorker(redis.url, "errors", async () => {
        await using pool = new Pool<Tasks>({
          broker: redis.url,
          queue: "errors",
        });
        const e = await pool.map("positive", [1, 2, -3, 4], { chunksize: 2 })
          .then(() => null, (e) => e);
        assert.ok(e instanceof RemoteError, String(e));
        assert.equal(e.message, "negative: -3");
        assert.equal(e.remoteName, "RangeError");
        assert.equal(e.index, 2);
        assert.ok(e.cause instanceof RangeError);
        assert.match(e.worker, /^\d+-\w+\/Pool-\d+-worker-\d+$/);
        const a = await pool.apply("positive", [-1]).then(() => null, (e) => e);
        assert.ok(a instanceof RemoteError);
        assert.equal(a.index, undefined);
        // The pool stays usable.
        assert.deepEqual(await pool.map("positive", [5, 6]), [5, 6]);
        assert.equal(pool.stats().failed, 2);
      });
    },
  );

  mpTest(
    "Pool({ broker }): a function task and a shared-memory argument are TypeErrors that say why",
    async () => {
      await using redis = await startRedis();
      await using pool = new Pool<Tasks>({ broker: redis.url, queue: "types" });
      await assert.rejects(
        pool.map((x: number) => x, [1]),
        (e: unknown) =>
          e instanceof TypeError &&
          /a function's source is not sent over a network/.test(e.message),
      );
      await assert.rejects(
        pool.apply(() => 1),
        TypeError,
      );
      await assert.rejects(
        pool.imap((x: number) => x, [1]).next(),
        TypeError,
      );
      const v = new Value("i", 3);
      await assert.rejects(
        pool.map("echo", [1, { v }]),
        (e: unknown) =>
          e instanceof TypeError && /item 1 holds a Value/.test(e.message),
      );
      await assert.rejects(
        pool.map("echo", [new SharedArrayBuffer(8)]),
        (e: unknown) =>
          e instanceof TypeError && /SharedArrayBuffer/.test(e.message),
      );
      await assert.rejects(
        pool.apply("echo", [new (class Point {})()]),
        (e: unknown) => e instanceof TypeError && /Point/.test(e.message),
      );
      assert.throws(
        () => new Pool({ broker: "http://127.0.0.1:1" }),
        TypeError,
      );
      assert.throws(
        () => new Pool({ broker: redis.url, module: MODULE }),
        /module is not an option of a broker pool/,
      );
      assert.throws(
        () => new Pool({ broker: redis.url, queue: "no spaces" }),
        TypeError,
      );
    },
  );

  mpTest(
    "Pool({ broker }): data values cross the wire as they are",
    async () => {
      await using redis = await startRedis();
      await withWorker(redis.url, "values", async () => {
        await using pool = new Pool<Tasks>({
          broker: redis.url,
          queue: "values",
        });
        const value = {
          big: 2n ** 70n,
          map: new Map<unknown, unknown>([[1, "a"], ["k", [1, 2]]]),
          set: new Set([1, "x"]),
          date: new Date(86_400_000),
          bytes: new Uint8Array([1, 2, 3]),
          nums: [NaN, -0, Infinity, undefined],
          $t: "not a tag",
          nested: { deep: [{ ok: true }] },
        };
        assert.deepEqual(await pool.apply("echo", [value]), value);
      });
    },
  );

  mpTest(
    "Pool({ broker }): taskTimeout stops a task on the worker with a TimeoutError",
    async () => {
      await using redis = await startRedis();
      await withWorker(redis.url, "timeout", async () => {
        await using pool = new Pool<Tasks>({
          broker: redis.url,
          queue: "timeout",
          taskTimeout: 200,
        });
        const e = await pool.map("spin", [1, 60_000]).then(
          () => null,
          (e) => e,
        );
        assert.equal(e?.name, "TimeoutError", String(e));
        assert.equal(e.index, 1);
        assert.deepEqual(await pool.map("spin", [1, 2]), [1, 2]);
      });
    },
  );

  mpTest(
    "Pool({ broker }): an aborted signal rejects the call; its entries are taken back",
    async () => {
      await using redis = await startRedis();
      await using pool = new Pool<Tasks>({ broker: redis.url, queue: "abort" });
      // No worker serves the queue: the call waits until aborted.
      const ac = new AbortController();
      const p = pool.map("cube", range(100), { signal: ac.signal });
      await waitUntil(
        async () =>
          Number(await redis.command(["XLEN", "dmp:abort:tasks"])) > 0,
        "the entries",
      );
      ac.abort(new Error("enough"));
      await assert.rejects(p, /enough/);
      await waitUntil(
        async () =>
          Number(await redis.command(["XLEN", "dmp:abort:tasks"])) === 0,
        "the entries to be taken back",
      );
    },
  );

  // -- Keys -------------------------------------------------------------------

  mpTest(
    "Pool({ broker }): after close() none of the pool's keys are left; terminate() removes them too",
    async () => {
      await using redis = await startRedis();
      await withWorker(redis.url, "keys", async () => {
        await waitUntil(
          async () => await servingWorkers(redis.command, "keys") > 0,
          "the worker",
        );
        const before = await redis.keys();
        const pool = new Pool<Tasks>({ broker: redis.url, queue: "keys" });
        assert.deepEqual(
          await pool.map("cube", range(1000)),
          range(1000).map((x) => x ** 3),
        );
        const during = await redis.keys();
        assert.ok(
          during.some((k) => k.startsWith("dmp:keys:pool:")),
          String(during),
        );
        pool.close();
        assert.equal(await pool.join(), true);
        assert.deepEqual(await redis.keys(), before);
        assert.equal(
          Number(await redis.command(["XLEN", "dmp:keys:tasks"])),
          0,
        );

        const second = new Pool<Tasks>({ broker: redis.url, queue: "keys" });
        const slow = second.apply("sleepy", [3_000, 1]);
        await waitUntil(
          async () =>
            (await redis.keys()).some((k) =>
              k.endsWith(":results") || k.includes(":pool:")
            ),
          "the second pool's keys",
        );
        second.terminate();
        await assert.rejects(slow, ClosedError);
        await second.join();
        assert.deepEqual(
          (await redis.keys()).filter((k) => k.includes(":pool:")),
          [],
        );
      });
      // With the worker gone too, only the queue's own (empty) stream stays.
      assert.deepEqual(await redis.keys(), ["dmp:keys:tasks"]);
    },
  );

  mpTest(
    "Pool({ broker }): two pools on one queue each get only their own results",
    async () => {
      await using redis = await startRedis();
      await withWorker(redis.url, "two", async () => {
        await using a = new Pool<Tasks>({ broker: redis.url, queue: "two" });
        await using b = new Pool<Tasks>({ broker: redis.url, queue: "two" });
        const [ra, rb] = await Promise.all([
          a.map("cube", range(2000), { chunksize: 7 }),
          b.starmap("add", range(2000).map((x) => [x, 0.5])),
        ]);
        assert.deepEqual(ra, range(2000).map((x) => x ** 3));
        assert.deepEqual(rb, range(2000).map((x) => x + 0.5));
      });
    },
  );

  // -- Security ---------------------------------------------------------------

  mpTest(
    "Pool({ broker }): a password in the URL authenticates; a wrong one is an AuthenticationError",
    async () => {
      await using redis = await startRedis({ password: "s3cret" });
      await withWorker(redis.url, "auth", async () => {
        await using pool = new Pool<Tasks>({
          broker: redis.url,
          queue: "auth",
        });
        assert.deepEqual(await pool.map("cube", [1, 2, 3]), [1, 8, 27]);
      });
      const wrong = `redis://:nope@127.0.0.1:${redis.port}`;
      await using bad = new Pool<Tasks>({ broker: wrong, queue: "auth" });
      const e = await bad.map("cube", [1]).then(() => null, (e) => e);
      assert.ok(e instanceof AuthenticationError, String(e));
      assert.doesNotMatch(e.message, /nope/);
      await assert.rejects(
        runWorker({ broker: wrong, module: MODULE, handleSignals: false }),
        AuthenticationError,
      );
    },
  );

  mpTest(
    "Pool({ broker }): rediss:// connects over TLS, verified against the CA given with --cert",
    async () => {
      await using redis = await startRedis({ tls: true });
      assert.match(redis.url, /^rediss:/);
      const run = (cert: boolean) =>
        runFromRoot(Deno.execPath(), [
          "run",
          "--no-prompt",
          ...(cert ? ["--cert", "tests/fixtures/broker_tls/ca.crt"] : []),
          "--allow-read=./patterns,./tests",
          "--allow-net=127.0.0.1",
          "tests/fixtures/broker_tls_client.ts",
          redis.url,
        ]);
      const ok = await run(true);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(JSON.parse(ok.stdout), [1, 8, 27]);
      // Without the CA, the server's certificate is refused.
      const refused = await run(false);
      assert.notEqual(refused.code, 0);
      assert.match(
        refused.stderr,
        /certificate/,
      );
    },
  );

  mpTest(
    "Pool({ broker }): a broker that cannot be reached fails the call with ConnectionRefused",
    async () => {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (l.addr as Deno.NetAddr).port;
      l.close();
      await using pool = new Pool<Tasks>({
        broker: `redis://:hidden@127.0.0.1:${port}`,
      });
      const e = await pool.map("cube", [1]).then(() => null, (e) => e);
      assert.ok(e instanceof Deno.errors.ConnectionRefused, String(e));
      assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.doesNotMatch(e.message, /hidden/);
      // The pool stays broken, and says so at once.
      await assert.rejects(
        pool.apply("cube", [2]),
        Deno.errors.ConnectionRefused,
      );
    },
  );

  mpTest(
    "runWorker: a module that does not load is refused before serving",
    async () => {
      await using redis = await startRedis();
      await assert.rejects(
        runWorker({
          broker: redis.url,
          module: new URL("./fixtures/no_such_module.ts", import.meta.url),
          handleSignals: false,
        }),
        (e: unknown) =>
          e instanceof TypeError && /does not load/.test(e.message),
      );
      // It left nothing behind.
      assert.deepEqual(
        (await redis.keys()).filter((k) => k.includes(":worker")),
        [],
      );
    },
  );
}

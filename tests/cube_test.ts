import { strict as assert } from "node:assert";
import {
  ClosedError,
  cpuCount,
  Pool,
  Process,
  RemoteError,
  WorkerCrashedError,
} from "../patterns/cube.ts";
import { liveWorkerCount } from "../patterns/_core/worker.ts";
import { Counter } from "./fixtures/counter.ts";
import { mpTest, range } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const TASKS = new URL("./fixtures/tasks.ts", import.meta.url);
type Tasks = typeof import("./fixtures/tasks.ts");

// -- cpuCount --

mpTest("cpuCount() returns a positive integer", () => {
  assert.ok(Number.isSafeInteger(cpuCount()) && cpuCount() >= 1);
});

// -- Process --

mpTest("Process runs its target with args and exits with 0", async () => {
  const counter = new Counter();
  const p = new Process({
    target: (c: Counter, n: number) => {
      c.add(n);
    },
    args: [counter, 5],
  });
  assert.equal(p.exitCode, null);
  assert.equal(p.isAlive(), false);
  p.start();
  assert.equal(p.isAlive(), true);
  assert.equal(await p.join(), 0);
  assert.equal(p.exitCode, 0);
  assert.equal(p.isAlive(), false);
  assert.equal(counter.value, 5);
});

mpTest("Process names default to Process-N and can be given", () => {
  const a = new Process({ target: () => {} });
  assert.match(a.name, /^Process-\d+$/);
  const b = new Process({ target: () => {}, name: "cruncher" });
  assert.equal(b.name, "cruncher");
});

mpTest("Process runs an async target to completion", async () => {
  const counter = new Counter();
  const p = new Process({
    target: async (c: Counter) => {
      await new Promise((r) => setTimeout(r, 20));
      c.add(1);
    },
    args: [counter],
  });
  p.start();
  assert.equal(await p.join(), 0);
  assert.equal(counter.value, 1);
});

mpTest("Process whose target throws exits with 1", async () => {
  const p = new Process({
    target: () => {
      throw new Error("expected failure (printed by the test)");
    },
  });
  p.start();
  assert.equal(await p.join(), 1);
});

mpTest("Process whose target calls Deno.exit(3) exits with 3", async () => {
  const p = new Process({ target: () => Deno.exit(3) });
  p.start();
  assert.equal(await p.join(), 3);
});

mpTest("Process whose target calls self.close() exits with 0", async () => {
  const p = new Process({ target: () => self.close() });
  p.start();
  assert.equal(await p.join(), 0);
});

mpTest(
  "Process.terminate() gives -15 and join() resolves at once",
  async () => {
    const counter = new Counter();
    const p = new Process({
      target: async (c: Counter) => {
        c.add(1);
        await new Promise((r) => setTimeout(r, 60_000));
      },
      args: [counter],
    });
    p.start();
    while (counter.value === 0) await new Promise((r) => setTimeout(r, 1));
    p.terminate();
    assert.equal(await p.join({ timeout: 1000 }), -15);
    assert.equal(p.exitCode, -15);
    assert.equal(p.isAlive(), false);
  },
);

mpTest("Process.join({ timeout }) resolves to null while it runs", async () => {
  const p = new Process({
    target: () => new Promise((r) => setTimeout(r, 60_000)),
  });
  p.start();
  assert.equal(await p.join({ timeout: 10 }), null);
  p.terminate();
  assert.equal(await p.join(), -15);
});

mpTest("Process.join() rejects with the signal's reason", async () => {
  const p = new Process({
    target: () => new Promise((r) => setTimeout(r, 60_000)),
  });
  p.start();
  const reason = new Error("stop waiting");
  const c = new AbortController();
  const j = p.join({ signal: c.signal });
  c.abort(reason);
  await assert.rejects(j, (e) => e === reason);
  p.terminate();
  await p.join();
});

mpTest("Process runs a module export given by name", async () => {
  const counter = new Counter();
  const mod = new URL("./fixtures/counter.ts", import.meta.url);
  const p = new Process<{ bump: (c: Counter) => void }>({
    target: "bump",
    module: new URL(
      "data:application/typescript," + encodeURIComponent(
        `import "${mod.href}"; export function bump(c) { c.add(7); }`,
      ),
    ),
    args: [counter],
  });
  p.start();
  assert.equal(await p.join(), 0);
  assert.equal(counter.value, 7);
});

mpTest("Process with an unknown export exits with 1", async () => {
  const p = new Process<Tasks>({
    target: "nope" as "cube",
    module: TASKS,
    args: [1],
  });
  p.start();
  assert.equal(await p.join(), 1);
});

mpTest("Process rejects bad arguments with TypeError", () => {
  assert.throws(
    () => new Process({ target: 42 as unknown as () => void }),
    (e) => e instanceof TypeError && /received 42/.test(e.message),
  );
  assert.throws(
    () => new Process({ target: "cube" as never }),
    TypeError,
  );
  assert.throws(
    () => new Process({ target: () => {}, args: 3 as unknown as [] }),
    TypeError,
  );
  const p = new Process({ target: () => {} });
  return assert.rejects(p.join(), TypeError);
});

mpTest("Process.start() twice throws TypeError", async () => {
  const p = new Process({ target: () => {} });
  p.start();
  assert.throws(() => p.start(), TypeError);
  assert.equal(await p.join(), 0);
});

// -- Pool: the task forms --

mpTest("Pool.map() with a function keeps the input order", async () => {
  await using pool = new Pool({ workers: 2 });
  const out = await pool.map((x: number) => x ** 3, range(1000));
  assert.deepEqual(out, range(1000).map((x) => x ** 3));
});

mpTest("Pool.map() with a module export name", async () => {
  await using pool = new Pool<Tasks>({ workers: 2, module: TASKS });
  const out: number[] = await pool.map("cube", [1, 2, 3]);
  assert.deepEqual(out, [1, 8, 27]);
  assert.deepEqual(await pool.map("slowCube", [4, 5]), [64, 125]);
  assert.deepEqual(await pool.starmap("add", [[1, 2], [3, 4]]), [3, 7]);
  assert.equal(await pool.apply("add", [20, 22]), 42);
});

mpTest("Pool.map() accepts sets, generators and async iterables", async () => {
  await using pool = new Pool({ workers: 2 });
  const double = (x: number) => x * 2;
  assert.deepEqual(await pool.map(double, new Set([1, 2, 3])), [2, 4, 6]);
  function* gen() {
    yield* range(100);
  }
  assert.deepEqual(await pool.map(double, gen()), range(100).map(double));
  async function* agen() {
    for (const x of range(50)) {
      if (x % 10 === 0) await new Promise((r) => setTimeout(r, 1));
      yield x;
    }
  }
  assert.deepEqual(await pool.map(double, agen()), range(50).map(double));
  assert.deepEqual(await pool.map(double, []), []);
});

mpTest("Pool.map() runs async tasks", async () => {
  await using pool = new Pool({ workers: 2 });
  const out = await pool.map(async (x: number) => {
    await new Promise((r) => setTimeout(r, 1));
    return x + 1;
  }, range(20));
  assert.deepEqual(out, range(20).map((x) => x + 1));
});

mpTest("Pool.map() honours an explicit chunksize", async () => {
  await using pool = new Pool({ workers: 2 });
  for (const chunksize of [1, 7, 1000]) {
    const out = await pool.map((x: number) => x - 1, range(300), { chunksize });
    assert.deepEqual(out, range(300).map((x) => x - 1));
  }
});

mpTest("Pool spreads a few long tasks over all workers", async () => {
  await using pool = new Pool({ workers: 2 });
  // Each task runs until both have started: they finish only if they run
  // at once, on two workers, whenever each worker is up (a fixed sleep
  // let the first worker up take both on a loaded machine, by stealing
  // from the second one still starting).
  const started = new Counter();
  const names = await pool.map(
    async (counter: Counter) => {
      counter.add(1);
      const end = Date.now() + 20_000;
      while (counter.value < 2) {
        if (Date.now() > end) return `${self.name} (alone)`;
        await new Promise((r) => setTimeout(r, 5));
      }
      return self.name;
    },
    [started, started],
    { chunksize: 1 },
  );
  assert.equal(new Set(names).size, 2, `both ran on ${names[0]}`);
  assert.ok(names.every((n) => !n.endsWith("(alone)")), names.join(", "));
});

mpTest("Pool.starmap() and Pool.apply()", async () => {
  await using pool = new Pool({ workers: 2 });
  assert.deepEqual(
    await pool.starmap((a: number, b: number) => a * b, [[2, 3], [4, 5]]),
    [6, 20],
  );
  assert.equal(await pool.apply(() => 42), 42);
  assert.equal(
    await pool.apply((a: string, b: string) => a + b, ["x", "y"]),
    "xy",
  );
});

mpTest("Pool.imap() yields in input order", async () => {
  await using pool = new Pool({ workers: 2 });
  const out: number[] = [];
  for await (
    const y of pool.imap(
      async (x: number) => {
        // Later items finish first.
        await new Promise((r) => setTimeout(r, (10 - x) * 2));
        return x;
      },
      range(10),
      { chunksize: 1 },
    )
  ) out.push(y);
  assert.deepEqual(out, range(10));
});

mpTest("Pool.imapUnordered() yields every result once", async () => {
  await using pool = new Pool({ workers: 2 });
  const out: number[] = [];
  for await (const y of pool.imapUnordered((x: number) => x * 3, range(5000))) {
    out.push(y);
  }
  assert.deepEqual(out.sort((a, b) => a - b), range(5000).map((x) => x * 3));
});

mpTest(
  "Pool.imapUnordered() consumes an endless input lazily and stops",
  async () => {
    await using pool = new Pool({ workers: 2 });
    let pulled = 0;
    let closed = false;
    function* naturals() {
      try {
        for (let i = 0;; i++) {
          pulled++;
          yield i;
        }
      } finally {
        closed = true;
      }
    }
    let seen = 0;
    let sum = 0;
    for await (const y of pool.imapUnordered((x: number) => x, naturals())) {
      sum += y;
      if (++seen === 200_000) break;
    }
    assert.equal(seen, 200_000);
    assert.ok(sum > 0);
    assert.ok(closed, "the input generator was closed");
    // Bounded in flight: never more than a window ahead of the consumer.
    assert.ok(pulled <= 200_000 + 65_536 + 4096, `pulled ${pulled} items`);
    // The pool is still usable.
    assert.deepEqual(await pool.map((x: number) => x + 1, [1]), [2]);
  },
);

mpTest("Pool.imap() consumes an endless async input partially", async () => {
  await using pool = new Pool({ workers: 2 });
  async function* naturals() {
    for (let i = 0;; i++) yield i;
  }
  const out: number[] = [];
  for await (const y of pool.imap((x: number) => x * x, naturals())) {
    out.push(y);
    if (out.length === 100) break;
  }
  assert.deepEqual(out, range(100).map((x) => x * x));
});

mpTest("Pool.map() reports progress", async () => {
  await using pool = new Pool({ workers: 2 });
  const seen: Array<[number, number | undefined]> = [];
  await pool.map((x: number) => x, range(100), {
    chunksize: 10,
    onProgress: (done, total) => seen.push([done, total]),
  });
  assert.deepEqual(seen.at(-1), [100, 100]);
  for (let i = 1; i < seen.length; i++) {
    assert.ok(seen[i]![0] > seen[i - 1]![0]);
  }
});

mpTest("Pool initializer runs with initArgs in every worker", async () => {
  await using pool = new Pool<Tasks>({
    workers: 2,
    module: TASKS,
    initializer: "setFactor",
    initArgs: [10],
  });
  assert.deepEqual(
    await pool.map("scaled", range(20)),
    range(20).map((x) => x * 10),
  );
  await using pool2 = new Pool({
    workers: 1,
    initializer: (f: number) => {
      (globalThis as { f?: number }).f = f;
    },
    initArgs: [3],
  });
  assert.equal(
    await pool2.apply((x: number) => x * (globalThis as { f?: number }).f!, [
      5,
    ]),
    15,
  );
});

mpTest("Pool with a failing initializer rejects its calls", async () => {
  await using pool = new Pool({
    workers: 1,
    initializer: () => {
      throw new Error("init failed");
    },
  });
  await assert.rejects(
    pool.map((x: number) => x, [1, 2]),
    (e) => e instanceof RemoteError && e.message === "init failed",
  );
  await assert.rejects(pool.apply(() => 1), RemoteError);
});

mpTest("Pool maxTasksPerWorker replaces workers", async () => {
  await using pool = new Pool({ workers: 2, maxTasksPerWorker: 1 });
  const names = await pool.map(() => self.name, range(6), { chunksize: 1 });
  assert.equal(new Set(names).size, 6);
  assert.equal(liveWorkerCount(), 2);
});

mpTest("Pool shared objects nested in arguments arrive live", async () => {
  await using pool = new Pool({ workers: 2 });
  const counter = new Counter();
  const args = range(100).map((i) => ({ i, nested: [{ counter }] }));
  await pool.map(
    (a: { i: number; nested: Array<{ counter: Counter }> }) =>
      a.nested[0]!.counter.add(a.i),
    args,
  );
  assert.equal(counter.value, range(100).reduce((s, x) => s + x, 0));
  const m = new Map([["c", counter]]);
  await pool.apply((mm: Map<string, Counter>) => mm.get("c")!.add(1), [m]);
  assert.equal(counter.value, 4951);
});

// -- Pool: errors that never hang --

mpTest(
  "a task that throws rejects with RemoteError; the pool stays usable",
  async () => {
    await using pool = new Pool({ workers: 2 });
    const err = await pool.map(
      (x: number) => {
        if (x === 13) throw new TypeError(`bad item ${x}`);
        return x;
      },
      range(40),
      { chunksize: 4 },
    ).then(
      () => assert.fail("map should reject"),
      (e) => e,
    );
    assert.ok(err instanceof RemoteError);
    assert.equal(err.name, "RemoteError");
    assert.equal(err.message, "bad item 13");
    assert.equal(err.remoteName, "TypeError");
    assert.match(err.remoteStack, /bad item 13/);
    assert.match(err.worker, /^Pool-\d+-worker-\d+$/);
    assert.equal(err.index, 13);
    assert.deepEqual(await pool.map((x: number) => x * 2, [1, 2]), [2, 4]);
    await assert.rejects(
      pool.apply(() => {
        throw new RangeError("nope");
      }),
      (e) =>
        e instanceof RemoteError && e.remoteName === "RangeError" &&
        e.index === undefined,
    );
  },
);

mpTest("a task using an outer variable gets a clear RemoteError", async () => {
  await using pool = new Pool({ workers: 1 });
  const factor = 3;
  await assert.rejects(
    pool.map((x: number) => x * factor, [1]),
    (e) =>
      e instanceof RemoteError && e.remoteName === "ReferenceError" &&
      /factor is not defined/.test(e.message) &&
      /enclosing scope/.test(e.message),
  );
});

mpTest(
  "a worker that dies mid-map fails only its task and is replaced",
  async () => {
    await using pool = new Pool({ workers: 2 });
    const crash = pool.map(
      (x: number) => {
        if (x === 3) self.close();
        return x;
      },
      range(10),
      { chunksize: 1 },
    );
    const others = pool.map((x: number) => x + 100, range(200));
    const [a, b] = await Promise.allSettled([crash, others]);
    assert.equal(a.status, "rejected");
    assert.ok(a.reason instanceof WorkerCrashedError, String(a.reason));
    assert.equal(b.status, "fulfilled");
    assert.deepEqual(b.value, range(200).map((x) => x + 100));
    // Replaced: still two workers, and they work.
    assert.equal(liveWorkerCount(), 2);
    assert.deepEqual(await pool.map((x: number) => x, range(10)), range(10));
  },
);

mpTest("a task calling Deno.exit() fails with WorkerCrashedError", async () => {
  await using pool = new Pool({ workers: 1 });
  await assert.rejects(pool.apply(() => Deno.exit(2)), WorkerCrashedError);
  assert.equal(await pool.apply(() => "alive"), "alive");
});

mpTest(
  "a task past taskTimeout fails with TimeoutError; the rest finish",
  async () => {
    await using pool = new Pool({ workers: 2, taskTimeout: 200 });
    const endless = pool.apply(async () => {
      // An endless loop that yields, so Deno can stop the thread; see the
      // subprocess test below for one that never yields.
      for (;;) await new Promise((r) => setTimeout(r, 5));
    });
    const rest = pool.map((x: number) => x * 2, range(100));
    const [a, b] = await Promise.allSettled([endless, rest]);
    assert.equal(a.status, "rejected");
    assert.equal((a.reason as Error).name, "TimeoutError");
    assert.equal(b.status, "fulfilled");
    assert.deepEqual(b.value, range(100).map((x) => x * 2));
    assert.equal(await pool.apply(() => 1), 1);
  },
);

mpTest(
  "a synchronous endless task times out without hanging the program",
  async () => {
    // A thread busy in a synchronous loop cannot be stopped by Deno, so this
    // runs in a subprocess that exits by itself once the pool has moved on.
    const script = new URL("./fixtures/endless_task.ts", import.meta.url);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read=./patterns,./tests", script.pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(text, /TimeoutError/);
    assert.match(text, /rest: 0,2,4,6,8/);
  },
);

mpTest("an aborted signal rejects map with its reason", async () => {
  await using pool = new Pool({ workers: 2 });
  const reason = new Error("user abort");
  await assert.rejects(
    pool.map((x: number) => x, [1], { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  const c = new AbortController();
  const p = pool.map(
    async (x: number) => {
      await new Promise((r) => setTimeout(r, 5));
      return x;
    },
    range(1000),
    { signal: c.signal, chunksize: 1 },
  );
  setTimeout(() => c.abort(reason), 20);
  await assert.rejects(p, (e) => e === reason);
  await assert.rejects(
    pool.apply(() => 1, [], { signal: AbortSignal.abort(reason) }),
    (e) => e === reason,
  );
  // Pool still usable.
  assert.deepEqual(await pool.map((x: number) => x, [1, 2]), [1, 2]);
});

mpTest("an aborted signal ends imap with its reason", async () => {
  await using pool = new Pool({ workers: 2 });
  const c = new AbortController();
  const reason = new Error("enough");
  const seen: number[] = [];
  await assert.rejects(async () => {
    for await (
      const y of pool.imap((x: number) => x, range(100_000), {
        signal: c.signal,
      })
    ) {
      seen.push(y);
      if (seen.length === 10) c.abort(reason);
    }
  }, (e) => e === reason);
  assert.deepEqual(seen.slice(0, 10), range(10));
});

mpTest(
  "an error thrown by the input reaches the caller as itself",
  async () => {
    await using pool = new Pool({ workers: 2 });
    const boom = new Error("input broke");
    function* broken() {
      yield 1;
      yield 2;
      throw boom;
    }
    await assert.rejects(
      pool.map((x: number) => x, broken()),
      (e) => e === boom,
    );
    const seen: number[] = [];
    await assert.rejects(async () => {
      for await (
        const y of pool.imap((x: number) => x * 10, broken())
      ) seen.push(y);
    }, (e) => e === boom);
    assert.deepEqual(seen, [10, 20]);
    const unordered: number[] = [];
    await assert.rejects(async () => {
      for await (const y of pool.imapUnordered((x: number) => x, broken())) {
        unordered.push(y);
      }
    }, (e) => e === boom);
    assert.deepEqual(unordered.sort(), [1, 2]);
  },
);

mpTest(
  "workers that cannot start fail the calls instead of respawning forever",
  async () => {
    // Without read permission the worker module cannot load: every worker
    // dies before its setup.
    const pool = new Pool({ workers: 2 });
    try {
      await assert.rejects(
        pool.map((x: number) => x, [1, 2, 3]),
        (e) =>
          e instanceof WorkerCrashedError &&
          /Cannot start the pool's workers/.test(e.message),
      );
      await assert.rejects(pool.apply(() => 1), WorkerCrashedError);
    } finally {
      pool.terminate();
    }
  },
  { permissions: { read: false } },
);

mpTest("values that cannot be sent give TypeError", async () => {
  await using pool = new Pool({ workers: 1 });
  await assert.rejects(
    pool.map((x: unknown) => x, [1, () => 2]),
    TypeError,
  );
  await assert.rejects(
    pool.apply(() => () => 1),
    (e) =>
      e instanceof RemoteError
        ? e.remoteName === "TypeError"
        : e instanceof TypeError,
  );
  assert.equal(await pool.apply(() => "still fine"), "still fine");
});

mpTest("Pool rejects bad arguments with RangeError and TypeError", async () => {
  assert.throws(
    () => new Pool({ workers: 0 }),
    (e) => e instanceof RangeError && /received 0/.test(e.message),
  );
  assert.throws(() => new Pool({ workers: 1.5 }), RangeError);
  assert.throws(() => new Pool({ maxTasksPerWorker: 0 }), RangeError);
  assert.throws(() => new Pool({ taskTimeout: -1 }), RangeError);
  assert.throws(() => new Pool({ module: "./relative.ts" }), TypeError);
  await using pool = new Pool<Tasks>({ workers: 1, module: TASKS });
  await assert.rejects(
    pool.map("cube", [1], { chunksize: -1 }),
    (e) => e instanceof RangeError && /received -1/.test(e.message),
  );
  await assert.rejects(pool.map("cube", [1], { chunksize: 0 }), RangeError);
  await assert.rejects(
    pool.map(42 as unknown as "cube", [1]),
    (e) => e instanceof TypeError && /received 42/.test(e.message),
  );
  await assert.rejects(
    pool.map("noSuchExport" as "cube", [1]),
    (e) => e instanceof TypeError && /noSuchExport/.test(e.message),
  );
  await assert.rejects(
    pool.map("notAFunction" as "cube", [1]),
    (e) => e instanceof TypeError && /notAFunction/.test(e.message),
  );
  await assert.rejects(pool.map("cube", 5 as unknown as number[]), TypeError);
  assert.deepEqual(await pool.map("cube", [2]), [8]);
});

// -- Pool: lifecycle --

mpTest("close() refuses new work; join() waits for queued work", async () => {
  const pool = new Pool({ workers: 2 });
  const pending = pool.map(
    async (x: number) => {
      await new Promise((r) => setTimeout(r, 2));
      return x;
    },
    range(50),
    { chunksize: 1 },
  );
  pool.close();
  await assert.rejects(pool.map((x: number) => x, [1]), ClosedError);
  await assert.rejects(pool.apply(() => 1), ClosedError);
  assert.equal(await pool.join(), true);
  assert.deepEqual(await pending, range(50));
  assert.equal(liveWorkerCount(), 0);
});

mpTest("join() before close() throws TypeError", async () => {
  const pool = new Pool({ workers: 1 });
  await assert.rejects(pool.join(), TypeError);
  pool.terminate();
});

mpTest("terminate() rejects pending calls with ClosedError", async () => {
  const pool = new Pool({ workers: 2 });
  const pending = pool.map(
    () => new Promise((r) => setTimeout(r, 60_000)),
    range(4),
  );
  await new Promise((r) => setTimeout(r, 20));
  pool.terminate();
  await assert.rejects(pending, ClosedError);
  await assert.rejects(pool.apply(() => 1), ClosedError);
  assert.equal(liveWorkerCount(), 0);
  pool.terminate(); // idempotent
});

mpTest("await using closes and joins the pool", async () => {
  {
    await using pool = new Pool({ workers: 2 });
    assert.equal(liveWorkerCount(), 2);
    await pool.map((x: number) => x, [1]);
  }
  assert.equal(liveWorkerCount(), 0);
});

// -- Importing by URL --

mpTest(
  "cube.ts works when imported by an http:// URL: map, stop, memory cap",
  async () => {
    const root = new URL("../patterns/", import.meta.url);
    // A fresh path each run stands in for `--reload`: the cache never holds
    // a stale copy, and workers read what the main thread downloaded (with
    // `--reload` each worker downloads the graph again, and Deno 2.9.6 can
    // then hang a worker started right after another was terminated).
    const token = crypto.randomUUID();
    const ac = new AbortController();
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      signal: ac.signal,
      onListen() {},
    }, async (req) => {
      const path = new URL(req.url).pathname;
      if (!path.startsWith(`/${token}/patterns/`)) {
        return new Response("no", { status: 404 });
      }
      const name = path.slice(`/${token}/patterns/`.length);
      // Files in subfolders too (`_pool/pool.ts`), but no `..` segment.
      if (!/^(?:\w[\w.]*\/)*\w[\w.]*\.ts$/.test(name)) {
        return new Response("no", { status: 404 });
      }
      try {
        const body = await Deno.readFile(new URL(name, root));
        return new Response(body, {
          headers: { "content-type": "application/typescript" },
        });
      } catch {
        return new Response("missing", { status: 404 });
      }
    });
    try {
      const port = server.addr.port;
      const url = `http://127.0.0.1:${port}/${token}/patterns/cube.ts`;
      const script = new URL("./fixtures/import_by_url.ts", import.meta.url);
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-lock",
          `--allow-import=127.0.0.1:${port}`,
          "--allow-read=./tests",
          script.pathname,
          url,
        ],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.deepEqual(
        new TextDecoder().decode(out.stdout).trim().split("\n"),
        [
          JSON.stringify([0, 1, 8, 27, 64, 125]),
          "TimeoutError",
          "WorkerCrashedError naming the limit",
          "42",
        ],
      );
    } finally {
      ac.abort();
      await server.finished;
    }
  },
);

// -- The demo --

mpTest("the cube demo prints the seed's output", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read=./patterns",
      new URL("../patterns/cube.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  for (let i = 1; i <= 5; i++) {
    assert.ok(lines.includes(`starting process ${i}`));
    assert.ok(lines.includes(`calculating cube of ${i}... result: ${i ** 3}`));
    assert.ok(lines.includes(`end process ${i}`));
    assert.ok(
      lines.indexOf(`starting process ${i}`) <
        lines.indexOf(`end process ${i}`),
    );
  }
});

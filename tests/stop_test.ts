/**
 * Stopping is real, memory caps, lifetimes, no task stuck behind a busy
 * worker, and `currentProcess()`/`activeChildren()` (SPEC.md, cube.ts).
 *
 * The lifetime cases run a scenario from `fixtures/lifetimes.ts` in its own
 * `deno` process: what they check is that the program exits by itself.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import {
  activeChildren,
  currentProcess,
  Pool,
  Process,
  Queue,
  WorkerCrashedError,
} from "../mod.ts";
import { liveWorkerCount } from "../patterns/_core/worker.ts";
import { mpTest, range } from "./_helpers.ts";

Deno.test.sanitizer?.({ ops: true, resources: true });

const SCENARIOS = new URL("./fixtures/lifetimes.ts", import.meta.url);
const CUBE = new URL("../patterns/cube.ts", import.meta.url).href;

/** Runs a scenario; a program that does not exit is killed after 30 s. */
async function scenario(
  name: string,
  env?: { flags: string[]; vars: Record<string, string> },
): Promise<{ code: number; out: string[]; ms: number; err: string }> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read=./patterns,./tests",
      ...(env?.flags ?? []),
      SCENARIOS.pathname,
      name,
    ],
    ...(env ? { env: env.vars } : {}),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout).trim().split("\n"),
    err: dec.decode(out.stderr),
    ms: performance.now() - t0,
  };
}

// -- Stopping is real --

mpTest(
  "a busy task past taskTimeout is stopped and the program exits",
  async () => {
    const r = await scenario("busy-task-timeout");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out, ["timeout", "stopped-within-1s", "42"]);
    const r2 = await scenario("busy-task-timeout-no-close");
    assert.equal(r2.code, 0, r2.err);
    assert.deepEqual(r2.out, ["timeout"]);
  },
);

mpTest(
  "a busy Process terminated gives -15 and the program exits",
  async () => {
    const r = await scenario("busy-process-terminated");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out, ["-15 -15"]);
  },
);

mpTest("terminate() ends a busy Process at once, here too", async () => {
  // Busy for 2 s, not for ever: Deno 2.9.6 does not interrupt a thread that
  // never yields, and it would spin through the rest of this test run.
  const p = new Process({
    target: () => {
      const end = Date.now() + 2_000;
      while (Date.now() < end) { /* busy */ }
    },
  });
  p.start();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(p.isAlive(), true);
  p.terminate();
  assert.equal(await p.join({ timeout: 1_000 }), -15);
  assert.equal(p.isAlive(), false);
});

mpTest("Deno.exit(n) in a Process gives exit code n", async () => {
  const p = new Process({ target: () => Deno.exit(7) });
  p.start();
  assert.equal(await p.join({ timeout: 5_000 }), 7);
});

// -- Memory caps --

mpTest(
  "a task over memoryLimitMb fails with WorkerCrashedError; the pool serves on",
  async () => {
    await using pool = new Pool({ workers: 2, memoryLimitMb: 64 });
    const err = await pool.apply(() => {
      const hog: number[][] = [];
      for (;;) hog.push(new Array(100_000).fill(1.5));
    }).catch((e) => e);
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.match(err.message, /64 MB/);
    assert.match(err.message, /memoryLimitMb/);
    // An async task that runs out of memory after an await is caught too.
    const err2 = await pool.apply(async () => {
      await new Promise((r) => setTimeout(r, 1));
      const hog: number[][] = [];
      for (;;) hog.push(new Array(100_000).fill(1.5));
    }).catch((e) => e);
    assert.ok(err2 instanceof WorkerCrashedError, String(err2));
    assert.match(err2.message, /64 MB/);
    assert.deepEqual(
      await pool.map((x: number) => x * 2, range(20)),
      range(20).map((x) => x * 2),
    );
    assert.equal(liveWorkerCount(), 2);
  },
);

mpTest("a Process over memoryLimitMb exits with 1", async () => {
  const p = new Process({
    target: () => {
      const hog: number[][] = [];
      for (;;) hog.push(new Array(100_000).fill(1.5));
    },
    memoryLimitMb: 64,
  });
  p.start();
  assert.equal(await p.join({ timeout: 10_000 }), 1);
});

mpTest("memoryLimitMb is checked", () => {
  assert.throws(() => new Pool({ memoryLimitMb: 0 }), RangeError);
  assert.throws(() => new Pool({ memoryLimitMb: NaN }), RangeError);
  assert.throws(
    () => new Process({ target: () => {}, memoryLimitMb: -5 }),
    RangeError,
  );
});

// -- Lifetimes --

mpTest("a program that forgets close() or shutdown() still exits", async () => {
  const pool = await scenario("forgotten-pool");
  assert.equal(pool.code, 0, pool.err);
  assert.deepEqual(pool.out, ["[1,8,27]"]);
  const manager = await scenario("forgotten-manager");
  assert.equal(manager.code, 0, manager.err);
  assert.deepEqual(manager.out, ["1"]);
});

mpTest(
  "a daemon Process does not hold the program; a non-daemon one does",
  async () => {
    const daemon = await scenario("daemon-process");
    assert.equal(daemon.code, 0, daemon.err);
    assert.deepEqual(daemon.out, ["main done true"]);
    // Its target sleeps 60 s: the program did not wait for it.
    assert.ok(daemon.ms < 20_000, `took ${daemon.ms} ms`);
    const held = await scenario("non-daemon-process");
    assert.equal(held.code, 0, held.err);
    assert.deepEqual(held.out, ["main done", "child done"]);
  },
);

// -- No head-of-line blocking --

mpTest(
  "jobs queued behind a never-settling task run on the idle worker",
  async () => {
    const pool = new Pool({ workers: 2 });
    try {
      await pool.map((x: number) => x, range(4)); // both workers up
      const stuck = pool.apply(() => new Promise(() => {}));
      stuck.catch(() => {});
      const t0 = performance.now();
      const fast = await pool.map((x: number) => x + 1, range(40), {
        chunksize: 1,
      });
      assert.deepEqual(fast, range(40).map((x) => x + 1));
      assert.ok(performance.now() - t0 < 1_000, "fast items waited");
      const more = await Promise.all(
        range(10).map((i) => pool.apply((x: number) => x * 3, [i])),
      );
      assert.deepEqual(more, range(10).map((x) => x * 3));
    } finally {
      pool.terminate();
    }
  },
);

mpTest(
  "a quick task does not wait behind a 3 s one beside an idle worker",
  async () => {
    const pool = new Pool({ workers: 2 });
    try {
      await pool.map((x: number) => x, range(4));
      const t0 = performance.now();
      const slow = pool.apply(() => new Promise((r) => setTimeout(r, 3_000)));
      slow.catch(() => {});
      // Handed out at once, a quick task may land behind the slow one.
      const quick = await Promise.all(
        range(6).map((i) => pool.apply((x: number) => x, [i])),
      );
      assert.deepEqual(quick, range(6));
      assert.ok(performance.now() - t0 < 1_000, "quick tasks waited");
    } finally {
      pool.terminate();
    }
  },
);

mpTest(
  "a map does not wait behind a 3 s busy task beside an idle worker",
  async () => {
    const pool = new Pool({ workers: 2 });
    try {
      await pool.map((x: number) => x, range(4));
      const t0 = performance.now();
      const busy = pool.apply(() => {
        const end = Date.now() + 3_000;
        while (Date.now() < end) { /* busy */ }
        return 1;
      });
      busy.catch(() => {});
      const quick = await pool.map((x: number) => -x, range(20), {
        chunksize: 1,
      });
      assert.deepEqual(quick, range(20).map((x) => -x));
      assert.ok(performance.now() - t0 < 1_000, "quick tasks waited");
    } finally {
      pool.terminate();
    }
  },
);

// -- currentProcess and activeChildren --

mpTest("currentProcess() in main, a Process and a Pool task", async () => {
  const me = currentProcess();
  assert.equal(me.name, "MainProcess");
  assert.equal(typeof me.ident, "number");
  const q = new Queue<{ name: string; ident: number }>();
  const p = new Process({
    target: async (q: Queue<{ name: string; ident: number }>, url: string) => {
      const { currentProcess } = await import(url);
      q.putSync(currentProcess());
    },
    args: [q, CUBE],
    name: "reporter",
  });
  p.start();
  const inProcess = await q.get({ timeout: 10_000 });
  assert.equal(await p.join(), 0);
  assert.equal(inProcess.name, "reporter");
  assert.notEqual(inProcess.ident, me.ident);
  await using pool = new Pool({ workers: 2 });
  const inPool = await pool.map(
    async (url: string) => {
      const { currentProcess } = await import(url);
      return currentProcess();
    },
    [CUBE, CUBE, CUBE, CUBE],
    { chunksize: 1 },
  );
  for (const info of inPool) {
    assert.match(info.name, /^Pool-\d+-worker-\d+$/);
    assert.notEqual(info.ident, me.ident);
  }
  q.close();
});

mpTest(
  "activeChildren() lists the live Processes this thread started",
  async () => {
    assert.deepEqual(activeChildren(), []);
    const sleep = () => new Promise((r) => setTimeout(r, 200));
    const a = new Process({ target: sleep });
    const b = new Process({ target: sleep });
    a.start();
    b.start();
    assert.deepEqual(activeChildren(), [a, b]);
    await a.join();
    await b.join();
    assert.deepEqual(activeChildren(), []);
  },
);

// -- Seeing into a pool --

mpTest(
  "pool.stats() counts workers, busy, queued, completed, failed",
  async () => {
    const pool = new Pool({ workers: 2 });
    try {
      assert.deepEqual(pool.stats(), {
        workers: 2,
        busy: 0,
        queued: 0,
        completed: 0,
        failed: 0,
      });
      await pool.map((x: number) => x, range(10));
      await pool.apply(() => {
        throw new RangeError("no");
      }).catch(() => {});
      const s = pool.stats();
      assert.equal(s.completed, 10);
      assert.equal(s.failed, 1);
      // Two slow tasks and more behind them: both busy, the rest queued.
      const slow = pool.map(
        () => new Promise((r) => setTimeout(r, 300)),
        range(6),
        { chunksize: 1 },
      );
      await new Promise((r) => setTimeout(r, 100));
      const during = pool.stats();
      assert.equal(during.busy, 2);
      assert.equal(during.queued, 4);
      await slow;
      assert.equal(pool.stats().completed, 16);
    } finally {
      pool.terminate();
    }
  },
);

mpTest(
  "MP_DEBUG=1 logs worker starts, a timeout and the restart; off without env access",
  async () => {
    const on = await scenario("debug", {
      flags: ["--allow-env=MP_DEBUG"],
      vars: { MP_DEBUG: "1" },
    });
    assert.equal(on.code, 0, on.err);
    assert.deepEqual(on.out, ["5"]);
    assert.match(on.err, /Pool-\d+-worker-1: started/);
    assert.match(on.err, /task timed out after 200 ms/);
    assert.match(on.err, /Pool-\d+-worker-2: started/);
    // Without --allow-env nothing is read, nothing printed, no prompt.
    const off = await scenario("debug", { flags: [], vars: { MP_DEBUG: "1" } });
    assert.equal(off.code, 0, off.err);
    assert.doesNotMatch(off.err, /\[mp /);
  },
);

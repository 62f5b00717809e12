import { strict as assert } from "node:assert";
import {
  DictProxy,
  Manager,
  QueueProxy,
  serve,
  type ValueProxy,
} from "../patterns/server_process.ts";
import { mpTest, range } from "./_helpers.ts";
import {
  FIXTURE_PERMISSIONS,
  runDeno,
  startServerProcess,
} from "./fixtures/manager_core_spawn.ts";

Deno.test.sanitizer({ ops: true, resources: true });

// -- One program ---------------------------------------------------------------

mpTest(
  "named: get-or-create, lookup gives the right proxy class, names, unname",
  async () => {
    await using m = await Manager.start();
    let made = 0;
    const q1 = await m.named("jobs", () => {
      made++;
      return m.queue<string>();
    });
    const q2 = await m.named("jobs", () => {
      made++;
      return m.queue<string>();
    });
    assert.equal(made, 1, "the second named() found the first's object");
    await q1.put("a");
    assert.equal(await q2.get(), "a");
    const d = await m.named("config", () => m.dict({ level: 3 }));
    assert.ok(d instanceof DictProxy);
    const found = await m.lookup("jobs");
    assert.ok(found instanceof QueueProxy, "lookup gives a QueueProxy");
    assert.equal(found.typeid, "queue");
    assert.equal(await m.lookup("nothing"), undefined);
    assert.deepEqual(await m.names(), ["jobs", "config"]);
    // A name is a reference: with every proxy dropped, both objects live.
    for (const p of [q1, q2, d, found]) p.drop();
    assert.equal((await m.stats()).objects, 2);
    const again = await m.lookup<DictProxy<string, number>>("config");
    assert.equal(await again!.get("level"), 3);
    assert.equal(await m.unname("config"), true);
    assert.equal(await m.unname("config"), false, "an unknown name");
    assert.deepEqual(await m.names(), ["jobs"]);
    // Unnamed, the dict lives while its proxy does, then it is freed.
    assert.equal(await again!.get("level"), 3);
    again!.drop();
    assert.equal((await m.stats()).objects, 1);
    assert.equal(await m.unname("jobs"), true);
    assert.equal((await m.stats()).objects, 0);
  },
);

mpTest(
  "named: a throwing factory rejects and leaves the name free; bad input is a TypeError",
  async () => {
    await using m = await Manager.start();
    await assert.rejects(
      m.named("q", () => {
        throw new RangeError("no queue today");
      }),
      { name: "RangeError", message: "no queue today" },
    );
    await assert.rejects(
      m.named("q", () => Promise.reject(new Error("async failure"))),
      { message: "async failure" },
    );
    assert.deepEqual(await m.names(), []);
    const q = await m.named("q", () => m.queue());
    assert.equal(q.typeid, "queue");
    for (const bad of ["", "x".repeat(1025), 7, undefined]) {
      await assert.rejects(
        m.named(bad as string, () => m.queue()),
        TypeError,
      );
      await assert.rejects(m.lookup(bad as string), TypeError);
      await assert.rejects(m.unname(bad as string), TypeError);
    }
    await assert.rejects(
      m.named("n", "not a function" as never),
      /expected a factory function/,
    );
    await assert.rejects(
      m.named("n", () => ({ not: "a proxy" }) as never),
      /the factory must give a proxy of this manager/,
    );
    // A proxy of another manager is refused, and not dropped.
    await using other = await Manager.start();
    const foreign = await other.dict({ mine: true });
    await assert.rejects(m.named("n", () => foreign), TypeError);
    assert.equal(await foreign.get("mine"), true);
    assert.deepEqual(await m.names(), ["q"]);
    assert.equal((await m.stats()).objects, 1, "nothing was left behind");
  },
);

mpTest(
  "named: racing clients all get one object, the losers' objects are dropped",
  async () => {
    await using server = await serve({ port: 0, authkey: "race" });
    const where = { port: server.addr.port, authkey: "race" };
    const clients = await Promise.all(
      range(4).map(() => Manager.connect(where)),
    );
    try {
      // Each factory waits until every client's factory has run, so every
      // client has missed the name and made an object before any binds it.
      let waiting = clients.length;
      let release!: () => void;
      const all = new Promise<void>((r) => release = r);
      const counters = await Promise.all(
        clients.map((m) =>
          m.named("count", async () => {
            const v = await m.value("i", 0);
            if (--waiting === 0) release();
            await all;
            return v;
          })
        ),
      );
      assert.equal(waiting, 0, "every client's factory ran: a real race");
      await Promise.all(counters.map((c) => c.add(1)));
      assert.equal(await counters[0]!.get(), clients.length);
      // One object survived; the three losers were dropped at once.
      assert.deepEqual(server.stats(), {
        objects: 1,
        connections: clients.length,
      });
    } finally {
      for (const m of clients) await m.shutdown();
    }
  },
);

mpTest(
  "named: an object outlives its creator's connection",
  async () => {
    // Remote: one client names, leaves; another finds the data.
    await using server = await serve({ port: 0, authkey: "outlive" });
    const where = { port: server.addr.port, authkey: "outlive" };
    {
      await using a = await Manager.connect(where);
      const d = await a.named(
        "shared",
        () => a.dict<string, unknown>({ by: "a" }),
      );
      const l = await a.list([1, 2]);
      await d.set("list", l);
    }
    while (server.stats().connections !== 0) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(server.stats(), { objects: 2, connections: 0 });
    await using b = await Manager.connect(where);
    const d = await b.lookup<DictProxy<string, unknown>>("shared");
    assert.equal(await d!.get("by"), "a");
    const l = await d!.get("list") as { toArray(): Promise<number[]> };
    assert.deepEqual(await l.toArray(), [1, 2]);
  },
);

// -- Across OS processes ---------------------------------------------------------

mpTest(
  "named across OS processes: two client programs share a named queue and counter, exact totals",
  async () => {
    const authkey = "named-across-processes";
    await using server = await startServerProcess(authkey);
    await using m = await Manager.connect({ port: server.port, authkey });
    const go = await m.barrier(2);
    await m.named("go", () => go);
    const NAMES = 200, ITEMS = 300;
    const client = (who: string) =>
      runDeno([
        "run",
        ...FIXTURE_PERMISSIONS,
        new URL("./fixtures/manager_core_client.ts", import.meta.url).pathname,
        who,
      ], {
        MP_AUTHKEY: authkey,
        MP_PORT: String(server.port),
        MP_NAMES: String(NAMES),
        MP_ITEMS: String(ITEMS),
      });
    const results = await Promise.all([client("a"), client("b")]);
    let made = 0;
    for (const r of results) {
      assert.equal(r.code, 0, r.stderr);
      made += (JSON.parse(r.stdout) as { made: number }).made;
    }
    // At least one object per name was made; racing losers made more.
    assert.ok(made >= NAMES && made <= 2 * NAMES, `made ${made}`);
    // Both programs are gone; what they named lives on, exactly once.
    const names = await m.names();
    assert.equal(names.length, NAMES + 3);
    for (let i = 0; i < NAMES; i++) {
      const v = await m.lookup<ValueProxy<number>>(`race-${i}`);
      assert.equal(await v!.get(), 2, `race-${i} was shared by both`);
      v!.drop();
    }
    const count = await m.lookup<ValueProxy<number>>("count");
    assert.equal(await count!.get(), 2 * ITEMS);
    const jobs = await m.lookup<QueueProxy<string>>("jobs");
    assert.equal(await jobs!.qsize(), 2 * ITEMS);
    const seen = new Map<string, number[]>([["a", []], ["b", []]]);
    for (let i = 0; i < 2 * ITEMS; i++) {
      const [who, n] = (await jobs!.get({ timeout: 0 })).split(":");
      seen.get(who!)!.push(Number(n));
    }
    // Each program's items, all there, in its own order.
    assert.deepEqual(seen.get("a"), range(ITEMS));
    assert.deepEqual(seen.get("b"), range(ITEMS));
    // Only named objects are left: the losers' were dropped.
    for (const p of [count!, jobs!, go]) p.drop();
    await m.unname("go");
    const s = await m.stats();
    assert.deepEqual(s, { objects: NAMES + 2, connections: 1 });
  },
);

mpTest(
  "deno task manager put / take: a work queue shared by name across programs",
  async () => {
    const authkey = "put-take-demo-key";
    await using server = await startServerProcess(authkey);
    const cli = (...args: string[]) =>
      runDeno([
        "run",
        "--allow-read=./patterns",
        "--allow-net=127.0.0.1",
        "--allow-env=MP_AUTHKEY,MP_DEBUG",
        "patterns/server_process.ts",
        ...args,
        "--connect",
        `127.0.0.1:${server.port}`,
      ], { MP_AUTHKEY: authkey });
    const put = await cli("put", "--count", "40");
    assert.equal(put.code, 0, put.stderr);
    assert.match(put.stdout, /put 40 jobs on the queue "jobs"; 40 waiting/);
    // Two takers at once: every job is done exactly once between them.
    const takers = await Promise.all([
      cli("take", "--idle-ms", "1000"),
      cli("take", "--idle-ms", "1000"),
    ]);
    const done: number[] = [], totals: number[] = [];
    for (const t of takers) {
      assert.equal(t.code, 0, t.stderr);
      for (
        const m of t.stdout.matchAll(/^job (\d+): digit sum of \d+² is (\d+)/gm)
      ) {
        const n = Number(m[1]);
        const digits = [...String(n * n)].reduce((a, d) => a + Number(d), 0);
        assert.equal(Number(m[2]), digits);
        done.push(n);
      }
      totals.push(Number(/(\d+) done by all takers/.exec(t.stdout)![1]));
    }
    // The taker whose job was the last one done saw them all.
    assert.equal(Math.max(...totals), 40);
    assert.deepEqual(done.sort((a, b) => a - b), range(40).map((i) => i + 1));
    const noConnect = await runDeno([
      "run",
      "--allow-read=./patterns",
      "--allow-env=MP_AUTHKEY",
      "patterns/server_process.ts",
      "take",
    ], { MP_AUTHKEY: authkey });
    assert.equal(noConnect.code, 2);
    assert.match(noConnect.stderr, /take needs --connect host:port/);
  },
);

mpTest(
  "named: a registered type's instance can be named and stored like any proxy",
  async () => {
    const source =
      "export class Tally { n = 0; add(k) { return this.n += k; } }";
    await using m = await Manager.start({
      register: {
        Tally: {
          module: `data:text/javascript,${encodeURIComponent(source)}`,
          export: "Tally",
        },
      },
    });
    type Tally = { add(k: number): number };
    const t = await m.named("tally", () => m.create<Tally>("Tally"));
    assert.equal(await t.add(2), 2);
    const again = await m.named("tally", () => m.create<Tally>("Tally"));
    assert.equal(await again.add(3), 5, "the same instance");
    const d = await m.dict<string, unknown>();
    await d.set("t", t);
    const stored = await d.get("t") as typeof t;
    assert.equal(await stored.add(1), 6);
    assert.equal((await m.lookup("tally"))!.typeid, "Tally");
  },
);

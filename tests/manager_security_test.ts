import { strict as assert } from "node:assert";
import { Manager } from "../patterns/server_process.ts";
import { FramedSocket } from "../patterns/_manager/frames.ts";
import { hmacKey, nonce, proof } from "../patterns/_manager/handshake.ts";
import { PROTOCOL, PROTOCOL_VERSION } from "../patterns/_manager/protocol.ts";
import { stateOf } from "../patterns/_manager/proxies/base.ts";
import { mpTest, range } from "./_helpers.ts";
import { startServerProcess } from "./fixtures/manager_core_spawn.ts";

Deno.test.sanitizer({ ops: true, resources: true });

/** A hand-made client: a raw socket that passed the handshake. */
async function rawAuthenticated(
  port: number,
  key: string,
): Promise<FramedSocket> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  tcp.setNoDelay(true);
  const s = new FramedSocket(tcp, 1 << 20);
  const hello = await s.next() as { challenge: string };
  const mine = nonce();
  s.send({
    proto: PROTOCOL,
    version: PROTOCOL_VERSION,
    response: await proof(
      await hmacKey(new TextEncoder().encode(key)),
      "client",
      hello.challenge,
      mine,
    ),
    challenge: mine,
  });
  assert.equal((await s.next() as { ok: boolean }).ok, true);
  return s;
}

type Reply = [number, unknown] | { i?: number; e: { name: string } };

/** Calls over a raw socket; answers come in call order. */
function rawCaller(s: FramedSocket) {
  let id = 0;
  return async (o: unknown, method: string, args: unknown[]) => {
    const i = ++id;
    s.send([i, o, method, args, 0]);
    const r = await s.next() as Reply;
    if (Array.isArray(r)) assert.equal(r[0], i);
    else assert.equal(r.i, i);
    return r;
  };
}

/** The result of a successful raw call. */
function valueOf(r: Reply): unknown {
  assert.ok(Array.isArray(r), `the call failed: ${JSON.stringify(r)}`);
  return r[1];
}

/** The id with one character changed (a near miss). */
function flip(id: string, at: number): string {
  const c = id[at] === "A" ? "B" : "A";
  return id.slice(0, at) + c + id.slice(at + 1);
}

mpTest(
  "ids are capabilities: guessed ids from a raw client are refused everywhere; the victim's dict, lock and queue are unchanged",
  async () => {
    const authkey = "capability-test-key";
    await using server = await startServerProcess(authkey);
    await using victim = await Manager.connect({ port: server.port, authkey });
    const d = await victim.dict<string, unknown>({ secret: "s3cr3t", n: 1 });
    const lock = await victim.lock();
    assert.equal(await lock.acquire(), true);
    const q = await victim.queue<number>();
    for (const i of [1, 2, 3]) await q.put(i);
    const victimIds = [d, lock, q].map((p) => stateOf(p).id);
    assert.deepEqual(await victim.stats(), { objects: 3, connections: 1 });

    const s = await rawAuthenticated(server.port, authkey);
    const call = rawCaller(s);
    // The attacker's own objects show what ids look like: 96 random bits,
    // nothing sequential to extrapolate from.
    const own: string[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await call(0, "new", ["dict"]) as [number, { id: string }];
      own.push(r[1].id);
    }
    for (const id of own) assert.match(id, /^[A-Za-z0-9_-]{16}$/);
    assert.equal(new Set(own).size, own.length);
    assert.deepEqual(await victim.stats(), { objects: 53, connections: 2 });

    const guesses: unknown[] = [
      ...range(64).map((i) => i + 1),
      ...range(64).map((i) => String(i + 1)),
      ...own.map((id) => flip(id, 15)),
      // Near misses of the victim's real ids (which the attacker does not
      // have): one character off is as refused as any guess.
      ...victimIds.flatMap((id) => [flip(id, 0), flip(id, 7), flip(id, 15)]),
      "AAAAAAAAAAAAAAAA",
    ];
    const refused = (r: Reply, what: string) => {
      assert.ok(
        !Array.isArray(r),
        `${what} was accepted: ${JSON.stringify(r)}`,
      );
      assert.ok(
        r.e.name === "RangeError" || r.e.name === "TypeError",
        `${what}: ${JSON.stringify(r)}`,
      );
    };
    let tries = 0;
    for (const g of guesses) {
      const tag = { $t: "ref", id: g, type: "dict" };
      const what = `guess ${JSON.stringify(g)}`;
      // As a call's target, with the victim types' methods.
      for (
        const [m, a] of [
          ["toObject", []],
          ["set", ["secret", "pwned"]],
          ["release", []],
          ["acquire", []],
          ["get", []],
        ] as const
      ) {
        refused(await call(g, m, [...a]), `${what} as target of ${m}`);
        tries++;
      }
      // Nested inside an argument: a new list's init, a value stored in
      // the attacker's own dict, a new dict's init, a name.
      refused(await call(0, "new", ["list", [tag]]), `${what} in a list`);
      refused(
        await call(own[0], "set", ["stolen", { deep: [tag] }]),
        `${what} nested in a stored value`,
      );
      refused(
        await call(0, "new", ["dict", { x: tag }]),
        `${what} in a dict`,
      );
      refused(await call(0, "name", ["stolen", tag]), `${what} named`);
      refused(await call(0, "methods", [g]), `${what} in methods`);
      tries += 5;
      // Giving back a reference it never had, or pinning one, does nothing.
      s.send([0, 0, "decref", [[g]], 0]);
      const token = nonce();
      s.send([0, 0, "pin", [token, [g]], 0]);
      assert.equal(valueOf(await call(0, "claim", [token])), true);
      refused(await call(g, "toObject", []), `${what} after a claim`);
    }
    assert.ok(tries > 1000, `${tries} attempts`);
    assert.deepEqual(valueOf(await call(0, "names", [])), []);

    // The victim's objects are untouched, and its proxies still work.
    assert.deepEqual(await d.toObject(), { secret: "s3cr3t", n: 1 });
    assert.equal(await lock.locked(), true, "the victim still holds its lock");
    assert.equal(await q.qsize(), 3);
    assert.deepEqual(await victim.stats(), { objects: 53, connections: 2 });
    // The control: the same raw channel does reach an object whose id it
    // holds — ids are bearer capabilities, so refusals above came from the
    // guessing alone.
    assert.deepEqual(valueOf(await call(victimIds[0], "toObject", [])), {
      secret: "s3cr3t",
      n: 1,
    });
    await s.close();
    await lock.release();
    assert.equal(await lock.locked(), false);
    assert.deepEqual(
      [await q.get(), await q.get(), await q.get()],
      [1, 2, 3],
    );
    // The attacker's objects went with it; the victim's stayed.
    await waitFor(async () => (await victim.stats()).connections === 1);
    assert.deepEqual(await victim.stats(), { objects: 3, connections: 1 });
  },
);

mpTest(
  "objects made by calls that want no answer are the connection's, and freed when it leaves",
  async () => {
    const authkey = "no-reply-objects";
    await using server = await startServerProcess(authkey);
    await using observer = await Manager.connect({
      port: server.port,
      authkey,
    });
    const kept = await observer.dict({ stays: true });
    const base = (await observer.stats()).objects;
    const s = await rawAuthenticated(server.port, authkey);
    const N = 5000;
    for (let i = 0; i < N; i++) {
      // `[0, 0, "new", …]`: nobody will ever learn these ids.
      s.send([0, 0, "new", [i % 2 ? "dict" : "list"], 0]);
    }
    // Answers come in call order: this one follows all of them.
    s.send([1, 0, "stats", [], 0]);
    const during = await s.next() as [number, { objects: number }];
    assert.equal(during[1].objects, base + N);
    await s.close();
    await waitFor(async () => (await observer.stats()).objects === base);
    assert.deepEqual(await observer.stats(), {
      objects: base,
      connections: 1,
    });
    assert.equal(await kept.get("stays"), true);
  },
);

/** Polls `check` until it holds (10 s at most: then the test fails). */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("the condition never held");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Hostile requests against the manager server (`patterns/_manager/server/`):
 * each test is a request that once got a wrong answer or reached what it
 * should not.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { Manager } from "../patterns/server_process.ts";
import { ServerCore } from "../patterns/_manager/server/core.ts";
import type { Conn } from "../patterns/_manager/server/call.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

mpTest(
  "a server-side wait longer than setTimeout's range waits, not fails at once",
  async () => {
    // 3e9 ms (35 days) overflows setTimeout, which then fires after 1 ms:
    // the wait answered `false` at once instead of waiting for set().
    await using m = await Manager.start();
    const ev = await m.event();
    let settled = false;
    const waited = ev.wait({ timeout: 3e9 }).finally(() => settled = true);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false, "the 35-day wait ended within 300 ms");
    await ev.set();
    assert.equal(await waited, true);
  },
);

/** A connection to a bare server core, with every message it was sent. */
function coreConn(core: ServerCore, name: string) {
  const sent: unknown[] = [];
  const conn: Conn = {
    ownerBase: name,
    threadId: 0,
    refs: new Map(),
    waiters: new Map(),
    closed: false,
    send: (m) => sent.push(JSON.parse(JSON.stringify(m))),
    closeTransport: () => {},
  };
  core.open(conn);
  return {
    conn,
    sent,
    call: (msg: unknown[]) => {
      core.message(conn, JSON.parse(JSON.stringify(msg)));
      return sent.at(-1);
    },
  };
}

mpTest(
  "a call id already parked on its connection is refused: no waiter outlives the connection",
  () => {
    // Two acquires under one id: the second replaced the first in the
    // connection's table of parked calls, so the first stayed queued after
    // the connection left, and later took a permit (or a queue's item)
    // for nobody — lost for good.
    const core = new ServerCore();
    try {
      const victim = coreConn(core, "V");
      const made = victim.call([1, 0, "new", ["semaphore", 0], 0]) as [
        number,
        { id: string },
      ];
      const sem = made[1].id;
      const hostile = coreConn(core, "H");
      hostile.call([5, sem, "acquire", [], 0]);
      const again = hostile.call([5, sem, "acquire", [], 0]) as {
        e?: { name: string };
      };
      assert.equal(again?.e?.name, "TypeError", JSON.stringify(again));
      core.disconnect(hostile.conn);
      victim.call([2, sem, "release", [], 0]);
      assert.deepEqual(victim.call([3, sem, "getValue", [], 0]), [3, 1]);
      // A well-formed reuse, after the first call was answered, is fine.
      victim.call([4, sem, "acquire", [], 0]);
      victim.call([4, sem, "release", [], 0]);
      assert.deepEqual(victim.call([5, sem, "getValue", [], 0]), [5, 1]);
    } finally {
      core.close();
    }
  },
);

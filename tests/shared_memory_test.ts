/**
 * shared_memory.ts: SharedMemory and ShareableList, attached by name in
 * other workers, passed live, and their errors.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { Pool, Process } from "../patterns/cube.ts";
import { Queue } from "../patterns/queue.ts";
import {
  AlreadyExistsError,
  NotFoundError,
  ShareableList,
  SharedMemory,
} from "../patterns/shared_memory.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer?.({ ops: true, resources: true });

const MODULE = new URL("../patterns/shared_memory.ts", import.meta.url).href;

mpTest("SharedMemory is attached by name in another worker", async () => {
  const shm = new SharedMemory({ name: "t-attach", create: true, size: 16 });
  try {
    assert.equal(shm.size, 16);
    assert.equal(shm.name, "t-attach");
    assert.ok(shm.buf.every((b) => b === 0));
    shm.buf[0] = 9;
    const p = new Process({
      target: async (url: string) => {
        const { SharedMemory } = await import(url);
        const s = new SharedMemory({ name: "t-attach" });
        s.buf[1] = s.buf[0] * 2;
        s.close();
      },
      args: [MODULE],
    });
    p.start();
    assert.equal(await p.join(), 0);
    assert.equal(shm.buf[1], 18);
  } finally {
    shm.close();
    shm.unlink();
  }
});

mpTest("SharedMemory errors: unknown name, taken name, bad size", () => {
  assert.throws(
    () => new SharedMemory({ name: "t-nope" }),
    (e) => e instanceof NotFoundError && e.name === "NotFoundError",
  );
  const shm = new SharedMemory({ name: "t-taken", create: true, size: 8 });
  try {
    assert.throws(
      () => new SharedMemory({ name: "t-taken", create: true, size: 8 }),
      (e) => e instanceof AlreadyExistsError && e.name === "AlreadyExistsError",
    );
  } finally {
    shm.close();
    shm.unlink();
  }
  assert.throws(() => new SharedMemory({ create: true, size: 0 }), RangeError);
  assert.throws(() => new SharedMemory({ name: "" }), TypeError);
  // After unlink the name is free again; the old handle still works.
  const a = new SharedMemory({ name: "t-reuse", create: true, size: 8 });
  a.unlink();
  assert.throws(() => new SharedMemory({ name: "t-reuse" }), NotFoundError);
  a.buf[0] = 1;
  const b = new SharedMemory({ name: "t-reuse", create: true, size: 8 });
  assert.equal(b.buf[0], 0);
  a.close();
  b.close();
  b.unlink();
});

mpTest(
  "a fresh name each time, and a block travels live to Pool tasks",
  async () => {
    const shm = new SharedMemory({ create: true, size: 4 * 8 });
    assert.match(shm.name, /^psm_/);
    try {
      await using pool = new Pool({ workers: 2 });
      await pool.map(
        (args: [SharedMemory, number]) => {
          const [s, i] = args;
          new Int32Array(s.buf.buffer, s.buf.byteOffset, 8)[i] = i * 10;
        },
        [0, 1, 2, 3, 4, 5, 6, 7].map((i) => [shm, i] as [SharedMemory, number]),
      );
      assert.deepEqual(
        [...new Int32Array(shm.buf.buffer, shm.buf.byteOffset, 8)],
        [0, 10, 20, 30, 40, 50, 60, 70],
      );
    } finally {
      shm.close();
      shm.unlink();
    }
  },
);

mpTest("ShareableList: get, set, count, index, format, capacities", () => {
  const sl = new ShareableList(
    [1.5, 7n, true, null, "héllo", new Uint8Array([1, 2, 3]), "x"],
    { name: "t-list" },
  );
  try {
    assert.equal(sl.length, 7);
    assert.deepEqual([...sl], [
      1.5,
      7n,
      true,
      null,
      "héllo",
      new Uint8Array([1, 2, 3]),
      "x",
    ]);
    assert.equal(sl.format, "dq?x8s8b8s");
    sl.set(4, "12345678");
    assert.equal(sl.get(4), "12345678");
    assert.throws(() => sl.set(4, "123456789"), RangeError);
    assert.equal(sl.get(4), "12345678", "a refused set leaves the slot");
    sl.set(-1, 3);
    assert.equal(sl.get(6), 3);
    assert.equal(sl.count(3), 1);
    assert.equal(sl.index(true), 2);
    assert.throws(() => sl.index("absent"), RangeError);
    assert.throws(() => sl.get(7), RangeError);
    assert.throws(() => sl.set(0, {} as unknown as number), TypeError);
    // Any Unicode comes back as stored, lone surrogates too.
    const odd = new ShareableList(["😀 é 中", "a\ud800b"]);
    assert.deepEqual([...odd], ["😀 é 中", "a\ud800b"]);
    odd.shm.close();
    odd.shm.unlink();
    const again = ShareableList.attach("t-list");
    assert.equal(again.get(1), 7n);
    again.shm.close();
  } finally {
    sl.shm.close();
    sl.shm.unlink();
  }
  assert.throws(() => ShareableList.attach("t-list"), NotFoundError);
});

mpTest(
  "a ShareableList attached by name in a Process and passed live",
  async () => {
    const sl = new ShareableList([0, "", 0], { name: "t-list-proc" });
    sl.set(1, "");
    const q = new Queue<string>();
    try {
      const p = new Process({
        target: async (url: string, live: ShareableList, q: Queue<string>) => {
          const { ShareableList } = await import(url);
          const byName = ShareableList.attach("t-list-proc");
          byName.set(0, 42);
          live.set(2, (live.get(0) as number) + 1);
          q.putSync(String(byName.get(2)));
          byName.shm.close();
        },
        args: [MODULE, sl, q],
      });
      p.start();
      assert.equal(await q.get({ timeout: 10_000 }), "43");
      assert.equal(await p.join(), 0);
      assert.deepEqual([...sl], [42, "", 43]);
    } finally {
      q.close();
      sl.shm.close();
      sl.shm.unlink();
    }
  },
);

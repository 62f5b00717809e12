import { strict as assert } from "node:assert";
import { Process } from "../patterns/cube.ts";
import {
  Connection,
  type ConnectionInit,
  EOFError,
  kShare,
  Pipe,
} from "../patterns/pipe.ts";
import { EmptyError, FullError, Queue } from "../patterns/queue.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const MiB = 1 << 20;

/** Bytes whose 32-bit words are `i ^ seed`, so any misplaced piece shows. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  const words = new Uint32Array(bytes.buffer, 0, length >> 2);
  for (let i = 0; i < words.length; i++) words[i] = (i ^ seed) >>> 0;
  return bytes;
}

/** How many words of `bytes` are not as {@linkcode pattern} made them. */
function badWords(bytes: Uint8Array, seed: number): number {
  const words = new Uint32Array(
    bytes.buffer,
    bytes.byteOffset,
    bytes.length >> 2,
  );
  let bad = 0;
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== (i ^ seed) >>> 0) bad++;
  }
  return bad;
}

/** A second writer object on the ring `end` writes to. */
function sameRing(end: Connection): ConnectionInit {
  return end[kShare]({ transfer: [], afterSend() {} }).data as ConnectionInit;
}

// -- Pipe ----------------------------------------------------------------

mpTest(
  "sendBytes of 16 MiB and 64 MiB arrives whole both ways between main and a Process",
  async () => {
    const [a, b] = Pipe();
    const sizes = [16 * MiB, 64 * MiB];
    const p = new Process({
      target: (conn: Connection, sizes: number[]) => {
        for (const n of sizes) {
          const got = conn.recvBytesSync();
          const words = new Uint32Array(got.buffer, got.byteOffset, n >> 2);
          let bad = 0;
          for (let i = 0; i < words.length; i++) {
            if (words[i] !== (i ^ n) >>> 0) bad++;
          }
          conn.send({ length: got.length, bad });
          conn.sendBytes(got);
        }
      },
      args: [b, sizes],
    });
    p.start();
    for (const n of sizes) {
      a.sendBytes(pattern(n, n));
      assert.deepEqual(await a.recv(), { length: n, bad: 0 });
      const back = await a.recvBytes();
      assert.equal(back.length, n);
      assert.equal(badWords(back, n), 0);
    }
    assert.equal(await p.join(), 0);
    a.close();
  },
);

mpTest("a 100 MB string goes through a pipe whole", async () => {
  const [r, w] = Pipe(false);
  const out = Pipe(false);
  const p = new Process({
    target: (conn: Connection, out: Connection) => {
      const s = conn.recvSync() as string;
      let sum = 0;
      for (let i = 0; i < s.length; i += 9973) sum += s.charCodeAt(i);
      out.send([s.length, sum, s.slice(0, 5), s.slice(-5)]);
    },
    args: [r, out[1]],
  });
  p.start();
  const n = 100_000_000;
  const text = "abcdefghij".repeat(n / 10 - 1) + "0123456789";
  let sum = 0;
  for (let i = 0; i < text.length; i += 9973) sum += text.charCodeAt(i);
  w.send(text);
  assert.deepEqual(await out[0].recv(), [n, sum, "abcde", "56789"]);
  assert.equal(await p.join(), 0);
  w.close();
  out[0].close();
});

mpTest(
  "two writers on one end send large messages at once: each arrives whole, none mixed",
  async () => {
    const [r, w] = Pipe(false, { capacityBytes: 64 * 1024 });
    const out = Pipe(false);
    const count = 6;
    const p = new Process({
      target: (conn: Connection, out: Connection, count: number) => {
        const seen: string[] = [];
        for (let k = 0; k < count; k++) {
          const got = conn.recvBytesSync();
          const first = got[0]!;
          let mixed = 0;
          for (let i = 0; i < got.length; i++) if (got[i] !== first) mixed++;
          seen.push(`${first}:${got.length}:${mixed}`);
        }
        out.send(seen.sort());
      },
      args: [r, out[1], count],
    });
    p.start();
    const init = sameRing(w);
    const w1 = new Connection(init);
    const w2 = new Connection(init);
    for (let k = 0; k < count / 2; k++) {
      w1.sendBytes(new Uint8Array(3 * MiB + k).fill(10 + k));
      w2.sendBytes(new Uint8Array(2 * MiB + k).fill(20 + k));
    }
    const expected = [];
    for (let k = 0; k < count / 2; k++) {
      expected.push(`${10 + k}:${3 * MiB + k}:0`, `${20 + k}:${2 * MiB + k}:0`);
    }
    assert.deepEqual(await out[0].recv(), expected.sort());
    assert.equal(await p.join(), 0);
    w.close();
    out[0].close();
  },
);

mpTest(
  "small messages interleaved with large ones keep their order",
  async () => {
    const [a, b] = Pipe(true, { capacityBytes: 16 * 1024 });
    const p = new Process({
      target: (conn: Connection) => {
        for (let i = 0; i < 20; i++) {
          conn.send(i);
          conn.sendBytes(new Uint8Array(100_000 + i).fill(i));
          conn.send(`after ${i}`);
        }
        // And back: what the main thread sent, in its order.
        const back: unknown[] = [];
        for (let i = 0; i < 30; i++) {
          const v = conn.recvSync();
          back.push(v instanceof Uint8Array ? v.length : v);
        }
        conn.send(back);
      },
      args: [b],
    });
    p.start();
    for (let i = 0; i < 20; i++) {
      assert.equal(await a.recv(), i);
      const bytes = await a.recvBytes();
      assert.equal(bytes.length, 100_000 + i);
      assert.equal(bytes[0], i);
      assert.equal(bytes[bytes.length - 1], i);
      assert.equal(await a.recv(), `after ${i}`);
    }
    const sent: unknown[] = [];
    for (let i = 0; i < 10; i++) {
      a.send(i);
      a.send("x".repeat(50_000 + i));
      a.sendBytes(new Uint8Array(40_000 + i));
      sent.push(i, "x".repeat(50_000 + i), 40_000 + i);
    }
    assert.deepEqual(await a.recv(), sent);
    assert.equal(await p.join(), 0);
    a.close();
  },
);

mpTest(
  "a worker's send that times out mid-message leaves no part of it behind",
  async () => {
    const [r, w] = Pipe(false, { capacityBytes: 64 * 1024 });
    const out = Pipe(false);
    const p = new Process({
      target: (conn: Connection, out: Connection) => {
        let name = "none";
        try {
          conn.sendBytes(new Uint8Array(4 * 1024 * 1024).fill(1), {
            timeout: 50,
          });
        } catch (e) {
          name = (e as Error).name;
        }
        out.send(name);
        conn.send("after");
      },
      args: [w, out[1]],
    });
    p.start();
    w.close(); // the process holds its own copy
    assert.equal(await out[0].recv(), "TimeoutError");
    // The pipe holds the start of the dropped message: never delivered.
    assert.equal(await r.recv(), "after");
    assert.equal(await p.join(), 0);
    await assert.rejects(r.recv({ timeout: 30_000 }), EOFError);
    r.close();
    out[0].close();
  },
);

mpTest(
  "a writer terminated mid-message leaves no partial message",
  async () => {
    const [r, w] = Pipe(false, { capacityBytes: 64 * 1024 });
    const p = new Process({
      target: (conn: Connection) => {
        conn.send("before");
        conn.sendBytes(new Uint8Array(32 * 1024 * 1024).fill(3));
        conn.send("never");
      },
      args: [w],
    });
    p.start();
    assert.equal(await r.recv(), "before");
    // Read part of the message, so that the writer is mid-stream.
    await assert.rejects(r.recvBytes({ timeout: 50 }), {
      name: "TimeoutError",
    });
    p.terminate();
    await p.join();
    await assert.rejects(
      r.recvBytes({ timeout: 500 }),
      (e: Error) => e.name === "TimeoutError" || e instanceof EOFError,
    );
    r.close();
  },
);

// -- Queue ---------------------------------------------------------------

mpTest("a 50 MB Queue item goes through the default capacity", async () => {
  const q = new Queue<unknown>();
  const p = new Process({
    target: (q: Queue<unknown>) => {
      q.putSync({ id: 1, blob: "q".repeat(50_000_000) });
      q.putSync(2);
    },
    args: [q],
  });
  p.start();
  const item = await q.get() as { id: number; blob: string };
  assert.equal(item.id, 1);
  assert.equal(item.blob.length, 50_000_000);
  assert.equal(item.blob, "q".repeat(50_000_000));
  assert.equal(await q.get(), 2);
  assert.equal(await p.join(), 0);
  // And from the main thread to a consumer in a worker.
  const back = new Queue<number>();
  const c = new Process({
    target: (q: Queue<unknown>, back: Queue<number>) => {
      back.putSync((q.getSync() as Uint8Array).length);
    },
    args: [q, back],
  });
  c.start();
  await q.put(new Uint8Array(50_000_000));
  assert.equal(await back.get(), 50_000_000);
  assert.equal(await c.join(), 0);
  q.close();
  back.close();
});

mpTest(
  "Queue producers putting large items at once: each item arrives whole",
  async () => {
    const q = new Queue<Uint8Array | number>({ capacityBytes: 64 * 1024 });
    const procs = [1, 2].map((id) =>
      new Process({
        target: (q: Queue<unknown>, id: number) => {
          for (let k = 0; k < 3; k++) {
            q.putSync(new Uint8Array(1_000_000 + k).fill(id * 10 + k));
            q.putSync(id * 10 + k);
          }
        },
        args: [q, id],
      })
    );
    for (const p of procs) p.start();
    const mains = [0, 1].map((k) =>
      q.put(new Uint8Array(700_000 + k).fill(50 + k))
    );
    const got: string[] = [];
    const order = new Map<number, number[]>();
    for (let n = 0; n < 14; n++) {
      const v = await q.get();
      if (typeof v === "number") {
        const id = Math.floor(v / 10);
        order.set(id, [...order.get(id) ?? [], v]);
        continue;
      }
      const first = v[0]!;
      assert.ok(v.every((x) => x === first), "an item was mixed");
      got.push(`${first}:${v.length}`);
      const id = Math.floor(first / 10);
      order.set(id, [...order.get(id) ?? [], first + 1000]);
    }
    await Promise.all(mains);
    for (const p of procs) assert.equal(await p.join(), 0);
    assert.deepEqual(
      got.sort(),
      [
        "10:1000000",
        "11:1000001",
        "12:1000002",
        "20:1000000",
        "21:1000001",
        "22:1000002",
        "50:700000",
        "51:700001",
      ],
    );
    // FIFO per producer: each large item before the small one after it.
    for (const id of [1, 2]) {
      assert.deepEqual(order.get(id), [
        id * 10 + 1000,
        id * 10,
        id * 10 + 1001,
        id * 10 + 1,
        id * 10 + 1002,
        id * 10 + 2,
      ]);
    }
    q.close();
  },
);

mpTest(
  "a Queue put that times out or aborts mid-item leaves the queue usable",
  async () => {
    const q = new Queue<unknown>({ capacityBytes: 64 * 1024 });
    await assert.rejects(
      q.put("t".repeat(1_000_000), { timeout: 20 }),
      FullError,
    );
    const reason = new Error("stop");
    const c = new AbortController();
    const aborted = q.put(new Uint8Array(1_000_000), { signal: c.signal });
    setTimeout(() => c.abort(reason), 10);
    await assert.rejects(aborted, reason);
    // Neither partial item is ever delivered.
    await assert.rejects(q.get({ timeout: 20 }), EmptyError);
    assert.throws(() => q.putNowait("n".repeat(100_000)), RangeError);
    q.putNowait("small");
    assert.equal(await q.get(), "small");
    const [, whole] = await Promise.all([
      q.put("w".repeat(1_000_000)),
      q.get(),
    ]);
    assert.equal(whole, "w".repeat(1_000_000));
    q.close();
  },
);

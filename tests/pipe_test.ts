import { strict as assert } from "node:assert";
import { Pool, Process } from "../patterns/cube.ts";
import {
  ClosedError,
  type Connection,
  EOFError,
  Pipe,
} from "../patterns/pipe.ts";
import { Lock } from "../patterns/sync.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

function closeAll(...conns: Connection[]): void {
  for (const c of conns) c.close();
}

// -- Basics --------------------------------------------------------------

mpTest("Pipe() ends send and receive both ways, in order", async () => {
  const [a, b] = Pipe();
  const values = [
    1,
    -0,
    2 ** 40,
    0.1,
    "text",
    "lone \udc00",
    { a: [1] },
    [
      null,
      undefined,
    ],
    new Map([[1, 2]]),
    5n,
  ];
  for (const v of values) a.send(v);
  for (const v of values) {
    const got = await b.recv();
    if (Object.is(v, -0)) assert.ok(Object.is(got, -0));
    else assert.deepEqual(got, v);
  }
  b.send("back");
  assert.equal(a.recvSync(), "back");
  closeAll(a, b);
});

mpTest(
  "Pipe(false): the first end only receives, the second only sends",
  async () => {
    const [r, w] = Pipe(false);
    assert.equal(r.readable && !r.writable, true);
    assert.equal(w.writable && !w.readable, true);
    assert.throws(() => r.send(1), TypeError);
    assert.throws(() => r.sendBytes(new Uint8Array(1)), TypeError);
    await assert.rejects(w.recv(), TypeError);
    assert.throws(() => w.recvSync(), TypeError);
    await assert.rejects(w.poll(), TypeError);
    w.send("ok");
    assert.equal(await r.recv(), "ok");
    closeAll(r, w);
  },
);

mpTest("Connection.sendBytes/recvBytes carry raw bytes", async () => {
  const [a, b] = Pipe();
  a.sendBytes(new Uint8Array([1, 2, 3]));
  a.sendBytes(new Uint16Array([0x0102]));
  a.sendBytes(new Uint8Array([9]).buffer);
  const big = new Uint8Array(100_000).map((_, i) => i & 0xff);
  a.sendBytes(big);
  assert.deepEqual(await b.recvBytes(), new Uint8Array([1, 2, 3]));
  assert.equal((await b.recvBytes()).length, 2);
  assert.deepEqual(b.recvBytesSync(), new Uint8Array([9]));
  assert.deepEqual(await b.recvBytes(), big);
  assert.throws(() => a.sendBytes("text" as never), TypeError);
  // A value message is not taken by recvBytes.
  a.send("value");
  await assert.rejects(b.recvBytes(), TypeError);
  assert.throws(() => b.recvBytesSync(), TypeError);
  assert.equal(await b.recv(), "value");
  // A bytes message arrives through recv as a Uint8Array.
  a.sendBytes(new Uint8Array([4]));
  assert.deepEqual(await b.recv(), new Uint8Array([4]));
  closeAll(a, b);
});

mpTest("Connection.poll() says whether recv would wait", async () => {
  const [a, b] = Pipe();
  assert.equal(await b.poll(), false);
  assert.equal(await b.poll(5), false);
  const later = b.poll(Infinity);
  a.send(1);
  assert.equal(await later, true);
  assert.equal(await b.recv(), 1);
  a.close();
  assert.equal(await b.poll(), true); // recv would not wait: it throws EOF
  await assert.rejects(b.recv(), EOFError);
  b.close();
  await assert.rejects(b.poll(), ClosedError);
});

// -- Closing -------------------------------------------------------------

mpTest(
  "recv after the other end closed and all was read throws EOFError",
  async () => {
    const [a, b] = Pipe();
    a.send(1);
    a.send(2);
    a.close();
    assert.equal(await b.recv(), 1);
    assert.equal(b.recvSync(), 2);
    await assert.rejects(b.recv(), EOFError);
    assert.throws(() => b.recvSync(), EOFError);
    await assert.rejects(b.recvBytes(), EOFError);
    assert.throws(() => b.recvBytesSync(), EOFError);
    b.close();
  },
);

mpTest("a recv waiting when the other end closes gets EOFError", async () => {
  const [a, b] = Pipe();
  const waiting = b.recv();
  a.close();
  await assert.rejects(waiting, EOFError);
  b.close();
});

mpTest("using one's own closed end throws ClosedError", async () => {
  const [a, b] = Pipe();
  a.close();
  a.close();
  assert.equal(a.closed, true);
  assert.throws(() => a.send(1), ClosedError);
  assert.throws(() => a.sendBytes(new Uint8Array(1)), ClosedError);
  await assert.rejects(a.recv(), ClosedError);
  assert.throws(() => a.recvSync(), ClosedError);
  await assert.rejects(a.recvBytes(), ClosedError);
  assert.throws(() => a.recvBytesSync(), ClosedError);
  // Sending to a closed end is refused too.
  assert.throws(() => b.send(1), /other end is closed/);
  b.close();
});

mpTest(
  "closing an end while its own recv waits rejects it with ClosedError",
  async () => {
    const [a, b] = Pipe();
    const waiting = b.recv();
    b.close();
    await assert.rejects(waiting, ClosedError);
    a.close();
  },
);

// -- Bad input -----------------------------------------------------------

mpTest(
  "send of an uncloneable value throws TypeError and sends nothing",
  async () => {
    const [a, b] = Pipe();
    for (const bad of [() => 1, Symbol("s"), { f() {} }, [new WeakSet()]]) {
      assert.throws(() => a.send(bad), TypeError);
    }
    assert.throws(() => a.send({ fn: () => 1 }), /cannot be cloned/);
    assert.equal(await b.poll(), false);
    a.send("after");
    assert.equal(await b.recv(), "after");
    closeAll(a, b);
  },
);

mpTest(
  "send of a value larger than the pipe's capacity streams it through whole",
  async () => {
    const [a, b] = Pipe(true, { capacityBytes: 1024 });
    a.send("x".repeat(2000));
    a.sendBytes(new Uint8Array(1021).fill(5));
    a.sendBytes(new Uint8Array(1020));
    a.send(1);
    assert.equal(await b.recv(), "x".repeat(2000));
    assert.deepEqual(await b.recvBytes(), new Uint8Array(1021).fill(5));
    assert.equal((await b.recvBytes()).length, 1020);
    assert.equal(await b.recv(), 1);
    assert.equal(await b.poll(), false);
    // A streamed value is not taken by recvBytes either.
    a.send({ big: "y".repeat(5000) });
    await assert.rejects(b.recvBytes(), TypeError);
    assert.deepEqual(await b.recv(), { big: "y".repeat(5000) });
    assert.throws(() => Pipe(true, { capacityBytes: 10 }), RangeError);
    closeAll(a, b);
  },
);

// -- Timeouts and aborts -------------------------------------------------

mpTest("recv, recvSync, recvBytes and recvBytesSync time out", async () => {
  const [a, b] = Pipe();
  await assert.rejects(b.recv({ timeout: 5 }), { name: "TimeoutError" });
  await assert.rejects(b.recv({ timeout: 0 }), { name: "TimeoutError" });
  assert.throws(() => b.recvSync({ timeout: 5 }), { name: "TimeoutError" });
  await assert.rejects(b.recvBytes({ timeout: 5 }), { name: "TimeoutError" });
  assert.throws(() => b.recvBytesSync({ timeout: 5 }), {
    name: "TimeoutError",
  });
  await assert.rejects(b.recv({ timeout: -1 }), RangeError);
  closeAll(a, b);
});

mpTest("recv and recvBytes reject with the signal's reason", async () => {
  const [a, b] = Pipe();
  const reason = new Error("stop");
  await assert.rejects(b.recv({ signal: AbortSignal.abort(reason) }), reason);
  assert.throws(
    () => b.recvSync({ signal: AbortSignal.abort(reason) }),
    reason,
  );
  assert.throws(
    () => b.recvBytesSync({ signal: AbortSignal.abort(reason) }),
    reason,
  );
  const c = new AbortController();
  const waiting = b.recvBytes({ signal: c.signal });
  c.abort(reason);
  await assert.rejects(waiting, reason);
  // The aborted wait took nothing.
  a.send(1);
  assert.equal(await b.recv(), 1);
  closeAll(a, b);
});

// -- Main thread sends and full pipes -----------------------------------

mpTest(
  "the main thread's send never blocks: values wait in order for room",
  async () => {
    const [a, b] = Pipe(true, { capacityBytes: 64 });
    for (let i = 0; i < 1000; i++) a.send(i % 2 ? i : `s${i}`);
    for (let i = 0; i < 1000; i++) {
      assert.equal(
        await b.recv(),
        i % 2 ? i : `s${i}`,
      );
    }
    // Closing with values still waiting delivers them, then EOF.
    for (let i = 0; i < 100; i++) a.send(i);
    a.close();
    for (let i = 0; i < 100; i++) assert.equal(await b.recv(), i);
    await assert.rejects(b.recv(), EOFError);
    b.close();
  },
);

mpTest("queued values are dropped when the reader closes", async () => {
  const [a, b] = Pipe(true, { capacityBytes: 64 });
  for (let i = 0; i < 100; i++) a.send(i);
  assert.equal(await b.recv(), 0);
  b.close(); // closes both of b's directions
  await assert.rejects(a.recv(), EOFError);
  assert.throws(() => a.send(1), ClosedError);
  a.close();
});

mpTest(
  "several recv calls pending at once each get a different message",
  async () => {
    const [a, b] = Pipe();
    const pending = Array.from({ length: 10 }, () => b.recv());
    for (let i = 0; i < 10; i++) a.send(i);
    const got = (await Promise.all(pending)) as number[];
    assert.deepEqual(got.sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    closeAll(a, b);
  },
);

// -- In workers ----------------------------------------------------------

mpTest(
  "a Connection passed to a Process is shared; EOF once every copy closes",
  async () => {
    const [a, b] = Pipe();
    const p = new Process({
      target: (conn: Connection) => {
        conn.send(conn.recvSync() as number * 2);
      },
      args: [b],
    });
    p.start();
    // The parent's copy stays usable, as a file descriptor does; Python's
    // idiom closes it after starting the child.
    assert.equal(b.closed, false);
    b.close();
    assert.throws(() => b.send(1), ClosedError);
    await assert.rejects(b.recv(), ClosedError);
    assert.throws(() => p.start(), TypeError);
    a.send(21);
    assert.equal(await a.recv(), 42);
    assert.equal(await p.join(), 0);
    await assert.rejects(a.recv({ timeout: 30_000 }), EOFError);
    a.close();
  },
);

mpTest(
  "a Connection passed to a Pool task: the task's copy closes when it ends",
  async () => {
    await using pool = new Pool({ workers: 1 });
    const [a, b] = Pipe();
    const sent = await pool.apply((conn: Connection) => {
      conn.send("from the task");
      return "done";
    }, [b]);
    assert.equal(sent, "done");
    // The task's copy closed when it ended; the caller's stays open.
    assert.equal(b.closed, false);
    assert.equal(await a.recv(), "from the task");
    await assert.rejects(a.recv({ timeout: 50 }), { name: "TimeoutError" });
    b.close();
    await assert.rejects(a.recv({ timeout: 30_000 }), EOFError);
    a.close();
  },
);

mpTest("a duplex pipe carries 100 000 messages each way at once", async () => {
  const n = 100_000;
  const [a, b] = Pipe(true, { capacityBytes: 4096 });
  const p = new Process({
    target: (conn: Connection, n: number) => {
      for (let i = 0; i < n; i++) conn.send(i);
      let sum = 0, disorder = 0;
      for (let i = 0; i < n; i++) {
        const v = conn.recvSync() as number;
        if (v !== i) disorder++;
        sum += v;
      }
      conn.send({ sum, disorder });
    },
    args: [b, n],
  });
  p.start();
  for (let i = 0; i < n; i++) a.send(i); // queued in order, flowing as room appears
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = await a.recv();
    assert.equal(v, i);
    sum += v as number;
  }
  assert.equal(sum, (n * (n - 1)) / 2);
  assert.deepEqual(await a.recv(), { sum: (n * (n - 1)) / 2, disorder: 0 });
  assert.equal(await p.join(), 0);
  a.close();
});

mpTest("a pipe connects two Processes (the demo)", async () => {
  const [parentConn, childConn] = Pipe();
  const results = Pipe(false);
  const sender = new Process({
    target: (conn: Connection, x: number) => conn.send(x ** 3),
    args: [parentConn, 5],
  });
  const receiver = new Process({
    target: (conn: Connection, out: Connection) => out.send(conn.recvSync()),
    args: [childConn, results[1]],
  });
  sender.start();
  receiver.start();
  assert.equal(await results[0].recv({ timeout: 30_000 }), 125);
  assert.equal(await sender.join(), 0);
  assert.equal(await receiver.join(), 0);
  results[0].close();
});

// -- Shared ends (CPython's test_thousand, test_recursion, poll) --

mpTest(
  "five processes write one end under a lock, 1 000 rounds, in order",
  async () => {
    const [r, w] = Pipe(false);
    const lock = new Lock();
    const procs = [0, 1, 2, 3, 4].map((id) =>
      new Process({
        target: (w: Connection, lock: Lock, id: number) => {
          for (let i = 0; i < 1000; i++) {
            lock.acquireSync();
            try {
              w.send([id, i]);
            } finally {
              lock.release();
            }
          }
        },
        args: [w, lock, id],
      })
    );
    for (const p of procs) p.start();
    w.close(); // the parent's copy: EOF comes when the children's close too
    const next = [0, 0, 0, 0, 0];
    let n = 0;
    for (;;) {
      let m: [number, number];
      try {
        m = await r.recv({ timeout: 30_000 }) as [number, number];
      } catch (e) {
        if (e instanceof EOFError) break;
        throw e;
      }
      assert.equal(m[1], next[m[0]]!, `writer ${m[0]} out of order`);
      next[m[0]]!++;
      n++;
    }
    assert.equal(n, 5000);
    assert.deepEqual(next, [1000, 1000, 1000, 1000, 1000]);
    for (const p of procs) assert.equal(await p.join(), 0);
    r.close();
  },
);

mpTest(
  "EOF only after every copy closes: 4 Processes and 8 Pool tasks hold one end",
  async () => {
    const [r, w] = Pipe(false);
    const hold = Pipe(false); // [gate reader, gate writer]: released later
    const procs = [0, 1, 2, 3].map((id) =>
      new Process({
        target: (w: Connection, gate: Connection, id: number) => {
          gate.recvSync();
          w.send(`process ${id}`);
        },
        args: [w, hold[0], id],
      })
    );
    for (const p of procs) p.start();
    await using pool = new Pool({ workers: 2 });
    const tasks = pool.map(
      (args: [Connection, number]) => {
        args[0].send(`task ${args[1]}`);
        return args[1];
      },
      [0, 1, 2, 3, 4, 5, 6, 7].map((i) => [w, i] as [Connection, number]),
      {
        chunksize: 1,
      },
    );
    const got: string[] = [];
    for (let i = 0; i < 8; i++) {
      got.push(await r.recv({ timeout: 30_000 }) as string);
    }
    await tasks;
    // Items are encoded as they are handed out: close the parent's copy once
    // every task has its own. The tasks' copies closed as they ended; the
    // processes still hold theirs.
    w.close();
    await assert.rejects(r.recv({ timeout: 100 }), { name: "TimeoutError" });
    for (let i = 0; i < 4; i++) hold[1].send("go");
    for (let i = 0; i < 4; i++) {
      got.push(await r.recv({ timeout: 30_000 }) as string);
    }
    for (const p of procs) assert.equal(await p.join(), 0);
    await assert.rejects(r.recv({ timeout: 30_000 }), EOFError);
    assert.equal(got.length, 12);
    assert.equal(new Set(got).size, 12);
    r.close();
    hold[0].close();
    hold[1].close();
  },
);

mpTest("a child polls an end that the parent then reads", async () => {
  const [a, b] = Pipe();
  const p = new Process({
    target: async (conn: Connection) => {
      // Waits (polling) until a message is there, and leaves it for the
      // parent, who shares this end.
      for (let i = 0; i < 3000; i++) {
        if (await conn.poll(10)) break;
      }
      conn.send("polled");
    },
    args: [b],
  });
  p.start();
  a.send("for the parent");
  assert.equal(await a.recv({ timeout: 30_000 }), "polled");
  assert.equal(await b.recv({ timeout: 1_000 }), "for the parent");
  assert.equal(await p.join(), 0);
  a.close();
  b.close();
});

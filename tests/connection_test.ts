import { strict as assert } from "node:assert";
import {
  AuthenticationError,
  ClosedError,
  connect,
  type Connection,
  EOFError,
  kShare,
  listen,
  Pipe,
  wait,
} from "../patterns/pipe.ts";
import { Process } from "../patterns/cube.ts";
import { Manager, serve } from "../patterns/server_process.ts";
import { FrameStream } from "../patterns/_conn/frame_stream.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const KEY = "connection-test-key";

/** A listener and one connected pair; dispose closes all three. */
async function pair(
  options: { maxMessageBytes?: number } = {},
): Promise<
  {
    client: Connection;
    server: Connection;
    port: number;
  } & AsyncDisposable
> {
  const listener = await listen({ port: 0, authkey: KEY, ...options });
  const [client, server] = await Promise.all([
    connect({ port: listener.addr.port, authkey: KEY }),
    listener.accept({ timeout: 10_000 }),
  ]);
  return {
    client,
    server,
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      client.close();
      server.close();
      await listener[Symbol.asyncDispose]();
      await Promise.all(
        [client, server].map((c) => (c as { done?: Promise<void> }).done),
      );
    },
  };
}

/** Spawns tests/fixtures/conn_peer.ts in its own OS process. */
function spawnPeer(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read=./patterns,./tests",
      "--allow-env=MP_AUTHKEY",
      "tests/fixtures/conn_peer.ts",
      ...args,
    ],
    env: { MP_AUTHKEY: KEY },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Reads a child's stdout until `re` matches; returns the match and reader. */
async function readUntil(
  child: Deno.ChildProcess,
  re: RegExp,
): Promise<{ match: RegExpExecArray; rest: () => Promise<string> }> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  for (;;) {
    const m = re.exec(text);
    if (m) {
      return {
        match: m,
        rest: async () => {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return text;
            text += value;
          }
        },
      };
    }
    const { value, done } = await reader.read();
    if (done) throw new Error(`the peer ended before ${re}: ${text}`);
    text += value;
  }
}

// -- Values and bytes ------------------------------------------------------

mpTest(
  "listen/connect: values and bytes travel both ways, in order",
  async () => {
    await using p = await pair();
    const values: unknown[] = [
      null,
      undefined,
      true,
      -0,
      NaN,
      2 ** 60,
      12345678901234567890n,
      "text é 😀",
      [1, [2, [3]]],
      { a: { b: [null] }, __proto__x: 1 },
      new Map<unknown, unknown>([[1, "one"], ["k", [2]]]),
      new Set([1, "a"]),
      new Date(0),
      new Uint8Array([1, 2, 3]),
      new Float64Array([0.5]),
    ];
    for (const v of values) p.client.send(v);
    for (const v of values) assert.deepEqual(await p.server.recv(), v);
    const big = new Uint8Array(16 * 1024 * 1024).map((_, i) => i & 0xff);
    p.server.sendBytes(big);
    p.server.sendBytes(new Uint8Array(0));
    p.server.send("after");
    assert.deepEqual(await p.client.recvBytes(), big);
    assert.deepEqual(await p.client.recvBytes(), new Uint8Array(0));
    assert.equal(await p.client.recv(), "after");
  },
);

mpTest(
  "socket Connection: recv returns bytes sent with sendBytes; recvBytes leaves a value for recv",
  async () => {
    await using p = await pair();
    p.client.sendBytes(new Uint16Array([1]));
    p.client.send({ v: 1 });
    assert.deepEqual(await p.server.recv(), new Uint8Array([1, 0]));
    await assert.rejects(p.server.recvBytes(), TypeError);
    assert.deepEqual(await p.server.recv(), { v: 1 });
  },
);

mpTest(
  "socket Connection: concurrent recv calls each get a different message",
  async () => {
    await using p = await pair();
    const pending = Array.from({ length: 50 }, () => p.server.recv());
    for (let i = 0; i < 50; i++) p.client.send(i);
    const got = (await Promise.all(pending)) as number[];
    assert.deepEqual([...got].sort((a, b) => a - b), [...Array(50).keys()]);
  },
);

mpTest(
  "socket Connection: a value that cannot travel throws TypeError at send, nothing sent",
  async () => {
    await using p = await pair();
    assert.throws(() => p.client.send({ f: () => 1 }), TypeError);
    assert.throws(() => p.client.send(new (class Foo {})()), /Foo/);
    p.client.send("next");
    assert.equal(await p.server.recv(), "next");
  },
);

// -- Ends, timeouts, closing ---------------------------------------------------

mpTest(
  "socket Connection: EOFError once the peer closed and everything was read; ClosedError on its own closed end",
  async () => {
    await using p = await pair();
    p.client.send(1);
    p.client.close();
    assert.equal(p.client.closed, true);
    assert.throws(() => p.client.send(2), ClosedError);
    await assert.rejects(p.client.recv(), ClosedError);
    assert.equal(await p.server.recv(), 1);
    await assert.rejects(p.server.recv(), EOFError);
    assert.equal(await p.server.poll(), true);
    assert.throws(() => p.server.send(3), ClosedError);
  },
);

mpTest(
  "socket Connection: a pending recv rejects with ClosedError when its end is closed",
  async () => {
    await using p = await pair();
    const r = p.server.recv();
    p.server.close();
    await assert.rejects(r, ClosedError);
  },
);

mpTest("socket Connection: recv timeout and signal, poll", async () => {
  await using p = await pair();
  await assert.rejects(p.server.recv({ timeout: 0 }), { name: "TimeoutError" });
  const t0 = performance.now();
  await assert.rejects(p.server.recv({ timeout: 50 }), {
    name: "TimeoutError",
  });
  assert.ok(performance.now() - t0 >= 45);
  const ac = new AbortController();
  const r = p.server.recv({ signal: ac.signal });
  ac.abort(new Error("stop"));
  await assert.rejects(r, /stop/);
  assert.equal(await p.server.poll(), false);
  assert.equal(await p.server.poll(10), false);
  p.client.send("x");
  assert.equal(await p.server.poll(5000), true);
  assert.equal(await p.server.recv(), "x");
});

mpTest(
  "socket Connection: sync receives and passing to a thread are clear TypeErrors",
  async () => {
    await using p = await pair();
    assert.throws(() => p.server.recvSync(), /cannot block the thread/);
    assert.throws(() => p.server.recvBytesSync(), /cannot block the thread/);
    assert.throws(
      () => p.server[kShare]({ transfer: [], afterSend: (fn) => fn() }),
      /only pipe ends can be shared/,
    );
    const proc = new Process({
      target: (_c: Connection) => {},
      args: [p.server],
    });
    assert.throws(() => proc.start(), TypeError);
  },
);

mpTest(
  "socket Connection: a message over maxMessageBytes breaks the connection clearly",
  async () => {
    await using p = await pair({ maxMessageBytes: 1024 });
    p.client.sendBytes(new Uint8Array(2048));
    await assert.rejects(p.server.recv(), (e: Error) => {
      assert.ok(e instanceof EOFError);
      assert.match(e.message, /exceeds the limit of 1024 bytes/);
      return true;
    });
  },
);

// -- Authentication and hostile peers -------------------------------------------

mpTest(
  "connect with a wrong key gets AuthenticationError; the listener drops it and goes on accepting",
  async () => {
    await using listener = await listen({ port: 0, authkey: KEY });
    const port = listener.addr.port;
    await assert.rejects(
      connect({ port, authkey: "wrong" }),
      (e: Error) =>
        e instanceof AuthenticationError && /refused/.test(e.message),
    );
    await assert.rejects(listener.accept({ timeout: 0 }), {
      name: "TimeoutError",
    });
    const [client, server] = await Promise.all([
      connect({ port, authkey: KEY }),
      listener.accept({ timeout: 10_000 }),
    ]);
    client.send("in");
    assert.equal(await server.recv(), "in");
    client.close();
    server.close();
  },
);

mpTest(
  "connect refuses a listener that cannot prove it knows the key",
  async () => {
    // A fake listener: it challenges, accepts any answer and proves nothing.
    using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const fake = (async () => {
      const s = new FrameStream(await tcp.accept(), 1024, false);
      const enc = (m: unknown) => new TextEncoder().encode(JSON.stringify(m));
      s.write(enc({ proto: "dmp-connection", version: 1, challenge: "AAAA" }));
      await s.waitReadable(10_000, undefined);
      s.take();
      s.write(enc({ ok: true, response: "not a proof" }));
      await s.waitReadable(10_000, undefined);
      s.close();
      await s.done;
    })();
    await assert.rejects(
      connect({ port: tcp.addr.port, authkey: KEY }),
      (e: Error) =>
        e instanceof AuthenticationError && /failed to prove/.test(e.message),
    );
    await fake;
  },
);

mpTest(
  "strangers sending garbage or staying silent do not stop the listener",
  async () => {
    await using listener = await listen({ port: 0, authkey: KEY });
    const port = listener.addr.port;
    const garbage = await Deno.connect({ hostname: "127.0.0.1", port });
    await garbage.write(new Uint8Array([0xff, 0xff, 0xff, 0xfe, 1, 2, 3]));
    const silent = await Deno.connect({ hostname: "127.0.0.1", port });
    const [client, server] = await Promise.all([
      connect({ port, authkey: KEY, timeout: 5000 }),
      listener.accept({ timeout: 5000 }),
    ]);
    client.send("still accepting");
    assert.equal(await server.recv(), "still accepting");
    // The garbage peer was dropped: its socket reads end.
    const buf = new Uint8Array(4096);
    while ((await garbage.read(buf)) !== null) { /* the challenge, then EOF */ }
    garbage.close();
    silent.close();
    client.close();
    server.close();
  },
);

mpTest(
  "a flood of silent strangers does not lock an honest client out",
  async () => {
    await using listener = await listen({ port: 0, authkey: KEY });
    const port = listener.addr.port;
    const silent: Deno.Conn[] = [];
    for (let i = 0; i < 100; i++) {
      silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    const t0 = performance.now();
    const [client, server] = await Promise.all([
      connect({ port, authkey: KEY, timeout: 5000 }),
      listener.accept({ timeout: 5000 }),
    ]);
    assert.ok(performance.now() - t0 < 5000);
    client.send("through");
    assert.equal(await server.recv(), "through");
    // At most 64 wait to authenticate: the oldest were evicted (closed)
    // long before their 10 s handshake timeout.
    const buf = new Uint8Array(1024);
    while ((await silent[0]!.read(buf)) !== null) { /* the challenge */ }
    assert.ok(performance.now() - t0 < 5000);
    client.close();
    server.close();
    for (const c of silent) c.close();
  },
);

mpTest("connect names the other protocols it meets", async () => {
  await using server = await serve({ port: 0, authkey: KEY });
  await assert.rejects(
    connect({ port: server.addr.port, authkey: KEY }),
    (e: Error) =>
      e instanceof AuthenticationError && /manager server/.test(e.message),
  );
  await using listener = await listen({ port: 0, authkey: KEY });
  await assert.rejects(
    Manager.connect({ port: listener.addr.port, authkey: KEY }),
    AuthenticationError,
  );
  await assert.rejects(
    connect({ port: listener.addr.port, authkey: KEY, wire: "python" }),
    (e: Error) =>
      e instanceof AuthenticationError && /dmp wire/.test(e.message),
  );
});

mpTest(
  "connect times out on a peer that never answers, on its own clock",
  async () => {
    using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = tcp.accept();
    const t0 = performance.now();
    await assert.rejects(
      connect({ port: tcp.addr.port, authkey: KEY, timeout: 200 }),
      { name: "TimeoutError" },
    );
    const took = performance.now() - t0;
    assert.ok(took >= 190 && took < 2000, `took ${took} ms`);
    (await accepted).close();
  },
);

mpTest(
  "connect rejects with the signal's reason when aborted mid-handshake",
  async () => {
    using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = tcp.accept();
    const ac = new AbortController();
    const pending = connect({
      port: tcp.addr.port,
      authkey: KEY,
      signal: ac.signal,
    });
    const peer = await accepted;
    ac.abort(new Error("changed my mind"));
    await assert.rejects(pending, /changed my mind/);
    peer.close();
    await assert.rejects(
      connect({
        port: tcp.addr.port,
        authkey: KEY,
        signal: AbortSignal.abort(),
      }),
      { name: "AbortError" },
    );
  },
);

mpTest("listen/connect: bad options are TypeError/RangeError", async () => {
  await assert.rejects(listen({ port: 0, authkey: "" }), TypeError);
  await assert.rejects(listen({ port: -1, authkey: "k" }), RangeError);
  await assert.rejects(
    listen({ port: 0, authkey: "k", wire: "xml" as "dmp" }),
    TypeError,
  );
  await assert.rejects(
    connect({ port: 1, authkey: 5 as unknown as string }),
    TypeError,
  );
});

mpTest("Listener.close rejects pending accepts with ClosedError", async () => {
  const listener = await listen({ port: 0, authkey: KEY });
  const a = listener.accept();
  listener.close();
  await assert.rejects(a, ClosedError);
  await assert.rejects(listener.accept(), ClosedError);
  await listener[Symbol.asyncDispose]();
});

// -- Across OS processes ----------------------------------------------------------

mpTest(
  "across OS processes: a Deno program connects to our listener and echoes",
  async () => {
    await using listener = await listen({ port: 0, authkey: KEY });
    const child = spawnPeer(["client", String(listener.addr.port)]);
    try {
      const conn = await listener.accept({ timeout: 30_000 });
      conn.send({ n: 1n, s: new Set(["x"]) });
      assert.deepEqual(await conn.recv(), {
        echo: { n: 1n, s: new Set(["x"]) },
      });
      conn.sendBytes(new Uint8Array([1, 2, 3]));
      assert.deepEqual(await conn.recvBytes(), new Uint8Array([3, 2, 1]));
      conn.send("stop");
      assert.equal(await conn.recv(), "bye");
      await assert.rejects(conn.recv(), EOFError);
      conn.close();
      const out = await child.output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    } finally {
      try {
        child.kill();
      } catch { /* ended */ }
    }
  },
);

mpTest(
  "across OS processes: we connect to a listener in a Deno program; a wrong key is refused on both sides",
  async () => {
    const child = spawnPeer(["listener"]);
    try {
      const { match, rest } = await readUntil(child, /port (\d+)\n/);
      const port = Number(match[1]);
      await assert.rejects(
        connect({ port, authkey: "wrong" }),
        AuthenticationError,
      );
      const conn = await connect({ port, authkey: KEY });
      conn.send([1, "two"]);
      assert.deepEqual(await conn.recv(), { echo: [1, "two"] });
      conn.send("stop");
      assert.equal(await conn.recv(), "bye");
      await assert.rejects(conn.recv(), EOFError);
      conn.close();
      await rest();
      const status = await child.status;
      assert.equal(status.code, 0);
      await child.stderr.cancel();
    } finally {
      try {
        child.kill();
      } catch { /* ended */ }
    }
  },
);

mpTest(
  "across OS processes: a Deno client with a wrong key gets AuthenticationError",
  async () => {
    await using listener = await listen({ port: 0, authkey: KEY });
    const out = await spawnPeer(["client-wrong", String(listener.addr.port)])
      .output();
    assert.equal(
      new TextDecoder().decode(out.stdout).trim(),
      "AuthenticationError",
    );
    await assert.rejects(listener.accept({ timeout: 0 }), {
      name: "TimeoutError",
    });
  },
);

// -- wait -------------------------------------------------------------------------

mpTest(
  "wait returns only the ready connections, pipe ends and sockets alike",
  async () => {
    await using p = await pair();
    const [a1, b1] = Pipe();
    const [a2, b2] = Pipe();
    try {
      assert.deepEqual(await wait([b1, b2, p.server], { timeout: 0 }), []);
      assert.deepEqual(await wait([b1, b2, p.server], { timeout: 20 }), []);
      a2.send(1);
      p.client.send(2);
      // The socket's message is in flight: wait for it alone first.
      assert.deepEqual(await wait([p.server], { timeout: 5000 }), [p.server]);
      const ready = await wait([b1, b2, p.server], { timeout: 0 });
      assert.deepEqual(ready, [b2, p.server]);
      assert.equal(await b2.recv(), 1);
      assert.equal(await p.server.recv(), 2);
      // Nothing ready: the wait ends when the first becomes ready.
      setTimeout(() => p.client.send(3), 20);
      assert.deepEqual(await wait([b1, b2, p.server]), [p.server]);
      // A closed peer counts as ready (recv would not wait: EOFError).
      a1.close();
      assert.deepEqual(await wait([b1, b2], { timeout: 5000 }), [b1]);
    } finally {
      for (const c of [a1, b1, a2, b2]) c.close();
    }
  },
);

mpTest("wait includes a Process once it ended", async () => {
  const [a, b] = Pipe();
  const proc = new Process({
    target: async (c: Connection) => {
      await c.recv();
    },
    args: [b],
  });
  proc.start();
  b.close();
  try {
    assert.deepEqual(await wait([proc, a], { timeout: 0 }), []);
    a.send("go");
    assert.deepEqual(await wait([proc], { timeout: 30_000 }), [proc]);
    assert.equal(proc.exitCode, 0);
    // Its copy of the other end closed with it: `a` is ready (EOF) too.
    assert.deepEqual(await wait([proc, a], { timeout: 30_000 }), [proc, a]);
    await assert.rejects(a.recv(), EOFError);
    assert.equal(await proc.join(), 0);
  } finally {
    a.close();
  }
});

mpTest(
  "wait: an aborted signal rejects; a closed connection and a stranger are errors",
  async () => {
    const [a, b] = Pipe();
    const ac = new AbortController();
    const w = wait([b], { signal: ac.signal });
    ac.abort(new Error("enough"));
    await assert.rejects(w, /enough/);
    await assert.rejects(wait([b], { signal: AbortSignal.abort() }), {
      name: "AbortError",
    });
    await assert.rejects(wait([{} as Connection]), TypeError);
    const never = new Process({ target: () => {} });
    await assert.rejects(wait([never]), /never started/);
    a.close();
    b.close();
    await assert.rejects(wait([b]), ClosedError);
  },
);

// -- TLS --------------------------------------------------------------------------

/**
 * A throwaway self-signed certificate for 127.0.0.1 (PEM on openssl's
 * stdout, so no file is read), or `null` without openssl. It must say
 * `CA:FALSE` and name the IP, or Deno refuses it.
 */
async function selfSigned(): Promise<{ cert: string; key: string } | null> {
  try {
    const out = await new Deno.Command("bash", {
      args: [
        "-c",
        `set -e; t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$t/k" -out "$t/c" -days 1 -subj /CN=127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null
cat "$t/k" "$t/c"`,
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return null;
    const text = new TextDecoder().decode(out.stdout);
    const key = /-----BEGIN PRIVATE KEY-----[^]+?-----END PRIVATE KEY-----\n/
      .exec(text)?.[0];
    const cert = /-----BEGIN CERTIFICATE-----[^]+?-----END CERTIFICATE-----\n/
      .exec(text)?.[0];
    return key && cert ? { key, cert } : null;
  } catch {
    return null;
  }
}

const tlsPem = await selfSigned();
if (!tlsPem) {
  console.log("connection_test: openssl not found, the TLS test is skipped");
}

mpTest(
  "listen({ tls }) and connect({ tls: { caCerts } }) talk over TLS; a plain client fails clearly",
  async () => {
    const { cert, key } = tlsPem!;
    await using listener = await listen({
      port: 0,
      authkey: KEY,
      tls: { cert, key },
    });
    const port = listener.addr.port;
    const [client, server] = await Promise.all([
      connect({ port, authkey: KEY, tls: { caCerts: [cert] } }),
      listener.accept({ timeout: 10_000 }),
    ]);
    client.send({ secret: "over tls" });
    assert.deepEqual(await server.recv(), { secret: "over tls" });
    server.sendBytes(new Uint8Array(100_000).fill(7));
    assert.equal((await client.recvBytes()).length, 100_000);
    client.close();
    await assert.rejects(server.recv(), EOFError);
    server.close();
    await (client as { done?: Promise<void> }).done;
    await (server as { done?: Promise<void> }).done;
    // A plain client meets TLS bytes, not a challenge: refused, at once.
    await assert.rejects(
      connect({ port, authkey: KEY, timeout: 5000 }),
      AuthenticationError,
    );
  },
  { ignore: tlsPem === null },
);

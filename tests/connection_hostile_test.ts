/**
 * Hostile peers against the socket connections (`patterns/_conn/`): each
 * test is an input a hostile peer can send that once hung, exhausted or
 * fooled the receiving side.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { connect, listen, wait } from "../patterns/pipe.ts";
import { FrameStream } from "../patterns/_conn/frame_stream.ts";
import { decodePickle } from "../patterns/_conn/pickle_read.ts";
import { mpTest } from "./_helpers.ts";
import { createHmac } from "node:crypto";

Deno.test.sanitizer({ ops: true, resources: true });

const encoder = new TextEncoder();

mpTest("pickle FLOAT of 300,000 digits is refused without backtracking", () => {
  // `F111…1x\n.`: the float pattern once backtracked quadratically on it
  // (about 35 s of blocked event loop here; a larger one, hours).
  const bytes = encoder.encode("F" + "1".repeat(300_000) + "x\n.");
  const start = performance.now();
  assert.throws(() => decodePickle(bytes, "recv"), SyntaxError);
  const ms = performance.now() - start;
  // Linear work is a few ms; the margin survives any load.
  assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
  // Long but valid floats still read.
  const ok = encoder.encode("F" + "1".repeat(300) + ".5e-3\n.");
  assert.equal(decodePickle(ok, "recv"), Number("1".repeat(300) + ".5e-3"));
  assert.equal(decodePickle(encoder.encode("F.5\n."), "recv"), 0.5);
  assert.equal(decodePickle(encoder.encode("F-2.\n."), "recv"), -2);
  assert.equal(decodePickle(encoder.encode("F1e5\n."), "recv"), 1e5);
});

mpTest("empty frames nobody takes pause reading like any others", async () => {
  // A peer streaming 4-byte headers of empty frames: each held frame costs
  // an object, yet once counted 0 bytes, so reading never paused and
  // memory grew without bound while the program did not recv.
  using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = tcp.accept();
  const writer = await Deno.connect({
    hostname: "127.0.0.1",
    port: tcp.addr.port,
  });
  const stream = new FrameStream(await accepted, 1024, true);
  const FRAMES = 1_000_000;
  const wrote = (async () => {
    const chunk = new Uint8Array(64 * 1024); // 16,384 empty frames
    try {
      for (let sent = 0; sent < FRAMES; sent += chunk.length / 4) {
        let off = 0;
        while (off < chunk.length) {
          off += await writer.write(chunk.subarray(off));
        }
      }
      return true;
    } catch {
      return false; // closed below while blocked: reading had paused
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finished = await Promise.race([
    wrote,
    new Promise<false>((r) => timer = setTimeout(() => r(false), 3000)),
  ]);
  clearTimeout(timer);
  // Let the reader take in whatever is still in flight.
  await new Promise((r) => setTimeout(r, 300));
  // Counted without yielding, so the read loop cannot resume meanwhile.
  let held = 0;
  while (stream.peek()) {
    stream.take();
    held++;
  }
  writer.close();
  await wrote;
  stream.close();
  await stream.done;
  assert.ok(
    held < 200_000,
    `${held} empty frames were held (the writer ${
      finished ? "finished" : "blocked"
    })`,
  );
});

// -- TLS peers that never do the TLS handshake ---------------------------------

const TLS = {
  cert: Deno.readTextFileSync(
    new URL("./fixtures/broker_tls/server.crt", import.meta.url),
  ),
  key: Deno.readTextFileSync(
    new URL("./fixtures/broker_tls/server.key", import.meta.url),
  ),
};

/** `p`, or `undefined` after `ms` (the timer is cleared either way). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// Deno (2.9.6) keeps the TCP socket of a server-side TLS connection that
// never did the TLS handshake open until the peer leaves, even after
// close(); what these tests check is our side: nothing waits for ever.

mpTest(
  "a TLS listener's close() does not wait for a stranger that never began TLS",
  async () => {
    // Its challenge waits, unwritten, for a TLS handshake that never comes;
    // close() once waited for that write for ever, and so did dispose.
    const listener = await listen({ port: 0, authkey: "k", tls: TLS });
    const silent = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    await new Promise((r) => setTimeout(r, 200)); // accepted, challenge queued
    const disposed = await within(
      listener[Symbol.asyncDispose]().then(() => true),
      5000,
    );
    silent.close();
    assert.equal(disposed, true, "dispose hung on the silent stranger");
  },
);

mpTest(
  "connect({ tls, timeout }) to a server that never answers TLS times out",
  async () => {
    // The hello waits, unwritten, for the TLS handshake; at the timeout
    // connect once waited for that write for ever.
    using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = tcp.accept();
    const attempt = connect({
      port: tcp.addr.port,
      authkey: "k",
      tls: { caCerts: [TLS.cert] },
      timeout: 300,
    }).then(
      (c) => {
        c.close();
        return "connected";
      },
      (e: Error) => e.name,
    );
    const server = await accepted;
    try {
      assert.equal(await within(attempt, 5000), "TimeoutError");
    } finally {
      server.close();
      await attempt;
    }
  },
);

mpTest(
  "pickle UNICODE reads backslashes as Python's raw-unicode-escape",
  () => {
    // Only a backslash run of odd length escapes: `\\u0041` stays as it is
    // (Python's pickle.loads gives '\\\\u0041'); once read as `\A`.
    const read = (s: string) =>
      decodePickle(encoder.encode(`V${s}\n.`), "recv");
    assert.equal(read("\\\\u0041"), "\\\\u0041");
    assert.equal(read("\\\\\\u0041"), "\\\\A");
    assert.equal(read("a\\u0041\\U0001F600\\x41"), "aA\u{1F600}\\x41");
    // A truncated escape is refused, as Python refuses it.
    assert.throws(() => read("\\u12"), SyntaxError);
    assert.throws(() => read("\\U0041"), SyntaxError);
  },
);

mpTest(
  "timeouts longer than setTimeout's range wait in recv, poll, wait, accept and connect",
  async () => {
    // 3e9 ms (35 days) overflows setTimeout, which then fires after 1 ms:
    // each of these timed out at once (wait found nothing at once).
    const LONG = 3e9;
    await using listener = await listen({ port: 0, authkey: "k" });
    const accepted = listener.accept({ timeout: LONG });
    const client = await connect({
      port: listener.addr.port,
      authkey: "k",
      timeout: LONG,
    });
    const server = await accepted;
    let settled = false;
    const got = server.recv({ timeout: LONG }).finally(() => settled = true);
    const polled = client.poll(LONG);
    const waited = wait([client], { timeout: LONG });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false, "the 35-day recv ended within 300 ms");
    client.send("late");
    server.send("back");
    assert.equal(await got, "late");
    assert.equal(await polled, true);
    assert.deepEqual(await waited, [client]);
    assert.equal(await client.recv(), "back");
    client.close();
    server.close();
  },
);

mpTest(
  "a python-wire client's first message in the same packet as its #WELCOME# is read",
  async () => {
    // Python's Client returns right after sending #WELCOME#; its first
    // message can arrive in the same read. It was then parsed under the
    // 1 KiB handshake limit, and a larger one broke the connection.
    const KEY = encoder.encode("k");
    await using listener = await listen({
      port: 0,
      authkey: KEY,
      wire: "python",
    });
    const tcp = await Deno.connect({
      hostname: "127.0.0.1",
      port: listener.addr.port,
    });
    const accepted = listener.accept({ timeout: 10_000 });
    const raw = new FrameStream(tcp, 1 << 20, true);
    const next = async () => {
      assert.equal(await raw.waitReadable(10_000, undefined), true);
      return raw.take();
    };
    const hmac = (digest: string, m: Uint8Array) =>
      new Uint8Array(createHmac(digest, KEY).update(m).digest());
    // Its challenge, answered as Python 3.12+ does.
    const challenge = (await next()).subarray("#CHALLENGE#".length);
    raw.write(encoder.encode("{sha256}"), hmac("sha256", challenge));
    assert.equal(new TextDecoder().decode(await next()), "#WELCOME#");
    // Ours, the 20 bytes of Python <= 3.11, answered with raw HMAC-MD5.
    const mine = crypto.getRandomValues(new Uint8Array(20));
    raw.write(encoder.encode("#CHALLENGE#"), mine);
    assert.deepEqual(await next(), hmac("md5", mine));
    // #WELCOME# and a 100 KB message in one write.
    const big = new Uint8Array(100_000).fill(7);
    const both = new Uint8Array(4 + 9 + 4 + big.length);
    const view = new DataView(both.buffer);
    view.setUint32(0, 9);
    both.set(encoder.encode("#WELCOME#"), 4);
    view.setUint32(13, big.length);
    both.set(big, 17);
    let off = 0;
    while (off < both.length) off += await tcp.write(both.subarray(off));
    const server = await accepted;
    try {
      assert.deepEqual(await server.recvBytes({ timeout: 10_000 }), big);
    } finally {
      server.close();
      raw.close();
      await raw.done;
    }
  },
);

mpTest(
  "a listener's first message right behind the handshake's last frame is read",
  async () => {
    // The dmp listener's `ok` and what the program sends at once can
    // arrive in one read at the client, which parsed both under the 1 KiB
    // handshake limit. Both wires, several times: it is a race.
    const big = new Uint8Array(100_000).fill(9);
    for (const wire of ["dmp", "python"] as const) {
      await using listener = await listen({ port: 0, authkey: "k", wire });
      for (let i = 0; i < 10; i++) {
        const served = listener.accept().then((s) => {
          s.sendBytes(big);
          return s;
        });
        const client = await connect({
          port: listener.addr.port,
          authkey: "k",
          wire,
        });
        const server = await served;
        try {
          assert.deepEqual(await client.recvBytes({ timeout: 10_000 }), big);
        } finally {
          client.close();
          server.close();
        }
      }
    }
  },
);

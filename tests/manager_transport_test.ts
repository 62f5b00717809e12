import { strict as assert } from "node:assert";
import {
  AuthenticationError,
  ClosedError,
  Manager,
  type ServeEvent,
} from "../patterns/server_process.ts";
import { frame, FramedSocket } from "../patterns/_manager/frames.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const KEY = "transport-test-key";
const FIXTURE =
  new URL("./fixtures/manager_transport_server.ts", import.meta.url).pathname;

// -- A server in its own OS process ------------------------------------------

/** Reads a child's stream line by line into `lines` until it ends. */
async function collectLines(
  stream: ReadableStream<Uint8Array>,
  lines: string[],
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    const parts = rest.split("\n");
    rest = parts.pop()!;
    lines.push(...parts);
  }
  if (rest) lines.push(rest);
}

/** Waits until `lines` has a line `test` accepts (at most `ms`). */
async function waitForLine(
  lines: string[],
  test: (line: string) => boolean,
  what: string,
  ms = 10_000,
): Promise<string> {
  const end = performance.now() + ms;
  for (;;) {
    const line = lines.find(test);
    if (line !== undefined) return line;
    if (performance.now() > end) {
      throw new Error(
        `No ${what} within ${ms} ms; the lines were:\n${lines.join("\n")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface ChildServer extends AsyncDisposable {
  port: number;
  /** Waits for a server event `test` accepts. */
  waitFor(
    test: (e: ServeEvent) => boolean,
    what: string,
  ): Promise<ServeEvent>;
}

/**
 * Starts `tests/fixtures/manager_transport_server.ts` in its own process,
 * under `ulimit -n <ulimit>` when given.
 */
async function startServer(
  options: { authkey: string; maxConnections?: number },
  ulimit?: number,
): Promise<ChildServer> {
  const denoArgs = [
    "run",
    "--allow-read=./patterns,./tests",
    "--allow-net=127.0.0.1",
    FIXTURE,
    JSON.stringify(options),
  ];
  const proc = new Deno.Command(
    ulimit === undefined ? Deno.execPath() : "bash",
    {
      args: ulimit === undefined ? denoArgs : [
        "-c",
        `ulimit -n ${ulimit} && exec "$0" "$@"`,
        Deno.execPath(),
        ...denoArgs,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    },
  ).spawn();
  const out: string[] = [];
  const err: string[] = [];
  const reading = Promise.all([
    collectLines(proc.stdout, out),
    collectLines(proc.stderr, err),
  ]);
  const stop = async () => {
    await proc.stdin.close().catch(() => {});
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    try {
      await proc.status;
      await reading;
    } finally {
      clearTimeout(timer);
    }
  };
  let port: number;
  try {
    const line = await waitForLine(
      out,
      (l) => l.startsWith("port "),
      "port line from the server",
      30_000,
    );
    port = Number(line.slice(5));
  } catch (e) {
    proc.kill("SIGKILL");
    await stop();
    throw new Error(`${(e as Error).message}\nstderr:\n${err.join("\n")}`);
  }
  return {
    port,
    async waitFor(test, what) {
      const line = await waitForLine(err, (l) => {
        try {
          return test(JSON.parse(l) as ServeEvent);
        } catch {
          return false;
        }
      }, what);
      return JSON.parse(line) as ServeEvent;
    },
    [Symbol.asyncDispose]: stop,
  };
}

/** A raw socket to the server that has read the server's greeting. */
async function rawGreeted(
  port: number,
): Promise<{ socket: FramedSocket; localPort: number }> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  const localPort = tcp.localAddr.port;
  const socket = new FramedSocket(tcp, 1 << 20);
  const hello = await socket.next() as { challenge?: unknown };
  assert.equal(typeof hello?.challenge, "string", "the server's greeting");
  return { socket, localPort };
}

// -- Accepting ---------------------------------------------------------------

mpTest(
  "remote: under ulimit -n 256, 300 idle sockets opened and closed leave the server serving a new client within 1 s",
  async () => {
    await using server = await startServer({ authkey: KEY }, 256);
    const idle: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 300; i++) {
        idle.push(
          await Deno.connect({ hostname: "127.0.0.1", port: server.port }),
        );
      }
      // The server ran out of file descriptors, said so, and went on.
      const e = await server.waitFor(
        (e) => e.type === "acceptError",
        "accept error event",
      );
      assert.match(
        (e as { reason: string }).reason,
        /open files|os error 24/i,
      );
      // It stays out of descriptors a while (Deno itself must not fail).
      await new Promise((r) => setTimeout(r, 1500));
    } finally {
      for (const c of idle) c.close();
    }
    const t0 = performance.now();
    await using m = await Manager.connect({
      port: server.port,
      authkey: KEY,
      timeout: 5000,
    });
    const d = await m.dict({ a: 1 });
    assert.equal(await d.get("a"), 1);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < 1000, `the new client was served after ${elapsed} ms`);
  },
);

mpTest(
  "remote: maxConnections refuses the excess connection at once with ClosedError, and a freed place is reused",
  async () => {
    await using server = await startServer({ authkey: KEY, maxConnections: 3 });
    const port = server.port;
    // Three connections: one authenticated, two that never authenticate.
    await using first = await Manager.connect({ port, authkey: KEY });
    const raw1 = await rawGreeted(port);
    const raw2 = await rawGreeted(port);
    try {
      const t0 = performance.now();
      await assert.rejects(
        Manager.connect({ port, authkey: KEY, timeout: 8000 }),
        (e: unknown) => {
          assert.ok(e instanceof ClosedError, String(e));
          assert.match(e.message, /full/);
          assert.match(e.message, /at most 3 connections/);
          return true;
        },
      );
      const elapsed = performance.now() - t0;
      assert.ok(elapsed < 4000, `refused after ${elapsed} ms`);
      // What a raw peer reads instead of the greeting.
      const raw3 = new FramedSocket(
        await Deno.connect({ hostname: "127.0.0.1", port }),
        1 << 20,
      );
      const refusal = await raw3.next() as { e: { name: string } };
      assert.equal(refusal.e.name, "ClosedError");
      assert.equal(await raw3.next(), undefined, "then the server hangs up");
      await raw3.close();
      await server.waitFor(
        (e) => e.type === "refused" && /full/.test(e.reason),
        "refusal event",
      );
      // The connections inside the limit are served on.
      const d = await first.dict({ still: "served" });
      assert.equal(await d.get("still"), "served");
    } finally {
      await raw1.socket.close();
    }
    // Once the server has seen raw1 go, a new client gets its place.
    await server.waitFor(
      (e) => e.type === "refused" && e.peer.endsWith(`:${raw1.localPort}`),
      "raw1's departure",
    );
    try {
      await using second = await Manager.connect({ port, authkey: KEY });
      const v = await second.value("i", 7);
      assert.equal(await v.get(), 7);
    } finally {
      await raw2.socket.close();
    }
  },
);

// -- Before authentication -----------------------------------------------------

mpTest(
  "remote: a pre-auth frame that is not a valid hello closes the connection at once",
  async () => {
    await using server = await startServer({ authkey: KEY });
    const junk = new TextEncoder().encode("not json at all");
    const notJson = new Uint8Array(4 + junk.length);
    new DataView(notJson.buffer).setUint32(0, junk.length);
    notJson.set(junk, 4);
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ["a frame that is not JSON", notJson, /not UTF-8 JSON/],
      ["JSON that is not a hello", frame([1, 2, 3]), /hello/],
      [
        "another protocol's hello",
        frame({ proto: "http", version: 1 }),
        /"http"/,
      ],
    ];
    for (const [what, bytes, reason] of cases) {
      const { socket, localPort } = await rawGreeted(server.port);
      const t0 = performance.now();
      socket.sendRaw(bytes);
      // An error frame may come first; then the server hangs up.
      while (await socket.next() !== undefined) {
        // read on
      }
      const elapsed = performance.now() - t0;
      await socket.close();
      // The handshake timeout is 10 s: closing in far less is "at once".
      assert.ok(elapsed < 5000, `${what}: closed after ${elapsed} ms`);
      const e = await server.waitFor(
        (e) => e.type === "refused" && e.peer.endsWith(`:${localPort}`),
        `refusal of ${what}`,
      );
      assert.match((e as { reason: string }).reason, reason, what);
    }
    await using m = await Manager.connect({ port: server.port, authkey: KEY });
    assert.equal(await (await m.value("i", 1)).get(), 1);
  },
);

// -- The serve CLI -------------------------------------------------------------

mpTest(
  "serve CLI: one stderr line per connection, refused key and disconnect, and a warning for a short MP_AUTHKEY",
  async () => {
    const authkey = "short-key";
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read=./patterns",
        "--allow-net=127.0.0.1",
        "--allow-env=MP_AUTHKEY,MP_DEBUG",
        "patterns/server_process.ts",
        "serve",
        "--port",
        "0",
      ],
      env: { MP_AUTHKEY: authkey },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out: string[] = [];
    const err: string[] = [];
    const reading = Promise.all([
      collectLines(child.stdout, out),
      collectLines(child.stderr, err),
    ]);
    try {
      const serving = await waitForLine(
        out,
        (l) => /serving on .*:\d+$/.test(l),
        "serving line",
        30_000,
      );
      const port = Number(/:(\d+)$/.exec(serving)![1]);
      await waitForLine(
        err,
        (l) => /warning: MP_AUTHKEY is only 9 bytes long/.test(l),
        "short key warning",
      );
      const m = await Manager.connect({ port, authkey });
      assert.equal(await (await m.value("i", 2)).get(), 2);
      await waitForLine(
        err,
        (l) => /manager: connection from 127\.0\.0\.1:\d+$/.test(l),
        "connection line",
      );
      await m.shutdown();
      await waitForLine(
        err,
        (l) => /manager: disconnected 127\.0\.0\.1:\d+$/.test(l),
        "disconnect line",
      );
      await assert.rejects(
        Manager.connect({ port, authkey: "not-the-key" }),
        AuthenticationError,
      );
      await waitForLine(
        err,
        (l) => /manager: refused 127\.0\.0\.1:\d+: wrong authkey$/.test(l),
        "refused key line",
      );
      // One line each: exactly one of every kind so far.
      for (const kind of ["connection from", "disconnected", "refused"]) {
        assert.equal(
          err.filter((l) => l.includes(`manager: ${kind} `)).length,
          1,
          `${kind}:\n${err.join("\n")}`,
        );
      }
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await reading;
    }
  },
);

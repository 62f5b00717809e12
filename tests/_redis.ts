/**
 * A private `redis-server` for the broker tests (and the broker benchmark,
 * `bench/compare_broker.ts`): started on a free loopback port, keeping
 * nothing on disk (`--save "" --appendonly no`), under `timeout` so that it
 * ends even if the test run is killed, and stopped by `await using`. The tests never touch a Redis they did not start.
 *
 * @module
 */

import { RedisLink } from "../patterns/_broker/redis.ts";

/** How long a test's server may live at most, in seconds. */
const SERVER_SECONDS = 600;

/**
 * Why a private server cannot be started here, or `null` when it can
 * (also the benchmark's check: it asks only for `timeout`, which
 * `redis-server` runs under).
 */
export async function whyNoRedis(): Promise<string | null> {
  const run = await Deno.permissions.query({ name: "run", command: "timeout" });
  if (run.state !== "granted") return "no permission to run timeout";
  try {
    const out = await new Deno.Command("timeout", {
      args: ["10", "redis-server", "--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    // timeout exits 127 when the command is not found.
    if (!out.success) {
      return "redis-server not found (apt-get install -y redis-server)";
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "timeout not found";
    throw e;
  }
  return null;
}

/** A running private server. */
export interface RedisServer extends AsyncDisposable {
  /** Its port on 127.0.0.1. */
  port: number;
  /** Its URL (with the password, if any). */
  url: string;
  /**
   * Runs one command on a fresh connection.
   *
   * @param args The command.
   * @returns The reply.
   */
  command(args: string[]): Promise<unknown>;
  /**
   * Every key in the server (SCAN).
   *
   * @returns The keys, sorted.
   */
  keys(): Promise<string[]>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

/** The test-only TLS material of `tests/fixtures/broker_tls/`. */
export const TLS_DIR = new URL("./fixtures/broker_tls/", import.meta.url);

async function answers(port: number, tls: boolean): Promise<boolean> {
  try {
    const conn = tls
      ? await Deno.connectTls({
        hostname: "127.0.0.1",
        port,
        caCerts: [await Deno.readTextFile(new URL("ca.crt", TLS_DIR))],
      })
      : await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(new TextEncoder().encode("PING\r\n"));
      const buf = new Uint8Array(64);
      const n = await conn.read(buf);
      // +PONG, or -NOAUTH when a password is set: either way it serves.
      return n !== null && n > 0;
    } finally {
      conn.close();
    }
  } catch (e) {
    if (
      e instanceof Deno.errors.ConnectionRefused ||
      e instanceof Deno.errors.ConnectionReset
    ) return false;
    throw e;
  }
}

/**
 * Starts a private server (also the benchmark's: it runs nothing but
 * `timeout`, so `--allow-run=timeout` is enough).
 *
 * @param options `password`: started with `--requirepass`; `tls`: serves
 *   TLS only (`rediss://`), with the certificate of `tests/fixtures/broker_tls/`;
 *   `port`: this one instead of a free one (a server restarted in its
 *   place); `seconds`: how long it may live at most.
 * @returns The server; `await using` stops it.
 */
export async function startRedis(
  options: {
    password?: string;
    tls?: boolean;
    port?: number;
    seconds?: number;
  } = {},
): Promise<RedisServer> {
  const port = options.port ?? freePort();
  const tls = options.tls === true;
  const args = [
    String(options.seconds ?? SERVER_SECONDS),
    "redis-server",
    ...(tls
      ? [
        "--port",
        "0",
        "--tls-port",
        String(port),
        "--tls-cert-file",
        new URL("server.crt", TLS_DIR).pathname,
        "--tls-key-file",
        new URL("server.key", TLS_DIR).pathname,
        "--tls-auth-clients",
        "no",
      ]
      : ["--port", String(port)]),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
  ];
  if (options.password) args.push("--requirepass", options.password);
  const child = new Deno.Command("timeout", {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
  };
  const deadline = Date.now() + 10_000;
  while (!await answers(port, tls)) {
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server on port ${port} did not start`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const scheme = tls ? "rediss" : "redis";
  const url = options.password
    ? `${scheme}://:${encodeURIComponent(options.password)}@127.0.0.1:${port}`
    : `${scheme}://127.0.0.1:${port}`;
  const command = async (cmd: string[]) => {
    const link = await RedisLink.open(url, "dmp-test");
    try {
      return await link.send(cmd);
    } finally {
      await link.close();
    }
  };
  return {
    port,
    url,
    command,
    async keys() {
      const link = await RedisLink.open(url, "dmp-test");
      try {
        const all: string[] = [];
        let cursor = "0";
        do {
          const [next, batch] = await link.send([
            "SCAN",
            cursor,
            "COUNT",
            "1000",
          ]) as [string, string[]];
          all.push(...batch);
          cursor = next;
        } while (cursor !== "0");
        return all.sort();
      } finally {
        await link.close();
      }
    },
    [Symbol.asyncDispose]: stop,
  };
}

/** A worker process started from the CLI (`patterns/worker.ts`). */
export interface WorkerProcess extends AsyncDisposable {
  /** The child process. */
  child: Deno.ChildProcess;
  /** Everything it wrote to stderr so far. */
  readonly stderr: string;
  /** Sends a signal. */
  kill(signal: Deno.Signal): void;
  /**
   * Waits for it to exit.
   *
   * @returns Its exit code and stderr.
   */
  exited(): Promise<{ code: number; stderr: string }>;
}

/**
 * Starts `deno run patterns/worker.ts` with the given arguments, with the
 * permissions `deno task worker` grants.
 *
 * @param args `--broker …` and the rest.
 * @returns The process; `await using` sends SIGTERM and waits for it.
 */
export function startWorkerProcess(args: string[]): WorkerProcess {
  const root = new URL("..", import.meta.url);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-read=.",
      "--allow-net=127.0.0.1",
      "--allow-env=MP_DEBUG,REDIS_DEBUG_MAINTENANCE,REDIS_EMIT_DIAGNOSTICS",
      "patterns/worker.ts",
      ...args,
    ],
    cwd: root.pathname,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const reading = child.stderr.pipeTo(
    new WritableStream({
      write(chunk) {
        text += decoder.decode(chunk, { stream: true });
      },
    }),
  );
  let exit: Promise<{ code: number; stderr: string }> | undefined;
  const exited = () =>
    exit ??= Promise.all([child.status, reading]).then(([s]) => ({
      code: s.code,
      stderr: text,
    }));
  return {
    child,
    get stderr() {
      return text;
    },
    kill(signal) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    },
    exited,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const killer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 20_000);
      await exited();
      clearTimeout(killer);
    },
  };
}

/**
 * Waits until `cond()` is true, polling every 20 ms.
 *
 * @param cond The condition.
 * @param what What is awaited, for the timeout message.
 * @param ms How long at most.
 */
export async function waitUntil(
  cond: () => boolean | Promise<boolean>,
  what: string,
  ms = 30_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!await cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

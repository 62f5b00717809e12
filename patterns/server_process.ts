/**
 * The server process: Python's `Manager()`. One server owns dicts, lists,
 * namespaces, locks, queues, values and arrays; the main thread, any worker
 * — or a program on another computer — uses them through proxies whose
 * methods all return promises.
 *
 * `await Manager.start()` runs the server in its own worker (no setup);
 * `await Manager.connect({ hostname, port, authkey })` reaches one started
 * with {@linkcode serve} (or `deno task manager serve`) over TCP, with a
 * mutual HMAC-SHA256 handshake. Both give the same API and `await using`.
 *
 * Python:
 *
 * ```py
 * from multiprocessing import Process, Manager
 *
 * def f(d, l):
 *     d["car"] = "ford"
 *     l.sort()
 *
 * if __name__ == "__main__":
 *     with Manager() as manager:
 *         d = manager.dict()
 *         l = manager.list([9, 3])
 *         p = Process(target=f, args=(d, l))
 *         p.start()
 *         p.join()
 *         print(d)  # {'car': 'ford'}
 *         print(l)  # [3, 9]
 * ```
 *
 * Deno (the proxies travel into the worker as they are):
 *
 * ```ts
 * import { Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const d = await manager.dict<string, string>();
 * const l = await manager.list([9, 3]);
 * await d.set("car", "ford");
 * await l.sort();
 * assert.deepEqual(await d.toObject(), { car: "ford" });
 * assert.deepEqual(await l.toArray(), [3, 9]);
 * ```
 *
 * **Nested values are read-only copies.** Python silently loses
 * `d["k"].append(x)`: the list read from the proxy is a copy. Here a
 * container read with `get`, `values`, `entries` or `setDefault` is
 * deep-frozen, so `(await d.get("k")).push(x)` throws a `TypeError` instead
 * of being lost; write the new value back with `set`, or store a manager
 * list/dict proxy in the dict — a proxy stored inside a managed container
 * comes back as a live proxy, and mutating it mutates the server's object.
 * `toObject`, `toArray`, `pop` and queue `get` hand you a detached, mutable
 * copy. (Dates and typed arrays cannot be frozen: they are copies too.)
 *
 * **Sharing by name** — how programs on different machines share one
 * object (Python's `register("get_queue", callable=lambda: q)`):
 * `await m.named("jobs", () => m.queue())` gives the object bound to that
 * name on the server, made by the factory only if the name is free, and
 * atomically so — racing clients all get one object. `lookup`, `names` and
 * `unname` do the rest; a named object lives while it is named, even with
 * no client connected. `deno task manager put` / `take --connect host:port`
 * run a work queue shared this way (see `--help`).
 *
 * ```ts
 * import { Manager, serve } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using server = await serve({ port: 0, authkey: "secret" });
 * const where = { port: server.addr.port, authkey: "secret" };
 * {
 *   await using producer = await Manager.connect(where);
 *   const jobs = await producer.named("jobs", () => producer.queue<number>());
 *   await jobs.put(42);
 * } // The producer has gone; its named queue stays.
 * await using consumer = await Manager.connect(where);
 * const jobs = await consumer.named("jobs", () => consumer.queue<number>());
 * assert.equal(await jobs.get(), 42);
 * ```
 *
 * **Who may touch what.** Object ids are unguessable capabilities (96
 * random bits): a client can use the objects it made, read inside values,
 * received as a Process/Pool argument or found by name, and nothing else —
 * see `docs/manager-protocol.md` for the security model.
 *
 * **Lifetimes.** An object lives while something refers to it — a proxy, a
 * managed container holding it, or a name: proxies are counted per
 * connection, a proxy that is garbage-collected or disposed
 * (`using d = await m.dict()`) gives its reference back, and all of a
 * connection's references go when it disconnects (a worker's connection
 * ends with the task or process that received the proxy). A lock, RLock,
 * condition or semaphore permit held by a client that disconnects stays
 * held, marked abandoned (as `sync.ts` locks do): the next acquirer takes
 * it over and gets an `AbandonedError`, and any client may `release()` it
 * meanwhile — Python's idiom of a child acquiring and the parent releasing
 * works.
 *
 * @module
 */

import { describeValue, EmptyError } from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { Manager } from "./_manager/manager.ts";
import type { DictProxy, ListProxy } from "./_manager/proxies/mod.ts";
import { serve } from "./_manager/serve.ts";
import { describeServeEvent } from "./_manager/server/tcp.ts";

export {
  AbandonedError,
  AuthenticationError,
  BrokenBarrierError,
  ClosedError,
  EmptyError,
  FullError,
  WorkerCrashedError,
} from "./_core/errors.ts";
export type { ShareContext, SharedHandle } from "./_core/share.ts";
export type { WaitOptions } from "./_core/deadline.ts";
export type { ServerStats } from "./_manager/server/core.ts";
export type { RegisteredType } from "./_manager/server/hosted.ts";
export {
  ArrayProxy,
  BarrierProxy,
  BaseProxy,
  BoundedSemaphoreProxy,
  ConditionProxy,
  type DictKey,
  DictProxy,
  EventProxy,
  JoinableQueueProxy,
  ListProxy,
  LockProxy,
  NamespaceProxy,
  ObjectProxy,
  QueueProxy,
  type Remote,
  RLockProxy,
  SemaphoreProxy,
  ValueProxy,
} from "./_manager/proxies/mod.ts";
export {
  Manager,
  type ManagerBarrierOptions,
  type ManagerConnectOptions,
  type ManagerStartOptions,
} from "./_manager/manager.ts";
export {
  ManagerServer,
  serve,
  type ServeEvent,
  type ServeOptions,
} from "./_manager/serve.ts";

// -- Demo ---------------------------------------------------------------------

/** Connects to `--connect host:port` with the key in `MP_AUTHKEY`. */
async function connectCli(connect: string | undefined): Promise<Manager> {
  const m = connect === undefined ? null : /^(.*):(\d+)$/.exec(connect);
  const authkey = Deno.env.get("MP_AUTHKEY");
  if (!m || !authkey) {
    console.error(
      !m
        ? `--connect must be host:port, received ${describeValue(connect)}`
        : "Set the MP_AUTHKEY environment variable to the server's authkey",
    );
    Deno.exit(2);
  }
  try {
    return await Manager.connect({
      hostname: m[1] || "127.0.0.1",
      port: Number(m[2]),
      authkey,
    });
  } catch (e) {
    console.error(`Cannot connect to ${connect}: ${(e as Error).message}`);
    Deno.exit(1);
  }
}

/** Parses a non-negative integer option, or exits with a clear message. */
function intOption(name: string, text: string | undefined, dflt: number) {
  const n = Number(text ?? dflt);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(
      `--${name} must be a non-negative integer, received ${
        describeValue(text)
      }`,
    );
    Deno.exit(2);
  }
  return n;
}

/** The work queue of `put` and `take`, and the counter of jobs done. */
const JOBS = "jobs", DONE = "jobs done";

/** `put`: puts `count` jobs on the server's named queue. */
async function put(connect: string | undefined, count: number): Promise<void> {
  await using m = await connectCli(connect);
  const jobs = await m.named(JOBS, () => m.queue<number>());
  for (let n = 1; n <= count; n++) await jobs.put(n);
  console.log(
    `put ${count} jobs on the queue ${describeValue(JOBS)}; ${await jobs
      .qsize()} waiting`,
  );
}

/** `take`: takes jobs until none came for `idleMs`, doing each one. */
async function take(connect: string | undefined, idleMs: number) {
  await using m = await connectCli(connect);
  const jobs = await m.named(JOBS, () => m.queue<number>());
  const done = await m.named(DONE, () => m.value("q", 0n));
  let mine = 0;
  for (;;) {
    let n: number;
    try {
      n = await jobs.get({ timeout: idleMs });
    } catch (e) {
      if (e instanceof EmptyError) break;
      throw e;
    }
    // The work: the sum of the digits of n², done here, not on the server.
    const digits = [...String(n * n)].reduce((a, d) => a + Number(d), 0);
    const total = await done.add(1n);
    mine++;
    console.log(`job ${n}: digit sum of ${n}² is ${digits} (${total} done)`);
  }
  console.log(
    `no job for ${idleMs} ms: took ${mine}; ${await done
      .get()} done by all takers`,
  );
}

async function demo(connect: string | undefined): Promise<void> {
  const { Process } = await import("./cube.ts");
  const manager = connect ? await connectCli(connect) : await Manager.start();
  try {
    const d = await manager.dict<string, string>();
    const l = await manager.list([9, 3]);
    const p = new Process({
      target: async (d: DictProxy<string, string>, l: ListProxy<number>) => {
        await d.set("car", "ford");
        await l.sort();
      },
      args: [d, l],
    });
    p.start();
    await p.join();
    console.log(await d.toObject());
    console.log(await l.toArray());
  } finally {
    await manager.shutdown();
  }
}

async function serveCli(
  port: string | undefined,
  hostname: string | undefined,
) {
  const authkey = Deno.env.get("MP_AUTHKEY");
  if (!authkey) {
    console.error(
      "Set the MP_AUTHKEY environment variable to the authkey (it is never read from the command line)",
    );
    Deno.exit(2);
  }
  const n = Number(port ?? 0);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`--port must be an integer in 0..65535, received ${port}`);
    Deno.exit(2);
  }
  const keyBytes = new TextEncoder().encode(authkey).length;
  if (keyBytes < 16) {
    console.error(
      `warning: MP_AUTHKEY is only ${keyBytes} bytes long: use at least 16 random bytes (whoever guesses it can use every object on this server)`,
    );
  }
  // One line on stderr per connection, refused client and disconnect.
  const log = (line: string) =>
    console.error(`${new Date().toISOString()} manager: ${line}`);
  const server = await serve({
    hostname,
    port: n,
    authkey,
    onEvent: (e) => log(describeServeEvent(e)),
  });
  console.log(
    `Manager serving on ${server.addr.hostname}:${server.addr.port}`,
  );
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
}

if (isMainModule(import.meta)) {
  const { parseCli } = await import("./_demo.ts");
  const args = parseCli(
    Deno.args,
    "deno task manager [demo | serve | put | take]",
    'demo: a process sets d.car and sorts a list held by a manager, then the main thread prints them. serve: runs a manager server on TCP (authkey from MP_AUTHKEY). put / take (with --connect): a work queue shared by name: put puts jobs on the server\'s queue named "jobs", take takes and does them until none comes for --idle-ms; run any number of each, on any machine that reaches the server.',
    {
      port: {
        type: "string",
        description: "serve: the port (0 picks a free one)",
        placeholder: "P",
      },
      hostname: {
        type: "string",
        description: "serve: the interface to bind (default 127.0.0.1)",
        placeholder: "H",
      },
      connect: {
        type: "string",
        description: "demo, put, take: use the server at host:port",
        placeholder: "HOST:PORT",
      },
      count: {
        type: "string",
        description: "put: how many jobs (default 10)",
        placeholder: "N",
      },
      "idle-ms": {
        type: "string",
        description: "take: stop after MS ms without a job (default 10000)",
        placeholder: "MS",
      },
    },
  );
  const command = args.positionals[0] ?? "demo";
  if (command === "serve") {
    await serveCli(
      args.values.port as string | undefined,
      args.values.hostname as string | undefined,
    );
  } else if (command === "demo") {
    await demo(args.values.connect as string | undefined);
  } else if (command === "put" || command === "take") {
    const connect = args.values.connect as string | undefined;
    if (connect === undefined) {
      console.error(`${command} needs --connect host:port (see --help)`);
      Deno.exit(2);
    }
    if (command === "put") {
      await put(connect, intOption("count", args.values.count as string, 10));
    } else {
      await take(
        connect,
        intOption("idle-ms", args.values["idle-ms"] as string, 10_000),
      );
    }
  } else {
    console.error(
      `Unknown command ${describeValue(command)}: use demo, serve, put or take`,
    );
    Deno.exit(2);
  }
}

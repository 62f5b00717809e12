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
 * **Lifetimes.** An object lives while some proxy refers to it: proxies
 * are counted per connection, a proxy that is garbage-collected or
 * disposed (`using d = await m.dict()`) gives its reference back, and all
 * of a connection's references go when it disconnects (a worker's
 * connection ends with the task or process that received the proxy). A
 * lock, RLock or condition held by a client that disconnects is released;
 * the next acquirer gets it with an `AbandonedError` (semaphore permits are
 * not tracked per client and are not returned).
 *
 * @module
 */

import { describeValue } from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { Manager } from "./_manager/manager.ts";
import type { DictProxy, ListProxy } from "./_manager/proxies/mod.ts";
import { serve } from "./_manager/serve.ts";

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
export { ManagerServer, serve, type ServeOptions } from "./_manager/serve.ts";

// -- Demo ---------------------------------------------------------------------

async function demo(connect: string | undefined): Promise<void> {
  const { Process } = await import("./cube.ts");
  let manager: Manager;
  if (connect) {
    const m = /^(.*):(\d+)$/.exec(connect);
    const authkey = Deno.env.get("MP_AUTHKEY");
    if (!m || !authkey) {
      console.error(
        !m
          ? `--connect must be host:port, received ${describeValue(connect)}`
          : "Set the MP_AUTHKEY environment variable to the server's authkey",
      );
      Deno.exit(2);
    }
    manager = await Manager.connect({
      hostname: m[1] || "127.0.0.1",
      port: Number(m[2]),
      authkey,
    });
  } else manager = await Manager.start();
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
  const server = await serve({ hostname, port: n, authkey });
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
    "deno task manager [demo | serve]",
    "demo: a process sets d.car and sorts a list held by a manager, then the main thread prints them. serve: runs a manager server on TCP (authkey from MP_AUTHKEY).",
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
        description: "demo: use the server at host:port",
        placeholder: "HOST:PORT",
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
  } else {
    console.error(
      `Unknown command ${describeValue(command)}: use demo or serve`,
    );
    Deno.exit(2);
  }
}

/**
 * `wait`: Python's `multiprocessing.connection.wait` — of some pipe ends,
 * socket connections and processes, the ones ready now: a connection whose
 * `recv` would not wait (a message is there, or the other end closed) and
 * a process that ended. Waits on all of them at once, without polling, and
 * leaves no wait behind when it returns.
 *
 * @module
 */

import { checkTimeout, throwIfAborted, timerFor } from "../_core/deadline.ts";
import type { WaitOptions } from "../_core/deadline.ts";
import { describeValue } from "../_core/errors.ts";
import { Connection } from "../pipe.ts";

/**
 * What `wait` needs of a process: a `Process` from `cube.ts` is one. It is
 * ready once `exitCode` is no longer `null`.
 *
 * @example Usage
 * ```ts
 * import type { ProcessLike } from "@dmp/multiprocessing/pipe";
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const p: ProcessLike = new Process({ target: () => {} });
 * assert.equal(p.exitCode, null);
 * ```
 */
export interface ProcessLike {
  /** The process's name, for messages. */
  readonly name: string;
  /** `null` while it runs (or before it started), else how it ended. */
  readonly exitCode: number | null;
  /** Whether it was started and has not ended. */
  isAlive(): boolean;
  /** Waits for it to end (the signal rejects the wait). */
  join(options?: WaitOptions): Promise<number | null>;
}

/**
 * What `wait` waits on: connections (pipe ends and socket connections)
 * and processes.
 *
 * @example Usage
 * ```ts
 * import { Pipe, wait, type Waitable } from "@dmp/multiprocessing/pipe";
 * import { strict as assert } from "node:assert";
 *
 * const [a, b] = Pipe();
 * const objects: Waitable[] = [b];
 * a.send(1);
 * assert.deepEqual(await wait(objects), [b]);
 * a.close();
 * b.close();
 * ```
 */
export type Waitable = Connection | ProcessLike;

function isProcessLike(o: unknown): o is ProcessLike {
  return typeof o === "object" && o !== null && "exitCode" in o &&
    typeof (o as ProcessLike).join === "function" &&
    typeof (o as ProcessLike).isAlive === "function";
}

/**
 * The subset of `objects` that is ready (see the module doc), waiting up
 * to `timeout` ms for at least one.
 *
 * @typeParam T The objects' type.
 * @param objects Connections and processes.
 * @param options `timeout` (ms; `0` only checks) and `signal`.
 * @returns The ready ones, in the order given (empty at the timeout).
 * @throws {TypeError} If an object is neither, or a process was never
 *   started.
 * @throws {ClosedError} If a connection is closed.
 */
export async function waitReady<T extends Waitable>(
  objects: Iterable<T>,
  options: WaitOptions = {},
): Promise<T[]> {
  const list = [...objects];
  const timeout = checkTimeout(options.timeout, "wait");
  const signal = options.signal;
  throwIfAborted(signal);
  for (const [i, o] of list.entries()) {
    if (o instanceof Connection) continue;
    if (!isProcessLike(o)) {
      throw new TypeError(
        `Cannot wait: objects[${i}] is not a Connection or a Process, received ${
          describeValue(o)
        }`,
      );
    }
    if (o.exitCode === null && !o.isAlive()) {
      throw new TypeError(
        `Cannot wait: objects[${i}] (${o.name}) was never started`,
      );
    }
  }
  const readyNow = async (): Promise<T[]> => {
    const out: T[] = [];
    for (const o of list) {
      const ready = o instanceof Connection
        ? await o.poll(0)
        : o.exitCode !== null;
      if (ready) out.push(o);
    }
    return out;
  };
  const now = await readyNow();
  if (now.length > 0 || timeout <= 0) return now;
  // Wait on each at once; the first to be ready (or the timeout, or the
  // caller's signal) stops the others.
  const stop = new AbortController();
  const both = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<void>((resolve) => {
    timer = timerFor(timeout, resolve);
  });
  const waits = list.map((o) =>
    o instanceof Connection
      ? o.poll(Infinity, { signal: both })
      : o.join({ signal: both })
  );
  const quiet = waits.map((w) => w.then(() => {}, () => {}));
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    await Promise.race([...quiet, timedOut, aborted]);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort!);
    stop.abort();
    await Promise.all(quiet);
  }
  throwIfAborted(signal);
  return await readyNow();
}

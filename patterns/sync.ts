/**
 * Synchronization primitives shared by every thread: `Lock`, `RLock`,
 * `Semaphore`, `BoundedSemaphore`, `Condition`, `Event` and `Barrier`, as
 * Python's `multiprocessing` has them, on `SharedArrayBuffer` and `Atomics`.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import Lock, Process
 *
 * def f(lock, i):
 *     with lock:
 *         print("hello world", i)
 *
 * if __name__ == "__main__":
 *     lock = Lock()
 *     for num in range(3):
 *         Process(target=f, args=(lock, num)).start()
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { Lock } from "@dmp/multiprocessing/sync";
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const lock = new Lock();
 * const procs = [0, 1, 2].map((num) =>
 *   new Process({
 *     target: (lock: Lock, i: number) => {
 *       lock.acquireSync();
 *       try {
 *         console.log("hello world", i);
 *       } finally {
 *         lock.release();
 *       }
 *     },
 *     args: [lock, num],
 *   })
 * );
 * for (const p of procs) p.start();
 * for (const p of procs) assert.equal(await p.join(), 0);
 * ```
 *
 * Every primitive is a few words of shared memory; passed to a `Process` or a
 * `Pool` task (also nested in arrays and objects) it arrives live in the
 * worker, on the same memory. Calls that may wait come in two forms: a
 * promise (`acquire`, `wait`, `waitFor`) that never blocks the event loop,
 * for the main thread, and a blocking twin (`acquireSync`, `waitSync`,
 * `waitForSync`) for worker code. Every wait takes `timeout` (ms; `0` only
 * tries) and `signal`. `using _ = await lock.hold()` releases at the end of
 * the block.
 *
 * **Abandoned locks** (what Python lacks). The lock word of a `Lock` or an
 * `RLock` holds the thread id of its holder (`currentThreadId()` of
 * `_core/runtime.ts`), and a `Semaphore` records which threads hold its permits in a
 * small table (32 holder threads at a time). The package keeps a table of
 * live threads in shared memory: a worker's entry is marked dead when it
 * exits, crashes, calls `self.close()`/`Deno.exit()`, is terminated, or its
 * pool recycles it. A waiter sleeps in slices of at most 10 ms and, between
 * slices, looks its holder up in that table; when the holder is dead it takes
 * the lock over (a compare-and-swap, so only one waiter does) and its
 * `acquire` fails with `AbandonedError` — the lock is then held by the caller,
 * who should repair or discard the data it protects and release it. A
 * semaphore's permits held by a dead thread come back the same way (up to the
 * semaphore's initial value, so a semaphore used as a signal never gains
 * permits), and each taker of such a permit gets `AbandonedError`.
 *
 * Limits: a thread stopped with `terminate()` while busy in a synchronous
 * loop keeps running in Deno (see `cube.ts`), so it may still touch the data
 * after its lock was taken over; `Condition` waits at most 128 waiters at a
 * time; a `Semaphore` tracks permits of at most 32 holder threads at once
 * (permits of further holders are not recovered when they die).
 *
 * @module
 */

import { isMainModule } from "./_core/runtime.ts";
import { Lock } from "./_sync/lock.ts";
import { Barrier } from "./_sync/barrier.ts";

export { AbandonedError, BrokenBarrierError } from "./_core/errors.ts";
export { kShare } from "./_core/share.ts";
export type { Shareable, ShareContext, SharedHandle } from "./_core/share.ts";
export type { WaitOptions } from "./_core/deadline.ts";
export { Lock, RLock } from "./_sync/lock.ts";
export { BoundedSemaphore, Semaphore } from "./_sync/semaphore.ts";
export { Condition } from "./_sync/condition.ts";
export { Event } from "./_sync/event.ts";
export { Barrier, type BarrierOptions } from "./_sync/barrier.ts";

// -- Demo --------------------------------------------------------------------

if (isMainModule(import.meta)) {
  (await import("./_demo.ts")).demoStart(
    "sync",
    "Shows a Lock shared by three processes (each prints under it), then a Barrier that three processes pass together, twice.",
  );
  const { Process } = await import("./cube.ts");
  const lock = new Lock();
  console.log("Lock: three processes print one at a time");
  const printers = [0, 1, 2].map((num) =>
    new Process({
      target: (lock: Lock, i: number) => {
        lock.acquireSync();
        try {
          console.log(`  hello world ${i}`);
        } finally {
          lock.release();
        }
      },
      args: [lock, num],
    })
  );
  for (const p of printers) p.start();
  for (const p of printers) await p.join();

  console.log(
    "Barrier: three processes meet twice; the last to arrive runs the action",
  );
  const barrier = new Barrier(3, {
    action: () => console.log("  -- all 3 arrived, the barrier opens --"),
    timeout: 10_000,
  });
  const walkers = [0, 1, 2].map((num) =>
    new Process({
      target: (barrier: Barrier, lock: Lock, i: number) => {
        for (const round of [1, 2]) {
          lock.acquireSync();
          console.log(`  process ${i} reached round ${round}`);
          lock.release();
          barrier.waitSync();
        }
      },
      args: [barrier, lock, num],
    })
  );
  for (const p of walkers) p.start();
  const codes = await Promise.all(walkers.map((p) => p.join()));
  console.log(`done: exit codes ${codes.join(", ")}`);
}

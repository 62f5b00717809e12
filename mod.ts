/**
 * deno-multiprocessing: the patterns of Python's `multiprocessing` for Deno,
 * on Workers, SharedArrayBuffer, Atomics and MessageChannel — a worker pool
 * doing a parallel map, Process, Pipe, Queue, shared-memory Value and Array,
 * locks, and the Manager server process.
 *
 * Each pattern is also its own entry point (`@dmp/multiprocessing/cube`,
 * `/pipe`, `/queue`, `/sync`, `/value`, `/array`, `/server-process`); this
 * module re-exports them all.
 *
 * ```py
 * from multiprocessing import Pool
 *
 * with Pool(2) as pool:
 *     print(pool.map(lambda x: x ** 3, range(5)))   # Python needs a def here
 * ```
 *
 * ```ts
 * import { Pool } from "@dmp/multiprocessing";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 2 });
 * assert.deepEqual(await pool.map((x: number) => x ** 3, [0, 1, 2, 3, 4]), [0, 1, 8, 27, 64]);
 * ```
 *
 * @module
 */

export * from "./patterns/cube.ts";
export * from "./patterns/pipe.ts";
export * from "./patterns/queue.ts";
export * from "./patterns/server_process.ts";
export * from "./patterns/sync.ts";
export * from "./patterns/value.ts";
export * from "./patterns/array.ts";
export * from "./patterns/shared_memory.ts";
export * from "./patterns/worker.ts";

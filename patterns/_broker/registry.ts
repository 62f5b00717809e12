/**
 * The register of the worker processes serving a queue: each keeps a key
 * with its number of local workers and a TTL that its heartbeat refreshes,
 * listed in the queue's worker set; a pool sums the keys still there (no
 * clocks are compared, and a killed worker's key simply expires).
 *
 * @module
 */

import { QUEUE_TTL_MS, type QueueKeys, workerKey } from "./keys.ts";
import type { RedisLink } from "./redis.ts";

/**
 * Counts the local workers of the worker processes serving a queue now,
 * and drops the names of those gone from its set.
 *
 * @param link A connection.
 * @param keys The queue's keys.
 * @returns The number of workers.
 */
export async function countWorkers(
  link: RedisLink,
  keys: QueueKeys,
): Promise<number> {
  const names = await link.send(["SMEMBERS", keys.workers]) as string[];
  if (names.length === 0) return 0;
  const values = await link.send([
    "MGET",
    ...names.map((c) => workerKey(keys.queue, c)),
  ]) as Array<string | null>;
  let n = 0;
  const gone: string[] = [];
  values.forEach((v, i) => {
    if (v === null) gone.push(names[i]!);
    else n += Math.max(0, Number.parseInt(v, 10) || 0);
  });
  if (gone.length > 0) await link.send(["SREM", keys.workers, ...gone]);
  return n;
}

/**
 * Registers (or refreshes) a worker process.
 *
 * @param link A connection.
 * @param keys The queue's keys.
 * @param consumer The worker's consumer name.
 * @param workers Its number of local workers.
 * @param ttlMs How long the entry lives without a refresh.
 * @returns Once written.
 */
export async function registerWorker(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
  workers: number,
  ttlMs: number,
): Promise<void> {
  await Promise.all([
    link.send([
      "SET",
      workerKey(keys.queue, consumer),
      String(workers),
      "PX",
      String(ttlMs),
    ]),
    link.send(["SADD", keys.workers, consumer]),
    link.send(["PEXPIRE", keys.workers, String(QUEUE_TTL_MS)]),
  ]);
}

/**
 * Removes a worker process from the register (it stops).
 *
 * @param link A connection.
 * @param keys The queue's keys.
 * @param consumer The worker's consumer name.
 * @returns Once removed.
 */
export async function unregisterWorker(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
): Promise<void> {
  await Promise.all([
    link.send(["DEL", workerKey(keys.queue, consumer)]),
    link.send(["SREM", keys.workers, consumer]),
  ]);
}

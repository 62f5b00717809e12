/**
 * The Redis commands of a worker's side of the queue: creating the stream
 * and its consumer group, reading and claiming task entries, refreshing
 * the entries held, and the two Lua scripts that write a pool's results
 * only while it is alive and hand an entry back atomically.
 *
 * @module
 */

import {
  GROUP,
  poolKeys,
  QUEUE_TTL_MS,
  type QueueKeys,
  RESULT_TTL_MS,
} from "./keys.ts";
import type { RedisLink } from "./redis.ts";
import type { EntryResult } from "./wire.ts";

/** A stream entry as the client returns it (`null` once deleted). */
export type RawEntry = [string, string[]] | null;

/**
 * Writes a pool's results only while it is alive, so a closed or dead
 * pool's keys are never made again (KEYS: liveness, results; ARGV: the
 * result entry, the result stream's TTL).
 */
const WRITE_RESULTS = `if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0`;

/**
 * Hands an entry back to the queue as a new entry, atomically with
 * acknowledging and deleting the old one (KEYS: tasks; ARGV: pool id, job
 * text, group, old id).
 */
const HAND_BACK = `redis.call('XADD', KEYS[1], '*', 'p', ARGV[1], 'j', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[4])
return 1`;

/**
 * Creates the queue's stream and group if they are missing.
 *
 * @param link A connection.
 * @param keys The queue's keys.
 */
export async function ensureGroup(
  link: RedisLink,
  keys: QueueKeys,
): Promise<void> {
  // In one round trip with the TTL: a stream made here never lives
  // without one, even if this process dies before its next refresh.
  const created = link.send([
    "XGROUP",
    "CREATE",
    keys.tasks,
    GROUP,
    "0",
    "MKSTREAM",
  ]);
  const expiry = link.send(["PEXPIRE", keys.tasks, String(QUEUE_TTL_MS)]);
  try {
    await created;
  } catch (e) {
    if (!/BUSYGROUP/.test((e as Error).message)) {
      await expiry.catch(() => {});
      throw e;
    }
  }
  await expiry;
}

/**
 * Reads new entries in the group, waiting up to `blockMs` for some.
 *
 * @returns The entries (none when the wait ended first).
 */
export async function readTasks(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
  count: number,
  blockMs: number,
): Promise<RawEntry[]> {
  const reply = await link.send([
    "XREADGROUP",
    "GROUP",
    GROUP,
    consumer,
    "COUNT",
    String(count),
    "BLOCK",
    String(blockMs),
    "STREAMS",
    keys.tasks,
    ">",
  ]) as Array<[string, RawEntry[]]> | null;
  return reply ? reply.flatMap(([, entries]) => entries) : [];
}

/**
 * Resets the idle time of the entries a worker holds (it is alive), so
 * that no other worker claims them.
 */
export async function refreshHeld(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
  ids: string[],
): Promise<void> {
  const writes: Promise<unknown>[] = [];
  for (let i = 0; i < ids.length; i += 1000) {
    writes.push(link.send([
      "XCLAIM",
      keys.tasks,
      GROUP,
      consumer,
      "0",
      ...ids.slice(i, i + 1000),
      "JUSTID",
    ]));
  }
  await Promise.all(writes);
}

/**
 * Claims up to `count` entries idle for `idleMs` (their worker went
 * silent). One call scans at most `10 × count` pending entries from
 * `start`: the scan goes on from the cursor it returns (`0-0` once it went
 * round), so that entries behind many held by live workers are reached.
 *
 * @returns The claimed entries and where the next scan starts.
 */
export async function claimIdle(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
  idleMs: number,
  count: number,
  start: string = "0-0",
): Promise<{ entries: Array<[string, string[]]>; next: string }> {
  const reply = await link.send([
    "XAUTOCLAIM",
    keys.tasks,
    GROUP,
    consumer,
    String(idleMs),
    start,
    "COUNT",
    String(count),
  ]) as [string, RawEntry[], string[]?];
  return {
    entries: reply[1].filter((e): e is [string, string[]] => e !== null),
    next: String(reply[0]),
  };
}

/**
 * How many times each entry was delivered.
 *
 * @returns The counts, by position.
 */
export function deliveryCounts(
  link: RedisLink,
  keys: QueueKeys,
  ids: string[],
): Promise<number[]> {
  return Promise.all(ids.map(async (id) => {
    const r = await link.send([
      "XPENDING",
      keys.tasks,
      GROUP,
      "IDLE",
      "0",
      id,
      id,
      "1",
    ]) as Array<[string, string, number, number]>;
    return Number(r[0]?.[3] ?? 0);
  }));
}

/**
 * Writes a result entry to a pool's result stream if the pool is alive.
 *
 * @returns Once written (or skipped).
 */
export function writeResults(
  link: RedisLink,
  queue: string,
  pool: string,
  results: EntryResult[],
): Promise<unknown> {
  const keys = poolKeys(queue, pool);
  return link.send([
    "EVAL",
    WRITE_RESULTS,
    "2",
    keys.alive,
    keys.results,
    JSON.stringify(results),
    String(RESULT_TTL_MS),
  ]);
}

/**
 * Acknowledges and deletes entries (one pipeline).
 *
 * @returns The two writes.
 */
export function ackAndDelete(
  link: RedisLink,
  keys: QueueKeys,
  ids: string[],
): Promise<unknown>[] {
  return [
    link.send(["XACK", keys.tasks, GROUP, ...ids]),
    link.send(["XDEL", keys.tasks, ...ids]),
  ];
}

/**
 * Hands an entry back to the queue: a new entry with the same fields, the
 * old one acknowledged and deleted, atomically.
 *
 * @returns Once done.
 */
export function handBack(
  link: RedisLink,
  keys: QueueKeys,
  entry: { id: string; pool: string; text: string },
): Promise<unknown> {
  return link.send([
    "EVAL",
    HAND_BACK,
    "1",
    keys.tasks,
    entry.pool,
    entry.text,
    GROUP,
    entry.id,
  ]);
}

/**
 * Whether a consumer still holds entries (it may then not leave the group:
 * its entries would be lost).
 *
 * @returns `true` if it holds at least one.
 */
export async function holdsEntries(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
): Promise<boolean> {
  const mine = await link.send([
    "XPENDING",
    keys.tasks,
    GROUP,
    "-",
    "+",
    "1",
    consumer,
  ]) as unknown[];
  return mine.length > 0;
}

/**
 * Removes a consumer from the group.
 *
 * @returns Once removed.
 */
export function leaveGroup(
  link: RedisLink,
  keys: QueueKeys,
  consumer: string,
): Promise<unknown> {
  return link.send(["XGROUP", "DELCONSUMER", keys.tasks, GROUP, consumer]);
}

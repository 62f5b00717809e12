/**
 * Where a broker pool's data lives in Redis: the key names of a queue and
 * of each pool on it, how long each key lives, the defaults of the timing
 * knobs, and the checks of the `broker` and `queue` options. The layout is
 * described in `docs/broker-wire.md`.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";

/** The prefix of every key this package writes. */
const PREFIX = "dmp";
/** The consumer group the workers of a queue read tasks in. */
export const GROUP = "workers";
/** The queue a pool or worker uses when none is named. */
export const DEFAULT_QUEUE = "default";

/**
 * How long a pool's liveness key lives without a refresh, in ms. A pool
 * refreshes it every third of this while it has work in Redis; workers skip
 * the tasks of a pool whose key is gone (it died or closed).
 */
export const POOL_TTL_MS = 60_000;
/**
 * How long a pool's result stream lives after the last result written to
 * it, in ms: a pool that dies leaves results that expire.
 */
export const RESULT_TTL_MS = 3_600_000;
/**
 * How long a queue's task stream and worker registry live with nobody
 * touching them, in ms (pools and workers refresh both while they run).
 */
export const QUEUE_TTL_MS = 86_400_000;
/**
 * The default visibility timeout, in ms: a task held by a worker that has
 * not shown it is alive for this long is claimed by another worker and run
 * again.
 */
export const DEFAULT_VISIBILITY_MS = 30_000;
/** The default time a stopping worker lets its running tasks finish, in ms. */
export const DEFAULT_GRACE_MS = 10_000;

/** Queue names: short, and safe inside a key and a log line. */
const QUEUE_NAME = /^[A-Za-z0-9_.:-]{1,100}$/;
/** A pool's id: 32 hex digits (128 random bits). */
export const POOL_ID = /^[0-9a-f]{32}$/;

/** The key names of one queue. */
export interface QueueKeys {
  /** The queue's name. */
  queue: string;
  /** The stream of tasks the queue's workers read in {@linkcode GROUP}. */
  tasks: string;
  /** The set of the consumer names of the workers seen serving it. */
  workers: string;
}

/** The key names of one pool on a queue. */
export interface PoolKeys {
  /** The pool's id. */
  id: string;
  /** Its liveness key (a string with a TTL). */
  alive: string;
  /** The stream its results come back on. */
  results: string;
}

/**
 * Checks a `queue` option.
 *
 * @param queue The option's value.
 * @param what The action, for error messages.
 * @returns The queue's name ({@linkcode DEFAULT_QUEUE} when not given).
 * @throws {TypeError} If it is not a string of 1–100 letters, digits, `_`,
 *   `.`, `:` or `-`.
 */
export function checkQueue(queue: unknown, what: string): string {
  if (queue === undefined) return DEFAULT_QUEUE;
  if (typeof queue !== "string" || !QUEUE_NAME.test(queue)) {
    throw new TypeError(
      `Cannot ${what}: queue must be 1 to 100 letters, digits or _ . : -, received ${
        describeValue(queue)
      }`,
    );
  }
  return queue;
}

/**
 * Checks a `broker` option: a `redis://` or `rediss://` URL.
 *
 * @param broker The option's value.
 * @param what The action, for error messages.
 * @returns The URL as a string.
 * @throws {TypeError} If it is not such a URL.
 */
export function checkBroker(broker: unknown, what: string): string {
  let url: URL | undefined;
  if (broker instanceof URL) url = broker;
  else if (typeof broker === "string") {
    try {
      url = new URL(broker);
    } catch {
      url = undefined;
    }
  }
  if (!url || (url.protocol !== "redis:" && url.protocol !== "rediss:")) {
    throw new TypeError(
      `Cannot ${what}: broker must be a redis:// or rediss:// URL (e.g. "redis://127.0.0.1:6379/0"), received ${
        typeof broker === "string" ? redactUrl(broker) : describeValue(broker)
      }`,
    );
  }
  return url.href;
}

/**
 * A broker URL fit for a message: its password replaced by `***`.
 *
 * @param url The URL.
 * @returns The URL without its secret.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.href;
  } catch {
    return describeValue(url);
  }
}

/**
 * The key names of a queue.
 *
 * @param queue A checked queue name.
 * @returns Its keys.
 */
export function queueKeys(queue: string): QueueKeys {
  const base = `${PREFIX}:${queue}`;
  return { queue, tasks: `${base}:tasks`, workers: `${base}:workers` };
}

/**
 * The key of one worker process: its number of local workers, with a TTL
 * that its heartbeat refreshes (a killed worker's key expires).
 *
 * @param queue A checked queue name.
 * @param consumer The worker's consumer name.
 * @returns The key.
 */
export function workerKey(queue: string, consumer: string): string {
  return `${PREFIX}:${queue}:worker:${consumer}`;
}

/**
 * The key names of a pool on a queue.
 *
 * @param queue A checked queue name.
 * @param id The pool's id ({@linkcode POOL_ID}).
 * @returns Its keys.
 */
export function poolKeys(queue: string, id: string): PoolKeys {
  const base = `${PREFIX}:${queue}:pool:${id}`;
  return { id, alive: base, results: `${base}:results` };
}

/**
 * A new random pool id: a pool restarted on the same queue gets a new one,
 * so it never sees another pool's results.
 *
 * @returns 32 hex digits.
 */
export function newPoolId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * What a broker pool's entries in Redis hold: a task entry (one chunk of a
 * call's items, with the task's export name) and a result entry (the
 * results or errors of one or more task entries), as JSON text whose
 * values are the manager's tagged JSON tree (`encodeWire`/`decodeWire`):
 * data only, never code. Also the checks that refuse what cannot cross a
 * network (a function task, a shared-memory object) with a `TypeError`
 * that says why. The format is described in `docs/broker-wire.md`.
 *
 * @module
 */

import { describeValue, type ErrorInfo, RemoteError } from "../_core/errors.ts";
import { kShare } from "../_core/share.ts";
import { forEachNode } from "../_core/walk.ts";
import { decodeWire, encodeWire } from "../_manager/wire.ts";
import { CALL_ITEM, CALL_SPREAD, type CallMode } from "../_pool/protocol.ts";
import { POOL_ID } from "./keys.ts";

/** The version of the entry format; entries of another version are refused. */
export const WIRE_VERSION = 1;

/** One task entry: a chunk of one call's items. */
export interface TaskEntry {
  /** The job's number in its pool (results are matched by it). */
  n: number;
  /** The export the worker calls. */
  f: string;
  /** {@linkcode CALL_ITEM} (`task(item)`) or {@linkcode CALL_SPREAD}. */
  m: CallMode;
  /** The task timeout in ms, or `null` for none. */
  t: number | null;
  /** The items, decoded. */
  a: unknown[];
}

/** How a task failed, as it travels back to the pool. */
export interface WireError {
  /**
   * `"remote"`: the task threw (the caller sees a `RemoteError`);
   * `"local"`: the worker's own pool failed it (`WorkerCrashedError`,
   * `TimeoutError`, …), revived as that error.
   */
  k: "remote" | "local";
  /** The error's name (for `"remote"`, the task's error's name). */
  name: string;
  /** Its message. */
  message: string;
  /** Its stack text. */
  stack: string;
  /** The worker that ran it (`<consumer>/Pool-1-worker-2`). */
  worker: string;
  /** The failed item's position in the entry, if known. */
  i: number | null;
}

/** The outcome of one task entry. */
export type EntryResult =
  | { n: number; ms: number; v: unknown[] }
  | { n: number; ms: number; e: WireError };

function encodeValue(value: unknown, what: string): unknown {
  try {
    return encodeWire(value);
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    throw new TypeError(
      `Cannot ${what}: ${
        e.message.replace(/^Cannot send a value to the manager: /, "")
      } (values travel through Redis as data)`,
    );
  }
}

/**
 * Refuses a function task: its source is not sent over a network.
 *
 * @param task The task given to a broker pool's call.
 * @param what The call, for the message.
 * @returns The export's name.
 * @throws {TypeError} If `task` is not a non-empty string.
 */
export function checkRemoteTask(task: unknown, what: string): string {
  if (typeof task === "function") {
    throw new TypeError(
      `Cannot ${what} on a broker pool: a function's source is not sent over a network; name an export of the workers' module instead (e.g. pool.${what}("cube", …))`,
    );
  }
  if (typeof task !== "string" || task === "") {
    throw new TypeError(
      `Cannot ${what} on a broker pool: the task must be the name of an export of the workers' module, received ${
        describeValue(task)
      }`,
    );
  }
  return task;
}

/**
 * Refuses arguments that hold this package's shared-memory objects, which
 * cannot live on another machine.
 *
 * @param items The items of one entry.
 * @param start The first item's index in its call.
 * @param what The call, for the message.
 * @throws {TypeError} If an item holds one; the message names its class.
 */
export function checkNoShared(
  items: unknown[],
  start: number,
  what: string,
): void {
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (typeof item !== "object" || item === null) continue;
    let found: object | undefined;
    forEachNode(item, (node) => {
      if (found) return false;
      if (
        typeof (node as { [kShare]?: unknown })[kShare] === "function" ||
        node instanceof SharedArrayBuffer || node instanceof MessagePort
      ) {
        found = node;
        return false;
      }
      return true;
    });
    if (found) {
      const name = found.constructor?.name ?? "object";
      throw new TypeError(
        `Cannot ${what} on a broker pool: item ${
          start + i
        } holds a ${name}, a shared-memory object of this machine that cannot travel over a network (send plain values instead)`,
      );
    }
  }
}

/**
 * Encodes a task entry's JSON text.
 *
 * @param n The job's number.
 * @param f The export's name.
 * @param m How items are passed.
 * @param t The task timeout in ms (`Infinity`: none).
 * @param items The items (checked with {@linkcode checkNoShared}).
 * @param what The call, for error messages.
 * @returns The JSON text.
 * @throws {TypeError} If an item cannot be encoded.
 */
export function encodeTaskEntry(
  n: number,
  f: string,
  m: CallMode,
  t: number,
  items: unknown[],
  what: string,
): string {
  const a = new Array(items.length);
  for (let i = 0; i < items.length; i++) {
    a[i] = encodeValue(items[i], `${what} on a broker pool`);
  }
  return JSON.stringify({
    v: WIRE_VERSION,
    n,
    f,
    m,
    t: t === Infinity ? null : t,
    a,
  });
}

function bad(what: string): never {
  throw new TypeError(`Cannot read a broker entry: ${what}`);
}

/**
 * Decodes a task entry's JSON text, checking every field.
 *
 * @param text The entry's `j` field.
 * @returns The entry.
 * @throws {TypeError} If it is not a valid entry (it is then dropped).
 */
export function decodeTaskEntry(text: string): TaskEntry {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch {
    return bad("not JSON");
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    bad("not an object");
  }
  if (raw.v !== WIRE_VERSION) bad(`unknown version ${describeValue(raw.v)}`);
  const { n, f, m, t, a } = raw;
  if (!Number.isSafeInteger(n) || (n as number) < 1) bad("bad job number");
  if (typeof f !== "string" || f === "" || f.length > 200) bad("bad task");
  if (m !== CALL_ITEM && m !== CALL_SPREAD) bad("bad mode");
  if (t !== null && !(typeof t === "number" && t > 0)) bad("bad timeout");
  if (!Array.isArray(a) || a.length === 0) bad("bad items");
  const items = a.map((x) => decodeWire(x));
  if (m === CALL_SPREAD && !items.every(Array.isArray)) bad("bad arguments");
  return { n: n as number, f: f as string, m, t: t as number | null, a: items };
}

/**
 * Encodes a task's values for a result entry.
 *
 * @param values The task's results.
 * @returns The tagged trees.
 * @throws {TypeError} If a value cannot be encoded.
 */
export function encodeValues(values: unknown[]): unknown[] {
  return values.map((v) => encodeValue(v, "send a task's result"));
}

/**
 * Decodes a result entry's JSON text.
 *
 * @param text The entry's `r` field.
 * @returns The results it holds (values still encoded).
 * @throws {TypeError} If it is not a valid result entry.
 */
export function decodeResultEntry(text: string): EntryResult[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return bad("not JSON");
  }
  if (!Array.isArray(raw)) bad("not a list of results");
  for (const r of raw as Record<string, unknown>[]) {
    if (typeof r !== "object" || r === null || !Number.isSafeInteger(r.n)) {
      bad("bad result");
    }
    if (typeof r.ms !== "number") r.ms = 0;
    if ("v" in r) {
      if (!Array.isArray(r.v)) bad("bad values");
    } else {
      const e = r.e as Record<string, unknown>;
      if (
        typeof e !== "object" || e === null ||
        (e.k !== "remote" && e.k !== "local") ||
        typeof e.name !== "string" || typeof e.message !== "string"
      ) bad("bad error");
      if (typeof e.stack !== "string") e.stack = "";
      if (typeof e.worker !== "string") e.worker = "";
      if (!Number.isSafeInteger(e.i)) e.i = null;
    }
  }
  return raw as EntryResult[];
}

/**
 * Decodes the values of a result.
 *
 * @param values The tagged trees.
 * @returns The values.
 */
export function decodeValues(values: unknown[]): unknown[] {
  return values.map((v) => decodeWire(v));
}

/**
 * The {@linkcode ErrorInfo} of a wire error.
 *
 * @param e The wire error.
 * @returns Its name, message and stack.
 */
export function wireErrorInfo(e: WireError): ErrorInfo {
  return { name: e.name, message: e.message, stack: e.stack };
}

/**
 * Reads a task entry's stream fields (`p`: the pool's id, `j`: the JSON).
 *
 * @param fields The entry's fields, as the client returns them.
 * @returns The pool's id, the text and the entry, or why it is dropped.
 */
export function parseTaskFields(
  fields: string[],
): { pool: string; text: string; entry: TaskEntry } | string {
  let pool: string | undefined;
  let text: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === "p") pool = fields[i + 1];
    else if (fields[i] === "j") text = fields[i + 1];
  }
  if (pool === undefined || !POOL_ID.test(pool)) return "no valid pool id";
  if (text === undefined) return "no task";
  try {
    return { pool, text, entry: decodeTaskEntry(text) };
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Describes how a task entry failed on a worker, for its result entry.
 *
 * @param e What the local pool's call rejected with.
 * @param consumer The worker's consumer name.
 * @returns The wire error.
 */
export function toWireError(e: unknown, consumer: string): WireError {
  if (e instanceof RemoteError) {
    return {
      k: "remote",
      name: e.remoteName,
      message: e.message,
      stack: e.remoteStack,
      worker: `${consumer}/${e.worker}`,
      i: e.index ?? null,
    };
  }
  const err = e instanceof Error || e instanceof DOMException
    ? e
    : new Error(String(e));
  const index = (err as { index?: unknown }).index;
  return {
    k: "local",
    name: err.name,
    message: err.message,
    stack: err.stack ?? "",
    worker: consumer,
    i: Number.isSafeInteger(index) ? index as number : null,
  };
}

/**
 * The root's `new`: type id → how to build that built-in object from the
 * call's arguments. The table is checked against {@linkcode TypeId}, so a
 * type added to the protocol without its object here does not compile.
 *
 * @module
 */

import { describeValue } from "../../../_core/errors.ts";
import { typecodeInfo } from "../../../_core/typecodes.ts";
import { isTypeId, type TypeId } from "../../protocol.ts";
import type { Managed, ObjectHost } from "../call.ts";
import { Ref } from "../ref.ts";
import { DictObj, ListObj, NamespaceObj } from "./collections.ts";
import { QueueObj } from "./queue.ts";
import {
  BarrierObj,
  ConditionObj,
  EventObj,
  LockObj,
  SemaphoreObj,
} from "./sync.ts";
import { ArrayObj, ValueObj } from "./value.ts";

/** Builds one built-in object from the root's `new` arguments. */
export type Maker = (host: ObjectHost, args: unknown[]) => Managed;

function semaphore(
  type: "semaphore" | "boundedSemaphore",
  a: unknown[],
): SemaphoreObj {
  const n = a[0] === undefined ? 1 : a[0];
  if (!Number.isSafeInteger(n) || (n as number) < 0) {
    throw new RangeError(
      `Cannot make a ${type}: the value must be a non-negative integer, received ${
        describeValue(n)
      }`,
    );
  }
  return new SemaphoreObj(type, n as number, n as number);
}

function queue(
  host: ObjectHost,
  type: "queue" | "joinableQueue",
  a: unknown[],
): QueueObj {
  const m = a[0] === undefined ? 0 : a[0];
  if (!Number.isSafeInteger(m)) {
    throw new TypeError(
      `Cannot make a queue: maxsize must be an integer, received ${
        describeValue(m)
      }`,
    );
  }
  return new QueueObj(host, type, m as number);
}

const MAKERS = {
  dict: (host, a) => {
    const d = new DictObj(host);
    d.update(a[0], "make a dict");
    return d;
  },
  list: (host, a) => {
    const l = new ListObj(host);
    if (a[0] !== undefined) {
      if (!Array.isArray(a[0])) {
        throw new TypeError(
          `Cannot make a list: expected an array, received ${
            describeValue(a[0])
          }`,
        );
      }
      for (const x of a[0]) host.hold(x);
      l.items = [...a[0]];
    }
    return l;
  },
  namespace: (host, a) => {
    const n = new NamespaceObj(host);
    if (a[0] !== undefined) {
      if (
        typeof a[0] !== "object" || a[0] === null || a[0] instanceof Ref
      ) {
        throw new TypeError(
          `Cannot make a namespace: expected an object, received ${
            describeValue(a[0])
          }`,
        );
      }
      for (const k of Object.keys(a[0])) {
        n.put(k, (a[0] as Record<string, unknown>)[k]);
      }
    }
    return n;
  },
  lock: () => new LockObj("lock", false),
  rlock: () => new LockObj("rlock", true),
  semaphore: (_, a) => semaphore("semaphore", a),
  boundedSemaphore: (_, a) => semaphore("boundedSemaphore", a),
  condition: () => new ConditionObj(),
  event: () => new EventObj(),
  barrier: (_, a) => {
    const n = a[0];
    if (!Number.isSafeInteger(n) || (n as number) < 1) {
      throw new RangeError(
        `Cannot make a barrier: parties must be a positive integer, received ${
          describeValue(n)
        }`,
      );
    }
    const t = a[1];
    if (t !== undefined && (typeof t !== "number" || !(t >= 0))) {
      throw new RangeError(
        `Cannot make a barrier: timeout must be a non-negative number, received ${
          describeValue(t)
        }`,
      );
    }
    return new BarrierObj(
      n as number,
      (t as number | undefined) ?? Infinity,
    );
  },
  queue: (host, a) => queue(host, "queue", a),
  joinableQueue: (host, a) => queue(host, "joinableQueue", a),
  value: (_, a) => new ValueObj(typecodeInfo(a[0], "make a value"), a[1]),
  array: (_, a) => new ArrayObj(typecodeInfo(a[0], "make an array"), a[1]),
} satisfies Record<TypeId, Maker>;

/**
 * Builds a built-in object for the root's `new`.
 *
 * @param type The type id the peer sent.
 * @param host The server core the object counts references with.
 * @param args The rest of `new`'s arguments.
 * @returns The object (not yet in the core's table).
 * @throws {TypeError} If `type` is not a built-in type id, or the arguments
 *   do not fit it.
 * @throws {RangeError} If a size, count or timeout is out of range.
 */
export function makeObject(
  type: string,
  host: ObjectHost,
  args: unknown[],
): Managed {
  if (!isTypeId(type)) {
    throw new TypeError(
      `Cannot make an object of unknown type ${describeValue(type)}`,
    );
  }
  return MAKERS[type](host, args);
}

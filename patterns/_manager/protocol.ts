/**
 * The manager protocol's vocabulary, shared by the client and the server:
 * the protocol name and limits, the built-in type ids and the methods each
 * one answers, the messages both sides exchange, and the key and reference
 * types. Tables keyed by type id on either side are declared
 * `satisfies Record<TypeId, …>`, so a type added here without its server
 * object or its client proxy does not compile. The format is described in
 * `docs/manager-protocol.md`.
 *
 * ```ts
 * import { isTypeId, METHODS } from "./protocol.ts";
 * import { strict as assert } from "node:assert";
 *
 * assert.ok(isTypeId("dict"));
 * assert.ok(!isTypeId("Counter"));
 * assert.ok(METHODS.queue.includes("put"));
 * ```
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";

/** The protocol's name, sent in the handshake. */
export const PROTOCOL = "dmp-manager";
/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;
/** The largest frame accepted by default (16 MiB). */
export const DEFAULT_MAX_FRAME: number = 16 * 1024 * 1024;
/** The largest frame accepted before authentication. */
export const HANDSHAKE_MAX_FRAME = 1024;
/** How deep a value on the wire may nest: the package's one depth limit. */
export { MAX_DEPTH } from "../_core/walk.ts";
/** The name of the error a cancelled call is answered with. */
export const CANCELLED = "ManagerCallCancelled";

// -- Types and their methods -------------------------------------------------

/**
 * The built-in managed types, as the root's `new` method takes them and as
 * references name them. A registered user type's references carry its own
 * registered id instead (any other string).
 */
export type TypeId =
  | "dict"
  | "list"
  | "namespace"
  | "lock"
  | "rlock"
  | "semaphore"
  | "boundedSemaphore"
  | "condition"
  | "event"
  | "barrier"
  | "queue"
  | "joinableQueue"
  | "value"
  | "array";

/** The methods of both queue types. */
const QUEUE_METHODS = [
  "put",
  "get",
  "qsize",
  "empty",
  "full",
  "close",
  "closed",
  "taskDone",
  "join",
  "putBack",
] as const;

/**
 * The methods each built-in type answers: the server's allowlist (its
 * method tables are checked against it) and the names the client's
 * proxies may call.
 */
export const METHODS = {
  dict: [
    "get",
    "set",
    "delete",
    "has",
    "keys",
    "values",
    "entries",
    "size",
    "clear",
    "update",
    "pop",
    "setDefault",
    "toObject",
  ],
  list: [
    "append",
    "extend",
    "get",
    "set",
    "insert",
    "pop",
    "remove",
    "index",
    "count",
    "sort",
    "reverse",
    "length",
    "clear",
    "toArray",
  ],
  namespace: ["get", "set", "delete", "toObject"],
  lock: ["acquire", "release", "locked"],
  rlock: ["acquire", "release", "locked"],
  semaphore: ["acquire", "release", "getValue"],
  boundedSemaphore: ["acquire", "release", "getValue"],
  condition: ["acquire", "release", "wait", "notify", "notifyAll", "locked"],
  event: ["set", "clear", "isSet", "wait"],
  barrier: ["wait", "abort", "reset", "parties", "nWaiting", "broken"],
  queue: QUEUE_METHODS,
  joinableQueue: QUEUE_METHODS,
  value: ["get", "set", "add"],
  array: ["get", "set", "length", "toArray"],
} as const satisfies Record<TypeId, readonly string[]>;

/** The method names of a built-in type. */
export type MethodName<T extends TypeId> = (typeof METHODS)[T][number];

/**
 * A managed object's id: a bearer capability. The server makes it from
 * {@linkcode OBJECT_ID_BYTES} random bytes (base64url), so it cannot be
 * guessed; holding it is the right to use the object.
 */
export type ObjectId = string;

/** How many random bytes an object id is made of (96 bits). */
export const OBJECT_ID_BYTES = 12;

/** The longest object id a peer may send (longer ones are refused unread). */
export const MAX_OBJECT_ID = 64;

/** The longest name the root's `name`, `lookup` and `unname` take (UTF-16 units). */
export const MAX_NAME = 1024;

/** The id of the manager itself, the root object (the only numeric id). */
export const ROOT_ID = 0;

/** The root object's methods. */
export const ROOT_METHODS = [
  "new",
  "create",
  "decref",
  "stats",
  "pin",
  "claim",
  "methods",
  "ping",
  "name",
  "lookup",
  "names",
  "unname",
] as const;

/** A method of the root object. */
export type RootMethod = (typeof ROOT_METHODS)[number];

/**
 * Whether a string is a built-in type id.
 *
 * @param type The string.
 * @returns Whether it names a built-in type.
 */
export function isTypeId(type: string): type is TypeId {
  return Object.hasOwn(METHODS, type);
}

/**
 * Checks a name given to `named`, `lookup` or `unname` (either side).
 *
 * @param name The name.
 * @param what The action, for the error.
 * @returns The name.
 * @throws {TypeError} If it is not a string of 1 to {@linkcode MAX_NAME}
 *   characters.
 */
export function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || name.length === 0 || name.length > MAX_NAME) {
    throw new TypeError(
      `Cannot ${what}: a name must be a string of 1 to ${MAX_NAME} characters, received ${
        describeValue(name)
      }`,
    );
  }
  return name;
}

// -- Values ------------------------------------------------------------------

/**
 * Keys a manager dict accepts.
 *
 * @example Usage
 * ```ts
 * import { type DictKey, Manager } from "@dmp/multiprocessing/server-process";
 * import { strict as assert } from "node:assert";
 *
 * await using manager = await Manager.start();
 * const d = await manager.dict<DictKey, string>();
 * const keys: DictKey[] = ["1", 1, 1n, true];
 * for (const k of keys) await d.set(k, typeof k);
 * assert.equal(await d.get(1), "number");
 * assert.equal(await d.get("1"), "string");
 * assert.equal(await d.get(true), "boolean");
 * ```
 */
export type DictKey = string | number | bigint | boolean;

/** A reference to a managed object inside an encoded value. */
export interface RefTag {
  /** The object's id on the server. */
  id: ObjectId;
  /** The object's type: a {@linkcode TypeId} or a registered type's id. */
  type: string;
}

// -- Messages ----------------------------------------------------------------

/**
 * A call, client to server: `[id, object, method, args, thread, timeout?]`.
 * Id 0 wants no answer; `args` is an encoded array; `thread` names the
 * calling thread (lock ownership); `timeout` (ms) is sent by waiting calls.
 */
export type Request = [
  id: number,
  object: typeof ROOT_ID | ObjectId,
  method: string,
  args: unknown,
  thread: number,
  timeout?: number,
];

/** Client to server: abort the parked call with this id. */
export interface CancelMessage {
  /** The call's id. */
  c: number;
}

/** Server to client: a call's encoded result, `[id, result]`. */
export type ResultMessage = [id: number, result: unknown];

/** A failure as it crosses the wire. */
export interface ErrorInfo {
  /** The error's class name, e.g. `"ClosedError"`. */
  name: string;
  /** Its message. */
  message: string;
}

/**
 * Server to client: a call failed (`i` is its id), or a message without a
 * call id could not be handled (no `i`).
 */
export interface ErrorMessage {
  /** The failed call's id. */
  i?: number;
  /** What went wrong. */
  e: ErrorInfo;
}

/** The memory of one local connection: a ring each way. */
export interface LinkMemory {
  /** The buffer holding both rings. */
  sab: SharedArrayBuffer;
  /** Bytes per ring. */
  ringBytes: number;
}

/**
 * Client to embedded server, local connections only: `bye` ends the
 * connection, `thread` names the client's thread (its death closes the
 * connection), `attach` opens a sub-connection on a new port and rings that
 * starts with references to `ids`.
 */
export type ControlMessage =
  | { x: "bye" }
  | { x: "thread"; t: number }
  | { x: "attach"; port: MessagePort; mem: LinkMemory; ids: ObjectId[] };

/** Server to client, first handshake message. */
export interface ServerHello {
  /** {@linkcode PROTOCOL}. */
  proto: string;
  /** {@linkcode PROTOCOL_VERSION}. */
  version: number;
  /** The server's nonce. */
  challenge: string;
}

/** Client to server, the handshake's answer. */
export interface ClientHello extends ServerHello {
  /** The client's proof over the server's nonce and its own. */
  response: string;
}

/** Server to client, the handshake's end: accepted with the server's proof. */
export interface ServerWelcome {
  /** Always `true`. */
  ok: true;
  /** The server's proof over the client's nonce and its own. */
  response: string;
}

/**
 * SharedMemory and ShareableList: Python's `multiprocessing.shared_memory`,
 * between the threads of one program.
 *
 * The Python original:
 *
 * ```py
 * from multiprocessing import shared_memory
 *
 * shm = shared_memory.SharedMemory(name="block", create=True, size=4)
 * shm.buf[0] = 42
 * other = shared_memory.SharedMemory(name="block")   # in another process
 * print(other.buf[0])                                  # 42
 * other.close(); shm.close(); shm.unlink()
 *
 * sl = shared_memory.ShareableList([1, "two", None])
 * sl[1] = "deux"
 * ```
 *
 * The Deno version:
 *
 * ```ts
 * import { ShareableList, SharedMemory } from "@dmp/multiprocessing/shared-memory";
 * import { strict as assert } from "node:assert";
 *
 * const shm = new SharedMemory({ name: "doc-block", create: true, size: 4 });
 * shm.buf[0] = 42;
 * const other = new SharedMemory({ name: "doc-block" }); // in any worker
 * assert.equal(other.buf[0], 42);
 * other.close();
 * shm.close();
 * shm.unlink();
 *
 * const sl = new ShareableList([1, "two", null]);
 * sl.set(1, "deux");
 * assert.deepEqual([...sl], [1, "deux", null]);
 * sl.shm.close();
 * sl.shm.unlink();
 * ```
 *
 * Names are seen by every worker of this program (Python's can be attached
 * from any process on the machine). Blocks live in one arena that every
 * thread holds from its start; a block's memory is reused once it is
 * unlinked and every handle on it is closed. A `SharedMemory` or a
 * `ShareableList` passed to a `Process` or `Pool` task arrives live, and the
 * task's handle closes when the task ends.
 *
 * @module
 */

import {
  AlreadyExistsError,
  ClosedError,
  describeValue,
  NotFoundError,
} from "./_core/errors.ts";
import { isMainModule } from "./_core/runtime.ts";
import { kShare, registerShareable, type SharedHandle } from "./_core/share.ts";
import {
  attachBlock,
  blockBytes,
  type BlockPlace,
  createBlock,
  MAX_NAME_BYTES,
  releaseBlock,
  retainBlock,
  unlinkBlock,
} from "./_shm/blocks.ts";

export { AlreadyExistsError, NotFoundError } from "./_core/errors.ts";

const BLOCK_TYPE = "shared_memory.block";
const LIST_TYPE = "shared_memory.list";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Options of {@linkcode SharedMemory}.
 *
 * @example Usage
 * ```ts
 * import { SharedMemory, type SharedMemoryOptions } from "@dmp/multiprocessing/shared-memory";
 * import { strict as assert } from "node:assert";
 *
 * const options: SharedMemoryOptions = { create: true, size: 16 };
 * const shm = new SharedMemory(options);
 * assert.equal(shm.size, 16);
 * shm.close();
 * shm.unlink();
 * ```
 */
export interface SharedMemoryOptions {
  /** The block's name; a fresh unique one when creating without it. */
  name?: string;
  /** Make a new block (`true`) or attach to one by name (default). */
  create?: boolean;
  /** The new block's size in bytes (with `create`). */
  size?: number;
}

function checkName(name: unknown, what: string): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(
      `Cannot ${what}: name must be a non-empty string, received ${
        describeValue(name)
      }`,
    );
  }
  if (encoder.encode(name).length > MAX_NAME_BYTES) {
    throw new RangeError(
      `Cannot ${what}: name ${
        JSON.stringify(name)
      } is longer than ${MAX_NAME_BYTES} UTF-8 bytes`,
    );
  }
  return name;
}

const kAdopt = Symbol("adopt");

/**
 * A block of shared memory known by name to every worker of the program,
 * as Python's `shared_memory.SharedMemory`.
 *
 * @example Usage
 * ```ts
 * import { SharedMemory } from "@dmp/multiprocessing/shared-memory";
 * import { Process } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const shm = new SharedMemory({ create: true, size: 8 });
 * const p = new Process({
 *   target: (s: SharedMemory) => { s.buf[0] = 7; },
 *   args: [shm],
 * });
 * p.start();
 * await p.join();
 * assert.equal(shm.buf[0], 7);
 * shm.close();
 * shm.unlink();
 * ```
 */
export class SharedMemory {
  readonly #place: BlockPlace;
  #buf: Uint8Array | undefined;
  #closed = false;

  /**
   * Creates a block, or attaches to one by name.
   *
   * @param options `name`, `create`, `size`.
   * @throws {NotFoundError} If no block has that name (attaching).
   * @throws {AlreadyExistsError} If a block has that name (creating).
   * @throws {RangeError} If `size` is not a positive integer, or the name is
   *   too long.
   * @throws {TypeError} If `name` is not a non-empty string.
   */
  constructor(options: SharedMemoryOptions);
  /** @internal Adopts a place already retained (a handle that travelled). */
  constructor(adopt: typeof kAdopt, place: BlockPlace);
  constructor(
    options: SharedMemoryOptions | typeof kAdopt,
    adopted?: BlockPlace,
  ) {
    if (options === kAdopt) {
      this.#place = adopted!;
      return;
    }
    if (typeof options !== "object" || options === null) {
      throw new TypeError(
        `Cannot open SharedMemory: options must be an object, received ${
          describeValue(options)
        }`,
      );
    }
    if (options.create) {
      const size = options.size;
      if (
        typeof size !== "number" || !Number.isSafeInteger(size) || size < 1
      ) {
        throw new RangeError(
          `Cannot create SharedMemory: size must be a positive integer of bytes, received ${
            describeValue(size)
          }`,
        );
      }
      const name = options.name === undefined
        ? `psm_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`
        : checkName(options.name, "create SharedMemory");
      const r = createBlock(name, size);
      if (r === "taken") {
        throw new AlreadyExistsError(
          `Cannot create SharedMemory ${
            JSON.stringify(name)
          }: a block of that name exists`,
        );
      }
      if (r === "full" || r === "too-big") {
        throw new RangeError(
          `Cannot create SharedMemory ${JSON.stringify(name)}: ${
            r === "full"
              ? "the program has 4096 blocks already"
              : `${size} bytes do not fit the program's shared arena`
          }`,
        );
      }
      this.#place = r;
      return;
    }
    const name = checkName(options.name, "attach SharedMemory");
    const r = attachBlock(name);
    if (r === "unknown") {
      throw new NotFoundError(
        `Cannot attach SharedMemory ${
          JSON.stringify(name)
        }: no block has that name`,
      );
    }
    this.#place = r;
  }

  /** The block's name. */
  get name(): string {
    return this.#place.name;
  }

  /** The block's size in bytes. */
  get size(): number {
    return this.#place.size;
  }

  /**
   * The block's bytes, shared with every handle on it.
   *
   * @throws {ClosedError} After {@linkcode SharedMemory.close}.
   */
  get buf(): Uint8Array {
    if (this.#closed) {
      throw new ClosedError(
        `Cannot use SharedMemory ${JSON.stringify(this.name)}: it is closed`,
      );
    }
    return this.#buf ??= blockBytes(this.#place);
  }

  /** Closes this handle (the block lives on for others); idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#buf = undefined;
    releaseBlock(this.#place.entry);
  }

  /**
   * Frees the block's name: no one can attach to it any more, open handles
   * keep working, and its memory is reused once they are all closed.
   *
   * @throws {NotFoundError} If it was already unlinked.
   */
  unlink(): void {
    if (!unlinkBlock(this.#place.entry)) {
      throw new NotFoundError(
        `Cannot unlink SharedMemory ${
          JSON.stringify(this.name)
        }: it was already unlinked`,
      );
    }
  }

  /**
   * Describes this handle for the trip to another thread, which opens its
   * own handle on the same block.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    if (this.#closed) {
      throw new ClosedError(
        `Cannot pass SharedMemory ${
          JSON.stringify(this.name)
        } on: it is closed`,
      );
    }
    return { type: BLOCK_TYPE, module: import.meta.url, data: this.#place };
  }
}

registerShareable(BLOCK_TYPE, (data, ctx) => {
  const place = data as BlockPlace;
  if (!retainBlock(place.entry)) {
    throw new NotFoundError(
      `Cannot receive SharedMemory ${
        JSON.stringify(place.name)
      }: the block is gone`,
    );
  }
  const shm = new SharedMemory(kAdopt, place);
  ctx.onTaskEnd(() => shm.close());
  return shm;
});

// -- ShareableList ---------------------------------------------------------

/**
 * What a {@linkcode ShareableList} slot holds.
 *
 * @example Usage
 * ```ts
 * import { ShareableList, type ShareableValue } from "@dmp/multiprocessing/shared-memory";
 * import { strict as assert } from "node:assert";
 *
 * const values: ShareableValue[] = [1, 2n, true, "s", new Uint8Array([7]), null];
 * const list = new ShareableList(values);
 * assert.deepEqual([...list], values);
 * list.shm.close();
 * list.shm.unlink();
 * ```
 */
export type ShareableValue =
  | number
  | bigint
  | boolean
  | string
  | Uint8Array
  | null;

const K_NULL = 0;
const K_NUMBER = 1;
const K_BIGINT = 2;
const K_BOOL = 3;
const K_STRING = 4;
const K_BYTES = 5;
/** A string that is not well-formed Unicode, kept as UTF-16 code units. */
const K_UTF16 = 6;
const FORMAT = ["x", "d", "q", "?", "s", "b", "u"];

// Layout: [count][per slot: kind, capacity, length, data offset] (Int32s),
// then the slots' data, each at a multiple of 8.
const SLOT_WORDS = 4;

/**
 * How a string or bytes value is stored: its kind and bytes (a string that
 * is not well-formed keeps its UTF-16 code units, little-endian).
 */
function storedBytes(v: string | Uint8Array): [kind: number, Uint8Array] {
  if (typeof v !== "string") return [K_BYTES, v];
  if (v.isWellFormed()) return [K_STRING, encoder.encode(v)];
  const bytes = new Uint8Array(v.length * 2);
  const dv = new DataView(bytes.buffer);
  for (let k = 0; k < v.length; k++) dv.setUint16(k * 2, v.charCodeAt(k), true);
  return [K_UTF16, bytes];
}

function capacityOf(v: ShareableValue): number {
  const n = typeof v === "string" || v instanceof Uint8Array
    ? storedBytes(v)[1].length
    : 8;
  return Math.max(8, Math.ceil(n / 8) * 8);
}

function checkItem(v: unknown, what: string): ShareableValue {
  if (
    v === null || typeof v === "number" || typeof v === "bigint" ||
    typeof v === "boolean" || typeof v === "string" || v instanceof Uint8Array
  ) {
    if (typeof v === "bigint" && BigInt.asIntN(64, v) !== v) {
      throw new RangeError(
        `Cannot ${what}: ${v} does not fit a 64-bit signed integer`,
      );
    }
    return v;
  }
  throw new TypeError(
    `Cannot ${what}: a ShareableList holds numbers, bigints, booleans, strings, Uint8Arrays and null, received ${
      describeValue(v)
    }`,
  );
}

/**
 * Options of {@linkcode ShareableList}.
 *
 * @example Usage
 * ```ts
 * import { ShareableList, type ShareableListOptions } from "@dmp/multiprocessing/shared-memory";
 * import { strict as assert } from "node:assert";
 *
 * const options: ShareableListOptions = { name: "example-list-options" };
 * const list = new ShareableList([1, "two"], options);
 * assert.equal(ShareableList.attach("example-list-options").get(1), "two");
 * list.shm.close();
 * list.shm.unlink();
 * ```
 */
export interface ShareableListOptions {
  /** The name of its block; a fresh one when omitted. */
  name?: string;
}

/**
 * A fixed-length list in one shared block, as Python's
 * `shared_memory.ShareableList`: each slot holds a number, bigint, boolean,
 * string, `Uint8Array` or `null`; a string or bytes slot keeps the capacity
 * of its first value (its UTF-8 length rounded up to a multiple of 8, at
 * least 8).
 *
 * @example Usage
 * ```ts
 * import { ShareableList } from "@dmp/multiprocessing/shared-memory";
 * import { strict as assert } from "node:assert";
 *
 * const sl = new ShareableList(["abc", 2, true], { name: "doc-list" });
 * const same = ShareableList.attach("doc-list");
 * same.set(0, "xyz");
 * assert.equal(sl.get(0), "xyz");
 * assert.throws(() => sl.set(0, "far too long for this slot"), RangeError);
 * assert.equal(sl.index(2), 1);
 * same.shm.close();
 * sl.shm.close();
 * sl.shm.unlink();
 * ```
 */
export class ShareableList implements Iterable<ShareableValue> {
  readonly #shm: SharedMemory;
  readonly #n: number;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #view: DataView;

  /**
   * Makes a list in a new block.
   *
   * @param sequence The initial values (their kinds and sizes fix each
   *   slot's capacity).
   * @param options `name`.
   * @throws {TypeError} If a value is of a kind a slot cannot hold.
   * @throws {AlreadyExistsError} If the name is taken.
   */
  constructor(
    sequence: Iterable<ShareableValue>,
    options?: ShareableListOptions,
  );
  /** @internal Adopts a block that holds a list. */
  constructor(adopt: typeof kAdopt, shm: SharedMemory);
  constructor(
    sequence: Iterable<ShareableValue> | typeof kAdopt,
    options: ShareableListOptions | SharedMemory = {},
  ) {
    // A new list writes its layout, then attaches to it as an adopted one
    // does, then stores its values.
    let fresh: ShareableValue[] = [];
    if (sequence === kAdopt) {
      this.#shm = options as SharedMemory;
    } else {
      if (
        sequence === null || typeof sequence !== "object" &&
          typeof sequence !== "string" ||
        !(Symbol.iterator in Object(sequence))
      ) {
        throw new TypeError(
          `Cannot create ShareableList: sequence must be iterable, received ${
            describeValue(sequence)
          }`,
        );
      }
      const items = [...sequence].map((v) =>
        checkItem(v, "create ShareableList")
      );
      const head = Math.ceil((4 + items.length * SLOT_WORDS * 4) / 8) * 8;
      const caps = items.map(capacityOf);
      const size = head + caps.reduce((a, b) => a + b, 0);
      const opts = options as ShareableListOptions;
      this.#shm = new SharedMemory({
        create: true,
        size,
        ...(opts.name !== undefined ? { name: opts.name } : {}),
      });
      const words = new Int32Array(
        this.#shm.buf.buffer,
        this.#shm.buf.byteOffset,
        head >> 2,
      );
      words[0] = items.length;
      let at = head;
      for (let i = 0; i < items.length; i++) {
        words[1 + i * SLOT_WORDS + 1] = caps[i]!;
        words[1 + i * SLOT_WORDS + 3] = at;
        at += caps[i]!;
      }
      fresh = items;
    }
    const buf = this.#shm.buf;
    const n = new Int32Array(buf.buffer, buf.byteOffset, 1)[0]!;
    this.#n = n;
    this.#words = new Int32Array(
      buf.buffer,
      buf.byteOffset,
      1 + n * SLOT_WORDS,
    );
    this.#bytes = buf;
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    for (let i = 0; i < fresh.length; i++) this.#write(i, fresh[i]!);
  }

  /**
   * Attaches to the list in the block of that name.
   *
   * @param name The block's name.
   * @returns The list.
   * @throws {NotFoundError} If no block has that name.
   */
  static attach(name: string): ShareableList {
    return new ShareableList(kAdopt, new SharedMemory({ name }));
  }

  /** The block the list lives in. */
  get shm(): SharedMemory {
    return this.#shm;
  }

  /** The number of slots. */
  get length(): number {
    return this.#n;
  }

  /**
   * Each slot's kind and capacity, as Python's `format`: `d` number, `q`
   * bigint, `?` boolean, `x` null, `Ns` string, `Nb` bytes, `Nu` a string
   * kept as UTF-16 (N is the slot's capacity in bytes).
   */
  get format(): string {
    let out = "";
    for (let i = 0; i < this.#n; i++) {
      const k = this.#words[1 + i * SLOT_WORDS]!;
      const cap = this.#words[1 + i * SLOT_WORDS + 1]!;
      out += k === K_STRING || k === K_BYTES || k === K_UTF16
        ? `${cap}${FORMAT[k]}`
        : FORMAT[k];
    }
    return out;
  }

  #slot(index: number, what: string): number {
    if (!Number.isInteger(index)) {
      throw new TypeError(
        `Cannot ${what}: index must be an integer, received ${
          describeValue(index)
        }`,
      );
    }
    const i = index < 0 ? index + this.#n : index;
    if (i < 0 || i >= this.#n) {
      throw new RangeError(
        `Cannot ${what}: index ${index} is out of range for a list of ${this.#n}`,
      );
    }
    return i;
  }

  #write(i: number, v: ShareableValue): void {
    const base = 1 + i * SLOT_WORDS;
    const cap = this.#words[base + 1]!;
    const at = this.#words[base + 3]!;
    let kind: number, len = 8;
    if (v === null) kind = K_NULL;
    else if (typeof v === "number") {
      kind = K_NUMBER;
      this.#view.setFloat64(at, v, true);
    } else if (typeof v === "bigint") {
      kind = K_BIGINT;
      this.#view.setBigInt64(at, v, true);
    } else if (typeof v === "boolean") {
      kind = K_BOOL;
      this.#bytes[at] = v ? 1 : 0;
    } else {
      let bytes: Uint8Array;
      [kind, bytes] = storedBytes(v);
      if (bytes.length > cap) {
        throw new RangeError(
          `Cannot set item ${i}: it needs ${bytes.length} bytes but the slot holds ${cap}`,
        );
      }
      this.#bytes.set(bytes, at);
      len = bytes.length;
    }
    this.#words[base] = kind;
    this.#words[base + 2] = len;
  }

  /**
   * The value in a slot (a negative index counts from the end).
   *
   * @param index The slot.
   * @returns Its value.
   * @throws {RangeError} If the index is out of range.
   */
  get(index: number): ShareableValue {
    const i = this.#slot(index, "get an item");
    const base = 1 + i * SLOT_WORDS;
    const kind = this.#words[base]!;
    const len = this.#words[base + 2]!;
    const at = this.#words[base + 3]!;
    switch (kind) {
      case K_NUMBER:
        return this.#view.getFloat64(at, true);
      case K_BIGINT:
        return this.#view.getBigInt64(at, true);
      case K_BOOL:
        return this.#bytes[at] === 1;
      case K_STRING:
        return decoder.decode(this.#bytes.slice(at, at + len));
      case K_UTF16: {
        let s = "";
        for (let k = 0; k < len; k += 2) {
          s += String.fromCharCode(this.#view.getUint16(at + k, true));
        }
        return s;
      }
      case K_BYTES:
        return this.#bytes.slice(at, at + len);
      default:
        return null;
    }
  }

  /**
   * Stores a value in a slot: any kind, as long as it fits the slot's
   * capacity (8 bytes for a number, bigint, boolean or null).
   *
   * @param index The slot (a negative index counts from the end).
   * @param value The value.
   * @throws {RangeError} If the index is out of range or a string or bytes
   *   value is longer than the slot's capacity (Python's `ValueError`).
   * @throws {TypeError} If the value is of a kind a slot cannot hold.
   */
  set(index: number, value: ShareableValue): void {
    const i = this.#slot(index, "set an item");
    this.#write(i, checkItem(value, `set item ${index}`));
  }

  /**
   * How many slots hold `value` (strings and bytes compared by content).
   *
   * @param value The value.
   * @returns The count.
   */
  count(value: ShareableValue): number {
    let n = 0;
    for (const v of this) if (same(v, value)) n++;
    return n;
  }

  /**
   * The first slot holding `value`.
   *
   * @param value The value.
   * @returns Its index.
   * @throws {RangeError} If no slot holds it (Python's `ValueError`).
   */
  index(value: ShareableValue): number {
    for (let i = 0; i < this.#n; i++) {
      if (same(this.get(i), value)) return i;
    }
    throw new RangeError(
      `Cannot find ${describeValue(value)} in the ShareableList`,
    );
  }

  /** The values, slot by slot. */
  *[Symbol.iterator](): Iterator<ShareableValue> {
    for (let i = 0; i < this.#n; i++) yield this.get(i);
  }

  /**
   * Describes this list for the trip to another thread.
   *
   * @ignore
   */
  [kShare](): SharedHandle {
    return {
      type: LIST_TYPE,
      module: import.meta.url,
      data: this.#shm[kShare]().data,
    };
  }
}

function same(a: ShareableValue, b: ShareableValue): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  return a === b || (Number.isNaN(a) && Number.isNaN(b));
}

registerShareable(LIST_TYPE, (data, ctx) => {
  const place = data as BlockPlace;
  if (!retainBlock(place.entry)) {
    throw new NotFoundError(
      `Cannot receive ShareableList ${
        JSON.stringify(place.name)
      }: the block is gone`,
    );
  }
  const shm = new SharedMemory(kAdopt, place);
  ctx.onTaskEnd(() => shm.close());
  return new ShareableList(kAdopt, shm);
});

// -- Demo ------------------------------------------------------------------

async function demo(): Promise<void> {
  (await import("./_demo.ts")).demoStart(
    "shared_memory",
    "One process writes into a named block, another attaches by name and prints what it reads.",
  );
  const { Process } = await import("./cube.ts");
  const shm = new SharedMemory({ name: "demo-block", create: true, size: 64 });
  const writer = new Process({
    name: "writer",
    target: async (url: string) => {
      const { SharedMemory } = await import(url);
      const s = new SharedMemory({ name: "demo-block" });
      const text = new TextEncoder().encode("hello from the writer");
      s.buf.set(text);
      s.buf[63] = text.length;
      console.log(`writer: wrote ${text.length} bytes into "demo-block"`);
      s.close();
    },
    args: [import.meta.url],
  });
  writer.start();
  await writer.join();
  const reader = new Process({
    name: "reader",
    target: async (url: string) => {
      const { SharedMemory } = await import(url);
      const s = new SharedMemory({ name: "demo-block" });
      const text = decoder.decode(s.buf.slice(0, s.buf[63]));
      console.log(`reader: attached to "demo-block" and read: ${text}`);
      s.close();
    },
    args: [import.meta.url],
  });
  reader.start();
  await reader.join();
  shm.close();
  shm.unlink();
}

if (isMainModule(import.meta)) await demo();

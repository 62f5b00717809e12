/**
 * `transfer()`: hands a buffer to a task instead of copying it (piscina's
 * `Piscina.move()`). The marker travels as a shared-object handle whose
 * buffer goes in the message's transfer list, so the task gets the same
 * memory and the sender's buffer is detached.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import {
  kShare,
  registerShareable,
  type ShareContext,
  type SharedHandle,
} from "../_core/share.ts";

const TRANSFER_TYPE = "pool.transfer";

/**
 * What {@linkcode transfer} moves: an `ArrayBuffer` or a view of one.
 *
 * @example Usage
 * ```ts
 * import { Pool, transfer, type Transferred } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 1 });
 * const bytes = new Uint8Array([1, 2, 3]);
 * const moved: Transferred = transfer(bytes);
 * const sum = await pool.apply((b: Uint8Array) => b.reduce((s, x) => s + x, 0), [moved as Uint8Array]);
 * assert.equal(sum, 6);
 * assert.equal(bytes.byteLength, 0); // moved, not copied
 * ```
 */
export type Transferred = ArrayBuffer | ArrayBufferView;

class TransferMarker {
  readonly #value: Transferred;

  constructor(value: Transferred) {
    this.#value = value;
  }

  [kShare](ctx: ShareContext): SharedHandle {
    const buffer = this.#value instanceof ArrayBuffer
      ? this.#value
      : this.#value.buffer;
    if (buffer.byteLength === 0 && !(this.#value instanceof ArrayBuffer)) {
      // A detached view (moved already) cannot move again.
      throw new TypeError(
        "Cannot transfer the buffer: it was transferred already",
      );
    }
    if (!ctx.transfer.includes(buffer as ArrayBuffer)) {
      ctx.transfer.push(buffer as ArrayBuffer);
    }
    return { type: TRANSFER_TYPE, module: import.meta.url, data: this.#value };
  }
}

registerShareable(TRANSFER_TYPE, (data) => data);

/**
 * Marks a buffer to be moved into a task (as an argument or item) or out of
 * one (as its result) instead of copied: the receiver gets the same memory,
 * the sender's buffer is detached (its `byteLength` becomes 0). A job with a
 * transferred argument is only ever given to an idle worker (it could not be
 * taken back from a busy one).
 *
 * @example Usage
 * ```ts
 * import { Pool, transfer } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * await using pool = new Pool({ workers: 1 });
 * const bytes = new Uint8Array(1024).fill(1);
 * const sum = await pool.apply(
 *   (b: Uint8Array) => b.reduce((a, x) => a + x, 0),
 *   [transfer(bytes)],
 * );
 * assert.equal(sum, 1024);
 * assert.equal(bytes.byteLength, 0); // moved, not copied
 * ```
 *
 * @typeParam T The buffer's type.
 * @param value An `ArrayBuffer` or a typed array / `DataView` over one (not
 *   a `SharedArrayBuffer`: that is shared already).
 * @returns A marker that arrives as `value` itself.
 * @throws {TypeError} If `value` is not a transferable buffer.
 */
export function transfer<T extends Transferred>(value: T): T {
  const buffer = value instanceof ArrayBuffer
    ? value
    : ArrayBuffer.isView(value)
    ? value.buffer
    : undefined;
  if (!(buffer instanceof ArrayBuffer)) {
    throw new TypeError(
      `Cannot transfer: expected an ArrayBuffer or a view of one, received ${
        describeValue(value)
      }`,
    );
  }
  return new TransferMarker(value) as unknown as T;
}

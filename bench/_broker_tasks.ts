/**
 * The tasks of the broker comparison (`bench/compare_broker.ts`): the
 * module its worker processes load. The task is as trivial as BullMQ's
 * (`bench/node/bullmq.mjs`), so both measure the queue, not the work.
 *
 * @module
 */

/**
 * Doubles a number.
 *
 * @param x The number.
 * @returns `x * 2`.
 */
export function double(x: number): number {
  return x * 2;
}

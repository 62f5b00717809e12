/**
 * The `broker` and `queue` options of `Pool`: their checks, the refusal of
 * the options that belong to the workers' side, and the making of the
 * pool's broker engine.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { BrokerDispatcher } from "./dispatcher.ts";
import { checkBroker, checkQueue } from "./keys.ts";

/** The options a broker pool is given (a subset of `PoolOptions`). */
export interface BrokerPoolOptions {
  /** The broker's URL. */
  broker?: string | URL;
  /** The queue's name. */
  queue?: string;
  /** Refused: the workers' option. */
  workers?: number;
  /** Refused: the workers' option. */
  module?: string | URL;
  /** Refused: the workers' option. */
  maxTasksPerWorker?: number;
  /** Refused: the workers' option. */
  initializer?: unknown;
  /** Refused: the workers' option. */
  initArgs?: readonly unknown[];
  /** Refused: the workers' option. */
  memoryLimitMb?: number;
}

/** Options that the worker processes own, and where they are given. */
const WORKER_SIDE = {
  workers: "--workers N of `deno task worker`",
  module: "--module of `deno task worker`",
  maxTasksPerWorker: "the workers",
  initializer: "the workers' module",
  initArgs: "the workers' module",
  memoryLimitMb: "the workers",
} as const;

/**
 * Checks a broker pool's options and makes its engine (it connects on the
 * pool's first call).
 *
 * @param options The pool's options, `broker` given.
 * @param taskTimeout The checked task timeout in ms (`Infinity`: none).
 * @returns The engine.
 * @throws {TypeError} If `broker` or `queue` is invalid, or an option of
 *   the workers' side is given.
 */
export function brokerDispatcher(
  options: BrokerPoolOptions,
  taskTimeout: number,
): BrokerDispatcher {
  const broker = checkBroker(options.broker, "create Pool");
  const queue = checkQueue(options.queue, "create Pool");
  for (const [key, where] of Object.entries(WORKER_SIDE)) {
    const value = options[key as keyof typeof WORKER_SIDE];
    if (value !== undefined) {
      throw new TypeError(
        `Cannot create Pool: ${key} is not an option of a broker pool (the worker processes run the tasks: give it to ${where}), received ${
          describeValue(value)
        }`,
      );
    }
  }
  return new BrokerDispatcher({ broker, queue, taskTimeout });
}

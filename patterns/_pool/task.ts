/**
 * Tasks as the caller gives them (a self-contained function or the name of
 * a module export) and as they travel to a worker: the public task types,
 * and the checks and encodings that `Process` and `Pool` share.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import { encodeShared } from "../_core/share.ts";
import { taskSource } from "../_core/task.ts";
import type { TaskDef } from "./protocol.ts";

/**
 * Any function: what a task given as a function may be (it must be
 * self-contained: its source is compiled again in the worker).
 *
 * @example Usage
 * ```ts
 * import type { TaskFunction } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const cube: TaskFunction = (x: number) => x ** 3;
 * assert.equal(cube(2), 8);
 * ```
 */
// deno-lint-ignore no-explicit-any
export type TaskFunction = (...args: any[]) => unknown;

/**
 * The names of a module's exported functions: what a task may be when the
 * pool or process is given that module.
 *
 * @typeParam M The module's type, e.g. `typeof import("./tasks.ts")`.
 *
 * @example Usage
 * ```ts
 * import type { TaskName } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * type Tasks = { cube(x: number): number; version: string };
 * const name: TaskName<Tasks> = "cube"; // "version" is not a function: refused
 * assert.equal(name, "cube");
 * ```
 */
export type TaskName<M> =
  & {
    [K in keyof M]: M[K] extends TaskFunction ? K : never;
  }[keyof M]
  & string;

/**
 * The awaited result of a module export or function.
 *
 * @typeParam F The function's type.
 *
 * @example Usage
 * ```ts
 * import type { ResultOf } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const r: ResultOf<(x: number) => Promise<string>> = "awaited";
 * assert.equal(typeof r, "string");
 * ```
 */
export type ResultOf<F> = F extends TaskFunction ? Awaited<ReturnType<F>>
  : never;
/**
 * The first parameter of a module export or function: a map item.
 *
 * @typeParam F The function's type.
 *
 * @example Usage
 * ```ts
 * import type { ArgOf } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const item: ArgOf<(x: number) => number> = 3;
 * assert.equal(item, 3);
 * ```
 */
export type ArgOf<F> = F extends (arg: infer A, ...rest: never[]) => unknown ? A
  : never;
/**
 * The parameters of a module export or function: a starmap argument list.
 *
 * @typeParam F The function's type.
 *
 * @example Usage
 * ```ts
 * import type { ArgsOf } from "@dmp/multiprocessing/cube";
 * import { strict as assert } from "node:assert";
 *
 * const args: ArgsOf<(a: number, b: string) => void> = [1, "x"];
 * assert.equal(args.length, 2);
 * ```
 */
export type ArgsOf<F> = F extends (...args: infer A) => unknown ? A : never;

/**
 * Defines a task for the worker: a name as an export, a function by its
 * source.
 *
 * @param task A function or an export's name.
 * @param id The task's id in its pool (0 for a process's target).
 * @param what The action, for error messages ("create Pool").
 * @returns The definition.
 * @throws {TypeError} If the name is empty, or `task` is neither a string
 *   nor a function whose source can be sent.
 */
export function taskDef(
  task: unknown,
  id: number,
  what: string,
): TaskDef {
  if (typeof task === "string") {
    if (task === "") {
      throw new TypeError(`Cannot ${what}: the task name is empty`);
    }
    return [id, "export", task];
  }
  return [id, "src", taskSource(task, what)];
}

/**
 * Checks a `module` option: an absolute URL string or a `URL`.
 *
 * @param module The option's value.
 * @param what The action, for error messages.
 * @returns The URL's `href`, or `undefined` if no module was given.
 * @throws {TypeError} If it is neither, or the string is not absolute.
 */
export function checkModule(
  module: unknown,
  what: string,
): string | undefined {
  if (module === undefined) return undefined;
  if (module instanceof URL) return module.href;
  if (typeof module === "string") {
    try {
      return new URL(module).href;
    } catch {
      throw new TypeError(
        `Cannot ${what}: module must be an absolute URL (e.g. new URL("./tasks.ts", import.meta.url)), received ${
          describeValue(module)
        }`,
      );
    }
  }
  throw new TypeError(
    `Cannot ${what}: module must be a string or URL, received ${
      describeValue(module)
    }`,
  );
}

/** Arguments encoded for `postMessage`; see {@linkcode encodeArgs}. */
export interface EncodedArgs {
  /** The value to post. */
  value: unknown;
  /** Whether it holds shared-object handles the worker must decode. */
  handles: boolean;
  /** What to transfer with it. */
  transfer: Transferable[];
  /** Hooks to run once it was posted. */
  after: Array<() => void>;
}

/**
 * Encodes task arguments (or items) for a worker, shared objects as handles.
 *
 * @param value The arguments.
 * @returns The value to post, its transfer list and after-send hooks.
 */
export function encodeArgs(value: unknown): EncodedArgs {
  const transfer: Transferable[] = [];
  const e = encodeShared(value, transfer);
  return { value: e.value, handles: e.handles, transfer, after: e.afterSend };
}

/**
 * Self-contained functions sent to another thread as source: checking that
 * a function can travel, compiling it there, and explaining the error a
 * function that used an outer variable raises.
 *
 * @module
 */

import { describeValue, type ErrorInfo, errorInfo } from "./errors.ts";

/**
 * A task function as sent to a worker: its source text.
 */
export type TaskSource = string;

/**
 * Turns a self-contained function into the source text a worker compiles.
 *
 * @param fn The function.
 * @param what The call, for the error message.
 * @returns Its source.
 * @throws {TypeError} If `fn` is not a function or is a native/bound one.
 */
export function taskSource(fn: unknown, what = "run task"): TaskSource {
  if (typeof fn !== "function") {
    throw new TypeError(
      `Cannot ${what}: the task must be a function or the name of an export of the module, received ${
        describeValue(fn)
      }`,
    );
  }
  const src = Function.prototype.toString.call(fn);
  if (/\{\s*\[native code\]\s*\}\s*$/.test(src)) {
    throw new TypeError(
      `Cannot ${what}: a native or bound function cannot be sent to a worker, received ${
        fn.name || "an anonymous function"
      }`,
    );
  }
  return src;
}

/**
 * Compiles a task's source in the current thread, as a function expression
 * or, failing that, as a method written in shorthand (`m(x) {…}`).
 *
 * @param source The function's source text.
 * @returns The function.
 * @throws {SyntaxError} If the source is not a function.
 */
export function compileTask(
  source: TaskSource,
): (...args: unknown[]) => unknown {
  let fn: unknown;
  try {
    fn = new Function(`"use strict"; return (${source});`)();
  } catch {
    try {
      const holder = new Function(`"use strict"; return ({ ${source} });`)();
      fn = Object.values(holder)[0];
    } catch {
      throw new SyntaxError(
        `Cannot compile the task in the worker: its source is not a function expression: ${
          source.slice(0, 80)
        }`,
      );
    }
  }
  if (typeof fn !== "function") {
    throw new SyntaxError(
      `Cannot compile the task in the worker: its source did not evaluate to a function`,
    );
  }
  return fn as (...args: unknown[]) => unknown;
}

/**
 * Adds the likely cause to an error thrown by a task sent as source: a
 * `ReferenceError` there almost always means the function used a variable
 * from its enclosing scope, which does not exist in the worker.
 *
 * @param error What the task threw.
 * @param fromSource Whether the task was a function sent as source.
 * @returns The error's description, explained where that helps.
 */
export function explainTaskError(
  error: unknown,
  fromSource: boolean,
): ErrorInfo {
  const info = errorInfo(error);
  if (
    fromSource && info.name === "ReferenceError" &&
    / is not defined$/.test(info.message)
  ) {
    const name = info.message.replace(/ is not defined$/, "");
    info.message =
      `${info.message}: a task function is sent to the worker as ` +
      `source text and must not use variables from its enclosing scope ` +
      `(pass ${name} as an argument, or import it inside the task)`;
  }
  return info;
}

/**
 * `MP_DEBUG=1`: one line to stderr per worker start, exit (code or cause),
 * restart, task timeout, and manager connection or refused key. The
 * variable is read only where env access to it is granted already: never a
 * permission prompt, and off otherwise.
 *
 * @module
 */

import { currentThreadName, perThread } from "./runtime.ts";

function enabled(): boolean {
  return perThread("debug", () => {
    try {
      const state = Deno.permissions.querySync({
        name: "env",
        variable: "MP_DEBUG",
      }).state;
      if (state !== "granted") return { on: false };
      const v = Deno.env.get("MP_DEBUG");
      return { on: v !== undefined && v !== "" && v !== "0" };
    } catch {
      return { on: false };
    }
  }).on;
}

/**
 * Writes one debug line to stderr when `MP_DEBUG` is set (and readable).
 *
 * @example Usage
 * ```ts ignore
 * import { debug } from "./debug.ts";
 *
 * debug("Pool-1-worker-1: started");
 * ```
 *
 * @param line What happened.
 */
export function debug(line: string): void {
  if (!enabled()) return;
  const t = new Date().toISOString().slice(11, 23);
  console.error(`[mp ${t} ${currentThreadName()}] ${line}`);
}

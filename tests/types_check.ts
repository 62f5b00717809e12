/**
 * Compile-time checks, run by `deno task check` (never executed): wrong
 * `args` for a `Process` target, wrong task names and item types for a
 * `Pool` with a typed module, and wrong `Queue` item and `Pipe` message
 * types are type errors.
 * Each `@ts-expect-error` line fails the check if it stops being an error.
 *
 * @module
 */

import { type Pool, Process } from "../patterns/cube.ts";
import type { Queue } from "../patterns/queue.ts";
import { Pipe } from "../patterns/pipe.ts";
import type * as Tasks from "./fixtures/tasks.ts";

export function processArgs(): void {
  new Process({
    target: (n: number, s: string) => s.repeat(n),
    args: [2, "a"],
  });
  // @ts-expect-error: the argument is not a number
  new Process({ target: (n: number) => n, args: ["not a number"] });
  // @ts-expect-error: too many arguments
  new Process({ target: (n: number) => n, args: [1, 2] });
}

export async function poolTasks(pool: Pool<typeof Tasks>): Promise<void> {
  const cubes: number[] = await pool.map("cube", [1, 2, 3]);
  void cubes;
  // @ts-expect-error: no such export
  await pool.map("noSuchTask", [1]);
  // @ts-expect-error: cube takes numbers
  await pool.map("cube", ["x"]);
  // @ts-expect-error: add takes two numbers
  await pool.starmap("add", [["a", 1]]);
  const doubled: number[] = await pool.map((x: number) => x * 2, [1, 2]);
  void doubled;
  // @ts-expect-error: the items do not match the task's parameter
  await pool.map((x: number) => x * 2, ["a"]);
}

export function queueItems(q: Queue<number>): void {
  q.putNowait(1);
  // @ts-expect-error: a Queue<number> takes numbers
  q.putNowait("x");
  const n: number = q.getNowait();
  void n;
}

export async function pipeMessages(): Promise<void> {
  const [a, b] = Pipe<{ n: number }>();
  a.send({ n: 1 });
  // @ts-expect-error: a Pipe<{ n: number }> carries { n: number }
  a.send("x");
  const got: { n: number } = await b.recv();
  const gotSync: { n: number } = b.recvSync();
  // @ts-expect-error: recv gives the pipe's message type, not a string
  const wrong: string = await b.recv();
  void got, gotSync, wrong;
  a.close();
  b.close();
}

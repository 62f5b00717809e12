/**
 * Every demo, and every demo's `--help`, runs in a pseudo-terminal with no
 * permission prompt and exits 0 (a prompt only shows on a terminal, which
 * piped test output never is). Uses util-linux `script`; skipped without it.
 *
 * @module
 */

import { strict as assert } from "node:assert";
import { hasScript, mpTest, runFromRoot } from "./_helpers.ts";

Deno.test.sanitizer?.({ ops: true, resources: true });

const TASKS = [
  "cube",
  "cube --pool 2 --items 64",
  "pipe",
  "queue",
  "sync",
  "value",
  "array",
  "shared_memory",
  "manager",
];

const ready = hasScript();

for (const task of TASKS) {
  for (const args of ["", " --help"]) {
    if (args && task.includes(" ")) continue;
    mpTest(
      `deno task ${task}${args} runs in a terminal with no prompt`,
      async () => {
        const out = await runFromRoot("script", [
          "-qec",
          `${Deno.execPath()} task ${task}${args}`,
          "/dev/null",
        ]);
        const text = out.stdout + out.stderr;
        assert.doesNotMatch(text, /Deno requests|Allow\?/, text);
        assert.equal(out.code, 0, text);
      },
      { ignore: !ready },
    );
  }
}

mpTest(
  "a demo that fails prints one clear line and exits 1, with no stack",
  async () => {
    const out = await runFromRoot(Deno.execPath(), [
      "task",
      "cube",
      "--items",
      "5",
    ]);
    const lines = out.stderr.trim().split("\n")
      .filter((l) => !l.startsWith("Task "));
    assert.equal(out.code, 1);
    assert.deepEqual(lines, [
      "error: TypeError: --items sizes the Pool map: give --pool N with it",
    ]);
  },
);

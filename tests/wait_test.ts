import { strict as assert } from "node:assert";
import {
  NEVER_SPIN,
  SpinPolicy,
  waitAsync,
  waitSync,
} from "../patterns/_core/wait.ts";
import { countSpinning } from "../patterns/_core/runtime.ts";
import { Process } from "../patterns/cube.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

function word(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4));
}

// -- SpinPolicy --

mpTest(
  "SpinPolicy.spinWhile() returns at once when the word already differs",
  () => {
    const w = word();
    Atomics.store(w, 0, 1);
    const policy = new SpinPolicy(20);
    assert.equal(policy.spinWhile(w, 0, 0), true);
    assert.equal(policy.budget, 20);
  },
);

mpTest(
  "SpinPolicy halves its budget after each miss and probes with a full spin every 16th",
  () => {
    const w = word();
    const policy = new SpinPolicy(16);
    const budgets: number[] = [];
    for (let i = 0; i < 16; i++) {
      assert.equal(policy.spinWhile(w, 0, 0), false);
      budgets.push(policy.budget);
    }
    assert.deepEqual(budgets.slice(0, 5), [8, 4, 2, 1, 0.5]);
    assert.equal(budgets[10], 0);
    assert.equal(budgets[15], 16, "the 16th miss in a row restores the budget");
  },
);

mpTest(
  "SpinPolicy restores its budget after a spin that caught the change",
  async () => {
    const policy = new SpinPolicy(2000);
    const budget = (): number => policy.budget;
    assert.equal(policy.spinWhile(word(), 0, 0), false);
    assert.equal(budget(), 1000);
    // A worker bumps `w` about every 50 µs until told to stop (`stop`), while
    // this thread spins on it, until one spin catches a bump (a thread that
    // saw itself preempted skips spinning for 50 ms, so allow 2 s).
    const w = word();
    const stop = word();
    const p = new Process({
      target: (w: Int32Array, stop: Int32Array) => {
        const end = performance.now() + 10_000;
        while (Atomics.load(stop, 0) === 0 && performance.now() < end) {
          const at = performance.now() + 0.05;
          while (performance.now() < at);
          Atomics.add(w, 0, 1);
        }
      },
      args: [w, stop],
    });
    p.start();
    while (Atomics.load(w, 0) === 0) await waitAsync(w, 0, 0, { timeout: 50 });
    let caught = false;
    const end = performance.now() + 2000;
    while (!caught && performance.now() < end) {
      // A miss first (on a word nobody changes), so that a catch shows as
      // the budget going back up; a bump already there when the spin starts
      // returns at once and leaves the budget as it was.
      if (budget() === 2000) policy.spinWhile(word(), 0, 0);
      const before = budget();
      const r = policy.spinWhile(w, 0, Atomics.load(w, 0));
      caught = r && before < 2000 && budget() === 2000;
      if (!caught) await new Promise((r) => setTimeout(r, 0));
    }
    Atomics.store(stop, 0, 1);
    await p.join();
    assert.ok(caught, "no spin caught a bump in 2 s");
  },
);

mpTest("SpinPolicy leaves the program's spinning count as it found it", () => {
  // countSpinning(false) on a thread that is not spinning only reads.
  const before = countSpinning(false);
  const w = word();
  const policy = new SpinPolicy(5);
  for (let i = 0; i < 20; i++) policy.spinWhile(w, 0, 0);
  assert.equal(countSpinning(false), before);
});

mpTest(
  "a worker terminated while it spins is counted out of the spinning threads",
  async () => {
    const before = countSpinning(false);
    const w = word();
    const p = new Process({
      target: async (w: Int32Array, waitModule: string) => {
        const { SpinPolicy } = await import(waitModule);
        // Spin for up to 100 s on a word only the test changes.
        while (Atomics.load(w, 0) === 0) new SpinPolicy(1e8).spinWhile(w, 0, 0);
      },
      args: [w, new URL("../patterns/_core/wait.ts", import.meta.url).href],
    });
    p.start();
    const end = performance.now() + 5000;
    while (countSpinning(false) === before && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(countSpinning(false), before + 1, "the worker never spun");
    p.terminate();
    assert.equal(countSpinning(false), before);
    // Let the abandoned thread stop spinning and end.
    Atomics.store(w, 0, 1);
    await p.join();
  },
);

mpTest("NEVER_SPIN does not spin", () => {
  const w = word();
  assert.equal(NEVER_SPIN.spinWhile(w, 0, 0), false);
  assert.equal(NEVER_SPIN.budget, 0);
});

// -- waitSync / waitAsync --

mpTest(
  "waitSync() tells not-equal, timed-out, and a wake by another thread",
  async () => {
    const w = word();
    Atomics.store(w, 0, 1);
    assert.equal(waitSync(w, 0, 0, 10), "not-equal");
    Atomics.store(w, 0, 0);
    assert.equal(waitSync(w, 0, 0, 1, NEVER_SPIN), "timed-out");
    const p = new Process({
      target: (w: Int32Array) => {
        Atomics.store(w, 0, 7);
        Atomics.notify(w, 0);
      },
      args: [w],
    });
    p.start();
    await waitAsync(w, 0, 0, { timeout: 5000 });
    await p.join();
    assert.equal(Atomics.load(w, 0), 7);
  },
);

mpTest(
  "waitAsync() honours timeout and signal while the word stays put",
  async () => {
    const w = word();
    assert.equal(await waitAsync(w, 0, 0, { timeout: 5 }), "timed-out");
    const ac = new AbortController();
    const reason = new Error("stop");
    setTimeout(() => ac.abort(reason), 5);
    await assert.rejects(waitAsync(w, 0, 0, { signal: ac.signal }), reason);
  },
);

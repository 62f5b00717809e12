import { strict as assert } from "node:assert";
import { SpinPolicy, waitAsync, waitSync } from "../patterns/_core/wait.ts";
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
  "an adaptive SpinPolicy halves its budget after each miss and probes with a full spin every 16th",
  () => {
    const w = word();
    const policy = new SpinPolicy(16, { adaptive: true });
    const budgets: number[] = [];
    for (let i = 0; i < 16; i++) {
      assert.equal(policy.spinWhile(w, 0, 0), false);
      budgets.push(policy.budget);
    }
    assert.deepEqual(budgets.slice(0, 6), [8, 4, 2, 1, 0, 0]);
    assert.equal(budgets[14], 0);
    assert.equal(budgets[15], 16, "the 16th miss in a row restores the budget");
  },
);

mpTest(
  "an adaptive SpinPolicy restores its budget after a spin that caught the change",
  async () => {
    // About 2 ms of loads: even halved a few times, a spin outlasts the
    // worker's 50 µs between bumps.
    const FULL = 200_000;
    const policy = new SpinPolicy(FULL, { adaptive: true });
    const budget = (): number => policy.budget;
    assert.equal(policy.spinWhile(word(), 0, 0), false);
    assert.equal(budget(), FULL / 2);
    // A worker bumps `w` about every 50 µs until told to stop (`stop`), while
    // this thread spins on it, until one spin catches a bump (allow 2 s).
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
      if (budget() === FULL) policy.spinWhile(word(), 0, 0);
      const before = budget();
      const r = policy.spinWhile(w, 0, Atomics.load(w, 0));
      caught = r && before < FULL && budget() === FULL;
      if (!caught) await new Promise((r) => setTimeout(r, 0));
    }
    Atomics.store(stop, 0, 1);
    await p.join();
    assert.ok(caught, "no spin caught a bump in 2 s");
  },
);

mpTest("a fixed SpinPolicy always spins its full budget", () => {
  const policy = new SpinPolicy(100);
  for (let i = 0; i < 20; i++) {
    assert.equal(policy.spinWhile(word(), 0, 0), false);
    assert.equal(policy.budget, 100);
  }
});

mpTest("a SpinPolicy of 0 loads does not spin", () => {
  const none = new SpinPolicy(0);
  assert.equal(none.spinWhile(word(), 0, 0), false);
  assert.equal(none.budget, 0);
});

// -- waitSync / waitAsync --

mpTest(
  "waitSync() tells not-equal, timed-out, and a wake by another thread",
  async () => {
    const w = word();
    Atomics.store(w, 0, 1);
    assert.equal(waitSync(w, 0, 0, 10), "not-equal");
    Atomics.store(w, 0, 0);
    assert.equal(waitSync(w, 0, 0, 1, new SpinPolicy(0)), "timed-out");
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

mpTest("a join timeout longer than setTimeout's range waits", async () => {
  const p = new Process({
    target: () => new Promise((r) => setTimeout(r, 50)),
  });
  p.start();
  // 2^31 ms and more would fire at once if handed to setTimeout.
  assert.equal(await p.join({ timeout: 3e9 }), 0);
});

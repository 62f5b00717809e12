import { strict as assert } from "node:assert";
import { Pool, RemoteError } from "../patterns/cube.ts";
import { EmptyError, Queue } from "../patterns/queue.ts";
import { type ErrorInfo, reviveError } from "../patterns/_core/errors.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

/** Awaits `p`, which must reject with a `RemoteError`, and returns it. */
async function remoteError(p: Promise<unknown>): Promise<RemoteError> {
  const e = await p.then(
    () => assert.fail("the call should reject"),
    (e: unknown) => e,
  );
  assert.ok(e instanceof RemoteError, `not a RemoteError: ${e}`);
  return e;
}

// -- RemoteError.cause, built directly --

mpTest("RemoteError revives its info as cause, keeping its fields", () => {
  const info: ErrorInfo = {
    name: "RangeError",
    message: "out of range: 7",
    stack: "RangeError: out of range: 7\n    at task (worker.ts:1:1)",
  };
  const e = new RemoteError(info, { worker: "Pool-1-worker-1", index: 2 });
  assert.equal(e.name, "RemoteError");
  assert.equal(e.message, info.message);
  assert.equal(e.remoteName, "RangeError");
  assert.equal(e.remoteStack, info.stack);
  assert.equal(e.worker, "Pool-1-worker-1");
  assert.equal(e.index, 2);
  assert.ok(e.cause instanceof RangeError);
  assert.equal(e.cause.name, "RangeError");
  assert.equal(e.cause.message, info.message);
  assert.equal(e.cause.stack, info.stack);
});

mpTest("RemoteError keeps a cause given in its options", () => {
  const cause = new Error("original");
  const e = new RemoteError(
    { name: "TypeError", message: "bad", stack: "" },
    { cause },
  );
  assert.equal(e.cause, cause);
});

mpTest("RemoteError.cause is the built-in class of the remote name", () => {
  const builtins = [
    Error,
    EvalError,
    RangeError,
    ReferenceError,
    SyntaxError,
    TypeError,
    URIError,
    AggregateError,
  ];
  for (const Ctor of builtins) {
    const stack = `${Ctor.name}: m\n    at x`;
    const e = new RemoteError({ name: Ctor.name, message: "m", stack });
    assert.ok(e.cause instanceof Ctor, Ctor.name);
    assert.equal(e.cause.name, Ctor.name);
    assert.equal(e.cause.message, "m");
    assert.equal(e.cause.stack, stack);
  }
});

mpTest("RemoteError.cause is a DOMException for DOMException names", () => {
  for (const name of ["TimeoutError", "AbortError", "DataCloneError"]) {
    const e = new RemoteError({ name, message: "m", stack: `${name}: m` });
    assert.ok(e.cause instanceof DOMException, name);
    assert.equal(e.cause.name, name);
    assert.equal(e.cause.message, "m");
  }
});

mpTest("RemoteError.cause of a nested RemoteError has no cause itself", () => {
  const e = new RemoteError({ name: "RemoteError", message: "m", stack: "s" });
  assert.ok(e.cause instanceof RemoteError);
  assert.equal(e.cause.message, "m");
  assert.equal(e.cause.stack, "s");
  assert.equal(e.cause.cause, undefined);
});

mpTest(
  "RemoteError.cause of an unknown name is an Error with that name",
  () => {
    const e = new RemoteError({
      name: "MyErr",
      message: "m",
      stack: "MyErr: m",
    });
    assert.equal(Object.getPrototypeOf(e.cause), Error.prototype);
    assert.ok(e.cause instanceof Error);
    assert.equal(e.cause.name, "MyErr");
    assert.equal(e.cause.message, "m");
    assert.equal(e.cause.stack, "MyErr: m");
  },
);

mpTest("reviveError() prefers the classes it is given", () => {
  class Special extends Error {
    override name = "EmptyError";
  }
  const e = reviveError({ name: "EmptyError", message: "m", stack: "" }, {
    EmptyError: Special,
  });
  assert.ok(e instanceof Special);
  assert.ok(
    reviveError({ name: "EmptyError", message: "m", stack: "" }) instanceof
      EmptyError,
  );
});

// -- RemoteError.cause, from a Pool task --

mpTest("a task's RangeError is RemoteError.cause as a RangeError", async () => {
  await using pool = new Pool({ workers: 1 });
  const e = await remoteError(pool.apply(() => {
    throw new RangeError("too far: 9");
  }));
  assert.equal(e.remoteName, "RangeError");
  assert.ok(e.cause instanceof RangeError);
  assert.equal(e.cause.message, "too far: 9");
  assert.equal(e.cause.message, e.message);
  assert.equal(e.cause.stack, e.remoteStack);
});

mpTest(
  "a map item's TypeError is RemoteError.cause as a TypeError",
  async () => {
    await using pool = new Pool({ workers: 1 });
    const e = await remoteError(pool.map((x: number) => {
      if (x === 2) throw new TypeError(`bad item ${x}`);
      return x;
    }, [0, 1, 2, 3]));
    assert.equal(e.index, 2);
    assert.ok(e.cause instanceof TypeError);
    assert.equal(e.cause.message, "bad item 2");
  },
);

mpTest(
  "a task's EmptyError from an empty Queue is RemoteError.cause as EmptyError",
  async () => {
    await using pool = new Pool({ workers: 1 });
    const q = new Queue<number>();
    const e = await remoteError(pool.apply((q: Queue<number>) => {
      return q.getNowait();
    }, [q]));
    assert.equal(e.remoteName, "EmptyError");
    assert.ok(e.cause instanceof EmptyError);
    assert.equal(e.cause.name, "EmptyError");
    assert.equal(e.cause.message, e.message);
    q.close();
  },
);

mpTest(
  "a task's own error class is RemoteError.cause as an Error with its name",
  async () => {
    await using pool = new Pool({ workers: 1 });
    const e = await remoteError(pool.apply(() => {
      class MyErr extends Error {
        override name = "MyErr";
      }
      throw new MyErr("mine");
    }));
    assert.equal(e.remoteName, "MyErr");
    assert.ok(e.cause instanceof Error);
    assert.equal(e.cause.name, "MyErr");
    assert.equal(e.cause.message, "mine");
  },
);

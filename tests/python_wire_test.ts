import { strict as assert } from "node:assert";
import {
  AuthenticationError,
  connect,
  type Connection,
  EOFError,
  listen,
} from "../patterns/pipe.ts";
import { decodePickle } from "../patterns/_conn/pickle_read.ts";
import { encodePickle } from "../patterns/_conn/pickle_write.ts";
import { FrameStream } from "../patterns/_conn/frame_stream.ts";
import { mpTest } from "./_helpers.ts";
import { createHmac } from "node:crypto";

Deno.test.sanitizer({ ops: true, resources: true });

const KEY = "python-wire-test-key";
const PEER = new URL("./fixtures/conn_peer.py", import.meta.url).pathname;

/** The Python 3 interpreters on PATH, one per version. */
function findPythons(): { cmd: string; version: string }[] {
  const found = new Map<string, string>();
  for (const cmd of ["python3", "python3.12", "python3.13", "python3.14"]) {
    try {
      const out = new Deno.Command(cmd, {
        args: ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      const version = new TextDecoder().decode(out.stdout).trim();
      if (out.success && /^3\.\d+$/.test(version) && !found.has(version)) {
        found.set(version, cmd);
      }
    } catch {
      // not installed
    }
  }
  return [...found].map(([version, cmd]) => ({ cmd, version }));
}

const PYTHONS = findPythons();
if (PYTHONS.length === 0) {
  console.log(
    "python_wire_test: python3 not found, the tests against Python are skipped",
  );
}

function hmac(digest: string, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac(digest, KEY).update(data).digest());
}

function concat(prefix: string, mac: Uint8Array): Uint8Array {
  return new Uint8Array([...new TextEncoder().encode(prefix), ...mac]);
}

const b64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const bytes = (...b: number[]) => new Uint8Array(b);

// -- Pickles, without Python ----------------------------------------------------------

mpTest(
  "encodePickle/decodePickle: plain data round-trips with SPEC's mapping",
  () => {
    const cyclic: Record<string, unknown> = { name: "loop" };
    cyclic.self = cyclic;
    const shared = [1];
    const values: [unknown, unknown][] = [
      [null, null],
      [true, true],
      [0, 0],
      [-0, 0], // integer-valued: an int
      [2 ** 31, 2 ** 31],
      [-(2 ** 31) - 1, -(2 ** 31) - 1],
      [2 ** 53 + 2, 2n ** 53n + 2n], // beyond safe: back as a bigint
      [10n ** 40n, 10n ** 40n],
      [-(10n ** 600n), -(10n ** 600n)], // LONG4
      [7n, 7], // a safe int comes back as a number
      [0.1, 0.1],
      [Infinity, Infinity],
      ["", ""],
      ["é😀 lone \ud800", "é😀 lone \ud800"],
      ["x".repeat(300), "x".repeat(300)],
      [bytes(0, 255), bytes(0, 255)],
      [[1, [2, []]], [1, [2, []]]],
      [{ a: 1, b: { c: [null] } }, { a: 1, b: { c: [null] } }],
      [new Map([["k", 1]]), { k: 1 }], // str keys: a plain object
      [
        new Map<unknown, unknown>([[1, "a"], ["b", 2]]),
        new Map<unknown, unknown>([[1, "a"], ["b", 2]]),
      ],
      [new Set([1, "a", bytes(1)]), new Set([1, "a", bytes(1)])],
    ];
    for (const [v, expected] of values) {
      assert.deepEqual(decodePickle(encodePickle(v), "recv"), expected);
    }
    const back = decodePickle(
      encodePickle([shared, shared, cyclic]),
      "recv",
    ) as [
      number[],
      number[],
      Record<string, unknown>,
    ];
    assert.equal(back[0], back[1]);
    assert.equal(back[2].self, back[2]);
    const proto = decodePickle(
      encodePickle(JSON.parse('{"__proto__": 1}')),
      "recv",
    );
    assert.equal(Object.getPrototypeOf(proto), Object.prototype);
    assert.equal(Object.getOwnPropertyDescriptor(proto, "__proto__")?.value, 1);
  },
);

mpTest(
  "encodePickle: what Python has no plain equivalent for is a TypeError",
  () => {
    for (
      const v of [
        undefined,
        () => 1,
        Symbol("s"),
        new Date(),
        new (class Foo {})(),
        new Float32Array(1),
        [, 1],
      ]
    ) {
      assert.throws(() => encodePickle(v), TypeError);
    }
    assert.throws(() => encodePickle(new Map([[[1], 2]])), /hashable/);
    assert.throws(() => encodePickle(new Set([{}])), /hashable/);
    let deep: unknown[] = [];
    for (let i = 0; i < 2000; i++) deep = [deep];
    assert.throws(() => encodePickle(deep), /deeper than 1000/);
  },
);

mpTest(
  "decodePickle: pickles from every protocol (made by Python 3.11), text opcodes too",
  () => {
    // pickle.dumps([None, True, 1, -1, 300, 70000, 2**64, 1.25, "é", (1, 2), {"a": 1}, {1: "b"}], protocol=0)
    const p0 = b64(
      "KGxwMApOYUkwMQphSTEKYUktMQphSTMwMAphSTcwMDAwCmFMMTg0NDY3NDQwNzM3MDk1NTE2MTZMCmFGMS4yNQphVukKcDEKYShJMQpJMgp0cDIKYShkcDMKVmEKcDQKSTEKc2EoZHA1CkkxClZiCnA2CnNhLg==",
    );
    assert.deepEqual(decodePickle(p0, "recv"), [
      null,
      true,
      1,
      -1,
      300,
      70000,
      2n ** 64n,
      1.25,
      "é",
      [1, 2],
      { a: 1 },
      new Map([[1, "b"]]),
    ]);
    // pickle.dumps({"s": {1}, "f": frozenset(), "t": ()}, protocol=5)
    const p5 = b64("gAWVGwAAAAAAAAB9lCiMAXOUj5QoSwGQjAFmlCiRlIwBdJQpdS4=");
    assert.deepEqual(decodePickle(p5, "recv"), {
      s: new Set([1]),
      f: new Set(),
      t: [],
    });
    // Python 2's str (SHORT_BINSTRING, protocol 2): ASCII text
    assert.equal(decodePickle(b64("gAJVA2FiY3EALg=="), "recv"), "abc");
  },
);

mpTest(
  "decodePickle: a pickle naming a class or function is refused, nothing run",
  () => {
    const refused = [
      // os.system("echo hi") in protocol 0: GLOBAL + REDUCE
      new TextEncoder().encode("cos\nsystem\n(S'echo hi'\ntR."),
      // a class instance, protocol 4 (STACK_GLOBAL, NEWOBJ/REDUCE)
      b64("gASVGwAAAAAAAACMCF9fbWFpbl9flIwHTm90RGF0YZSTlCmBlC4="),
      bytes(0x80, 2, 0x82, 1, 0x2e), // EXT1
      bytes(0x80, 2, 0x4e, 0x51, 0x2e), // BINPERSID
      new TextEncoder().encode("(i__main__\nX\n."), // INST
    ];
    for (const p of refused) {
      assert.throws(
        () => decodePickle(p, "recv"),
        (e: Error) =>
          e instanceof TypeError &&
          /names a class or function/.test(e.message) &&
          /nothing from it was run/.test(e.message),
      );
    }
    assert.throws(
      () => decodePickle(refused[0]!, "recv"),
      /GLOBAL "os.system"/,
    );
    assert.throws(() => decodePickle(refused[1]!, "recv"), /__main__\.NotData/);
  },
);

mpTest(
  "decodePickle: malformed pickles are SyntaxErrors, deep ones RangeErrors",
  () => {
    for (
      const p of [
        bytes(),
        bytes(0x80, 4, 0x4e), // no STOP
        bytes(0x80, 4, 0x42, 0xff, 0xff, 0xff, 0x7f, 0x2e), // BINBYTES past the end
        bytes(0x80, 4, 0x68, 9, 0x2e), // BINGET of nothing
        bytes(0x80, 4, 0x65, 0x2e), // APPENDS with no MARK
        bytes(0xfe, 0x2e), // unknown opcode
        bytes(0x80, 4, 0x4e, 0x2e, 0x4e), // bytes after STOP
        bytes(0x80, 4, 0x8c, 2, 0xc3, 0x28, 0x2e), // bad UTF-8
      ]
    ) assert.throws(() => decodePickle(p, "recv"), SyntaxError);
    const deep = new Uint8Array(2 + 3000 + 3000 + 1);
    deep.set([0x80, 4]);
    deep.fill(0x5d, 2, 3002); // 3000 EMPTY_LISTs
    deep.fill(0x61, 3002, 6001); // 2999 APPENDs nest them
    deep[6001] = 0x2e;
    assert.throws(
      () => decodePickle(deep.subarray(0, 6002), "recv"),
      RangeError,
    );
  },
);

// -- Our ends on the python wire, without Python ------------------------------------

mpTest(
  "wire python: our listen and connect talk (the {sha256} challenge both ways)",
  async () => {
    await using listener = await listen({
      port: 0,
      authkey: KEY,
      wire: "python",
    });
    const [client, server] = await Promise.all([
      connect({ port: listener.addr.port, authkey: KEY, wire: "python" }),
      listener.accept({ timeout: 10_000 }),
    ]);
    client.send({ a: [1, 2.5, "x", null] });
    assert.deepEqual(await server.recv(), { a: [1, 2.5, "x", null] });
    server.sendBytes(bytes(1, 2));
    assert.deepEqual(await client.recvBytes(), bytes(1, 2));
    // send() carries a pickle: recvBytes shows its raw bytes
    client.send(null);
    assert.deepEqual(await server.recvBytes(), bytes(0x80, 4, 0x4e, 0x2e));
    // bytes that are no pickle: recv fails clearly and consumes the message
    client.sendBytes(bytes(1, 2, 3));
    client.send("next");
    await assert.rejects(server.recv(), SyntaxError);
    assert.equal(await server.recv(), "next");
    client.close();
    await assert.rejects(server.recv(), EOFError);
    server.close();
    await assert.rejects(
      connect({ port: listener.addr.port, authkey: "wrong", wire: "python" }),
      AuthenticationError,
    );
    await assert.rejects(
      connect({ port: listener.addr.port, authkey: KEY }),
      (e: Error) =>
        e instanceof AuthenticationError && /wire: "python"/.test(e.message),
    );
  },
);

mpTest(
  "wire python: our Listener checks each answer itself (raw HMAC-MD5, {sha256}, a wrong one)",
  async () => {
    await using listener = await listen({
      port: 0,
      authkey: KEY,
      wire: "python",
    });
    const text = new TextDecoder();
    const answers: [string, (m: Uint8Array) => Uint8Array, string][] = [
      ["md5", (m) => hmac("md5", m), "#WELCOME#"],
      ["sha256", (m) => concat("{sha256}", hmac("sha256", m)), "#WELCOME#"],
      ["wrong md5", () => new Uint8Array(16), "#FAILURE#"],
      [
        "wrong sha256",
        () => concat("{sha256}", new Uint8Array(32)),
        "#FAILURE#",
      ],
      ["unknown digest", (m) => concat("{sha1}", hmac("sha1", m)), "#FAILURE#"],
    ];
    for (const [name, answer, verdict] of answers) {
      const s = new FrameStream(
        await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
        1024,
        true,
      );
      assert.ok(await s.waitReadable(10_000, undefined));
      const challenge = s.take();
      assert.match(
        text.decode(challenge.subarray(0, 19)),
        /^#CHALLENGE#\{sha256\}$/,
      );
      assert.equal(challenge.length, 11 + 8 + 40);
      s.write(answer(challenge.subarray(11)));
      assert.ok(await s.waitReadable(10_000, undefined));
      assert.equal(text.decode(s.take()), verdict, name);
      s.close();
      await s.done;
    }
    await assert.rejects(listener.accept({ timeout: 0 }), {
      name: "TimeoutError",
    });
  },
);

mpTest(
  "wire python: connect refuses a listener whose answer to our challenge is wrong",
  async () => {
    using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const fake = (async () => {
      // A Python ≤ 3.11 style listener that welcomes anyone, proves nothing.
      const s = new FrameStream(await tcp.accept(), 1024, true);
      s.write(concat("#CHALLENGE#", new Uint8Array(20)));
      await s.waitReadable(10_000, undefined);
      const answer = s.take();
      s.write(new TextEncoder().encode("#WELCOME#"));
      await s.waitReadable(10_000, undefined);
      s.take(); // our challenge
      s.write(new Uint8Array(16));
      await s.waitReadable(10_000, undefined);
      const verdict = new TextDecoder().decode(s.take());
      s.close();
      await s.done;
      return { answer, verdict };
    })();
    await assert.rejects(
      connect({ port: tcp.addr.port, authkey: KEY, wire: "python" }),
      (e: Error) =>
        e instanceof AuthenticationError && /failed to prove/.test(e.message),
    );
    const { answer, verdict } = await fake;
    // A 20-byte challenge (Python <= 3.11) got a raw HMAC-MD5 answer.
    assert.deepEqual(answer, hmac("md5", new Uint8Array(20)));
    assert.equal(verdict, "#FAILURE#");
  },
);

// -- Against a real Python 3 ------------------------------------------------------

/** A Python fixture process and its output. */
class PyPeer {
  readonly child: Deno.ChildProcess;
  readonly #out: ReadableStreamDefaultReader<string>;
  readonly #err: Promise<string>;
  text = "";

  constructor(python: string, args: string[], key = KEY) {
    this.child = new Deno.Command(python, {
      args: [PEER, ...args],
      env: { MP_AUTHKEY: key },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#out = this.child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    this.#err = new Response(this.child.stderr).text();
  }

  /** Reads stdout until `re` matches. */
  async until(re: RegExp): Promise<RegExpExecArray> {
    for (;;) {
      const m = re.exec(this.text);
      if (m) return m;
      const { value, done } = await this.#out.read();
      if (done) {
        throw new Error(
          `python ended before ${re}:\n${this.text}\n${await this.#err}`,
        );
      }
      this.text += value;
    }
  }

  /** Waits for the exit; asserts it succeeded. */
  async finish(): Promise<string> {
    for (;;) {
      const { value, done } = await this.#out.read();
      if (done) break;
      this.text += value;
    }
    const [status, err] = await Promise.all([this.child.status, this.#err]);
    assert.equal(status.code, 0, `python failed:\n${this.text}\n${err}`);
    return this.text;
  }

  kill(): void {
    try {
      this.child.kill();
    } catch {
      // ended
    }
  }
}

/** What we send first; conn_peer.py checks it arrives as EXPECTED_FROM_DENO. */
const FROM_DENO = {
  none: null,
  bools: [true, false],
  ints: [
    0,
    -1,
    255,
    65536,
    -(2 ** 31) - 1,
    2 ** 53 + 2,
    -(2n ** 70n),
    10n ** 30n,
  ],
  floats: [1.5, -0.25, Infinity],
  text: "héllo 😀",
  bytes: bytes(0, 1, 0xfe, 0xff),
  nested: [[1, [2, [3]]], {}],
  map: new Map<unknown, unknown>([[1, "one"], ["two", 2], [bytes(107), null], [
    2.5,
    true,
  ]]),
  set: new Set([1, "a"]),
};

/** The Python type names conn_peer.py reports for FROM_DENO. */
const TYPES_IN_PYTHON = [
  "dict",
  [
    ["str", "NoneType"],
    ["str", ["list", ["bool", "bool"]]],
    ["str", ["list", Array(8).fill("int")]],
    ["str", ["list", ["float", "float", "float"]]],
    ["str", "str"],
    ["str", "bytes"],
    ["str", ["list", [["list", ["int", ["list", ["int", ["list", ["int"]]]]]], [
      "dict",
      [],
    ]]]],
    ["str", ["dict", [["int", "str"], ["str", "int"], ["bytes", "NoneType"], [
      "float",
      "bool",
    ]]]],
    ["str", ["set", ["int", "str"]]],
  ],
];

/** What conn_peer.py's FROM_PYTHON must arrive as. */
const EXPECTED_FROM_PYTHON = {
  none: null,
  bool: true,
  int: 42,
  neg: -7,
  big: 2n ** 64n + 1n,
  float: 0.1,
  "whole_float": 2,
  str: "üñî 🐍",
  bytes: new Uint8Array([0, ...new TextEncoder().encode("raw"), 0xff]),
  list: [1, "two", 3],
  tuple: [1, [2, 3]],
  "dict_int_keys": new Map([[1, "a"], [2, "b"]]),
  "dict_tuple_key": new Map([[[1, 2], "pair"]]),
  set: new Set([3]),
  frozenset: new Set(["f"]),
  empty: [[], {}, new Set(), ""],
};

/** Our half of conn_peer.py's exchange(). */
async function exchange(conn: Connection): Promise<void> {
  conn.send(FROM_DENO);
  assert.deepEqual(await conn.recv({ timeout: 30_000 }), TYPES_IN_PYTHON);
  const got = await conn.recv({ timeout: 30_000 }) as Record<string, unknown>;
  assert.deepEqual(got, EXPECTED_FROM_PYTHON);
  assert.equal(typeof got.big, "bigint");
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  conn.sendBytes(all);
  assert.deepEqual(await conn.recvBytes({ timeout: 30_000 }), all.reverse());
  const big = await conn.recvBytes({ timeout: 30_000 });
  assert.equal(big.length, 1 << 20);
  assert.ok(big.every((b) => b === 0x78));
  assert.deepEqual(await conn.recvBytes({ timeout: 30_000 }), new Uint8Array());
  await assert.rejects(
    conn.recv({ timeout: 30_000 }),
    (e: Error) =>
      e instanceof TypeError && /names a class or function/.test(e.message) &&
      /__main__\.NotData/.test(e.message),
  );
  conn.send("refused");
  const shared = await conn.recv({ timeout: 30_000 }) as [
    number[],
    number[],
    Record<string, unknown>,
  ];
  assert.equal(shared[0], shared[1]);
  assert.equal(shared[2].self, shared[2]);
  conn.send(shared);
  assert.equal(await conn.recv({ timeout: 30_000 }), "bye");
  await assert.rejects(conn.recv({ timeout: 30_000 }), EOFError);
  conn.close();
}

for (
  const { cmd, version } of PYTHONS.length
    ? PYTHONS
    : [{ cmd: "python3", version: "3" }]
) {
  const ignore = PYTHONS.length === 0;
  const form = Number(version.split(".")[1]) >= 12 ? "{sha256}" : "HMAC-MD5";

  mpTest(
    `Python ${version} Client talks to our Listener (${form} challenge): bytes and plain data both ways`,
    async () => {
      await using listener = await listen({
        port: 0,
        authkey: KEY,
        wire: "python",
      });
      const py = new PyPeer(cmd, ["client", String(listener.addr.port)]);
      try {
        await exchange(await listener.accept({ timeout: 30_000 }));
        const out = await py.finish();
        assert.match(out, /ok shared/);
      } finally {
        py.kill();
      }
    },
    { ignore },
  );

  mpTest(
    `our connect talks to a Python ${version} Listener (${form} challenge): bytes and plain data both ways`,
    async () => {
      const py = new PyPeer(cmd, ["listener"]);
      try {
        const port = Number((await py.until(/port (\d+)\n/))[1]);
        await exchange(
          await connect({
            port,
            authkey: KEY,
            wire: "python",
            timeout: 30_000,
          }),
        );
        assert.match(await py.finish(), /ok shared/);
      } finally {
        py.kill();
      }
    },
    { ignore },
  );

  mpTest(
    `Python ${version}: a wrong key is AuthenticationError on both sides, and our Listener goes on`,
    async () => {
      await using listener = await listen({
        port: 0,
        authkey: KEY,
        wire: "python",
      });
      const wrong = new PyPeer(cmd, [
        "client-wrong",
        String(listener.addr.port),
      ]);
      try {
        assert.match(await wrong.finish(), /^AuthenticationError/);
      } finally {
        wrong.kill();
      }
      await assert.rejects(listener.accept({ timeout: 0 }), {
        name: "TimeoutError",
      });
      const py = new PyPeer(cmd, ["listener-wrong"]);
      try {
        const port = Number((await py.until(/port (\d+)\n/))[1]);
        await assert.rejects(
          connect({
            port,
            authkey: "not the key",
            wire: "python",
            timeout: 30_000,
          }),
          AuthenticationError,
        );
        assert.match(await py.finish(), /AuthenticationError/);
      } finally {
        py.kill();
      }
    },
    { ignore },
  );
}

import { strict as assert } from "node:assert";
import {
  AuthenticationError,
  ClosedError,
  type DictProxy,
  Manager,
  serve,
} from "../patterns/server_process.ts";
import { Process } from "../patterns/cube.ts";
import { mpTest } from "./_helpers.ts";

Deno.test.sanitizer({ ops: true, resources: true });

const KEY = "tls-test-key-0123456789";

/**
 * A fresh self-signed certificate for 127.0.0.1 and its key, made with
 * openssl in a temporary folder that is removed at once (PEM text comes
 * back on stdout: the test needs no read permission for it), or `null`
 * when openssl is missing. Deno refuses a self-signed certificate marked
 * as a CA (`CaUsedAsEndEntity`): this one says `CA:FALSE` and names the IP.
 */
async function makeCertificate(): Promise<
  { cert: string; key: string } | null
> {
  const script = `set -e
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\
  -keyout "$d/key.pem" -out "$d/cert.pem" -days 2 -subj /CN=127.0.0.1 \\
  -addext basicConstraints=critical,CA:FALSE \\
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null
cat "$d/key.pem" "$d/cert.pem"`;
  try {
    const probe = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!probe.success) return null;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const key = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----\n/
    .exec(text)?.[0];
  const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/
    .exec(text)?.[0];
  assert.ok(key && cert, `openssl printed no key and certificate:\n${text}`);
  return { cert, key };
}

const pem = await makeCertificate();
if (!pem) console.log("openssl not found: the TLS tests are skipped");
const ignore = pem === null;
const { cert, key } = pem ?? { cert: "", key: "" };

/**
 * `connect()` fails with an `AuthenticationError` whose message matches
 * `pattern`, at once (well within the 8 s timeout it is given).
 */
async function failsAtOnce(
  connect: () => Promise<unknown>,
  pattern: RegExp,
): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(connect(), (e: unknown) => {
    assert.ok(e instanceof AuthenticationError, String(e));
    assert.match(e.message, pattern);
    return true;
  });
  const elapsed = performance.now() - t0;
  assert.ok(elapsed < 4000, `failed after ${elapsed} ms`);
}

mpTest(
  "TLS: serve({ tls }) and Manager.connect({ tls: { caCerts } }) with a self-signed certificate, a proxy passed to a Process included",
  async () => {
    await using server = await serve({
      port: 0,
      authkey: KEY,
      tls: { cert, key },
    });
    await using m = await Manager.connect({
      port: server.addr.port,
      authkey: KEY,
      tls: { caCerts: [cert] },
    });
    const d = await m.dict<string, string>({ a: "over tls" });
    assert.equal(await d.get("a"), "over tls");
    const p = new Process({
      target: async (d: DictProxy<string, string>) => {
        await d.set("from", "worker");
      },
      args: [d],
    });
    p.start();
    assert.equal(await p.join(), 0);
    assert.equal(await d.get("from"), "worker");
  },
  { ignore },
);

mpTest(
  "TLS: a plain client against a TLS server fails at once with an error that names TLS",
  async () => {
    await using server = await serve({
      port: 0,
      authkey: KEY,
      tls: { cert, key },
    });
    await failsAtOnce(
      () =>
        Manager.connect({
          port: server.addr.port,
          authkey: KEY,
          timeout: 8000,
        }),
      /speaks TLS.*tls option/,
    );
    // A TLS client is still served.
    await using m = await Manager.connect({
      port: server.addr.port,
      authkey: KEY,
      tls: { caCerts: [cert] },
    });
    assert.equal(await (await m.value("i", 5)).get(), 5);
  },
  { ignore },
);

mpTest(
  "TLS: a TLS client against a plain server fails at once with an error that names TLS",
  async () => {
    await using server = await serve({ port: 0, authkey: KEY });
    await failsAtOnce(
      () =>
        Manager.connect({
          port: server.addr.port,
          authkey: KEY,
          timeout: 8000,
          tls: { caCerts: [cert] },
        }),
      /over TLS.*does not speak TLS/,
    );
    await using m = await Manager.connect({
      port: server.addr.port,
      authkey: KEY,
    });
    assert.equal(await (await m.value("i", 6)).get(), 6);
  },
  { ignore },
);

mpTest(
  "TLS: a client that does not trust the server's certificate is refused",
  async () => {
    await using server = await serve({
      port: 0,
      authkey: KEY,
      tls: { cert, key },
    });
    await assert.rejects(
      Manager.connect({ port: server.addr.port, authkey: KEY, tls: {} }),
      (e: unknown) => {
        assert.ok(e instanceof AuthenticationError, String(e));
        assert.match(e.message, /TLS handshake failed.*UnknownIssuer/);
        return true;
      },
    );
  },
  { ignore },
);

mpTest(
  "TLS: a client past maxConnections reads the refusal over TLS",
  async () => {
    await using server = await serve({
      port: 0,
      authkey: KEY,
      tls: { cert, key },
      maxConnections: 1,
    });
    const options = {
      port: server.addr.port,
      authkey: KEY,
      tls: { caCerts: [cert] },
    };
    await using m = await Manager.connect(options);
    await assert.rejects(
      Manager.connect({ ...options, timeout: 8000 }),
      (e: unknown) => {
        assert.ok(e instanceof ClosedError, String(e));
        assert.match(e.message, /full/);
        return true;
      },
    );
    assert.equal(await (await m.value("i", 8)).get(), 8);
  },
  { ignore },
);

mpTest("TLS: bad tls options are refused with TypeError", async () => {
  await assert.rejects(
    serve({
      port: 0,
      authkey: KEY,
      tls: { cert: "not pem", key: "x" },
    }),
    TypeError,
  );
  await assert.rejects(
    serve({
      port: 0,
      authkey: KEY,
      tls: {
        cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
      },
    }),
    (e: unknown) => {
      assert.ok(e instanceof TypeError, String(e));
      assert.match(e.message, /Cannot serve over TLS/);
      return true;
    },
  );
  await assert.rejects(
    Manager.connect({
      port: 1,
      authkey: KEY,
      tls: { caCerts: "not a list" as unknown as string[] },
    }),
    TypeError,
  );
});

/**
 * The Redis client, loaded only when a broker is used: node-redis's core
 * (`npm:@redis/client`, the client of the `redis` package), imported on
 * first use through a specifier held in a variable so that a program that
 * never names a broker neither loads nor downloads it. Wraps a connection
 * as the few calls this package needs (raw commands, pipelined by the
 * client when issued in the same tick) and turns the client's failures
 * into this package's errors.
 *
 * @module
 */

import { AuthenticationError } from "../_core/errors.ts";
import { redactUrl } from "./keys.ts";

/**
 * The client package. node-redis rather than ioredis: ioredis loads the
 * `debug` package, which enumerates the whole environment when it is
 * loaded (a permission prompt, or `NotCapable` without `--allow-env`);
 * `@redis/client` reads only `REDIS_DEBUG_MAINTENANCE` and
 * `REDIS_EMIT_DIAGNOSTICS`, and only while a Redis Enterprise cluster
 * migrates, and depends on one small package.
 */
const CLIENT_SPECIFIER = "npm:@redis/client@^5.12.1";

/** How long a connection attempt may take, in ms. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Reconnection attempts after a lost connection, before giving up. */
const RECONNECT_TRIES = 20;

/** What this package uses of a node-redis client. */
interface RawClient {
  connect(): Promise<unknown>;
  sendCommand(args: string[]): Promise<unknown>;
  destroy(): void;
  close(): Promise<void>;
  ref(): void;
  unref(): void;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  readonly isOpen: boolean;
}

type CreateClient = (options: Record<string, unknown>) => RawClient;

let loaded: Promise<CreateClient> | undefined;

function loadClient(): Promise<CreateClient> {
  return loaded ??= import(CLIENT_SPECIFIER).then((m) =>
    m.createClient as CreateClient
  );
}

/**
 * Turns a client or connection failure into the error a caller sees:
 * `AuthenticationError` for a refused password, `Deno.errors.ConnectionRefused`
 * when the broker cannot be reached, the error itself otherwise.
 *
 * @param error What the client threw.
 * @param url The broker's URL (its password is never shown).
 * @returns The error to throw.
 */
export function brokerError(error: unknown, url: string): Error {
  const message = error instanceof Error ? error.message : String(error);
  const where = redactUrl(url);
  if (/^(WRONGPASS|NOAUTH|NOPERM)/.test(message)) {
    return new AuthenticationError(
      `Cannot use the broker ${where}: ${message}`,
      { cause: error },
    );
  }
  if (
    /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|Connection timeout|Socket closed|ECONNRESET|EPIPE/i
      .test(message) || (error as { code?: string })?.code === "ECONNREFUSED"
  ) {
    return new Deno.errors.ConnectionRefused(
      `Cannot reach the broker ${where}: ${message}`,
      { cause: error },
    );
  }
  return error instanceof Error ? error : new Error(message);
}

/** One connection to the broker. */
export class RedisLink {
  readonly #client: RawClient;
  readonly #url: string;
  #lastError: unknown;
  #closed = false;
  #connected = false;

  private constructor(createClient: CreateClient, url: string, name: string) {
    this.#url = url;
    this.#client = createClient({
      url,
      name,
      socket: {
        connectTimeout: CONNECT_TIMEOUT_MS,
        // The first connection fails at once (the caller is told); a lost
        // one is retried for a while, then the calls waiting fail.
        reconnectStrategy: (retries: number, cause: unknown) => {
          if (!this.#connected || this.#closed || retries >= RECONNECT_TRIES) {
            return cause instanceof Error ? cause : new Error(String(cause));
          }
          return Math.min(50 * 2 ** retries, 1000);
        },
      },
      // Commands issued while disconnected fail rather than wait forever.
      disableOfflineQueue: true,
    });
    // An unhandled "error" event would end the program.
    this.#client.on("error", (e) => this.#lastError = e);
  }

  /**
   * Connects to `url`, loading the client package on first use.
   *
   * @param url A `redis://` or `rediss://` URL (user, password, database
   *   and TLS as node-redis reads them).
   * @param name The connection's name in `CLIENT LIST`.
   * @returns The open link.
   * @throws {AuthenticationError} If the broker refuses the password.
   * @throws {Deno.errors.ConnectionRefused} If it cannot be reached.
   */
  static async open(url: string, name: string): Promise<RedisLink> {
    const link = new RedisLink(await loadClient(), url, name);
    try {
      await link.#client.connect();
    } catch (e) {
      link.destroy();
      throw brokerError(e, url);
    }
    link.#connected = true;
    return link;
  }

  /**
   * Whether the link may still carry commands: connected, or reconnecting
   * after a lost connection (`false` once closed or given up).
   */
  get isOpen(): boolean {
    return !this.#closed && this.#client.isOpen;
  }

  /** The last connection error the client reported, if any. */
  get lastError(): unknown {
    return this.#lastError;
  }

  /**
   * Sends one command; commands sent in the same tick travel together.
   *
   * @param args The command and its arguments.
   * @returns The reply (RESP2: arrays, strings, numbers, `null`).
   * @throws {Deno.errors.ConnectionReset} If the connection was lost for
   *   good (the client gave up reconnecting).
   */
  async send(args: string[]): Promise<unknown> {
    try {
      return await this.#client.sendCommand(args);
    } catch (e) {
      if (this.#connected && !this.#closed && !this.#client.isOpen) {
        // The client gave up reconnecting: say why, not "client is closed".
        const last = this.#lastError;
        throw new Deno.errors.ConnectionReset(
          `Lost the connection to the broker ${redactUrl(this.#url)}: ${
            last instanceof Error ? last.message : (e as Error).message
          }`,
          { cause: last ?? e },
        );
      }
      throw brokerError(e, this.#url);
    }
  }

  /**
   * Whether the connection keeps the program alive.
   *
   * @param on `true` while work is in flight.
   */
  keepAlive(on: boolean): void {
    if (this.#closed) return;
    if (on) this.#client.ref();
    else this.#client.unref();
  }

  /** Closes the connection after the replies still due. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (this.#client.isOpen) {
        await this.#client.close();
        return;
      }
    } catch { /* lost meanwhile: dropped below */ }
    try {
      this.#client.destroy();
    } catch { /* already closed */ }
  }

  /** Drops the connection now; a blocked read in it rejects. */
  destroy(): void {
    this.#closed = true;
    try {
      this.#client.destroy();
    } catch { /* already gone */ }
  }
}

/**
 * What `listen` and `connect` share: their option checks and defaults, and
 * the socket setup both do.
 *
 * @module
 */

import { describeValue } from "../_core/errors.ts";
import type { Wire } from "./socket_connection.ts";

/** How long a peer may take to authenticate, in ms. */
export const HANDSHAKE_TIMEOUT = 10_000;
/** The largest message accepted by default, in bytes (1 GiB). */
export const DEFAULT_MAX_MESSAGE: number = 1024 * 1024 * 1024;

/** Checks a `wire` option (`"dmp"` when absent). */
export function checkWire(wire: unknown, what: string): Wire {
  if (wire === undefined) return "dmp";
  if (wire === "dmp" || wire === "python") return wire;
  throw new TypeError(
    `Cannot ${what}: wire must be "dmp" or "python", received ${
      describeValue(wire)
    }`,
  );
}

/** Checks a `port` option. */
export function checkPort(port: unknown, what: string): number {
  if (
    !Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535
  ) {
    throw new RangeError(
      `Cannot ${what}: port must be an integer from 0 to 65535, received ${
        describeValue(port)
      }`,
    );
  }
  return port as number;
}

/** Checks a `maxMessageBytes` option (1 GiB when absent). */
export function checkMaxMessage(n: unknown, what: string): number {
  if (n === undefined) return DEFAULT_MAX_MESSAGE;
  if (!Number.isSafeInteger(n) || (n as number) < 1) {
    throw new RangeError(
      `Cannot ${what}: maxMessageBytes must be a positive integer, received ${
        describeValue(n)
      }`,
    );
  }
  return n as number;
}

/** An address as `host:port`. */
export function hostPort(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}

/** Sends small frames at once (no Nagle delay). */
export function noDelay(conn: Deno.Conn): void {
  try {
    (conn as Deno.TcpConn).setNoDelay?.(true);
  } catch {
    // not fatal
  }
}

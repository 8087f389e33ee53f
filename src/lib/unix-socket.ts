/**
 * Connecting to a Unix socket that another process is about to create (QEMU's QMP, console and
 * agent sockets; vmstackd's API socket). Used with retryUntil (retry.ts), which polls until it
 * answers.
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";

/** The longest path a Unix socket can have, in bytes (sun_path is 108 bytes with its NUL). */
export const UNIX_SOCKET_PATH_MAX = 107;

export function fitsUnixSocket(path: string): boolean {
  return Buffer.byteLength(path) <= UNIX_SOCKET_PATH_MAX;
}

/** Errors that mean "not there yet": no file, nobody listening yet, or a full accept backlog. */
const NOT_YET = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);

/**
 * The connected socket, or undefined while the socket is not there yet (try again later). Any other
 * failure (permissions, not a socket, a path too long) is thrown: waiting would not mend it.
 */
export async function connectWhenListening(path: string): Promise<Socket | undefined> {
  const s = connect(path);
  try {
    await once(s, "connect");
    return s;
  } catch (e) {
    s.destroy();
    if (NOT_YET.has((e as NodeJS.ErrnoException).code ?? "")) return undefined;
    throw e;
  }
}

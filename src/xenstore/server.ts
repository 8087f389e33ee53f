/**
 * The Unix-socket transport. It only accepts connections and hands each one to the daemon as a
 * dom0 connection (both Xen daemons treat socket clients as dom0, notes §1.4); framing, dispatch
 * and everything else happen in connection.ts / dispatch.ts.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { VmstackError } from "../lib/errors.js";
import { fitsUnixSocket, UNIX_SOCKET_PATH_MAX } from "../lib/unix-socket.js";
import type { Xenstored } from "./daemon.js";
import { BusyPoll, type BusyPollStats } from "../lib/busy-poll.js";
import type { Connection } from "./connection.js";
import { fdOf, NativeSocketIo, type NativeIoStats } from "./socket-io.js";

/** Default maximum busy-poll window after a request (lib/busy-poll.ts; 0 turns polling off). */
export const DEFAULT_BUSY_POLL_US = 200;
/** Beyond 10 ms polling stops being a wake-up saved and becomes a core spent. */
export const MAX_BUSY_POLL_US = 10_000;

export interface SocketServer {
  readonly path: string;
  /** Busy-polling of all its connections so far (hits and misses say whether it pays; beside, how often it was not tried). */
  readonly poll: Readonly<BusyPollStats>;
  /** What native socket I/O did (socket-io.ts); undefined when it is off or not built. */
  readonly nativeIo: Readonly<NativeIoStats> | undefined;
  close(): Promise<void>;
}

/** Remove a leftover socket file, but never a live daemon's socket nor a non-socket file. */
async function clearStale(socketPath: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  if (!st.isSocket()) throw new VmstackError("XENSTORED_SOCKET_IN_USE", `${socketPath} exists and is not a socket`, { facts: { path: socketPath } });
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(socketPath);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (live) throw new VmstackError("XENSTORED_SOCKET_IN_USE", `another daemon is listening on ${socketPath}`, { facts: { path: socketPath } });
  fs.unlinkSync(socketPath);
}

/**
 * Listen on `socketPath` (mode 0600 unless `mode` says otherwise). After each request the
 * connection is busy-polled for up to `busyPollUs` (adaptive; see lib/busy-poll.ts) so that a
 * client with one request in flight does not wait for this process to wake up; with native
 * socket I/O (socket-io.ts; `nativeIo: false` turns it off) the polling waits in poll(2) and
 * replies leave with send(2).
 */
export async function listenUnix(daemon: Xenstored, socketPath: string, opts: { mode?: number; busyPollUs?: number; nativeIo?: boolean } = {}): Promise<SocketServer> {
  if (!fitsUnixSocket(socketPath)) {
    throw new VmstackError("XENSTORED_SOCKET_PATH", `socket path is too long for a Unix socket (${Buffer.byteLength(socketPath)} bytes, max ${UNIX_SOCKET_PATH_MAX})`, { facts: { path: socketPath } });
  }
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  await clearStale(socketPath);
  const pollUs = opts.busyPollUs ?? DEFAULT_BUSY_POLL_US;
  const poll: BusyPollStats = { hits: 0, misses: 0, beside: 0 };
  const native = opts.nativeIo !== false ? NativeSocketIo.create() : undefined;
  // allowHalfOpen: a client may send requests and shut down its write side; it still gets replies.
  // pauseOnConnect: with native I/O the addon reads the sockets, never their streams.
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: native !== undefined }, (sock) => {
    try {
      let conn: Connection | undefined;
      const entry = native?.entry(
        sock,
        (chunk) => conn?.input(chunk, true),
        () => conn !== undefined && !conn.isClosed,
      );
      // After each chunk's requests are answered, polling for this client's next one starts.
      const poller = new BusyPoll(pollUs, entry === undefined ? undefined : native!.clock(entry), poll);
      conn = daemon.attach(sock, 0, "socket", {
        afterInput: (requests) => {
          if (entry !== undefined) entry.pipelining = requests > 1;
          poller.kick();
        },
        write: entry === undefined ? undefined : (frame) => native!.write(entry, frame),
        flow: entry === undefined ? undefined : native!.flow(entry),
      });
      if (native !== undefined && entry === undefined) sock.resume();
    } catch {
      sock.destroy();
    }
  });
  const mode = opts.mode ?? 0o600;
  // umask around listen() so the socket never exists with wider permissions, even briefly.
  const old = process.umask(0o777 & ~mode);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } finally {
    process.umask(old);
  }
  fs.chmodSync(socketPath, mode);
  if (native !== undefined) native.listenFd = fdOf(server);
  return {
    path: socketPath,
    poll,
    nativeIo: native?.stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        fs.rmSync(socketPath, { force: true });
      }),
  };
}

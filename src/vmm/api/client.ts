/**
 * The CLI's side of vmstackd's control socket. `vmstackdRequest` connects, starting vmstackd on
 * demand when nothing listens (detached, in its own session, its output to the daemon log), sends
 * one request and returns its result; a `console` request returns the connection for raw bytes.
 */
import type { Socket } from "node:net";
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname } from "node:path";
import { encodeLine, parseResponse, type Request } from "./protocol.js";
import { daemonPaths, type DaemonPaths } from "../manager-paths.js";
import { VmstackError, isVmstackError, messageOf } from "../../lib/errors.js";
import { retryUntil } from "../../lib/retry.js";
import { connectWhenListening } from "../../lib/unix-socket.js";

export interface ClientOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Start vmstackd when it is not running (default true; VMSTACK_NO_AUTOSTART=1 turns it off). */
  readonly autostart?: boolean;
  readonly signal?: AbortSignal | undefined;
}

/** vmstackd's socket, or undefined when it is not listening (yet). */
async function reachDaemon(path: string): Promise<Socket | undefined> {
  try {
    return await connectWhenListening(path);
  } catch (e) {
    throw new VmstackError("DAEMON_UNREACHABLE", `cannot connect to vmstackd at ${path}: ${messageOf(e)}`, { cause: e });
  }
}

/** Starts vmstackd detached (it outlives this CLI) and waits until its socket answers. */
export async function startDaemon(paths: DaemonPaths, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<Socket> {
  const script = fileURLToPath(new URL("../../bin/vmstackd.js", import.meta.url));
  mkdirSync(dirname(paths.daemonLog), { recursive: true });
  const fd = openSync(paths.daemonLog, "a");
  try {
    const child = spawn(process.execPath, [script], { detached: true, stdio: ["ignore", fd, fd], env });
    child.on("error", () => undefined);
    child.unref();
  } finally {
    closeSync(fd);
  }
  return retryUntil(() => reachDaemon(paths.socket), { what: `vmstackd to listen on ${paths.socket} (its log: ${paths.daemonLog})`, timeoutMs: 20_000, signal, initialDelayMs: 10, maxDelayMs: 100 });
}

export async function openDaemon(o: ClientOptions = {}): Promise<Socket> {
  const env = o.env ?? process.env;
  const paths = daemonPaths(env);
  const s = await reachDaemon(paths.socket);
  if (s) return s;
  // A socket file that refuses for a moment (a full accept backlog: EAGAIN) is a busy vmstackd,
  // not a missing one; a stale file left by a crash keeps refusing, and only costs this wait.
  if (existsSync(paths.socket)) {
    const busy = await retryUntil(() => reachDaemon(paths.socket), { what: "vmstackd", timeoutMs: 300, signal: o.signal, initialDelayMs: 10, maxDelayMs: 50 }).catch((e: unknown) => {
      if (isVmstackError(e, "TIMEOUT")) return undefined;
      throw e;
    });
    if (busy) return busy;
  }
  if (o.autostart === false || env["VMSTACK_NO_AUTOSTART"] === "1") {
    throw new VmstackError("DAEMON_NOT_RUNNING", `vmstackd is not running (no socket at ${paths.socket}); start it with 'vmstack vmstackd'`);
  }
  return startDaemon(paths, env, o.signal);
}

/** Sends one request on `s` and reads one response line; the bytes after it stay unread on `s`. */
export function exchange(s: Socket, req: Request, signal?: AbortSignal): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      s.off("data", onData);
      s.off("close", onClose);
      signal?.removeEventListener("abort", onAbort);
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      cleanup();
      // Removing our 'data' listener does not pause a flowing socket: bytes that came with the
      // response (a fast command's exec frames, say) would be emitted to no one before the caller,
      // resuming after `await`, attaches its own listener. Hold them until then.
      s.pause();
      const rest = buf.subarray(nl + 1);
      if (rest.length > 0) s.unshift(rest);
      setImmediate(() => {
        if (!s.destroyed) s.resume();
      });
      try {
        const r = parseResponse(JSON.parse(buf.subarray(0, nl).toString("utf8")));
        if (r.ok) resolve(r.result);
        else reject(new VmstackError(r.error.code, r.error.message));
      } catch (e) {
        reject(e instanceof VmstackError ? e : new VmstackError("BAD_RESPONSE", `vmstackd sent a bad response: ${messageOf(e)}`));
      }
    };
    const onClose = (): void => {
      cleanup();
      reject(new VmstackError("DAEMON_GONE", "vmstackd closed the connection before answering"));
    };
    const onAbort = (): void => {
      cleanup();
      s.destroy();
      reject(signal?.reason instanceof Error ? signal.reason : new VmstackError("ABORTED", "interrupted"));
    };
    s.on("data", onData);
    s.on("close", onClose);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    s.write(encodeLine(req));
  });
}

/** One request, one result; the connection is closed afterwards. */
export async function vmstackdRequest(req: Request, o: ClientOptions = {}): Promise<unknown> {
  const s = await openDaemon(o);
  try {
    return await exchange(s, req, o.signal);
  } finally {
    s.destroy();
  }
}

/** Where xenstored listens, and how the client reaches it over a Unix socket. */
import type { Duplex } from "node:stream";
import { connect as netConnect } from "node:net";
import { VmstackError } from "../lib/errors.js";
import { defaultSocketPath } from "./paths-default.js";

/** Opens a new connection to a daemon (used again on reconnect). */
export type XenstoreConnector = (signal: AbortSignal | undefined) => Promise<Duplex>;

/**
 * `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket` (libxenstore's variables, xs_lib.c), else
 * vmstack's own daemon socket (paths-default.ts), where libxenstore would use /var/run/xenstored.
 */
export function defaultXenstoreSocket(env: NodeJS.ProcessEnv = process.env): string {
  const p = env["XENSTORED_PATH"];
  if (p !== undefined && p !== "") return p;
  const rundir = env["XENSTORED_RUNDIR"];
  if (rundir !== undefined && rundir !== "") return `${rundir}/socket`;
  return defaultSocketPath(env);
}

/** A connector for a Unix socket path. */
export function socketConnector(path: string): XenstoreConnector {
  return (signal) =>
    new Promise<Duplex>((resolve, reject) => {
      const s = netConnect({ path, ...(signal ? { signal } : {}) });
      const onError = (e: Error): void => {
        reject(new VmstackError("XS_CONNECT", `cannot connect to xenstored at ${path}: ${e.message}`, { cause: e, facts: { socket: path } }));
      };
      s.once("error", onError);
      s.once("connect", () => {
        s.off("error", onError);
        s.setNoDelay(true);
        resolve(s);
      });
    });
}


/**
 * Where vmstackd keeps things. As root: state in /var/lib/vmstack, sockets and run directories in
 * /run/vmstack (as Xen's /var/lib/xen and /var/run/xen). `VMSTACK_STATE_DIR` / `VMSTACK_RUN_DIR`
 * (or vmstackd's --state-dir/--run-dir) move both, so tests use temporary directories. The same
 * variables place xenstored's socket and journal (src/xenstore/paths-default.ts), so the two agree.
 */
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

export interface DaemonPaths {
  readonly stateDir: string;
  readonly runDir: string;
  /** The control socket of vmstackd. */
  readonly socket: string;
  /** One JSON record per domain, `<domid>.json`: what a restarted vmstackd re-attaches from. */
  readonly domainsDir: string;
  /** Per-domain console logs (kept after the domain is gone). */
  readonly logDir: string;
  /** The daemon's own log (what `vmstack dmesg` shows). */
  readonly daemonLog: string;
  readonly pidFile: string;
  readonly xenstoreSocket: string;
  readonly xenstoreStateDir: string;
}

export function daemonPaths(env: NodeJS.ProcessEnv = process.env, overrides: { stateDir?: string | undefined; runDir?: string | undefined } = {}): DaemonPaths {
  const root = process.getuid?.() === 0;
  const stateDir = overrides.stateDir ?? env["VMSTACK_STATE_DIR"] ?? (root ? "/var/lib/vmstack" : join(homedir(), ".local", "state", "vmstack"));
  const runDir =
    overrides.runDir ??
    env["VMSTACK_RUN_DIR"] ??
    (root ? "/run/vmstack" : env["XDG_RUNTIME_DIR"] ? join(env["XDG_RUNTIME_DIR"], "vmstack") : join(tmpdir(), `vmstack-${process.getuid?.() ?? "user"}`));
  return {
    stateDir,
    runDir,
    socket: join(runDir, "vmstackd.sock"),
    domainsDir: join(stateDir, "domains"),
    logDir: join(stateDir, "log"),
    daemonLog: join(stateDir, "log", "vmstackd.log"),
    pidFile: join(runDir, "vmstackd.pid"),
    xenstoreSocket: join(runDir, "xenstored", "socket"),
    xenstoreStateDir: join(stateDir, "xenstored"),
  };
}

/** A domain's run directory: sockets (QMP, console, agent) and scratch files. Short, for the 107-byte socket limit. */
export function domainRunDir(paths: DaemonPaths, domid: number): string {
  return join(paths.runDir, "d", String(domid));
}

/** A domain's persistent directory (UEFI variables), by name as xl's /var/lib/xen/<name>. */
export function domainStateDir(paths: DaemonPaths, name: string): string {
  return join(paths.stateDir, "domain-state", name);
}

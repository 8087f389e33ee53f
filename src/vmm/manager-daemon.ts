/**
 * vmstackd's life: single instance (pid file), xenstored, the domain manager re-attaching to
 * running domains, the control socket, and a clean stop that leaves every domain running.
 *
 * xenstored runs IN-PROCESS by default (createXenstored + a dom0 connection without a socket hop,
 * plus the usual Unix socket for Xen's tools and `vmstack xenstore`): one process fewer to start
 * on demand, no start-up ordering between two daemons, and every domain-record write skips a
 * socket round trip. It persists to its state directory, so a vmstackd killed with -9 comes back
 * with the same store. When a xenstored already answers on the socket (`vmstack xenstored`, the
 * systemd unit, or Xen's own daemon) vmstackd uses that one instead.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { connect } from "node:net";
import { once } from "node:events";
import type { Server } from "node:net";
import { createXenstored, DEFAULT_BUSY_POLL_US, listenUnix, MAX_BUSY_POLL_US, nativeIoUnavailable, type SocketServer, type Xenstored } from "../xenstore/index.js";
import { XenstoreClient, connectXenstore } from "../xenstore/client.js";
import { DomainManager, hostMemoryMiB } from "./manager.js";
import { handle, type CliRunner, type OpsContext } from "./manager-ops.js";
import { listenApi } from "./api/server.js";
import { daemonPaths, type DaemonPaths } from "./manager-paths.js";
import { bootTimeoutMs } from "./throwaway.js";
import { daemonAccel } from "./manager-accel.js";
import { VmstackError, messageOf } from "../lib/errors.js";

export interface VmstackdOptions {
  readonly stateDir?: string | undefined;
  readonly runDir?: string | undefined;
  readonly dom0MemoryMiB?: number | undefined;
  /** Busy-poll window of the embedded xenstored's socket (xenstore/server.ts); default $VMSTACK_XENSTORED_BUSY_POLL_US or 200. */
  readonly xenstoredBusyPollUs?: number | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly out: NodeJS.WritableStream;
  readonly signal: AbortSignal;
  /** Runs quick CLI verbs for the native front end (the CLI layer passes src/cli/fast-path.ts). */
  readonly cli?: CliRunner;
}

/** The last lines of the daemon's log, for `vmstack dmesg`. */
class LogRing {
  #lines: string[] = [];
  constructor(private readonly max: number, private readonly out: NodeJS.WritableStream) {}
  add(message: string): void {
    const line = `${new Date().toISOString()} ${message}`;
    this.#lines.push(line);
    if (this.#lines.length > this.max) this.#lines.splice(0, this.#lines.length - this.max);
    this.out.write(line + "\n");
  }
  lines(): string[] {
    return [...this.#lines];
  }
  clear(): void {
    this.#lines = [];
  }
}

/**
 * The embedded xenstored's busy-poll window: the option (checked by the CLI), else
 * $VMSTACK_XENSTORED_BUSY_POLL_US, else the default.
 */
export function xenstoredBusyPollUs(o: Pick<VmstackdOptions, "xenstoredBusyPollUs" | "env">): number {
  if (o.xenstoredBusyPollUs !== undefined) return o.xenstoredBusyPollUs;
  const raw = o.env["VMSTACK_XENSTORED_BUSY_POLL_US"];
  if (raw === undefined || raw === "") return DEFAULT_BUSY_POLL_US;
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!(n <= MAX_BUSY_POLL_US)) {
    throw new VmstackError("VMSTACKD_BUSY_POLL", `VMSTACK_XENSTORED_BUSY_POLL_US must be a whole number of µs from 0 to ${MAX_BUSY_POLL_US}, got '${raw}'`, {
      facts: { variable: "VMSTACK_XENSTORED_BUSY_POLL_US", value: raw },
    });
  }
  return n;
}

async function answers(path: string): Promise<boolean> {
  const s = connect(path);
  try {
    await once(s, "connect");
    return true;
  } catch {
    // ENOENT or ECONNREFUSED: nothing serves this socket.
    return false;
  } finally {
    s.destroy();
  }
}

/** Takes the pid file, or returns the pid of a live vmstackd that holds it. */
function takePidFile(paths: DaemonPaths): number | undefined {
  mkdirSync(paths.runDir, { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(paths.pidFile, "wx");
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number(readFileSync(paths.pidFile, "utf8").trim());
      let cmdline = "";
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      } catch {
        // No such process: the pid file is stale.
        cmdline = "";
      }
      if (pid > 0 && pid !== process.pid && cmdline.includes("vmstackd")) return pid;
      rmSync(paths.pidFile, { force: true });
    }
  }
  throw new VmstackError("PIDFILE", `cannot take ${paths.pidFile}`);
}

export async function runVmstackd(o: VmstackdOptions): Promise<number> {
  const busyPollUs = xenstoredBusyPollUs(o); // a bad setting stops vmstackd before anything starts
  const paths = daemonPaths(o.env, { stateDir: o.stateDir, runDir: o.runDir });
  const ring = new LogRing(2000, o.out);
  const holder = takePidFile(paths);
  if (holder !== undefined) {
    ring.add(`vmstackd already runs (pid ${holder}); not starting another`);
    return 0;
  }
  let xsd: Xenstored | undefined;
  let xsServer: SocketServer | undefined;
  let xs: XenstoreClient;
  let api: Server | undefined;
  let manager: DomainManager | undefined;
  const stop = new AbortController();
  // The embedded xenstored's journal failed: it has closed every connection and accepts nothing
  // more, so vmstackd stops too (domains keep running) rather than serve a dead store.
  let journalFailure: unknown;
  try {
    mkdirSync(paths.stateDir, { recursive: true });
    if (await answers(paths.xenstoreSocket)) {
      xs = await connectXenstore({ socket: paths.xenstoreSocket });
      ring.add(`using the xenstored at ${paths.xenstoreSocket}`);
    } else {
      xsd = createXenstored({
        stateDir: paths.xenstoreStateDir,
        onFatal: (e) => {
          journalFailure = e;
          stop.abort();
        },
      });
      for (const l of xsd.loadReport) ring.add(`xenstored: ${l}`);
      xsServer = await listenUnix(xsd, paths.xenstoreSocket, { busyPollUs });
      xs = new XenstoreClient(xsd.openConnection({ domid: 0 }));
      ring.add(`xenstored in-process, socket ${paths.xenstoreSocket} (busy-poll ${busyPollUs} µs${nativeIoUnavailable === "" ? "" : `, no native I/O: ${nativeIoUnavailable}`})`);
    }
    const envDom0 = Number(o.env["VMSTACK_DOM0_MEM"]);
    const accel = await daemonAccel(o.env, (m) => ring.add(m), { signal: o.signal });
    manager = new DomainManager({
      paths,
      xs,
      dom0MemoryMiB: o.dom0MemoryMiB ?? (Number.isFinite(envDom0) && envDom0 > 0 ? envDom0 : 1024),
      hostMemoryMiB: Number(o.env["VMSTACK_HOST_MEM"]) > 0 ? Number(o.env["VMSTACK_HOST_MEM"]) : hostMemoryMiB(),
      accel,
      env: o.env,
      log: (m) => ring.add(m),
      startTimeoutMs: accel === "tcg" ? 30_000 : 10_000,
      ...(xsd ? { guestXenstore: (domid: number) => xsd!.openConnection({ domid }) } : {}),
    });
    await manager.start();
    const ctx: OpsContext = {
      manager,
      dmesg: ring,
      xenstored: xsd ? "in-process" : "external",
      xenstoreSocket: paths.xenstoreSocket,
      quit: () => stop.abort(),
      agentTimeoutMs: bootTimeoutMs(accel, o.env),
      cli: o.cli,
    };
    api = await listenApi(paths.socket, (req, signal) => handle(ctx, req, signal), (e) => ring.add(`BUG: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`));
    ring.add(`vmstackd ${process.pid} listening on ${paths.socket} (${manager.domains.length} domains)`);
    await new Promise<void>((resolve) => {
      const done = (): void => resolve();
      if (o.signal.aborted || stop.signal.aborted) return done();
      o.signal.addEventListener("abort", done, { once: true });
      stop.signal.addEventListener("abort", done, { once: true });
    });
    if (journalFailure !== undefined) {
      ring.add(`vmstackd stopping: its xenstored cannot write the journal in ${paths.xenstoreStateDir} (${messageOf(journalFailure)}); domains keep running`);
      return 1;
    }
    ring.add("vmstackd stopping; domains keep running");
    return 0;
  } catch (e) {
    ring.add(`vmstackd failed: ${messageOf(e)}`);
    throw e;
  } finally {
    api?.close();
    rmSync(paths.socket, { force: true });
    manager?.detachAll();
    await xsServer?.close();
    xsd?.close();
    rmSync(paths.pidFile, { force: true });
  }
}

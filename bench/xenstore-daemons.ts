/**
 * Starting the daemons the xenstore benchmark compares, each as its own process on its own Unix
 * socket: vmstack's xenstored (`dist/src/bin/xenstored.js`, persistent state directory) and Xen
 * 4.17's C and OCaml daemons via `../shared/peers/xenstored-peer`.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { procStat } from "../src/vmm/domain-record.js";

const run = promisify(execFile);
/** Repository root: this file is dist/bench/xenstore-daemons.js once built. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export interface BenchDaemon {
  readonly name: string;
  readonly socket: string;
  /** The daemon's pid (for RSS). */
  pid(): number;
  stop(): Promise<void>;
}

export interface VmstackDaemon extends BenchDaemon {
  readonly stateDir: string;
  /** Stop the process: SIGTERM (clean: journal flushed) or SIGKILL (a crash). */
  kill(signal: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Start it again on the same state directory; resolves once it accepts connections. */
  launch(): Promise<void>;
}

function waitForLine(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let out = "";
    let err = "";
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes("\n")) {
        child.stdout?.off("data", onData);
        resolvePromise();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    child.once("exit", (code) => reject(new Error(`${what} exited ${String(code)} before it was ready: ${err.trim()}`)));
  });
}

function stopChild(child: ChildProcess, signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolvePromise) => {
    child.once("exit", () => resolvePromise());
    child.kill(signal);
  });
}

/**
 * vmstack's daemon with a state directory (replies wait for the journal write, "write", or for its
 * fdatasync, "fsync"), or in memory only.
 */
export async function startVmstack(opts: { name: string; mode: "write" | "fsync" | "memory"; busyPollUs?: number; nativeIo?: boolean } = { name: "vmstack", mode: "write" }): Promise<VmstackDaemon> {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-bench-xs-"));
  const socket = join(dir, "socket");
  const stateDir = join(dir, "state");
  const bin = join(ROOT, "dist/src/bin/xenstored.js");
  let child: ChildProcess;
  const launch = async (): Promise<void> => {
    const storage = opts.mode === "memory" ? ["--no-persist"] : ["--state-dir", stateDir, "--durability", opts.mode];
    const poll = opts.busyPollUs === undefined ? [] : ["--busy-poll-us", String(opts.busyPollUs)];
    const io = opts.nativeIo === false ? ["--no-native-io"] : [];
    child = spawn(process.execPath, [bin, "--socket", socket, ...storage, ...poll, ...io], { stdio: ["ignore", "pipe", "pipe"] });
    await waitForLine(child, "vmstack xenstored");
  };
  await launch();
  return {
    name: opts.name,
    socket,
    stateDir,
    pid: () => child.pid ?? 0,
    kill: (signal) => stopChild(child, signal),
    launch,
    stop: async () => {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function peersScript(): string {
  return process.env["VMSTACK_XEN_PEERS_SCRIPT"] ?? resolve(ROOT, "../shared/peers/xenstored-peer");
}

/** Xen's daemon, or the reason it can't run here. */
export async function startXen(kind: "c" | "ocaml"): Promise<BenchDaemon | string> {
  if (!existsSync(peersScript())) return `no ${peersScript()}`;
  if (!existsSync("/usr/lib/xen-4.17/bin/xenstored")) return "xen-utils-4.17 is not installed";
  const dir = mkdtempSync(join(tmpdir(), `vmstack-bench-${kind}-`));
  await run(peersScript(), ["start", kind, dir], { timeout: 30_000 });
  const pid = Number(readFileSync(join(dir, "pid"), "utf8").trim());
  return {
    name: kind,
    socket: join(dir, "socket"),
    pid: () => pid,
    stop: async () => {
      await run(peersScript(), ["stop", dir], { timeout: 30_000 });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** CPU time a process has used so far, all threads, in nanoseconds (/proc/PID/task/*\/schedstat). */
export function cpuNs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns;
}

/** Resident set size of a process in MiB (/proc/PID/status VmRSS). */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The CPU a process's main thread last ran on, or -1 if it is gone. */
export function lastCpu(pid: number): number {
  return procStat(pid)?.cpu ?? -1;
}

/** Pin every thread of a process to a CPU, or a list ("0-1"), with taskset(1) (util-linux). */
export async function pinToCpu(pid: number, cpus: number | string): Promise<void> {
  await run("taskset", ["-a", "-p", "-c", String(cpus), String(pid)], { timeout: 10_000 });
}

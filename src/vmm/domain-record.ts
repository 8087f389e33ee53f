/**
 * The per-domain record vmstackd keeps on disk (`<state>/domains/<domid>.json`), written before
 * anything is started and updated as things change. With it, a restarted vmstackd (even after
 * kill -9) finds every QEMU again: the pid plus its start time (so a recycled pid is not mistaken
 * for the domain), the QMP, console and agent sockets, and the validated config.
 */
import { readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { VmstackError, messageOf } from "../lib/errors.js";
import { readdirOrEmptySync } from "../lib/fs.js";

export interface DomainRecord {
  readonly version: 1;
  readonly domid: number;
  readonly name: string;
  readonly uuid: string;
  /** The validated DomainConfig (JSON). */
  readonly config: Record<string, unknown>;
  readonly runDir: string;
  readonly qmpSocket: string;
  readonly consoleSocket: string | null;
  readonly agentSocket: string | null;
  readonly qemuPid: number | null;
  /** Field 22 of /proc/PID/stat: tells this QEMU from a later process with the same pid. */
  readonly qemuStartTime: string | null;
  readonly helperPids: readonly number[];
  /** Wall clock ms when the domain was created (uptime). */
  readonly createdAt: number;
  /** Set when the guest shut down and on_poweroff=preserve keeps it ('s'), or it crashed and on_crash=preserve ('c'). */
  readonly preserved: "shutdown" | "crashed" | null;
}

export function recordPath(dir: string, domid: number): string {
  return join(dir, `${domid}.json`);
}

/** Written to a temporary file and renamed: a crash mid-write leaves the old record whole. */
export function writeRecord(dir: string, r: DomainRecord): void {
  const path = recordPath(dir, r.domid);
  writeFileSync(`${path}.tmp`, JSON.stringify(r, null, 1) + "\n");
  renameSync(`${path}.tmp`, path);
}

export function removeRecord(dir: string, domid: number): void {
  rmSync(recordPath(dir, domid), { force: true });
  rmSync(`${recordPath(dir, domid)}.tmp`, { force: true });
}

export function parseRecord(value: unknown, where: string): DomainRecord {
  const o = value as Record<string, unknown>;
  const ok =
    typeof o === "object" && o !== null && o["version"] === 1 && Number.isInteger(o["domid"]) && typeof o["name"] === "string" &&
    typeof o["uuid"] === "string" && typeof o["config"] === "object" && o["config"] !== null && typeof o["runDir"] === "string" &&
    typeof o["qmpSocket"] === "string" && typeof o["createdAt"] === "number" && Array.isArray(o["helperPids"]);
  if (!ok) throw new VmstackError("BAD_RECORD", `${where}: not a vmstackd domain record`, { facts: { where } });
  return o as unknown as DomainRecord;
}

/** Every readable record; unreadable ones are reported, not fatal (one bad file must not hide the rest). */
export function readRecords(dir: string, report: (m: string) => void): DomainRecord[] {
  const names = readdirOrEmptySync(dir);
  const out: DomainRecord[] = [];
  for (const n of names) {
    if (!/^\d+\.json$/.test(n)) continue;
    const path = join(dir, n);
    try {
      out.push(parseRecord(JSON.parse(readFileSync(path, "utf8")), path));
    } catch (e) {
      report(`ignoring ${path}: ${messageOf(e)}`);
    }
  }
  return out.sort((a, b) => a.domid - b.domid);
}

// ---- /proc facts about a QEMU process ----

export interface ProcStat {
  /** R, S, D, Z, T, … */
  readonly state: string;
  readonly startTime: string;
  /** utime + stime in clock ticks. */
  readonly cpuTicks: number;
  readonly rssPages: number;
  /** The CPU the (main) thread last ran on (field 39); -1 if the kernel did not say. */
  readonly cpu: number;
}

/** Fields after the command name, which may itself hold spaces and parentheses (proc(5)). */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const f = text.slice(close + 2).trim().split(/\s+/);
  // f[0] is field 3 (state); field N is f[N - 3].
  const state = f[0];
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  const start = f[19];
  const rss = Number(f[21]);
  if (state === undefined || start === undefined) return undefined;
  const cpu = f[36] === undefined ? -1 : Number(f[36]);
  return { state, startTime: start, cpuTicks: utime + stime, rssPages: rss, cpu };
}

export function procStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ESRCH") return undefined;
    throw e;
  }
}

/**
 * Whether the QEMU of a record still runs. A zombie counts as gone: a detached QEMU is reaped by
 * PID 1, which may take seconds (libvirt-peer.md), and kill(pid, 0) succeeds on a zombie.
 */
export function qemuAlive(pid: number, startTime: string | null): boolean {
  const s = procStat(pid);
  if (!s || s.state === "Z" || s.state === "X") return false;
  return startTime === null || s.startTime === startTime;
}

/** Any vCPU thread on a CPU right now → 'r', else 'b' (xl shows idle guests as blocked). */
export function vcpuRunning(pid: number): boolean {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return false;
  }
  for (const t of tasks) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8");
      if (!/\(CPU \d+\//.test(text)) continue;
      if (parseProcStat(text)?.state === "R") return true;
    } catch {
      // The thread ended between readdir and read: it is not running.
      continue;
    }
  }
  return false;
}

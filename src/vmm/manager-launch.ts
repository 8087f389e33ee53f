/**
 * Starting a domain's processes: prepare files (images, scratch disks, UEFI variables), start the
 * helpers (virtiofsd) and QEMU detached in their own session (setsid) so they outlive vmstackd,
 * then connect QMP and the console. Any failure undoes everything this step made (kills the
 * processes, removes the run directory): a failed create leaves nothing behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import type { DomainConfig, DomainPlan } from "../domain/index.js";
import { compileDomain } from "../domain/index.js";
import { qemuBinary, tscKhz } from "./host.js";
import { Domain, type DomainHooks } from "./domain.js";
import { type DomainRecord, procStat, writeRecord } from "./domain-record.js";
import { type DaemonPaths, domainRunDir, domainStateDir } from "./manager-paths.js";
import { runCommand } from "../lib/process.js";
import { resolveGuestGrub } from "../image/index.js";
import { retryUntil } from "../lib/retry.js";
import { VmstackError, messageOf } from "../lib/errors.js";

export interface LaunchOptions {
  readonly paths: DaemonPaths;
  readonly domid: number;
  readonly uuid: string;
  readonly config: DomainConfig;
  readonly paused: boolean;
  readonly accel: "kvm" | "tcg";
  readonly createdAt: number;
  readonly hooks: DomainHooks;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** A migration source for QEMU's `-incoming` (restore: manager-save.ts). */
  readonly incoming?: string | undefined;
}

export function planFor(
  o: Pick<LaunchOptions, "paths" | "domid" | "config" | "paused" | "accel">,
  resolvedBoot?: { kernel: string; initrd?: string; cmdline?: string },
): DomainPlan {
  const khz = tscKhz();
  return compileDomain(o.config, {
    ...(resolvedBoot ? { resolvedBoot } : {}),
    runDir: domainRunDir(o.paths, o.domid),
    stateDir: domainStateDir(o.paths, o.config.name),
    accel: o.config.accel === "auto" ? o.accel : o.config.accel,
    ...(khz === undefined ? {} : { tscKhz: khz }),
    paused: o.paused,
  });
}

/** Starts QEMU for a record-to-be and returns the connected Domain; on failure nothing remains. */
export async function launchDomain(o: LaunchOptions): Promise<Domain> {
  let plan = planFor(o);
  const runDir = domainRunDir(o.paths, o.domid);
  const started: number[] = [];
  let child: ChildProcess | undefined;
  let domain: Domain | undefined;
  try {
    rmSync(runDir, { recursive: true, force: true });
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    mkdirSync(domainStateDir(o.paths, o.config.name), { recursive: true });
    mkdirSync(o.paths.logDir, { recursive: true });
    for (const step of plan.prepare) {
      switch (step.kind) {
        case "create-image-if-missing":
          if (!existsSync(step.path)) await runCommand(step.argv, "qemu-img");
          break;
        case "create-scratch":
          await runCommand(step.argv, "qemu-img");
          break;
        case "copy-if-missing":
          if (!existsSync(step.to)) copyFileSync(step.from, step.to);
          break;
      }
    }
    // pv-grub / pygrub: the guest's own menu names kernel, initrd and command line; read it now,
    // after the disks exist, and compile again with what it named.
    const grub = o.config.boot.guestGrub;
    if (grub !== undefined) {
      const disk = o.config.disks[grub.disk];
      if (disk?.path === undefined) {
        throw new VmstackError("GUEST_GRUB_NO_DISK", `boot.guestGrub names disk ${grub.disk}, but the domain has no disk image there`, { facts: { disk: grub.disk } });
      }
      const outDir = join(runDir, "grub-boot");
      mkdirSync(outDir, { recursive: true });
      const boot = await resolveGuestGrub({
        disk: disk.path,
        format: disk.format === "qcow2" ? "qcow2" : "raw",
        menu: grub.menu,
        partition: grub.partition,
        entry: grub.entry,
        outDir,
        signal: o.signal,
      });
      o.hooks.log(`${o.config.name}: booting GRUB entry ${boot.entry.index} '${boot.entry.title}' from ${boot.menuPath} (${boot.filesystem})${boot.note ? `; ${boot.note}` : ""}`);
      plan = planFor(o, { kernel: boot.kernel, ...(boot.initrd ? { initrd: boot.initrd } : {}), cmdline: boot.cmdline });
    }
    for (const h of plan.helpers) {
      const p = spawnDetached(h.argv, join(runDir, `${h.name}.log`));
      if (p.pid !== undefined) started.push(p.pid);
      await retryUntil(() => (existsSync(h.socketPath) ? true : undefined), { what: `${h.name} socket`, timeoutMs: o.timeoutMs, signal: o.signal });
    }
    const qemuLog = join(runDir, "qemu.log");
    child = spawnDetached([qemuBinary(), ...plan.argv, ...(o.incoming === undefined ? [] : ["-incoming", o.incoming])], qemuLog);
    const pid = child.pid;
    if (pid === undefined) throw new VmstackError("SPAWN_FAILED", `cannot start QEMU (${qemuBinary()})`);
    const exited = new AbortController();
    child.once("exit", (code, sig) => exited.abort(new VmstackError("QEMU_FAILED", `QEMU exited at start (${sig ?? `exit ${code}`}): ${tail(qemuLog)}`, { facts: { code, signal: sig } })));
    child.once("error", (e) => exited.abort(new VmstackError("SPAWN_FAILED", `cannot start QEMU: ${e.message}`, { cause: e })));
    const record: DomainRecord = {
      version: 1,
      domid: o.domid,
      name: o.config.name,
      uuid: o.uuid,
      config: o.config as unknown as Record<string, unknown>,
      runDir,
      qmpSocket: plan.paths.qmp,
      consoleSocket: o.config.serial === "socket" ? (plan.paths.console ?? null) : null,
      agentSocket: plan.paths.agent ?? null,
      qemuPid: pid,
      qemuStartTime: procStat(pid)?.startTime ?? null,
      helperPids: started,
      createdAt: o.createdAt,
      preserved: null,
    };
    // The record is on disk before we wait on anything: a vmstackd killed right now still finds this QEMU.
    writeRecord(o.paths.domainsDir, record);
    domain = new Domain(record, o.hooks, child);
    const signal = AbortSignal.any([exited.signal, ...(o.signal ? [o.signal] : [])]);
    try {
      await domain.connect(join(o.paths.logDir, `${o.config.name}.console.log`), o.timeoutMs, signal);
    } catch (e) {
      // A QEMU that dies at start usually resets the QMP connection first: its exit (with its
      // stderr) is the better error, so give the exit event a moment to arrive.
      if (!exited.signal.aborted) await Promise.race([once(exited.signal, "abort"), sleep(1000)]);
      if (exited.signal.aborted) throw exited.signal.reason;
      throw e;
    }
    return domain;
  } catch (e) {
    domain?.detach();
    if (child?.pid !== undefined) killQuietly(child.pid);
    for (const p of started) killQuietly(p);
    rmSync(runDir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * A process in its own session with no tie to vmstackd: stdin/stdout closed, stderr to a file.
 * It is still our child until vmstackd exits (so we reap it promptly); after that, init adopts it.
 */
export function spawnDetached(argv: readonly string[], stderrFile: string): ChildProcess {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("spawnDetached: empty argv");
  const fd = openSync(stderrFile, "a");
  try {
    const child = spawn(file, args, { detached: true, stdio: ["ignore", "ignore", fd] });
    child.on("error", () => undefined);
    child.unref();
    return child;
  } finally {
    closeSync(fd);
  }
}

export function killQuietly(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
  }
}

function tail(file: string): string {
  try {
    const lines = readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "");
    return lines.slice(-5).join(" | ") || "(no output)";
  } catch (e) {
    return `(no log: ${messageOf(e)})`;
  }
}

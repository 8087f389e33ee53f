/**
 * vmstackd's domain manager: the registry of domains (domids, names), create with memory
 * accounting and complete rollback, the on_poweroff/on_reboot/on_crash policy when a QEMU ends,
 * and re-attachment to every running domain when vmstackd starts (after a clean stop or kill -9).
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { XenstoreClient } from "../xenstore/client.js";
import { checkDomainSpec, type DomainConfig, errorsOf, formatProblem } from "../domain/index.js";
import { Domain, type DomainHooks, type ExitCause } from "./domain.js";
import { type DomainRecord, qemuAlive, readRecords, removeRecord, writeRecord } from "./domain-record.js";
import { domainIdsInStore, removeDomain, renameDomain, writeDom0, writeDomain } from "./domain-xenstore.js";
import { killQuietly, launchDomain } from "./manager-launch.js";
import { afterDump, coreDumpPath, dumpCore, incarnationName } from "./manager-crash.js";
import { removeDeviceBackends, writeDevices } from "./device-xenstore.js";
import type { DaemonPaths } from "./manager-paths.js";
import type { DomainInfo } from "./api/protocol.js";
import { VmstackError, messageOf } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { GuestXenstoreChannels } from "./guest-xenstore-channel.js";
import { forgetGuestReports } from "./pv-control.js";
import { mountShares } from "./manager-mounts.js";

export interface ManagerOptions {
  readonly paths: DaemonPaths;
  readonly xs: XenstoreClient;
  /** Memory kept for the host itself (Xen's dom0_mem), MiB. */
  readonly dom0MemoryMiB: number;
  readonly hostMemoryMiB: number;
  readonly accel: "kvm" | "tcg";
  readonly env: NodeJS.ProcessEnv;
  readonly log: (message: string) => void;
  /** Deadline for QEMU to start answering QMP (scaled for TCG by the caller). */
  readonly startTimeoutMs: number;
  /** A xenstored connection bound to a domid, for guests' xenstore channels (in-process xenstored only). */
  readonly guestXenstore?: ((domid: number) => Duplex) | undefined;
}

export function hostMemoryMiB(meminfo = readFileSync("/proc/meminfo", "utf8")): number {
  const kb = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0);
  return Math.floor(kb / 1024);
}

export class DomainManager {
  readonly #domains = new Map<number, Domain>();
  /** Names being created, so two concurrent creates of one name cannot both pass the check. */
  readonly #reserved = new Set<string>();
  #nextDomid = 1;
  readonly xenstoreChannels: GuestXenstoreChannels;

  constructor(readonly o: ManagerOptions) {
    this.xenstoreChannels = new GuestXenstoreChannels(o.guestXenstore, o.log);
  }

  get domains(): readonly Domain[] {
    return [...this.#domains.values()].sort((a, b) => a.domid - b.domid);
  }

  /** Reads every record, re-attaches to live QEMUs and clears out the dead; writes Domain-0. */
  async start(): Promise<void> {
    mkdirSync(this.o.paths.domainsDir, { recursive: true });
    await writeDom0(this.o.xs, this.o.dom0MemoryMiB);
    this.#nextDomid = Math.max(1, Number(readIfExists(join(this.o.paths.stateDir, "next-domid")) ?? 1) || 1);
    const records = readRecords(this.o.paths.domainsDir, this.o.log);
    // A vmstackd killed between writing a domain's xenstore nodes and its record left nodes with
    // no domain behind them (Xen's "(null)" zombie): sweep them before anything else.
    const known = new Set(records.map((r) => r.domid));
    for (const id of await domainIdsInStore(this.o.xs)) {
      if (id === 0 || known.has(id)) continue;
      const vm = await this.o.xs.tryRead(`/local/domain/${id}/vm`);
      this.o.log(`removing xenstore nodes of domid ${id}, which has no domain record`);
      await removeDomain(this.o.xs, id, vm?.replace(/^\/vm\//, "") ?? "none");
      this.#nextDomid = Math.max(this.#nextDomid, id + 1);
    }
    for (const r of records) {
      this.#nextDomid = Math.max(this.#nextDomid, r.domid + 1);
      const alive = r.qemuPid !== null && qemuAlive(r.qemuPid, r.qemuStartTime);
      if (!alive && r.preserved === null) {
        this.o.log(`${r.name} (domid ${r.domid}): its QEMU is gone; applying on_crash`);
        const d = new Domain(r, this.#hooks());
        this.#domains.set(r.domid, d);
        this.#onExit(d, "killed");
        continue;
      }
      const d = new Domain(r, this.#hooks());
      this.#domains.set(r.domid, d);
      if (!alive) continue; // preserved crashed/shut-down domain without QEMU: listed until destroyed
      try {
        await d.connect(join(this.o.paths.logDir, `${r.name}.console.log`), this.o.startTimeoutMs);
        this.o.log(`re-attached ${r.name} (domid ${r.domid}, pid ${r.qemuPid})`);
        this.xenstoreChannels.attach(r.domid, r.runDir, r.name);
      } catch (e) {
        this.o.log(`${r.name}: cannot re-attach to QEMU ${r.qemuPid}: ${messageOf(e)}`);
      }
    }
  }

  #hooks(): DomainHooks {
    return {
      onExit: (d, cause) => this.#onExit(d, cause),
      onPanic: (d) => this.#onPanic(d),
      log: this.o.log,
      onReset: (d) => {
        void forgetGuestReports(this.o.xs, d.domid).catch((e: unknown) => this.o.log(`${d.name}: clearing the guest's reports: ${messageOf(e)}`));
        // A reboot unmounted everything: mount the shares again once the agent is back.
        this.#sharesMounted.delete(d);
        this.mountSharesOnce(d);
      },
    };
  }

  /** Domains whose shares are mounted in the current boot (or being mounted). */
  readonly #sharesMounted = new WeakSet<Domain>();

  /** Mounts the domain's shares that have a target, once per boot (manager-mounts.ts). */
  mountSharesOnce(d: Domain): void {
    const c = configOf(d.record);
    if (!c.agent || !c.shares.some((s) => s.target !== undefined) || this.#sharesMounted.has(d)) return;
    this.#sharesMounted.add(d);
    void mountShares(d, c.shares, this.o.log).then((ok) => {
      if (!ok) this.#sharesMounted.delete(d);
    });
  }

  find(ref: string): Domain {
    const byId = /^\d+$/.test(ref) ? this.#domains.get(Number(ref)) : undefined;
    const d = byId ?? this.domains.find((x) => x.name === ref);
    if (!d) throw new VmstackError("NO_SUCH_DOMAIN", `no domain '${ref}'`, { facts: { domain: ref } });
    return d;
  }

  committedMiB(): number {
    // A domain kept after its QEMU ended (preserve, rename-restart) holds no memory.
    return this.domains.reduce((sum, d) => sum + (d.record.qemuPid === null && d.record.preserved !== null ? 0 : configOf(d.record).maxmem), 0);
  }

  freeMiB(): number {
    return this.o.hostMemoryMiB - this.o.dom0MemoryMiB - this.committedMiB();
  }

  async create(spec: Record<string, unknown>, paused: boolean, force: boolean, signal?: AbortSignal): Promise<DomainInfo> {
    const checked = checkDomainSpec(spec, { source: "create request" });
    if (checked.config === undefined || errorsOf(checked.problems).length > 0) {
      throw new VmstackError("BAD_CONFIG", `invalid domain config:\n  ${errorsOf(checked.problems).map(formatProblem).join("\n  ")}`);
    }
    const config = checked.config;
    const name = config.name;
    if (this.#reserved.has(name) || this.domains.some((d) => d.name === name)) {
      throw new VmstackError("DOMAIN_EXISTS", `a domain named '${name}' already exists`, { facts: { name } });
    }
    const free = this.freeMiB();
    if (config.maxmem > free && !force) {
      throw new VmstackError(
        "OUT_OF_MEMORY",
        `not enough memory for '${name}': it needs ${config.maxmem} MiB, ${free} MiB is free (host ${this.o.hostMemoryMiB} MiB, dom0 reservation ${this.o.dom0MemoryMiB} MiB, domains ${this.committedMiB()} MiB); use --force to overcommit`,
        { facts: { needMiB: config.maxmem, freeMiB: free } },
      );
    }
    this.#reserved.add(name);
    // Like Xen, ids are not reused soon: the counter survives restarts of vmstackd.
    const domid = this.#nextDomid++;
    writeFileSync(join(this.o.paths.stateDir, "next-domid"), `${this.#nextDomid}\n`);
    const uuid = config.uuid ?? randomUUID();
    let written = false;
    try {
      await writeDomain(this.o.xs, xsFacts(domid, uuid, config, Date.now()));
      written = true;
      const d = await this.#launch(domid, uuid, config, paused, Date.now(), signal);
      // The devices as Xen lays them out (device/vbd, backend/vbd, …); hotplug keeps them current.
      await writeDevices(this.o.xs, domid, config);
      this.o.log(`created ${name} (domid ${domid}, pid ${d.record.qemuPid})`);
      return this.info(d);
    } catch (e) {
      if (written) await removeDomain(this.o.xs, domid, uuid).catch((x: unknown) => this.o.log(`cleanup of ${name} in xenstore: ${messageOf(x)}`));
      if (written) await removeDeviceBackends(this.o.xs, domid).catch((x: unknown) => this.o.log(`cleanup of ${name}'s backends in xenstore: ${messageOf(x)}`));
      removeRecord(this.o.paths.domainsDir, domid);
      this.o.log(`create ${name} failed: ${messageOf(e)}`);
      throw e;
    } finally {
      this.#reserved.delete(name);
    }
  }

  async #launch(domid: number, uuid: string, config: DomainConfig, paused: boolean, createdAt: number, signal?: AbortSignal): Promise<Domain> {
    const d = await launchDomain({ paths: this.o.paths, domid, uuid, config, paused, accel: this.o.accel, createdAt, hooks: this.#hooks(), timeoutMs: this.o.startTimeoutMs, signal });
    this.#domains.set(domid, d);
    this.xenstoreChannels.attach(domid, d.record.runDir, d.name);
    if (!paused) this.mountSharesOnce(d);
    return d;
  }

  /**
   * The guest panicked and QEMU paused it. on_crash preserve: it stays, listed as crashed.
   * coredump-*: write its memory, then end QEMU; the exit applies the rest of the action.
   */
  #onPanic(d: Domain): void {
    const c = configOf(d.record);
    if (!c.onCrash.startsWith("coredump-")) return;
    void d.enqueue(async () => {
      const file = coreDumpPath(this.o.paths, d.name);
      try {
        await dumpCore(d, file);
        this.o.log(`${d.name}: guest memory dumped to ${file}`);
      } catch (e) {
        this.o.log(`${d.name}: core dump failed: ${messageOf(e)}`);
      }
      await d.qmpExecute("quit").catch((e: unknown) => this.o.log(`${d.name}: quit after the core dump: ${messageOf(e)}`));
    });
  }

  /** QEMU ended: apply the domain's action for why it ended (xl.cfg on_poweroff/on_reboot/on_crash). */
  #onExit(d: Domain, cause: ExitCause): void {
    const c = configOf(d.record);
    const chosen = d.dying || cause === "host" ? "destroy" : cause === "guest-shutdown" ? c.onPoweroff : cause === "guest-reset" ? c.onReboot : c.onCrash;
    const action = afterDump(chosen);
    // A QEMU that died (rather than a guest that panicked) left no memory to dump.
    const note = chosen !== action && cause !== "guest-panic" ? ` (no core dump: QEMU ended by ${cause})` : "";
    this.o.log(`${d.name}: QEMU ended (${cause}); action ${chosen}${note}`);
    void d.enqueue(async () => {
      switch (action) {
        case "rename-restart":
          await this.#renameRestart(d, cause);
          return;
        case "restart":
          try {
            // xl gives the restarted domain a new domid; vmstack keeps it, so names and ids stay
            // stable. The old entry stays listed until the new QEMU replaces it.
            await this.#launch(d.domid, d.record.uuid, c, false, Date.now());
            this.o.log(`${d.name}: restarted`);
          } catch (e) {
            this.o.log(`${d.name}: restart failed: ${messageOf(e)}`);
            await this.#cleanup(d);
          }
          return;
        case "preserve":
          // Kept, without a QEMU, as a crashed ('c') or shut-down ('s') entry until destroyed.
          d.record = { ...d.record, qemuPid: null, preserved: cause === "guest-shutdown" ? "shutdown" : "crashed" };
          writeRecord(this.o.paths.domainsDir, d.record);
          return;
        case "destroy":
          await this.#cleanup(d);
          return;
      }
    });
  }

  /**
   * rename-restart: the old domain stays (as a preserved shut-down or crashed entry, without
   * QEMU) under NAME--incarnation-N, and a new domain — new domid, new uuid — starts with the
   * name and config. The preserved one goes with `vmstack destroy` as usual.
   */
  async #renameRestart(d: Domain, cause: ExitCause): Promise<void> {
    const name = d.name;
    const renamed = incarnationName(name, new Set([...this.domains.map((x) => x.name), ...this.#reserved]));
    const c = configOf(d.record);
    await renameDomain(this.o.xs, d.domid, d.record.uuid, renamed).catch((e: unknown) => this.o.log(`${name}: xenstore rename: ${messageOf(e)}`));
    d.detach();
    d.record = { ...d.record, name: renamed, config: { ...d.record.config, name: renamed }, qemuPid: null, preserved: cause === "guest-shutdown" ? "shutdown" : "crashed" };
    writeRecord(this.o.paths.domainsDir, d.record);
    this.o.log(`${name}: kept as ${renamed} (domid ${d.domid}); starting a new ${name}`);
    // The uuid names /vm/<uuid>: the kept domain has it, so the new one gets its own.
    const { uuid: _kept, ...spec } = c;
    try {
      const info = await this.create({ ...spec }, false, true);
      this.o.log(`${name}: restarted as domid ${info.domid}`);
    } catch (e) {
      this.o.log(`${name}: rename-restart could not start a new domain: ${messageOf(e)}`);
    }
  }

  async #cleanup(d: Domain): Promise<void> {
    d.detach();
    this.xenstoreChannels.detach(d.domid);
    for (const p of d.record.helperPids) killQuietly(p, "SIGTERM");
    this.#domains.delete(d.domid);
    await removeDomain(this.o.xs, d.domid, d.record.uuid).catch((e: unknown) => this.o.log(`${d.name}: xenstore cleanup: ${messageOf(e)}`));
    await removeDeviceBackends(this.o.xs, d.domid).catch((e: unknown) => this.o.log(`${d.name}: xenstore backend cleanup: ${messageOf(e)}`));
    removeRecord(this.o.paths.domainsDir, d.domid);
    rmSync(d.record.runDir, { recursive: true, force: true });
    this.o.log(`${d.name} (domid ${d.domid}) destroyed`);
  }

  /** Pulls the plug (xl destroy): quit over QMP, SIGKILL if that does not end it at once. */
  destroy(d: Domain): Promise<void> {
    return d.enqueue(async () => {
      d.dying = true;
      const pid = d.record.qemuPid;
      if (pid !== null && qemuAlive(pid, d.record.qemuStartTime)) {
        await d.qmpExecute("quit").catch((e: unknown) => this.o.log(`${d.name}: quit: ${messageOf(e)}`));
        killQuietly(pid, "SIGKILL");
      }
      // The exit handler (fed by QMP closing) queues the cleanup. With no QEMU, or a QEMU we never
      // reached over QMP (re-attach failed), nothing will report the exit: clean up here.
      if (pid === null) await this.#cleanup(d);
      else if (!d.qmp?.connected) {
        await retryUntil(() => (qemuAlive(pid, d.record.qemuStartTime) ? undefined : true), { what: `QEMU ${pid} to exit`, timeoutMs: 10_000, maxDelayMs: 50 });
        await this.#cleanup(d);
      }
    }).then(() => this.#waitGone(d, 10_000));
  }

  /** Until the domain is gone (or, with `orStopped`, kept as shut down or crashed). */
  async #waitGone(d: Domain, timeoutMs: number, signal?: AbortSignal, orStopped = false): Promise<void> {
    const stopped = (): boolean => orStopped && (d.record.preserved !== null || d.status === "shutdown");
    await retryUntil(() => (this.#domains.get(d.domid) === d && !stopped() ? undefined : true), { what: `domain ${d.name} to go`, timeoutMs, signal, maxDelayMs: 50 });
  }

  waitGone(d: Domain, timeoutMs: number, signal?: AbortSignal, orStopped = false): Promise<void> {
    return this.#waitGone(d, timeoutMs, signal, orStopped);
  }

  info(d: Domain, withConfig = false): DomainInfo {
    const c = configOf(d.record);
    return {
      name: d.name,
      domid: d.domid,
      uuid: d.record.uuid,
      memoryMiB: c.memory,
      maxmemMiB: c.maxmem,
      vcpus: c.vcpus,
      state: d.stateLetters(),
      cpuSeconds: d.cpuSeconds(),
      uptimeSeconds: (Date.now() - d.record.createdAt) / 1000,
      pid: d.record.qemuPid,
      ...(withConfig ? { config: d.record.config } : {}),
    };
  }

  dom0Info(): DomainInfo {
    return {
      name: "Domain-0",
      domid: 0,
      uuid: "00000000-0000-0000-0000-000000000000",
      memoryMiB: this.o.dom0MemoryMiB,
      maxmemMiB: this.o.dom0MemoryMiB,
      vcpus: hostCpus(),
      state: "r-----",
      // vmstackd's own CPU time: the toolstack is what runs in "dom0" here.
      cpuSeconds: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
      uptimeSeconds: Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]),
      pid: process.pid,
    };
  }

  rename(d: Domain, newName: string): Promise<void> {
    return d.enqueue(async () => {
      const checked = checkDomainSpec({ ...d.record.config, name: newName }, { source: "rename" });
      if (checked.config === undefined) throw new VmstackError("BAD_NAME", `'${newName}' is not a valid domain name`);
      if (this.domains.some((x) => x.name === newName) || this.#reserved.has(newName)) throw new VmstackError("DOMAIN_EXISTS", `a domain named '${newName}' already exists`);
      await renameDomain(this.o.xs, d.domid, d.record.uuid, newName);
      d.record = { ...d.record, name: newName, config: { ...d.record.config, name: newName } };
      writeRecord(this.o.paths.domainsDir, d.record);
    });
  }

  // ---- for restore (manager-save.ts): create's checks and bookkeeping around a different start ----

  /** Claims a name and a domid as create does (same checks, same messages); `release` frees the name. */
  claim(name: string, maxmemMiB: number, force: boolean): { domid: number; release: () => void } {
    if (this.#reserved.has(name) || this.domains.some((d) => d.name === name)) {
      throw new VmstackError("DOMAIN_EXISTS", `a domain named '${name}' already exists`, { facts: { name } });
    }
    const free = this.freeMiB();
    if (maxmemMiB > free && !force) {
      throw new VmstackError("OUT_OF_MEMORY", `not enough memory for '${name}': it needs ${maxmemMiB} MiB, ${free} MiB is free; use --force to overcommit`, {
        facts: { needMiB: maxmemMiB, freeMiB: free },
      });
    }
    this.#reserved.add(name);
    const domid = this.#nextDomid++;
    writeFileSync(join(this.o.paths.stateDir, "next-domid"), `${this.#nextDomid}\n`);
    return { domid, release: () => this.#reserved.delete(name) };
  }

  /** Starts QEMU (with `-incoming` for a restore) and registers the domain, as create does. */
  async launchRestored(domid: number, uuid: string, config: DomainConfig, incoming: string, signal?: AbortSignal): Promise<Domain> {
    await writeDomain(this.o.xs, xsFacts(domid, uuid, config, Date.now()));
    const d = await launchDomain({ paths: this.o.paths, domid, uuid, config, paused: true, accel: this.o.accel, createdAt: Date.now(), hooks: this.#hooks(), timeoutMs: this.o.startTimeoutMs, signal, incoming });
    this.#domains.set(domid, d);
    return d;
  }

  /** The daemon is stopping: let go of every domain, leaving them running. */
  detachAll(): void {
    for (const d of this.#domains.values()) d.detach();
    this.xenstoreChannels.closeAll();
  }
}

export function configOf(r: DomainRecord): DomainConfig {
  return r.config as unknown as DomainConfig;
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

function hostCpus(): number {
  return readFileSync("/proc/cpuinfo", "utf8").split("\n").filter((l) => l.startsWith("processor")).length;
}

function xsFacts(domid: number, uuid: string, c: DomainConfig, now: number): Parameters<typeof writeDomain>[1] {
  return {
    domid,
    name: c.name,
    uuid,
    memoryMiB: c.memory,
    maxmemMiB: c.maxmem,
    vcpus: c.vcpus,
    maxvcpus: c.maxvcpus,
    onPoweroff: c.onPoweroff,
    onReboot: c.onReboot,
    onCrash: c.onCrash,
    startTime: now / 1000,
  };
}

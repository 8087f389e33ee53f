/**
 * Changing a running domain (xl block-attach/-detach, network-attach/-detach, cd-insert/-eject,
 * mem-set, vcpu-set): validate the change against the domain's whole config, run the QMP steps
 * of hotplug.ts, wait for the guest where QEMU needs it to let go of a device, then make the new
 * config the domain's truth — its record (so `list -l`, a vmstackd restart, a restart on reboot
 * and a save see the current devices) and xenstore (device/vbd, device/vif, memory/target,
 * cpu/N/availability). Every change runs in the domain's operation queue. A failed change
 * undoes the QMP steps it made and leaves record and xenstore as they were.
 */
import { checkDomainSpec, type DiskConfig, type DomainConfig, errorsOf, formatProblem, type NicConfig } from "../domain/index.js";
import type { Domain } from "./domain.js";
import { type DomainManager, configOf } from "./manager.js";
import { writeRecord } from "./domain-record.js";
import {
  BALLOON_ID, type HotpluggableCpu, type QmpStep, assertHotplug, balloonDeviceAdd, balloonSteps, blockAttachSteps, blockNodeRemoval, cdEjectSteps,
  cdInsertSteps, deviceDel, freePort, guestCpuScript, networkAttachSteps, netdevRemoval, vcpuSetSteps,
} from "./hotplug.js";
import {
  XENBUS_CONNECTED, nicDevid, vbdBackendPath, vdevNumber, vdevOf, vifBackendPath, writeCpuAvailability, writeDevices, writeMemoryTarget,
} from "./device-xenstore.js";
import type { BlockInfo, HotplugRequest, NicInfo } from "./api/protocol-hotplug.js";
import { VmstackError, assertNever, isVmstackError, messageOf } from "../lib/errors.js";

export interface HotplugContext {
  readonly manager: DomainManager;
  /** For bringing hot-added vCPUs online in guests that run vmstack's agent. */
  readonly agentTimeoutMs: number;
}

export async function handleHotplug(ctx: HotplugContext, req: HotplugRequest, signal?: AbortSignal): Promise<unknown> {
  const m = ctx.manager;
  const d = m.find(req.domain);
  switch (req.op) {
    case "block-list":
      return blockList(d);
    case "network-list":
      return networkList(d);
    case "block-attach":
      return d.enqueue(() => blockAttach(m, d, req.disk, signal));
    case "block-detach":
      return d.enqueue(() => blockDetach(m, d, req.device, signal));
    case "network-attach":
      return d.enqueue(() => networkAttach(m, d, req.nic, signal));
    case "network-detach":
      return d.enqueue(() => networkDetach(m, d, req.device, signal));
    case "cd-insert":
      return d.enqueue(() => cdChange(m, d, req.vdev, { path: req.path, format: req.format }));
    case "cd-eject":
      return d.enqueue(() => cdChange(m, d, req.vdev, undefined));
    case "mem-set":
      return d.enqueue(() => memSet(m, d, req.memoryMiB));
    case "vcpu-set":
      return d.enqueue(() => vcpuSet(ctx, d, req.vcpus, signal));
    default:
      return assertNever(req, "hotplug request");
  }
}

export function blockList(d: Domain): BlockInfo[] {
  const c = configOf(d.record);
  return c.disks.map((x, i) => {
    const vdev = vdevOf(c.disks, i);
    const devid = vdevNumber(vdev);
    return {
      vdev, devid, id: x.id, path: x.path ?? null, format: x.format, media: x.media, readOnly: x.readOnly, interface: x.interface,
      backendPath: vbdBackendPath(d.domid, devid), state: XENBUS_CONNECTED,
    };
  });
}

export function networkList(d: Domain): NicInfo[] {
  const c = configOf(d.record);
  return c.nics.map((n, i) => {
    const devid = nicDevid(c.nics, i);
    return {
      devid, id: n.id, mac: n.mac, type: n.type, model: n.model, network: n.type === "private" ? n.network : n.type === "stream" ? n.path : null,
      backendPath: vifBackendPath(d.domid, devid), state: XENBUS_CONNECTED,
    };
  });
}

/** The domain's config with `change` applied, validated as a whole; problems name the device. */
function revalidate(d: Domain, next: Record<string, unknown>, what: string): DomainConfig {
  const checked = checkDomainSpec(next, { source: `${what} for ${d.name}` });
  const errors = errorsOf(checked.problems);
  if (checked.config === undefined || errors.length > 0) throw new VmstackError("BAD_CONFIG", `invalid ${what}:\n  ${errors.map(formatProblem).join("\n  ")}`);
  return checked.config;
}

/** The new config is the domain's truth: record first (what a restarted vmstackd reads), then xenstore. */
async function commit(m: DomainManager, d: Domain, config: DomainConfig): Promise<void> {
  d.record = { ...d.record, config: config as unknown as Record<string, unknown> };
  writeRecord(m.o.paths.domainsDir, d.record);
  await writeDevices(m.o.xs, d.domid, config);
}

async function run(d: Domain, steps: readonly QmpStep[]): Promise<void> {
  for (const s of steps) await d.qmpExecute(s.execute, s.arguments);
}

/** Runs steps in order; when one fails, undoes the ones before it (best effort) and rethrows. */
async function runAll(m: DomainManager, d: Domain, steps: readonly QmpStep[], undo: (done: readonly QmpStep[]) => QmpStep[]): Promise<void> {
  const done: QmpStep[] = [];
  try {
    for (const s of steps) {
      await d.qmpExecute(s.execute, s.arguments);
      done.push(s);
    }
  } catch (e) {
    for (const s of undo(done)) await d.qmpExecute(s.execute, s.arguments).catch((x: unknown) => m.o.log(`${d.name}: undoing ${s.execute}: ${messageOf(x)}`));
    throw e;
  }
}

/** A free hotplug port on q35 (none needed on pc): which ports hold a device, from QEMU itself. */
async function portFor(d: Domain, c: DomainConfig): Promise<number | undefined> {
  if (c.machine !== "q35") return undefined;
  const used = new Set<string>();
  for (const id of [...c.disks.map((x) => x.id), ...c.nics.map((x) => x.id), BALLOON_ID]) {
    try {
      used.add(await d.qmpExecute<string>("qom-get", { path: `/machine/peripheral/${id}`, property: "parent_bus" }));
    } catch (e) {
      // No such device (an empty slot of the list, or no balloon): it holds no port.
      if (!isVmstackError(e)) throw e;
    }
  }
  return freePort(c.hotplugSlots ?? 0, used, d.name);
}

function freeId(prefix: string, taken: readonly string[]): string {
  for (let k = 0; ; k++) if (!taken.includes(`${prefix}${k}`)) return `${prefix}${k}`;
}

/**
 * device_del asks the guest to release the device (an ACPI eject request; on q35 QEMU 7.2 also
 * drives its root ports through ACPI, or else the PCIe attention button, which Linux's pciehp
 * honours after a 5 s grace period); DEVICE_DELETED (naming the id, or the QOM path of a device
 * without one) says it did.
 */
async function unplug(m: DomainManager, d: Domain, id: string, signal?: AbortSignal): Promise<void> {
  const qmp = d.qmp;
  if (!qmp?.connected) throw new VmstackError("DOMAIN_NOT_RUNNING", `domain ${d.name} has no running QEMU`);
  const timeoutMs = Math.max(20_000, m.o.startTimeoutMs);
  const deleted = qmp.waitForEvent("DEVICE_DELETED", { timeoutMs, ...(signal ? { signal } : {}), filter: (e) => e.data["device"] === id || e.data["path"] === id });
  deleted.catch(() => undefined);
  await d.qmpExecute(deviceDel(id).execute, deviceDel(id).arguments);
  try {
    await deleted;
  } catch (e) {
    if (!isVmstackError(e, "TIMEOUT")) throw e;
    throw new VmstackError(
      "UNPLUG_TIMEOUT",
      `domain ${d.name}: the guest did not release ${id} within ${Math.round(timeoutMs / 1000)} s (a guest without ACPI or PCIe hotplug support ignores the request); the device stays attached`,
      { facts: { domain: d.name, device: id }, cause: e },
    );
  }
}

async function blockAttach(m: DomainManager, d: Domain, disk: Record<string, unknown>, _signal?: AbortSignal): Promise<BlockInfo> {
  const c = configOf(d.record);
  assertHotplug(c.machine, "attach a disk", d.name);
  const vdev = typeof disk["vdev"] === "string" ? disk["vdev"] : undefined;
  if (vdev !== undefined && c.disks.some((_, i) => vdevOf(c.disks, i) === vdev)) {
    throw new VmstackError("DEVICE_EXISTS", `domain ${d.name} already has a disk ${vdev}`, { facts: { domain: d.name, vdev } });
  }
  const id = typeof disk["id"] === "string" ? disk["id"] : freeId("disk", c.disks.map((x) => x.id));
  const next = revalidate(d, { ...c, disks: [...c.disks, { ...disk, id }] }, "disk");
  const added = next.disks[next.disks.length - 1] as DiskConfig;
  if (added.media === "cdrom") throw new VmstackError("HOTPLUG_UNSUPPORTED", `a cdrom drive cannot be added while running (its IDE/AHCI port takes no hotplug); give the domain an empty cdrom at create and use cd-insert`);
  const port = await portFor(d, c);
  const steps = blockAttachSteps(c.machine, added, port);
  await runAll(m, d, steps, (done) => (done.some((s) => s.execute === "device_add") ? [] : blockNodeRemoval(added.id).slice(2 - done.length)));
  await commit(m, d, next);
  m.o.log(`${d.name}: attached disk ${added.id} (${vdevOf(next.disks, next.disks.length - 1)}) ${added.path ?? ""}`);
  return blockList(d).find((b) => b.id === added.id) as BlockInfo;
}

function findDisk(d: Domain, c: DomainConfig, dev: string): number {
  const i = c.disks.findIndex((x, k) => x.id === dev || vdevOf(c.disks, k) === dev || String(vdevNumber(vdevOf(c.disks, k))) === dev);
  if (i < 0) throw new VmstackError("NO_SUCH_DEVICE", `domain ${d.name} has no disk '${dev}' (see vmstack block-list ${d.name})`, { facts: { domain: d.name, device: dev } });
  return i;
}

async function blockDetach(m: DomainManager, d: Domain, dev: string, signal?: AbortSignal): Promise<null> {
  const c = configOf(d.record);
  assertHotplug(c.machine, "detach a disk", d.name);
  const i = findDisk(d, c, dev);
  const disk = c.disks[i] as DiskConfig;
  if (disk.interface !== "virtio") throw new VmstackError("HOTPLUG_UNSUPPORTED", `disk ${vdevOf(c.disks, i)} is on ${disk.interface}, which cannot unplug while running`);
  await unplug(m, d, disk.id, signal);
  // Scratch disks and empty drives have nodes only when they have an image (qemu-args.ts).
  if (disk.path !== undefined || disk.scratch) await run(d, blockNodeRemoval(disk.id)).catch((e: unknown) => m.o.log(`${d.name}: blockdev-del ${disk.id}: ${messageOf(e)}`));
  await commit(m, d, { ...c, disks: c.disks.filter((_, k) => k !== i) });
  m.o.log(`${d.name}: detached disk ${disk.id} (${vdevOf(c.disks, i)})`);
  return null;
}

async function networkAttach(m: DomainManager, d: Domain, nic: Record<string, unknown>, _signal?: AbortSignal): Promise<NicInfo> {
  const c = configOf(d.record);
  assertHotplug(c.machine, "attach a NIC", d.name);
  const id = typeof nic["id"] === "string" ? nic["id"] : freeId("net", c.nics.map((x) => x.id));
  const mac = typeof nic["mac"] === "string" ? nic["mac"].toLowerCase() : undefined;
  if (mac !== undefined && c.nics.some((x) => x.mac.toLowerCase() === mac)) throw new VmstackError("DEVICE_EXISTS", `domain ${d.name} already has a NIC with MAC ${mac}`);
  const next = revalidate(d, { ...c, nics: [...c.nics, { ...nic, id }] }, "NIC");
  const added = next.nics[next.nics.length - 1] as NicConfig;
  if (c.nics.some((x) => x.mac.toLowerCase() === added.mac.toLowerCase())) {
    throw new VmstackError("DEVICE_EXISTS", `the MAC ${added.mac} derived for ${id} is taken; give one with mac=`);
  }
  const port = await portFor(d, c);
  await runAll(m, d, networkAttachSteps(c.machine, added, port), (done) => (done.length === 1 ? netdevRemoval(added.id) : []));
  await commit(m, d, next);
  m.o.log(`${d.name}: attached NIC ${added.id} (${added.mac})`);
  return networkList(d).find((n) => n.id === added.id) as NicInfo;
}

async function networkDetach(m: DomainManager, d: Domain, dev: string, signal?: AbortSignal): Promise<null> {
  const c = configOf(d.record);
  assertHotplug(c.machine, "detach a NIC", d.name);
  const i = c.nics.findIndex((n, k) => n.id === dev || n.mac.toLowerCase() === dev.toLowerCase() || String(nicDevid(c.nics, k)) === dev);
  if (i < 0) throw new VmstackError("NO_SUCH_DEVICE", `domain ${d.name} has no NIC '${dev}' (see vmstack network-list ${d.name})`, { facts: { domain: d.name, device: dev } });
  const nic = c.nics[i] as NicConfig;
  await unplug(m, d, nic.id, signal);
  await run(d, netdevRemoval(nic.id)).catch((e: unknown) => m.o.log(`${d.name}: netdev_del ${nic.id}: ${messageOf(e)}`));
  await commit(m, d, { ...c, nics: c.nics.filter((_, k) => k !== i) });
  m.o.log(`${d.name}: detached NIC ${nic.id} (${nic.mac})`);
  return null;
}

/** A new medium (insert) or none (eject) in the cdrom drive `vdev` (xl cd-insert / cd-eject). */
async function cdChange(m: DomainManager, d: Domain, vdev: string, medium: { path: string; format: string } | undefined): Promise<null> {
  const c = configOf(d.record);
  const i = findDisk(d, c, vdev);
  const disk = c.disks[i] as DiskConfig;
  if (disk.media !== "cdrom") throw new VmstackError("NOT_A_CDROM", `${vdev} of domain ${d.name} is a disk, not a cdrom drive`, { facts: { domain: d.name, vdev } });
  const disks = [...c.disks];
  const { path: _old, ...rest } = disk;
  disks[i] = medium === undefined ? rest : { ...rest, path: medium.path, format: medium.format as DiskConfig["format"] };
  const next = revalidate(d, { ...c, disks }, "cdrom medium");
  const changed = next.disks[i] as DiskConfig;
  await run(d, medium === undefined ? cdEjectSteps(disk.id) : cdInsertSteps(disk.id, medium.path, changed.format));
  await commit(m, d, next);
  m.o.log(`${d.name}: ${medium === undefined ? `ejected ${vdev}` : `inserted ${medium.path} into ${vdev}`}`);
  return null;
}

/**
 * xl mem-set: the balloon's target. A domain started with memory = maxmem has no balloon device:
 * one is hot-added first (pc, q35). The target is recorded as the domain's `memory`, so a
 * restart boots with maxmem and balloons down to it again, as Xen keeps memory/target.
 */
async function memSet(m: DomainManager, d: Domain, mib: number): Promise<{ memoryMiB: number }> {
  const c = configOf(d.record);
  if (mib > c.maxmem) {
    throw new VmstackError("OVER_MAXMEM", `${mib} MiB is above ${d.name}'s maxmem ${c.maxmem} MiB (memory can only grow up to maxmem, set at create)`, {
      facts: { domain: d.name, requestedMiB: mib, maxmemMiB: c.maxmem },
    });
  }
  const next = revalidate(d, { ...c, memory: mib }, "memory");
  try {
    await d.qmpExecute("query-balloon");
  } catch (e) {
    if (!isVmstackError(e) || !/balloon/i.test(e.message)) throw e;
    assertHotplug(c.machine, "add a balloon device", d.name);
    await run(d, [balloonDeviceAdd(c.machine, await portFor(d, c))]);
    m.o.log(`${d.name}: added a balloon device`);
  }
  await run(d, balloonSteps(mib));
  d.record = { ...d.record, config: next as unknown as Record<string, unknown> };
  writeRecord(m.o.paths.domainsDir, d.record);
  await writeMemoryTarget(m.o.xs, d.domid, mib);
  m.o.log(`${d.name}: memory target ${mib} MiB`);
  return { memoryMiB: mib };
}

/**
 * xl vcpu-set: up to maxvcpus. CPUs not yet plugged are hot-added (ACPI CPU hotplug, pc and q35);
 * then the guest's agent brings CPUs below N online and takes the others offline, and
 * cpu/N/availability says the same in xenstore. Without the agent only xenstore changes (a guest
 * with Xen's vcpu hotplug driver would act on it; Linux leaves hot-added CPUs offline).
 */
async function vcpuSet(ctx: HotplugContext, d: Domain, want: number, signal?: AbortSignal): Promise<{ vcpus: number; online: number | null }> {
  const m = ctx.manager;
  const c = configOf(d.record);
  if (c.machine === "microvm") {
    throw new VmstackError("HOTPLUG_UNSUPPORTED", `domain ${d.name} is a microvm, which has no CPU hotplug (no ACPI CPU hotplug in microvm); use machine=q35 or machine=pc`);
  }
  if (want > c.maxvcpus) {
    throw new VmstackError("OVER_MAXVCPUS", `${want} vCPUs is more than ${d.name}'s maxvcpus ${c.maxvcpus} (set maxvcpus at create for CPUs to add later)`, {
      facts: { domain: d.name, requested: want, maxvcpus: c.maxvcpus },
    });
  }
  const list = await d.qmpExecute<HotpluggableCpu[]>("query-hotpluggable-cpus");
  await run(d, vcpuSetSteps(list, want));
  let online: number | null = null;
  if (d.record.agentSocket !== null) {
    try {
      const agent = await d.agent(ctx.agentTimeoutMs);
      await agent.run({ argv: ["sh", "-c", guestCpuScript(want, c.maxvcpus)], timeoutMs: 30_000, ...(signal ? { signal } : {}) });
      const out = await agent.run({ argv: ["cat", "/sys/devices/system/cpu/online"], timeoutMs: 10_000, ...(signal ? { signal } : {}) });
      online = countCpuList(out.stdout.toString());
    } catch (e) {
      m.o.log(`${d.name}: setting vCPUs online in the guest through the agent: ${messageOf(e)}`);
    }
  }
  d.record = { ...d.record, config: { ...d.record.config, vcpus: want } };
  writeRecord(m.o.paths.domainsDir, d.record);
  await writeCpuAvailability(m.o.xs, d.domid, want, c.maxvcpus);
  m.o.log(`${d.name}: ${want} vCPUs${online === null ? "" : ` (${online} online in the guest)`}`);
  return { vcpus: want, online };
}

/** `0-2,4` (the kernel's cpu list format) → 4. */
export function countCpuList(text: string): number {
  return text
    .trim()
    .split(",")
    .filter(Boolean)
    .reduce((n, r) => {
      const [a, b] = r.split("-").map(Number);
      return n + (b === undefined ? 1 : (b as number) - (a as number) + 1);
    }, 0);
}

/**
 * Domain records in xenstore, laid out as Xen's toolstack does (docs/misc/xenstore-paths.pandoc):
 *
 *   /local/domain/<domid>/{name, domid, vm, memory/target, memory/static-max, cpu/<n>/availability,
 *                          control/shutdown, control/feature-{poweroff,reboot},
 *                          control/platform-feature-*, console/type, data, attr, drivers}
 *   /vm/<uuid>/{uuid, name, start_time, image/ostype, on_poweroff, on_reboot, on_crash}
 *   /local/domain/0/{name = "Domain-0", domid = 0, memory/target}
 *
 * Memory values are KiB as in Xen. A domain's home is owned by dom0 and readable by the domain;
 * `control/`, `data/`, `attr/` and `drivers/` are writable by it (the guest acknowledges
 * control/shutdown by writing "", says which commands it honours in control/feature-*, and
 * reports its addresses under attr/vif/<n>/ipv4/<i>: the [w] paths of xenstore-paths.pandoc).
 * Everything for one domain is written in one transaction, so a reader never sees half a domain.
 */
import type { XenstoreClient, XenstoreOps } from "../xenstore/client.js";
import { isVmstackError } from "../lib/errors.js";

export interface XsDomainFacts {
  readonly domid: number;
  readonly name: string;
  readonly uuid: string;
  readonly memoryMiB: number;
  readonly maxmemMiB: number;
  readonly vcpus: number;
  readonly maxvcpus: number;
  readonly onPoweroff: string;
  readonly onReboot: string;
  readonly onCrash: string;
  /** Seconds since the epoch, as Xen's start_time. */
  readonly startTime: number;
}

export const domainPath = (domid: number): string => `/local/domain/${domid}`;
export const vmPath = (uuid: string): string => `/vm/${uuid}`;

async function writeAll(tx: XenstoreOps, entries: readonly (readonly [string, string])[]): Promise<void> {
  for (const [k, v] of entries) await tx.write(k, v);
}

export async function writeDomain(xs: XenstoreClient, f: XsDomainFacts): Promise<void> {
  const home = domainPath(f.domid);
  const vm = vmPath(f.uuid);
  await xs.transaction(async (tx) => {
    await writeAll(tx, [
      [`${vm}/uuid`, f.uuid],
      [`${vm}/name`, f.name],
      [`${vm}/start_time`, f.startTime.toFixed(2)],
      [`${vm}/image/ostype`, "hvm"],
      [`${vm}/on_poweroff`, f.onPoweroff],
      [`${vm}/on_reboot`, f.onReboot],
      [`${vm}/on_crash`, f.onCrash],
      [`${home}/name`, f.name],
      [`${home}/domid`, String(f.domid)],
      [`${home}/vm`, vm],
      [`${home}/memory/target`, String(f.memoryMiB * 1024)],
      [`${home}/memory/static-max`, String(f.maxmemMiB * 1024)],
      [`${home}/console/type`, "ioemu"],
      [`${home}/control/shutdown`, ""],
      [`${home}/control/platform-feature-multiprocessor-suspend`, "1"],
      // The guest's xenstore channel serves RESET_WATCHES (its relay sends one on every connect).
      [`${home}/control/platform-feature-xs_reset_watches`, "1"],
      // "" = the guest may or may not answer; vmstack's agent sets "1" once it watches control/shutdown.
      [`${home}/control/feature-poweroff`, ""],
      [`${home}/control/feature-reboot`, ""],
    ]);
    for (let i = 0; i < f.maxvcpus; i++) await tx.write(`${home}/cpu/${i}/availability`, i < f.vcpus ? "online" : "offline");
    await tx.mkdir(`${home}/data`);
    await tx.mkdir(`${home}/device`);
    await tx.mkdir(`${home}/attr`);
    await tx.mkdir(`${home}/drivers`);
    const readable = [{ access: "n" as const, domid: 0 }, { access: "r" as const, domid: f.domid }];
    const writable = [{ access: "n" as const, domid: 0 }, { access: "b" as const, domid: f.domid }];
    // Every node of the home is readable by the domain (as xl sets them), control/ and data/ writable.
    await tx.setPerms(home, readable);
    for (const sub of ["name", "domid", "vm", "memory", "memory/target", "memory/static-max", "console", "console/type", "cpu", "device", "control/platform-feature-multiprocessor-suspend", "control/platform-feature-xs_reset_watches"]) {
      await tx.setPerms(`${home}/${sub}`, readable);
    }
    for (let i = 0; i < f.maxvcpus; i++) {
      await tx.setPerms(`${home}/cpu/${i}`, readable);
      await tx.setPerms(`${home}/cpu/${i}/availability`, readable);
    }
    await tx.setPerms(`${home}/control`, writable);
    await tx.setPerms(`${home}/control/shutdown`, writable);
    for (const sub of ["data", "attr", "drivers", "control/feature-poweroff", "control/feature-reboot"]) await tx.setPerms(`${home}/${sub}`, writable);
  });
}

/** Xen's Domain-0 entry: present whenever the toolstack runs. */
export async function writeDom0(xs: XenstoreClient, memoryMiB: number): Promise<void> {
  await xs.transaction(async (tx) => {
    await writeAll(tx, [
      ["/local/domain/0/name", "Domain-0"],
      ["/local/domain/0/domid", "0"],
      ["/local/domain/0/memory/target", String(memoryMiB * 1024)],
      ["/local/domain/0/memory/static-max", String(memoryMiB * 1024)],
    ]);
  });
}

export async function renameDomain(xs: XenstoreClient, domid: number, uuid: string, name: string): Promise<void> {
  await xs.transaction(async (tx) => {
    await tx.write(`${domainPath(domid)}/name`, name);
    await tx.write(`${vmPath(uuid)}/name`, name);
  });
}

/** Removes every trace of a domain (xl's domain destruction). Missing nodes are fine. */
export async function removeDomain(xs: XenstoreClient, domid: number, uuid: string): Promise<void> {
  for (const p of [domainPath(domid), vmPath(uuid)]) {
    try {
      await xs.rm(p);
    } catch (e) {
      if (!isVmstackError(e, "XS_ENOENT")) throw e;
    }
  }
  try {
    // XS_RELEASE: drops the domain's watches and connections, as Xen does when a domain dies.
    await xs.release(domid);
  } catch (e) {
    if (!isVmstackError(e)) throw e;
  }
}

/** control/shutdown: the PV way of asking a guest to power off or reboot (xl shutdown). */
export async function requestShutdown(xs: XenstoreClient, domid: number, kind: "poweroff" | "reboot"): Promise<void> {
  await xs.write(`${domainPath(domid)}/control/shutdown`, kind);
}

export async function domainIdsInStore(xs: XenstoreClient): Promise<number[]> {
  try {
    return (await xs.directory("/local/domain")).map(Number).filter((n) => Number.isInteger(n));
  } catch (e) {
    if (isVmstackError(e, "XS_ENOENT")) return [];
    throw e;
  }
}

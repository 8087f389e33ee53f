/**
 * vmstack's default guest for domains: a spec that names no kernel, no GRUB menu and no disk to
 * boot from gets the kernel and agent initrd of `vmstack run`, so `vmstack create name=demo
 * memory=256` needs no file at all and `vmstack exec` works in it.
 *
 * The spec validator insists on something to boot, so `create` loads such a spec with a
 * placeholder kernel and swaps in the default guest here.
 */
import { existsSync } from "node:fs";
import type { DomainConfig } from "../domain/index.js";
import { BUSYBOX_PATH, prepareGuestImage, type GuestFeature, type GuestImage } from "./guest-image.js";
import { kernelCommandLine } from "./guest-vm.js";
import { buildInitrd, guestModulesFor, resolveKernel } from "../image/index.js";
import { XENSTORE_TOOL_NAMES, guestArtifacts } from "../guest/index.js";
import { runCommand } from "../lib/process.js";
import { VmstackError } from "../lib/errors.js";

import { DEFAULT_GUEST_MIN_MEMORY_MIB, usesDefaultGuest } from "./default-guest.js";

export { DEFAULT_GUEST_PLACEHOLDER, usesDefaultGuest } from "./default-guest.js";

export async function withDefaultGuest(c: DomainConfig, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<DomainConfig> {
  if (!usesDefaultGuest(c)) return c;
  if (c.memory < DEFAULT_GUEST_MIN_MEMORY_MIB) {
    throw new VmstackError(
      "DEFAULT_GUEST_MEMORY",
      `${c.name}: memory = ${c.memory} MiB is too little for vmstack's default guest (its kernel runs out of memory while booting); give it at least ${DEFAULT_GUEST_MIN_MEMORY_MIB}`,
      { facts: { name: c.name, memory: c.memory, min: DEFAULT_GUEST_MIN_MEMORY_MIB } },
    );
  }
  const features: GuestFeature[] = [];
  if (c.nics.length > 0) features.push("network");
  if (c.shares.length > 0) features.push("share");
  const image = c.machine === "microvm" ? await prepareGuestImage({ env, features, signal }) : await pciGuestImage(c, env, signal);
  // tsc_early_khz for microvm is added by compileDomain; the rest is the throwaway VM's command line.
  const cmdline = kernelCommandLine(c.machine, "tcg", undefined);
  return { ...c, boot: { ...c.boot, kernel: image.kernel.kernelPath, initrd: image.initrd.path, cmdline: c.boot.cmdline ?? cmdline } };
}

/**
 * Drivers for the domain's SCSI and IDE drives (each module costs boot time, so only when there
 * are such drives): virtio-scsi or pc's PIIX IDE controller, then sd for disks and sr for cdroms
 * (the cloud kernel builds all of them as modules). q35's IDE drives sit on its AHCI controller,
 * whose driver the cloud kernel lacks: the guest does not see them.
 */
export function driveModules(c: Pick<DomainConfig, "machine" | "disks">): string[] {
  const seen = c.disks.filter((d) => d.interface === "scsi" || (d.interface === "ide" && c.machine === "pc"));
  if (seen.length === 0) return [];
  return [
    ...(seen.some((d) => d.interface === "scsi") ? ["virtio_scsi"] : []),
    ...(seen.some((d) => d.interface === "ide") ? ["ata_piix"] : []),
    ...(seen.some((d) => d.media === "disk") ? ["sd_mod"] : []),
    ...(seen.some((d) => d.media === "cdrom") ? ["sr_mod"] : []),
  ];
}

/** Drives the default guest cannot see (IDE on q35: no AHCI driver), as warnings for the user. */
export function unseenDrives(c: Pick<DomainConfig, "machine" | "disks">): string[] {
  if (c.machine !== "q35") return [];
  return c.disks
    .filter((d) => d.interface === "ide")
    .map((d) => `${d.vdev ?? d.id}: vmstack's default guest has no driver for q35's IDE (AHCI) controller, so it will not see this ${d.media}; use interface "scsi" (xl: an sd* vdev) or machine "pc"`);
}

/**
 * The same guest for pc and q35, whose virtio devices sit on PCI: prepareGuestImage packs only
 * microvm's virtio-mmio driver, so this adds virtio_pci, the drivers of devices hotplug may add, and pvpanic_mmio — the driver of the ISA
 * pvpanic device (ACPI-enumerated) through which a panicking guest tells QEMU, so that on_crash
 * applies. Same files, same cache.
 */
async function pciGuestImage(c: DomainConfig, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<GuestImage> {
  const kernel = await resolveKernel({ kernelPath: undefined, env });
  const busybox = env["VMSTACK_BUSYBOX"] ?? BUSYBOX_PATH;
  const guest = guestArtifacts();
  for (const path of [busybox, guest.agent, guest.init]) {
    if (!existsSync(path)) throw new VmstackError("GUEST_PIECE_MISSING", `${path} is missing: run ./setup (busybox-static, npm run build)`, { facts: { path } });
  }
  const applets = (await runCommand([busybox, "--list-full"], "busybox"))
    .toString()
    .split("\n")
    .filter((l) => l !== "" && !["bin/busybox", "linuxrc", "sbin/init"].includes(l) && /^[a-z0-9/._[-]+$/.test(l));
  // virtio_blk, virtio_net and virtio_balloon even without such devices at boot: block-attach,
  // network-attach and mem-set add them while the guest runs, and this guest has no udev to load
  // a driver on demand. PCI hotplug itself (acpiphp, pciehp) is built into the cloud kernel.
  const modules = [
    ...guestModulesFor({ transport: "pci", block: true, net: true, virtiofs: c.shares.length > 0 }),
    "virtio_balloon",
    "pvpanic_mmio",
    ...driveModules(c),
  ];
  const initrd = await buildInitrd({
    kernel,
    modules,
    files: [
      { path: "/bin/busybox", mode: 0o755, source: busybox },
      ...["/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc", "/mnt"].map((path) => ({ path, directory: true as const, mode: path === "/tmp" ? 0o1777 : 0o755 })),
      ...applets.map((path) => ({ path: `/${path}`, symlink: "/bin/busybox" })),
      { path: "/init", mode: 0o755, source: guest.init },
      { path: "/bin/vmstack-agent", mode: 0o755, source: guest.agent },
      ...XENSTORE_TOOL_NAMES.map((n) => ({ path: `/bin/${n}`, symlink: "/bin/vmstack-agent" })),
    ],
    env,
    signal,
  });
  return { kernel, initrd };
}

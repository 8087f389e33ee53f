/**
 * Cross-option assertions (errors) and warnings, in the spirit of qemu-vm.nix's `assertions` and
 * `warnings`: guest→host forwards need tcp and a 10.0.2.x address; maxmem ≥ memory; a direct
 * kernel together with an explicitly chosen bootloader warns that the bootloader will not run.
 * Pure: no file is looked at (whether paths exist is the start-up's business).
 */
import type { Problem } from "./diagnostics.js";
import type { DomainConfig } from "./spec.js";

/** IDE on pc has two buses with two units each; q35's AHCI controller has six ports. */
const IDE_SLOTS = { pc: 4, q35: 6, microvm: 0 } as const;

/**
 * `isBad(path)` says whether the schema already found that option (or something inside it)
 * malformed; checks that would read it are skipped, the others still run.
 */
export function validateDomain(c: DomainConfig, raw: Record<string, unknown> = {}, isBad: (path: string) => boolean = () => false): Problem[] {
  const out: Problem[] = [];
  const error = (path: string, message: string): void => void out.push({ severity: "error", path, message });
  const warn = (path: string, message: string): void => void out.push({ severity: "warning", path, message });
  const ok = (...paths: string[]): boolean => paths.every((p) => !isBad(p));

  if (ok("memory", "maxmem")) {
    if (c.maxmem < c.memory) error("maxmem", `maxmem (${c.maxmem} MiB) must be at least memory (${c.memory} MiB)`);
    else if (c.maxmem > c.memory)
      warn("maxmem", `the guest starts with ${c.maxmem} MiB and a balloon holding it at ${c.memory} MiB; without a virtio-balloon driver it uses all ${c.maxmem} MiB`);
  }
  if (ok("vcpus", "maxvcpus") && c.maxvcpus < c.vcpus) error("maxvcpus", `maxvcpus (${c.maxvcpus}) must be at least vcpus (${c.vcpus})`);

  // Lists are checked item by item: a malformed disk or NIC skips only its own checks.
  const listOk = (name: "disks" | "nics"): boolean => Array.isArray(c[name]);
  if (ok("boot", "machine", "serial") && listOk("disks")) validateBoot(c, raw, error, warn, isBad);
  if (ok("machine") && listOk("disks")) validateDisks(c, error, isBad);
  if (ok("machine") && listOk("nics")) validateNics(c, error, isBad);

  const tags = new Set<string>();
  if (ok("shares", "machine")) c.shares.forEach((s, i) => {
    if (tags.has(s.tag)) error(`shares[${i}].tag`, `share tag '${s.tag}' is used twice`);
    tags.add(s.tag);
    if (c.machine === "microvm") error(`shares[${i}]`, "virtiofs shares need PCI (vhost-user-fs-pci): use machine q35 or pc");
  });
  if (ok("machine", "graphics") && c.machine === "microvm" && c.graphics) error("graphics", "microvm has no display device: set graphics to false or use machine q35 or pc");
  return out;
}

type Report = (path: string, message: string) => void;

function validateBoot(c: DomainConfig, raw: Record<string, unknown>, error: Report, warn: Report, isBad: (path: string) => boolean): void {
  const b = c.boot;
  if (b.kernel === undefined) {
    if (b.initrd !== undefined) error("boot.initrd", "boot.initrd needs boot.kernel (direct kernel boot)");
    if (b.cmdline !== undefined) error("boot.cmdline", "boot.cmdline needs boot.kernel (direct kernel boot)");
  }
  const rawBoot = (typeof raw["boot"] === "object" && raw["boot"] !== null ? raw["boot"] : {}) as Record<string, unknown>;
  if (b.guestGrub !== undefined) {
    if (b.kernel !== undefined) error("boot.guestGrub", "boot.guestGrub and boot.kernel exclude each other: the guest's GRUB menu names the kernel");
    // A malformed disk reports its own problems; the menu's disk is only checked when well-formed.
    if (!isBad(`disks[${b.guestGrub.disk}]`)) {
      if (b.guestGrub.disk >= c.disks.length) error("boot.guestGrub.disk", `boot.guestGrub.disk is ${b.guestGrub.disk} but the domain has ${c.disks.length} disk(s)`);
      else if (c.disks[b.guestGrub.disk]?.path === undefined) error("boot.guestGrub.disk", "the disk holding the GRUB menu has no path");
    }
  }
  if (b.kernel !== undefined && (rawBoot["firmware"] !== undefined || rawBoot["order"] !== undefined))
    warn("boot.kernel", "boot.kernel is set, so QEMU boots that kernel directly: the bootloader on the disks will not run");
  if (b.kernel === undefined && b.guestGrub === undefined && c.disks.length === 0)
    error("boot", "nothing to boot: set boot.kernel, or add a disk or cdrom for the firmware to boot");
  if (c.machine === "microvm") {
    if (b.firmware === "uefi") error("boot.firmware", "microvm has no UEFI firmware: use machine q35 or pc");
    if (b.kernel === undefined && b.guestGrub === undefined) error("boot.kernel", "microvm boots only a direct kernel: set boot.kernel");
  }
  if (b.kernel !== undefined && b.cmdline !== undefined && c.serial !== "none" && !/(^|\s)console=ttyS0/.test(b.cmdline))
    warn("boot.cmdline", "the kernel command line has no console=ttyS0: the serial console will show nothing from the kernel");
}

function validateDisks(c: DomainConfig, error: Report, isBad: (path: string) => boolean): void {
  const ids = new Set<string>();
  const vdevs = new Set<string>();
  let ide = 0;
  c.disks.forEach((d, i) => {
    const at = `disks[${i}]`;
    if (isBad(at)) return;
    if (ids.has(d.id)) error(`${at}.id`, `device id '${d.id}' is used twice`);
    ids.add(d.id);
    if (d.vdev !== undefined) {
      if (vdevs.has(d.vdev)) error(`${at}.vdev`, `vdev '${d.vdev}' is used twice`);
      vdevs.add(d.vdev);
    }
    if (d.scratch) {
      if (d.path !== undefined) error(`${at}.path`, "a scratch disk lives in the run directory: drop path");
      if (d.size === undefined) error(`${at}.size`, "a scratch disk needs a size (MiB)");
      if (d.media === "cdrom") error(`${at}.scratch`, "a cdrom cannot be a scratch disk");
    } else if (d.path === undefined && d.media === "disk") error(`${at}.path`, "a disk needs a path (or scratch: true for an empty temporary disk)");
    if (d.backing !== undefined && d.format !== "qcow2") error(`${at}.format`, `a copy-on-write overlay is qcow2, not ${d.format}`);
    if (d.backing !== undefined && d.path === undefined) error(`${at}.path`, "an overlay needs a path for the overlay file");
    if (d.media === "cdrom") {
      if (d.interface === "virtio") error(`${at}.interface`, "a cdrom needs interface ide or scsi (virtio-blk has no removable media)");
      if (!d.readOnly) error(`${at}.readOnly`, "a cdrom is read-only");
      if (d.size !== undefined || d.backing !== undefined) error(at, "a cdrom is not created: drop size and backing");
    }
    if (d.interface === "ide") ide++;
    // QEMU refuses a read-only drive behind ide-hd ("Can't use a read-only drive").
    if (d.interface === "ide" && d.media === "disk" && d.readOnly) error(`${at}.readOnly`, "an IDE hard disk cannot be read-only: use interface virtio or scsi, or media cdrom");
    if (c.machine === "microvm" && d.interface !== "virtio") error(`${at}.interface`, "microvm has only virtio disks");
  });
  const slots = IDE_SLOTS[c.machine];
  if (c.machine !== "microvm" && ide > slots) error("disks", `machine ${c.machine} has ${slots} IDE slots, but ${ide} disks use interface ide`);
}

function validateNics(c: DomainConfig, error: Report, isBad: (path: string) => boolean): void {
  const ids = new Set<string>();
  const macs = new Set<string>();
  const hostPorts = new Set<string>();
  c.nics.forEach((n, i) => {
    const at = `nics[${i}]`;
    if (isBad(at)) return;
    if (ids.has(n.id)) error(`${at}.id`, `device id '${n.id}' is used twice`);
    ids.add(n.id);
    const mac = n.mac.toLowerCase();
    if (macs.has(mac)) error(`${at}.mac`, `MAC address ${n.mac} is used twice`);
    macs.add(mac);
    // A MAC with the group bit set is a multicast address: no NIC may use it (xl-network-configuration(5)).
    if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) error(`${at}.mac`, `${n.mac} is a multicast address (lowest bit of the first byte set)`);
    if (c.machine === "microvm" && n.model !== "virtio") error(`${at}.model`, "microvm has only virtio NICs");
    if (n.type !== "user") return;
    n.forwards.forEach((f, j) => {
      const fat = `${at}.forwards[${j}]`;
      if (f.from === "guest") {
        // qemu-vm.nix's assertions: guestfwd is TCP only, and the address must be on SLiRP's network.
        if (f.proto !== "tcp") error(`${fat}.proto`, "a guest-to-host forward must use tcp (QEMU's guestfwd is TCP only)");
        if (!/^10\.0\.2\.\d{1,3}$/.test(f.guestAddress)) error(`${fat}.guestAddress`, `a guest-to-host forward needs a guest address in 10.0.2.0/24, got "${f.guestAddress}"`);
      } else {
        const key = `${f.proto}:${f.hostAddress}:${f.hostPort}`;
        if (hostPorts.has(key)) error(`${fat}.hostPort`, `host ${f.proto} port ${f.hostPort} is forwarded twice`);
        hostPorts.add(key);
      }
      for (const [k, v] of [["hostAddress", f.hostAddress], ["guestAddress", f.guestAddress]] as const) {
        if (v !== "" && !isIPv4(v)) error(`${fat}.${k}`, `"${v}" is not an IPv4 address (SLiRP forwards are IPv4 only)`);
      }
    });
  });
}

export function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/**
 * config → QEMU argv. PURE: no file or socket is opened here and nothing is probed (house rule 2;
 * libvirt learned this the hard way). Everything host-specific (accelerator, TSC frequency, paths)
 * arrives in the config, already decided.
 *
 * Every default device and flag is here on purpose; the comments say why. Measurements behind the
 * choices are in docs/boot.md (TCG on a 2-core host, QEMU 7.2).
 */

export type MachineType = "microvm" | "q35" | "pc";
export type Accel = "kvm" | "tcg";

export type SerialTarget =
  | { readonly kind: "stdio" }
  | { readonly kind: "file"; readonly path: string }
  | { readonly kind: "socket"; readonly path: string }
  | { readonly kind: "none" };

/** A virtio-serial port bound to a host Unix socket on which QEMU listens. */
export interface ChannelConfig {
  /** Port name the guest sees in /sys/class/virtio-ports/*\/name. */
  readonly name: string;
  readonly socketPath: string;
}

export interface MachineConfig {
  readonly machine: MachineType;
  readonly accel: Accel;
  readonly memoryMiB: number;
  readonly cpus: number;
  /** Direct kernel boot. A vmlinux ELF boots through its PVH note (no decompression under TCG). */
  readonly kernel?: string;
  readonly initrd?: string;
  readonly append?: string;
  readonly serial: SerialTarget;
  readonly qmpSocket?: string;
  readonly channels: readonly ChannelConfig[];
  /** Exit QEMU instead of rebooting the guest (throwaway VMs; a panic with panic=-1 then ends QEMU). */
  readonly noReboot?: boolean;
  /** Start with vCPUs stopped (`-S`), e.g. for `create -p`. */
  readonly paused?: boolean;
  /** Escape hatch, appended last. */
  readonly extraArgs?: readonly string[];

  // ---- Domain devices (compiled from a DomainConfig by src/domain/compile.ts) ----
  /** `-name guest=…`: shows in QMP and in `ps`. */
  readonly name?: string;
  readonly uuid?: string;
  /** CPUs that may be hot-added later (`-smp cpus=N,maxcpus=M`); ≤ cpus means none. */
  readonly maxCpus?: number;
  /** A virtio-balloon device (memory below `memoryMiB` is handed back after boot). */
  readonly balloon?: boolean;
  /** SeaBIOS is QEMU's default firmware; UEFI is OVMF on two pflash units. */
  readonly firmware?: FirmwareConfig;
  readonly localtime?: boolean;
  readonly drives?: readonly DriveConfig[];
  readonly filesystems?: readonly VirtiofsConfig[];
  readonly nics?: readonly NicArgsConfig[];
  /** A virtio-rng device fed from the host's /dev/urandom. */
  readonly rng?: boolean;
  /**
   * q35 only: this many empty pcie-root-ports (`hotplugN`) for devices added at run time. q35's
   * root bus pcie.0 is not hotpluggable (QEMU: "Bus 'pcie.0' does not support hotplugging").
   */
  readonly hotplugPorts?: number;
  /** A VGA device, a USB tablet and VNC on this Unix socket; absent means no display hardware. */
  readonly vncSocket?: string;
  /** What QEMU does on guest shutdown and panic (`-action`); a panic needs the pvpanic device. */
  readonly onShutdown?: "poweroff" | "pause";
  /** `shutdown`: a guest reboot is handled as a shutdown (then `onShutdown` applies) instead of a reset. */
  readonly onReboot?: "reset" | "shutdown";
  readonly onPanic?: "shutdown" | "pause";
}

export type FirmwareConfig =
  | { readonly kind: "bios" }
  | { readonly kind: "uefi"; readonly code: string; readonly vars: string };

/** QEMU's block driver names (Xen's and vmstack's "vhd" is QEMU's "vpc"). */
export type BlockFormat = "raw" | "qcow2" | "qcow" | "vpc" | "qed";

export interface DriveConfig {
  /** Device id; the block nodes are `<id>.file` (protocol) and `<id>.fmt` (format). */
  readonly id: string;
  /** Absent only for an empty cdrom drive. */
  readonly path?: string;
  readonly format: BlockFormat;
  readonly bus: "virtio" | "scsi" | "ide";
  readonly media: "disk" | "cdrom";
  readonly readOnly: boolean;
  readonly cache: "writeback" | "none" | "writethrough" | "directsync" | "unsafe";
  readonly discard: boolean;
  readonly serial?: string;
  /** Firmware boot priority (lower first); absent = not bootable by the firmware. */
  readonly bootIndex?: number;
}

/** A virtiofs share: QEMU connects to the virtiofsd listening on `socketPath`. */
export interface VirtiofsConfig {
  readonly id: string;
  readonly tag: string;
  readonly socketPath: string;
}

export type NetBackend =
  | { readonly kind: "user"; readonly restrict: boolean; readonly hostForwards: readonly HostForward[]; readonly guestForwards: readonly GuestForward[] }
  /** UDP multicast on loopback: every QEMU joined to the group shares one Ethernet segment, no root needed. */
  | { readonly kind: "mcast"; readonly group: string; readonly port: number }
  /** A point-to-point link over a Unix stream socket (QEMU 7.2's `-netdev stream`). */
  | { readonly kind: "stream"; readonly path: string; readonly server: boolean };

export interface HostForward {
  readonly proto: "tcp" | "udp";
  readonly hostAddress: string;
  readonly hostPort: number;
  readonly guestAddress: string;
  readonly guestPort: number;
}

export interface GuestForward {
  readonly guestAddress: string;
  readonly guestPort: number;
  readonly hostAddress: string;
  readonly hostPort: number;
}

export interface NicArgsConfig {
  readonly id: string;
  readonly mac: string;
  readonly model: "virtio" | "e1000" | "rtl8139";
  readonly backend: NetBackend;
  /** Keep the NIC's option ROM (iPXE) for network boot; otherwise `romfile=` skips it. */
  readonly bootRom?: boolean;
  readonly bootIndex?: number;
}

/** virtio devices come as virtio-mmio on microvm and as PCI elsewhere. */
export function virtioDevice(machine: MachineType, kind: "serial" | "blk" | "net" | "rng" | "balloon" | "scsi"): string {
  const base = { serial: "virtio-serial", blk: "virtio-blk", net: "virtio-net", rng: "virtio-rng", balloon: "virtio-balloon", scsi: "virtio-scsi" }[kind];
  return machine === "microvm" ? `${base}-device` : `${base}-pci`;
}

/** Guest RAM as a shared memfd, which vhost-user back ends (virtiofsd) can map. */
export function sharedMemoryArgs(memoryMiB: number): string[] {
  return ["-object", `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`];
}

/**
 * virtiofs shares as QEMU devices, for every machine type: the chardev to virtiofsd's socket and
 * a vhost-user-fs device, `-pci` on pc/q35 and the bare virtio-mmio `-device` on microvm. vhost-user
 * devices need VIRTIO 1.0 (VIRTIO_F_VERSION_1), and microvm's virtio-mmio is legacy by default, so
 * there it is switched to modern mode (affecting every virtio-mmio device, which all support it).
 */
export function virtiofsDeviceArgs(machine: MachineType, filesystems: readonly VirtiofsConfig[]): string[] {
  if (filesystems.length === 0) return [];
  const args = machine === "microvm" ? ["-global", "virtio-mmio.force-legacy=false"] : [];
  for (const fs of filesystems) {
    args.push(
      "-chardev",
      `socket,id=${fs.id}.sock,path=${opt(fs.socketPath)}`,
      "-device",
      `${machine === "microvm" ? "vhost-user-fs-device" : "vhost-user-fs-pci"},queue-size=1024,chardev=${fs.id}.sock,tag=${opt(fs.tag)},id=${fs.id}`,
    );
  }
  return args;
}

export function buildQemuArgs(c: MachineConfig): string[] {
  const args: string[] = [
    // Nothing implicit: no default NIC/VGA/floppy/CD, no /etc/qemu config, no option ROMs by
    // accident. Every device below is one we asked for.
    "-nodefaults",
    "-no-user-config",
    // No graphical window and no monitor on stdio; the console goes where `serial` says.
    "-display",
    "none",
    "-machine",
    machineOption(c.machine),
    "-accel",
    c.accel,
    // KVM needs a CPU model; `host` exposes the real CPU. Under TCG the default model is fastest:
    // `-cpu max` costs ~0.25 s of boot here (qemu-notes §2 #14).
    ...(c.accel === "kvm" ? ["-cpu", "host"] : []),
    "-m",
    String(c.memoryMiB),
    "-smp",
    c.maxCpus !== undefined && c.maxCpus > c.cpus ? `cpus=${c.cpus},maxcpus=${c.maxCpus}` : String(c.cpus),
  ];
  if (c.filesystems !== undefined && c.filesystems.length > 0) {
    // vhost-user-fs needs guest RAM that virtiofsd can map: a shared memfd backend (qemu-notes §3).
    const i = args.indexOf("-machine") + 1;
    args[i] = `${args[i] ?? ""},memory-backend=mem`;
    args.push(...sharedMemoryArgs(c.memoryMiB));
  }
  if (c.name !== undefined) args.push("-name", `guest=${opt(c.name)}`);
  if (c.uuid !== undefined) args.push("-uuid", c.uuid);
  if (c.firmware?.kind === "uefi") {
    // OVMF: code read-only on unit 0, this domain's own variables writable on unit 1.
    args.push(
      "-drive",
      `if=pflash,format=raw,unit=0,readonly=on,file=${opt(c.firmware.code)}`,
      "-drive",
      `if=pflash,format=raw,unit=1,file=${opt(c.firmware.vars)}`,
    );
  }
  if (c.localtime) args.push("-rtc", "base=localtime");
  if (c.kernel !== undefined) args.push("-kernel", c.kernel);
  if (c.initrd !== undefined) args.push("-initrd", c.initrd);
  if (c.append !== undefined) args.push("-append", c.append);
  args.push(...serialArgs(c.serial));
  if (c.qmpSocket !== undefined) {
    args.push("-chardev", `socket,id=qmp,path=${c.qmpSocket},server=on,wait=off`, "-mon", "chardev=qmp,mode=control");
  }
  if (c.channels.length > 0) {
    args.push("-device", `${virtioDevice(c.machine, "serial")},id=vser0`);
    c.channels.forEach((ch, i) => {
      args.push(
        "-chardev",
        `socket,id=ch${i},path=${ch.socketPath},server=on,wait=off`,
        "-device",
        `virtserialport,bus=vser0.0,chardev=ch${i},name=${ch.name},id=port${i}`,
      );
    });
  }
  args.push(...driveArgs(c.machine, c.drives ?? []));
  args.push(...virtiofsDeviceArgs(c.machine, c.filesystems ?? []));
  for (const nic of c.nics ?? []) args.push(...nicArgs(c.machine, nic));
  if (c.rng) args.push("-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", `${virtioDevice(c.machine, "rng")},rng=rng0,id=rng0.dev`);
  if (c.balloon) args.push("-device", `${virtioDevice(c.machine, "balloon")},id=balloon0`);
  args.push(...hotplugPortArgs(c.machine, c.hotplugPorts ?? 0));
  if (c.vncSocket !== undefined) {
    args.push("-device", "VGA,id=video0", "-device", "qemu-xhci,id=usb0", "-device", "usb-tablet,bus=usb0.0,id=tablet0", "-vnc", `unix:${opt(c.vncSocket)}`);
  }
  if (c.onPanic !== undefined && c.machine !== "microvm") args.push("-device", "pvpanic,id=pvpanic0");
  const actions = [
    ...(c.onReboot === "shutdown" ? ["reboot=shutdown"] : []),
    ...(c.onShutdown === "pause" ? ["shutdown=pause"] : []),
    ...(c.onPanic !== undefined ? [`panic=${c.onPanic}`] : []),
  ];
  if (actions.length > 0) args.push("-action", actions.join(","));
  if (c.noReboot) args.push("-no-reboot");
  if (c.paused) args.push("-S");
  if (c.extraArgs) args.push(...c.extraArgs);
  return args;
}

function machineOption(m: MachineType): string {
  switch (m) {
    // microvm: no PCI, no firmware beyond qboot, virtio-mmio devices announced through ACPI. ACPI
    // stays on: with acpi=off the guest's `poweroff` does not end QEMU (qemu-notes §2).
    case "microvm":
      return "microvm";
    case "q35":
      return "q35";
    case "pc":
      return "pc";
  }
}

function serialArgs(s: SerialTarget): string[] {
  switch (s.kind) {
    case "stdio":
      // signal=off: a Ctrl-C on the console belongs to the guest, not to QEMU.
      return ["-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0"];
    case "file":
      return ["-serial", `file:${s.path}`];
    case "socket":
      return ["-chardev", `socket,id=con0,path=${s.path},server=on,wait=off`, "-serial", "chardev:con0"];
    case "none":
      return ["-serial", "none"];
  }
}

/**
 * QEMU option values are comma-separated: a literal comma in a value (a path, a tag) is written
 * as two commas (qemu-options: "to include a comma in a value, double it").
 */
export function opt(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * Disks as `-blockdev` pairs (protocol node `<id>.file`, format node `<id>.fmt`) plus a `-device`.
 * Stable node names let QMP commands (snapshots, media change, resize) address a disk by its id.
 */
function driveArgs(machine: MachineType, drives: readonly DriveConfig[]): string[] {
  const args: string[] = [];
  if (drives.some((d) => d.bus === "scsi")) args.push("-device", `${virtioDevice(machine, "scsi")},id=scsi0`);
  let ide = 0;
  for (const d of drives) {
    const ro = d.readOnly ? ",read-only=on" : "";
    if (d.path !== undefined) {
      const driver = d.path.startsWith("/dev/") ? "host_device" : "file";
      const cache = [
        ...(d.cache === "none" || d.cache === "directsync" ? ["cache.direct=on"] : []),
        ...(d.cache === "unsafe" ? ["cache.no-flush=on"] : []),
      ];
      const discard = d.discard ? ",discard=unmap" : "";
      args.push(
        "-blockdev",
        [`driver=${driver}`, `filename=${opt(d.path)}`, `node-name=${d.id}.file`, ...cache].join(",") + ro + discard,
        "-blockdev",
        `driver=${d.format},file=${d.id}.file,node-name=${d.id}.fmt${ro}${discard}`,
      );
    }
    const props = [
      ...(d.path !== undefined ? [`drive=${d.id}.fmt`] : []),
      `id=${d.id}`,
      ...(d.serial !== undefined ? [`serial=${opt(d.serial)}`] : []),
      ...(d.cache === "writethrough" || d.cache === "directsync" ? ["write-cache=off"] : []),
      ...(d.bootIndex !== undefined ? [`bootindex=${d.bootIndex}`] : []),
    ];
    switch (d.bus) {
      case "virtio":
        args.push("-device", [virtioDevice(machine, "blk"), ...props].join(","));
        break;
      case "scsi":
        args.push("-device", [d.media === "cdrom" ? "scsi-cd" : "scsi-hd", "bus=scsi0.0", ...props].join(","));
        break;
      case "ide": {
        // pc: two IDE buses with a master and a slave each; q35: six AHCI ports, one device each.
        const bus = machine === "pc" ? `bus=ide.${ide >> 1},unit=${ide & 1}` : `bus=ide.${ide}`;
        ide++;
        args.push("-device", [d.media === "cdrom" ? "ide-cd" : "ide-hd", bus, ...props].join(","));
        break;
      }
    }
  }
  return args;
}

/**
 * Empty PCIe root ports for hotplug (the guest's pciehp / ACPI hotplug drives them). Chassis
 * numbers must be unique per port; 1.. is fine since nothing else here sets one. io-reserve=0: a
 * port otherwise reserves 4 KiB of the 64 KiB PCI I/O space, which virtio devices do not need.
 */
export function hotplugPortArgs(machine: MachineType, count: number): string[] {
  if (machine !== "q35") return [];
  const args: string[] = [];
  for (let i = 0; i < count; i++) args.push("-device", `pcie-root-port,id=${HOTPLUG_PORT_PREFIX}${i},bus=pcie.0,chassis=${i + 1},io-reserve=0`);
  return args;
}

/** qdev ids of the hotplug root ports: `hotplug0`, `hotplug1`, … */
export const HOTPLUG_PORT_PREFIX = "hotplug";

function nicArgs(machine: MachineType, n: NicArgsConfig): string[] {
  const netdev = `${n.id}.backend`;
  let backend: string;
  switch (n.backend.kind) {
    case "user": {
      const b = n.backend;
      backend = [
        `user,id=${netdev}`,
        ...(b.restrict ? ["restrict=on"] : []),
        ...b.hostForwards.map((f) => `hostfwd=${f.proto}:${f.hostAddress}:${f.hostPort}-${f.guestAddress}:${f.guestPort}`),
        // guestfwd to a `tcp:` chardev connects once, at QEMU start (and fails if the host service
        // is not up yet) and carries a single stream; `cmd:` runs one relay per guest connection,
        // as qemu-vm.nix does. QEMU runs it through /bin/sh, so it is built only from a validated
        // IPv4 address and port numbers (validate.ts), never from free text.
        ...b.guestForwards.map((f) => `guestfwd=tcp:${f.guestAddress}:${f.guestPort}-cmd:${guestForwardRelay(f.hostAddress, f.hostPort)}`),
      ].join(",");
      break;
    }
    case "mcast":
      backend = `socket,id=${netdev},mcast=${n.backend.group}:${n.backend.port},localaddr=127.0.0.1`;
      break;
    case "stream":
      backend = `stream,id=${netdev},server=${n.backend.server ? "on" : "off"},addr.type=unix,addr.path=${opt(n.backend.path)}`;
      break;
  }
  const model = n.model === "virtio" ? virtioDevice(machine, "net") : n.model;
  const device = [
    model,
    `netdev=${netdev}`,
    `mac=${n.mac}`,
    `id=${n.id}`,
    // No option ROM unless the firmware may boot from the network: iPXE only costs boot time.
    ...(n.bootRom || machine === "microvm" ? [] : ["romfile="]),
    ...(n.bootIndex !== undefined ? [`bootindex=${n.bootIndex}`] : []),
  ].join(",");
  return ["-netdev", backend, "-device", device];
}

/** The relay QEMU runs for each guest→host connection: socat joins its stdio to the host port. */
export function guestForwardRelay(hostAddress: string, hostPort: number): string {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(hostAddress) || !Number.isInteger(hostPort)) {
    throw new Error(`guest forward target must be an IPv4 address and a port, got ${hostAddress}:${hostPort}`);
  }
  return `socat - TCP:${hostAddress}:${hostPort}`;
}

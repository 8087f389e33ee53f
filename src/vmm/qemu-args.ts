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
}

/** virtio devices come as virtio-mmio on microvm and as PCI elsewhere. */
export function virtioDevice(machine: MachineType, kind: "serial" | "blk" | "net" | "rng"): string {
  const base = { serial: "virtio-serial", blk: "virtio-blk", net: "virtio-net", rng: "virtio-rng" }[kind];
  return machine === "microvm" ? `${base}-device` : `${base}-pci`;
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
    String(c.cpus),
  ];
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

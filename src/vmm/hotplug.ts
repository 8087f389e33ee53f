/**
 * QMP command sequences for changing a running domain's devices (xl block-attach, network-attach,
 * cd-insert, mem-set, vcpu-set). PURE: each builder turns a validated device into the QMP
 * commands (QAPI names and arguments as in QEMU 7.2's qapi/*.json) that add or remove it; the
 * manager runs them and waits for the guest where QEMU needs the guest's consent (device_del ends
 * with a DEVICE_DELETED event only once the guest has released the device).
 *
 * Node and netdev names are the ones qemu-args.ts gives at boot (`<id>.file` under `<id>.fmt`,
 * `<id>.backend`), so a device attached now and the same device after a restart look alike.
 */
import type { DiskConfig, NicConfig } from "../domain/index.js";
import { privateNetworkAddress } from "../domain/index.js";
import { type BlockFormat, type MachineType, HOTPLUG_PORT_PREFIX, virtioDevice } from "./qemu-args.js";
import { VmstackError } from "../lib/errors.js";

export interface QmpStep {
  readonly execute: string;
  readonly arguments?: Record<string, unknown>;
}

const QEMU_FORMAT: Readonly<Record<DiskConfig["format"], BlockFormat>> = { raw: "raw", qcow2: "qcow2", qcow: "qcow", vhd: "vpc", qed: "qed" };

/**
 * Which machine types can take a device while running. microvm has no PCI and its virtio-mmio
 * slots are fixed at boot; pc hotplugs on its root bus through ACPI (the guest's acpiphp); q35
 * only into the empty pcie-root-ports made at boot (pciehp).
 */
export function assertHotplug(machine: MachineType, what: string, domain: string): void {
  if (machine === "microvm") {
    throw new VmstackError("HOTPLUG_UNSUPPORTED", `domain ${domain} is a microvm, which cannot ${what} while running (no PCI hotplug); use machine=q35 or machine=pc`, {
      facts: { domain, machine },
    });
  }
}

/** The bus argument of a device_add: a free root port on q35, none on pc (the root bus hotplugs). */
export function busArgs(machine: MachineType, port: number | undefined): Record<string, unknown> {
  return machine === "q35" && port !== undefined ? { bus: `${HOTPLUG_PORT_PREFIX}${port}` } : {};
}

/** QOM path of a hotplug root port's secondary bus, as `qom-get … parent_bus` reports it. */
export function hotplugBusPath(port: number): string {
  return `/machine/peripheral/${HOTPLUG_PORT_PREFIX}${port}/${HOTPLUG_PORT_PREFIX}${port}`;
}

/** The first root port not in `used` (bus paths from parent_bus), or a clear error when all are taken. */
export function freePort(ports: number, used: ReadonlySet<string>, domain: string): number {
  for (let i = 0; i < ports; i++) if (!used.has(hotplugBusPath(i))) return i;
  throw new VmstackError(
    "NO_HOTPLUG_SLOT",
    ports === 0
      ? `domain ${domain} has no free PCIe hotplug port (hotplugSlots=0); set hotplugSlots (q35) and restart it`
      : `domain ${domain}: all ${ports} PCIe hotplug ports are in use; detach a device, or raise hotplugSlots and restart it`,
    { facts: { domain, ports } },
  );
}

/** blockdev-add of the protocol and format nodes, then the guest-visible device. */
export function blockAttachSteps(machine: MachineType, d: DiskConfig, port: number | undefined): QmpStep[] {
  if (d.path === undefined) throw new VmstackError("BAD_DISK", `disk ${d.id} has no image to attach`);
  const ro = d.readOnly ? { "read-only": true } : {};
  const discard = d.discard ? { discard: "unmap" } : {};
  const cache = {
    ...(d.cache === "none" || d.cache === "directsync" ? { direct: true } : {}),
    ...(d.cache === "unsafe" ? { "no-flush": true } : {}),
  };
  const steps: QmpStep[] = [
    {
      execute: "blockdev-add",
      arguments: {
        driver: d.path.startsWith("/dev/") ? "host_device" : "file",
        filename: d.path,
        "node-name": `${d.id}.file`,
        ...(Object.keys(cache).length > 0 ? { cache } : {}),
        ...ro,
        ...discard,
      },
    },
    { execute: "blockdev-add", arguments: { driver: QEMU_FORMAT[d.format], file: `${d.id}.file`, "node-name": `${d.id}.fmt`, ...ro, ...discard } },
  ];
  const props = {
    drive: `${d.id}.fmt`,
    id: d.id,
    ...(d.serial === undefined ? {} : { serial: d.serial }),
    ...(d.cache === "writethrough" || d.cache === "directsync" ? { "write-cache": "off" } : {}),
  };
  switch (d.interface) {
    case "virtio":
      steps.push({ execute: "device_add", arguments: { driver: virtioDevice(machine, "blk"), ...props, ...busArgs(machine, port) } });
      return steps;
    case "scsi":
    case "ide":
      // IDE and AHCI ports take no hotplug, and a SCSI disk needs the boot-time controller.
      throw new VmstackError("HOTPLUG_UNSUPPORTED", `a ${d.interface} disk (vdev ${d.vdev ?? d.id}) cannot be attached while running; use an xvd* or vd* vdev (virtio)`, {
        facts: { interface: d.interface },
      });
  }
}

/** After DEVICE_DELETED for the disk: drop its nodes, format first. */
export function blockNodeRemoval(id: string): QmpStep[] {
  return [
    { execute: "blockdev-del", arguments: { "node-name": `${id}.fmt` } },
    { execute: "blockdev-del", arguments: { "node-name": `${id}.file` } },
  ];
}

export function deviceDel(id: string): QmpStep {
  return { execute: "device_del", arguments: { id } };
}

/**
 * A medium change in a cdrom drive. blockdev-change-medium opens the tray, swaps the medium and
 * closes it again in one command (the guest sees a media change, as when a disc is swapped).
 */
export function cdInsertSteps(id: string, path: string, format: DiskConfig["format"]): QmpStep[] {
  return [{ execute: "blockdev-change-medium", arguments: { id, filename: path, format: QEMU_FORMAT[format], "read-only-mode": "read-only" } }];
}

/** force: the guest may have locked the tray (a mounted disc), as xl cd-eject does not ask either. */
export function cdEjectSteps(id: string): QmpStep[] {
  return [{ execute: "eject", arguments: { id, force: true } }];
}

export function netdevArgs(n: NicConfig): Record<string, unknown> {
  const id = `${n.id}.backend`;
  switch (n.type) {
    case "user":
      return {
        type: "user",
        id,
        ...(n.restrict ? { restrict: true } : {}),
        ...(n.forwards.length > 0 ? { hostfwd: n.forwards.filter((f) => f.from === "host").map((f) => ({ str: `${f.proto}:${f.hostAddress}:${f.hostPort}-${f.guestAddress}:${f.guestPort}` })) } : {}),
      };
    case "private": {
      const a = privateNetworkAddress(n.network);
      return { type: "socket", id, mcast: `${a.group}:${a.port}`, localaddr: "127.0.0.1" };
    }
    case "stream":
      return { type: "stream", id, server: n.listen, addr: { type: "unix", path: n.path } };
  }
}

export function networkAttachSteps(machine: MachineType, n: NicConfig, port: number | undefined): QmpStep[] {
  if (n.type === "user" && n.forwards.some((f) => f.from === "guest")) {
    throw new VmstackError("HOTPLUG_UNSUPPORTED", `NIC ${n.id}: guest forwards cannot be added while running`);
  }
  const driver = n.model === "virtio" ? virtioDevice(machine, "net") : n.model;
  return [
    { execute: "netdev_add", arguments: netdevArgs(n) },
    // romfile "": no iPXE option ROM for a NIC added after boot (the firmware is long done).
    { execute: "device_add", arguments: { driver, netdev: `${n.id}.backend`, mac: n.mac, id: n.id, romfile: "", ...busArgs(machine, port) } },
  ];
}

export function netdevRemoval(id: string): QmpStep[] {
  return [{ execute: "netdev_del", arguments: { id: `${id}.backend` } }];
}

export const BALLOON_ID = "balloon0";

export function balloonDeviceAdd(machine: MachineType, port: number | undefined): QmpStep {
  return { execute: "device_add", arguments: { driver: virtioDevice(machine, "balloon"), id: BALLOON_ID, ...busArgs(machine, port) } };
}

/** QMP `balloon` takes the guest's target size in bytes (not the balloon's size). */
export function balloonSteps(targetMiB: number): QmpStep[] {
  return [{ execute: "balloon", arguments: { value: targetMiB * 1024 * 1024 } }];
}

/** One entry of query-hotpluggable-cpus (QAPI HotpluggableCPU). */
export interface HotpluggableCpu {
  readonly type: string;
  readonly "vcpus-count": number;
  readonly props: Readonly<Record<string, number>>;
  readonly "qom-path"?: string;
}

/** `vcpu-<socket>-<core>-<thread>…`: a stable id for a CPU vmstack adds, from its topology. */
export function cpuDeviceId(props: Readonly<Record<string, number>>): string {
  return ["vcpu", ...["socket-id", "die-id", "core-id", "thread-id"].filter((k) => props[k] !== undefined).map((k) => String(props[k]))].join("-");
}

/**
 * The CPU slots in the order Linux numbers them (socket, die, core, thread ascending);
 * query-hotpluggable-cpus lists them in the reverse order.
 */
export function cpuSlots(list: readonly HotpluggableCpu[]): HotpluggableCpu[] {
  const key = (c: HotpluggableCpu): number[] => ["socket-id", "die-id", "core-id", "thread-id"].map((k) => c.props[k] ?? 0);
  return [...list].sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < ka.length; i++) if ((ka[i] ?? 0) !== (kb[i] ?? 0)) return (ka[i] ?? 0) - (kb[i] ?? 0);
    return 0;
  });
}

/**
 * The device_adds that give the domain at least `want` plugged CPUs (empty slots, lowest first).
 * Going down unplugs nothing: as in Xen, where vcpu-set only marks vCPUs offline for the guest,
 * the guest takes CPUs offline and QEMU keeps them (re-plugging an unplugged CPU under TCG is
 * not reliable in QEMU 7.2, and an offline vCPU costs nothing but a sleeping thread).
 */
export function vcpuSetSteps(list: readonly HotpluggableCpu[], want: number): QmpStep[] {
  const steps: QmpStep[] = [];
  cpuSlots(list).forEach((c, i) => {
    if (i < want && c["qom-path"] === undefined) steps.push({ execute: "device_add", arguments: { driver: c.type, id: cpuDeviceId(c.props), ...c.props } });
  });
  return steps;
}

/**
 * The guest side of vcpu-set, run by the agent (the role of Xen's vcpu hotplug driver watching
 * cpu/N/availability): CPU n online iff n < want. A hot-added CPU's `online` file appears once the
 * guest has handled the ACPI notification, so it retries for a while until all are there.
 */
export function guestCpuScript(want: number, max: number): string {
  return [
    "i=0",
    `while [ $i -lt 50 ]; do`,
    "  n=0",
    `  for c in $(seq 1 ${Math.max(1, max - 1)}); do`,
    "    f=/sys/devices/system/cpu/cpu$c/online",
    "    [ -e $f ] || continue",
    "    n=$((n+1))",
    `    if [ $c -lt ${want} ]; then v=1; else v=0; fi`,
    `    [ "$(cat $f)" = $v ] || echo $v > $f`,
    "  done",
    `  [ $n -ge ${Math.min(want, max) - 1} ] && exit 0`,
    "  i=$((i+1)); sleep 0.2",
    "done",
    "exit 1",
  ].join("\n");
}

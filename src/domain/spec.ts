/**
 * DomainSpec: vmstack's option set for a domain (a VM), in ONE table. Each option's type, default
 * and description live here; the TypeScript types are inferred from the table, `parseDomainSpec`
 * walks it, and `npm run docs:options` renders it into docs/options.md.
 *
 * Defaults follow qemu-vm.nix where it has the option (1024 MiB, 1 vCPU, virtio disks, a user-mode
 * NIC, an rng device) and xl.cfg(5) where it does not (on_poweroff=destroy, on_reboot=restart,
 * raw disks). Graphics default to off: domains run detached, with their console on a socket.
 */
import { bool, derived, type Input, int, list, obj, oneOf, optional, type Output, required, str, union, withDefault } from "./schema.js";

const PATH = { hint: "path" };
/** What happens when a guest powers off or reboots (xl.cfg on_poweroff, on_reboot). */
export const ACTIONS = ["destroy", "restart", "preserve", "rename-restart"] as const;
/**
 * on_crash adds the core-dump actions: a dump needs the crashed guest's memory, which is only
 * there while QEMU holds it (paused at the panic), so they do not apply to a guest that shut down.
 */
export const CRASH_ACTIONS = [...ACTIONS, "coredump-destroy", "coredump-restart"] as const;
export const DISK_FORMATS = ["raw", "qcow2", "qcow", "vhd", "qed"] as const;
export const DISK_INTERFACES = ["virtio", "scsi", "ide"] as const;
export const NIC_MODELS = ["virtio", "e1000", "rtl8139"] as const;
export const MAC_PATTERN = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
export const UUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/;
const ID_PATTERN = /^[A-Za-z][A-Za-z0-9_.-]{0,31}$/;
/** `hotplug2` (a q35 hotplug port) or `pci.0/0x1f` (a bus and slot): see pciSlot below. */
export const PCI_SLOT_PATTERN = /^[A-Za-z][A-Za-z0-9_.-]{0,31}(\/0x[0-9a-f]{1,2})?$/;
const pciSlot = (what: string) =>
  optional(
    str({ pattern: PCI_SLOT_PATTERN, hint: "PCI bus[/0xslot]" }),
    `Where the ${what} sits on PCI: a q35 hotplug port (\`hotplug0\`) or a bus and slot (\`pci.0/0x1f\`). Set by the attach verbs, so that a restart or a restore finds the ${what} where the guest saw it; absent lets QEMU choose.`,
  );

const nicCommon = {
  id: derived(str({ pattern: ID_PATTERN, hint: "device id" }), '"net" + its index', "QEMU id of the NIC; the netdev is `<id>.backend`. Stable across edits when set."),
  mac: derived(
    str({ pattern: MAC_PATTERN, hint: "MAC address" }),
    "52:54:00 + 3 bytes hashed from the domain name and NIC index",
    "The guest-visible MAC address. The default is stable for a given domain name and NIC position.",
  ),
  model: withDefault(oneOf(NIC_MODELS), "virtio", "Emulated NIC model. `virtio` is fastest; `e1000` and `rtl8139` suit guests without virtio drivers."),
  pciSlot: pciSlot("NIC"),
} as const;

export const forwardSchema = obj({
  from: withDefault(oneOf(["host", "guest"]), "host", "`host`: a host port reaches the guest. `guest`: a guest address reaches a host port (tcp only)."),
  proto: withDefault(oneOf(["tcp", "udp"]), "tcp", "Transport protocol."),
  hostAddress: withDefault(str({ hint: "IPv4 address" }), "", "Host address. Empty means all host addresses for `from=host`, 127.0.0.1 for `from=guest`."),
  hostPort: required(int({ min: 1, max: 65535 }), "Host port."),
  guestAddress: withDefault(str({ hint: "IPv4 address" }), "", "Guest address. For `from=guest` it must be in 10.0.2.0/24 (the user network)."),
  guestPort: required(int({ min: 1, max: 65535 }), "Guest port."),
});

export const nicSchema = union("type", {
  user: obj({
    ...nicCommon,
    forwards: withDefault(list(forwardSchema), [], "Port forwards between host and guest (SLiRP hostfwd / guestfwd)."),
    restrict: withDefault(bool(), false, "Isolate the guest from the host and the outside: only forwards get through (SLiRP restrict=on)."),
  }),
  private: obj({
    ...nicCommon,
    network: required(
      str({ pattern: /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, hint: "network name" }),
      "Name of a private Ethernet segment. Every domain with a NIC on the same name shares it (UDP multicast on 127.0.0.1; needs no root).",
    ),
  }),
  stream: obj({
    ...nicCommon,
    path: required(str(PATH), "Unix socket of a point-to-point link between two domains."),
    listen: withDefault(bool(), false, "This end creates the socket (the other end connects)."),
  }),
});

export const diskSchema = obj({
  id: derived(str({ pattern: ID_PATTERN, hint: "device id" }), '"disk" + its index', "QEMU device id; the block node is `<id>.fmt` over `<id>.file`. Stable across edits when set."),
  path: optional(str(PATH), "Image file or block device. Absent for an empty cdrom drive or a scratch disk."),
  format: derived(oneOf(DISK_FORMATS), "qcow2 when `backing` is set or the disk is scratch, else raw", "Image format."),
  interface: withDefault(oneOf(DISK_INTERFACES), "virtio", "How the guest sees the disk: virtio-blk, SCSI (virtio-scsi) or IDE."),
  media: withDefault(oneOf(["disk", "cdrom"]), "disk", "A cdrom is read-only and may be empty."),
  readOnly: derived(bool(), "true for a cdrom, else false", "Attach read-only."),
  size: optional(int({ min: 1, unit: "MiB" }), "Create the image with this size at first start when `path` does not exist (required for scratch disks)."),
  backing: optional(str(PATH), "Backing image: `path` is a copy-on-write qcow2 overlay over it, created at first start; the backing image is never written."),
  backingFormat: withDefault(oneOf(DISK_FORMATS), "qcow2", "Format of the backing image."),
  scratch: withDefault(bool(), false, "An empty disk created in the run directory at each start and deleted at stop (qemu-vm.nix's emptyDiskImages)."),
  serial: optional(str({ pattern: /^[A-Za-z0-9_.-]{1,20}$/, hint: "serial (≤ 20 chars)" }), "Serial number the guest sees (/dev/disk/by-id/virtio-<serial>)."),
  cache: withDefault(oneOf(["writeback", "none", "writethrough", "directsync", "unsafe"]), "writeback", "Host page-cache mode."),
  discard: withDefault(bool(), false, "Pass guest TRIM/discard through to the image."),
  vdev: optional(str({ pattern: /^(xvd|hd|sd|vd)[a-z]+[0-9]*$/, hint: "virtual device name" }), "Xen virtual device name (xvda, hdc, sdb), kept for xl.cfg conversion; also orders disks."),
  pciSlot: pciSlot("disk (virtio only)"),
});

export const shareSchema = obj({
  tag: required(str({ pattern: /^[A-Za-z0-9_.-]{1,36}$/, hint: "mount tag (≤ 36 chars)" }), "virtiofs tag; the guest mounts it with `mount -t virtiofs TAG DIR`."),
  source: required(str(PATH), "Host directory to share."),
  target: optional(str(PATH), "Where the guest mounts it (done by the guest agent at start)."),
  readOnly: withDefault(bool(), false, "Share read-only."),
});

export const bootSchema = obj({
  firmware: withDefault(oneOf(["bios", "uefi"]), "bios", "Firmware: SeaBIOS, or UEFI (OVMF) with a persistent variables file."),
  kernel: optional(
    str(PATH),
    "Direct kernel boot: a bzImage, or an uncompressed vmlinux (boots through its PVH note, fastest under TCG). With `vmstack create` or `vmstack domains start`, `/vmstack-default-guest` boots vmstack's default guest (what they pick by themselves when nothing else boots), e.g. beside a cdrom drive.",
  ),
  initrd: optional(str(PATH), "Initial ramdisk for direct kernel boot."),
  cmdline: optional(str(), "Kernel command line for direct kernel boot."),
  guestGrub: optional(
    obj({
      menu: optional(str(PATH), "Menu file inside the guest's disk (e.g. /boot/grub/menu.lst); searched in the usual places when absent."),
      disk: withDefault(int({ min: 0 }), 0, "Index of the disk holding the menu (grub's hd0 = 0)."),
      partition: optional(int({ min: 0 }), "Partition index, 0-based as in grub legacy's (hd0,0); the whole disk when absent."),
      entry: optional(int({ min: 0 }), "Menu entry to boot; the menu's default when absent."),
    }),
    "Boot the kernel and initrd that the guest's own GRUB menu names (pv-grub / pygrub), resolved when the domain starts.",
  ),
  order: withDefault(str({ pattern: /^[cdn]{1,3}$/, hint: "boot order letters c, d, n" }), "cd", "Firmware boot order: c = first disk, d = first cdrom, n = network."),
  uefiCode: withDefault(str(PATH), "/usr/share/OVMF/OVMF_CODE_4M.fd", "OVMF code image (read-only pflash)."),
  uefiVarsTemplate: withDefault(str(PATH), "/usr/share/OVMF/OVMF_VARS_4M.fd", "Template copied to `uefiVars` at first start."),
  uefiVars: optional(str(PATH), "Persistent UEFI variables file (writable pflash); `<state dir>/efivars.fd` when absent."),
});

export const domainSchema = obj({
  name: required(str({ pattern: NAME_PATTERN, hint: "domain name" }), "Domain name, unique on the host: letters, digits, `_ . + -`, at most 64."),
  uuid: optional(str({ pattern: UUID_PATTERN, hint: "UUID" }), "Domain UUID; generated when the domain is created when absent."),
  machine: withDefault(oneOf(["q35", "pc", "microvm"]), "q35", "QEMU machine type. microvm boots fastest but has no PCI, firmware disks or IDE."),
  accel: withDefault(oneOf(["auto", "kvm", "tcg"]), "auto", "Accelerator. `auto` probes KVM with a test boot at start and falls back to TCG."),
  memory: withDefault(int({ min: 16, unit: "MiB" }), 1024, "Memory at boot."),
  maxmem: derived(int({ min: 16, unit: "MiB" }), "`memory`", "Memory ceiling. Above `memory`, the guest starts with `maxmem` and a balloon inflated down to `memory`."),
  hotplugSlots: withDefault(
    int({ min: 0, max: 32 }),
    4,
    "PCIe root ports kept free for devices attached while the domain runs (block-attach, network-attach, mem-set's balloon). q35 only: pc's PCI bus hotplugs through ACPI without them, microvm cannot hotplug.",
  ),
  balloonSlot: optional(
    str({ pattern: PCI_SLOT_PATTERN, hint: "PCI bus[/0xslot]" }),
    "A balloon device at this PCI place even when memory = maxmem: set by mem-set when it adds one to a running domain (see pciSlot).",
  ),
  vcpus: withDefault(int({ min: 1, max: 255 }), 1, "Virtual CPUs online at boot."),
  maxvcpus: derived(int({ min: 1, max: 255 }), "`vcpus`", "Virtual CPUs that can be brought online later."),
  localtime: withDefault(bool(), false, "Start the guest's clock at host local time instead of UTC."),
  boot: withDefault(bootSchema, {}, "How the domain boots."),
  disks: withDefault(list(diskSchema), [], "Block devices, in guest order."),
  shares: withDefault(list(shareSchema), [], "Host directories shared with the guest over virtiofs."),
  nics: withDefault(list(nicSchema), [{ type: "user" }], "Network interfaces. The default is one user-mode NAT NIC (as qemu-vm.nix); `[]` for none."),
  serial: withDefault(oneOf(["socket", "file", "none"]), "socket", "Where the first serial port goes: a Unix socket in the run directory (for `vmstack console`), a log file there, or nowhere."),
  graphics: withDefault(bool(), false, "A display device and VNC on a Unix socket in the run directory; off means no display at all."),
  onPoweroff: withDefault(
    oneOf(ACTIONS),
    "destroy",
    "What happens when the guest powers off: `destroy` ends the domain, `restart` starts it again, `preserve` keeps it for inspection, `rename-restart` keeps the old one renamed NAME--incarnation-N and starts a new one.",
  ),
  onReboot: withDefault(oneOf(ACTIONS), "restart", "What happens when the guest reboots."),
  onCrash: withDefault(
    oneOf(CRASH_ACTIONS),
    "destroy",
    "What happens when the guest kernel panics (pvpanic) or QEMU dies; also `coredump-destroy` and `coredump-restart`, which first write the guest's memory as an ELF core to $STATE/dump/.",
  ),
  rng: withDefault(bool(), true, "A virtio-rng device fed from the host's /dev/urandom."),
  agent: withDefault(bool(), true, "The guest tools' virtio-serial channels: the agent's (command execution, file transfer) and the guest's xenstore connection, bound to its domid by vmstackd."),
  extraArgs: withDefault(list(str()), [], "Extra QEMU arguments appended last: an escape hatch, not validated."),
});

/** What a user writes (JSON, or a TypeScript object): omitted options take their defaults. */
export type DomainSpec = Input<typeof domainSchema>;
/** The validated, normalized configuration: every default applied and every derived value computed. */
export type DomainConfig = Output<typeof domainSchema>;
export type DiskConfig = DomainConfig["disks"][number];
export type NicConfig = DomainConfig["nics"][number];
export type ForwardConfig = Output<typeof forwardSchema>;
export type ShareConfig = DomainConfig["shares"][number];
export type BootConfig = DomainConfig["boot"];
export type Action = (typeof ACTIONS)[number];
export type CrashAction = (typeof CRASH_ACTIONS)[number];
export type DiskFormat = (typeof DISK_FORMATS)[number];
export type DiskInterface = (typeof DISK_INTERFACES)[number];
export type NicModel = (typeof NIC_MODELS)[number];

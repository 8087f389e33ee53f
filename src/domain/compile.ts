/**
 * A validated DomainConfig → what starting the domain takes: the QEMU argv (through vmm's pure
 * buildQemuArgs), the helper processes (one virtiofsd per share), and the files to prepare
 * (images created on first start, scratch disks, the UEFI variables copy). PURE: nothing is
 * opened or probed; host facts (accelerator, TSC frequency, the kernel a guest GRUB menu names)
 * arrive in the context, already decided (house rule 2).
 */
import { createHash } from "node:crypto";
import { AGENT_PORT_NAME, XENSTORE_PORT_NAME, XENSTORE_SOCKET_NAME } from "../guest/index.js";
import { virtiofsdArgv } from "../vmm/virtiofsd-argv.js";
import { type Accel, type BlockFormat, type DriveConfig, type MachineConfig, type NicArgsConfig, buildQemuArgs } from "../vmm/qemu-args.js";
import type { DiskConfig, DiskFormat, DomainConfig, NicConfig } from "./spec.js";

export interface CompileContext {
  /** The domain's run directory: sockets, logs, scratch disks live here (gone after a stop). */
  readonly runDir: string;
  /** The domain's persistent directory (UEFI variables); the run directory when absent. */
  readonly stateDir?: string;
  /** The accelerator chosen by the start-up probe; for accel "auto" without it, tcg is shown. */
  readonly accel?: Accel;
  /** Host TSC frequency: microvm under TCG hangs calibrating without `tsc_early_khz` (qemu-notes §2). */
  readonly tscKhz?: number;
  /** For boot.guestGrub: what the guest's GRUB menu named, once read at start. */
  readonly resolvedBoot?: { readonly kernel: string; readonly initrd?: string; readonly cmdline?: string };
  readonly paused?: boolean;
  readonly qemuImg?: string;
  readonly virtiofsd?: string;
}

export type PrepareStep =
  /** Create the image when the path does not exist yet (sized disks, overlays). */
  | { readonly kind: "create-image-if-missing"; readonly path: string; readonly argv: readonly string[] }
  /** Create afresh at every start and delete at stop. */
  | { readonly kind: "create-scratch"; readonly path: string; readonly argv: readonly string[] }
  | { readonly kind: "copy-if-missing"; readonly from: string; readonly to: string };

export interface Helper {
  readonly name: string;
  readonly argv: readonly string[];
  /** The socket the helper listens on; QEMU must start after it exists. */
  readonly socketPath: string;
}

export interface DomainPlan {
  readonly machine: MachineConfig;
  readonly argv: readonly string[];
  readonly prepare: readonly PrepareStep[];
  readonly helpers: readonly Helper[];
  readonly paths: { readonly qmp: string; readonly console?: string; readonly agent?: string; readonly xenstore?: string; readonly vnc?: string };
  /** Shares the guest agent mounts once the guest is up (`mount -t virtiofs TAG TARGET`). */
  readonly mounts: readonly { readonly tag: string; readonly target: string; readonly readOnly: boolean }[];
  /** Things decided only at start (a probe boot, a GRUB menu), stated so a dry run is honest. */
  readonly notes: readonly string[];
}

const QEMU_FORMAT: Readonly<Record<DiskFormat, BlockFormat>> = { raw: "raw", qcow2: "qcow2", qcow: "qcow", vhd: "vpc", qed: "qed" };

export function compileDomain(c: DomainConfig, ctx: CompileContext): DomainPlan {
  const run = (f: string): string => `${ctx.runDir.replace(/\/+$/, "")}/${f}`;
  const notes: string[] = [];
  const prepare: PrepareStep[] = [];
  const qemuImg = ctx.qemuImg ?? "qemu-img";

  const accel: Accel = ctx.accel ?? (c.accel === "auto" ? "tcg" : c.accel);
  if (ctx.accel === undefined && c.accel === "auto") notes.push("accel auto: a probe boot at start chooses kvm or tcg; tcg is shown");

  // Boot: direct kernel, the guest's GRUB menu (resolved at start), or firmware from the disks.
  let kernel = c.boot.kernel;
  let initrd = c.boot.initrd;
  let append = c.boot.cmdline;
  if (c.boot.guestGrub !== undefined) {
    if (ctx.resolvedBoot) ({ kernel, initrd, cmdline: append } = ctx.resolvedBoot);
    else {
      const g = c.boot.guestGrub;
      notes.push(
        `boot.guestGrub: kernel, initrd and command line come from ${g.menu ?? "the GRUB menu"} on disk ${g.disk}${g.partition === undefined ? "" : ` partition ${g.partition}`} at start`,
      );
    }
  }
  if (c.machine === "microvm" && accel === "tcg" && kernel !== undefined) {
    if (ctx.tscKhz !== undefined) append = [append, `tsc_early_khz=${ctx.tscKhz}`].filter(Boolean).join(" ");
    else notes.push("microvm under tcg: tsc_early_khz=<host TSC kHz> is appended to the command line at start");
  }

  // Firmware boot order (xl's boot="cd"): bootindex on the first disk, cdrom, NIC in that order.
  const bootIndex = new Map<string, number>();
  if (kernel === undefined && c.boot.guestGrub === undefined) {
    [...c.boot.order].forEach((letter, i) => {
      const dev =
        letter === "c" ? c.disks.find((d) => d.media === "disk")?.id : letter === "d" ? c.disks.find((d) => d.media === "cdrom")?.id : c.nics[0]?.id;
      if (dev !== undefined && !bootIndex.has(dev)) bootIndex.set(dev, i);
    });
  }

  const drives: DriveConfig[] = c.disks.map((d) => {
    const path = d.scratch ? run(`scratch-${d.id}.qcow2`) : d.path;
    if (d.scratch) prepare.push({ kind: "create-scratch", path: path as string, argv: createImage(qemuImg, d, path as string) });
    else if (d.path !== undefined && (d.size !== undefined || d.backing !== undefined))
      prepare.push({ kind: "create-image-if-missing", path: d.path, argv: createImage(qemuImg, d, d.path) });
    const b = bootIndex.get(d.id);
    return {
      id: d.id,
      ...(path === undefined ? {} : { path }),
      format: QEMU_FORMAT[d.format],
      bus: d.interface,
      media: d.media,
      readOnly: d.readOnly,
      cache: d.cache,
      discard: d.discard,
      ...(d.serial === undefined ? {} : { serial: d.serial }),
      ...(b === undefined ? {} : { bootIndex: b }),
    };
  });

  const efiVars = c.boot.uefiVars ?? `${(ctx.stateDir ?? ctx.runDir).replace(/\/+$/, "")}/efivars.fd`;
  const firmware = c.boot.firmware === "uefi" ? { kind: "uefi" as const, code: c.boot.uefiCode, vars: efiVars } : undefined;
  if (firmware) prepare.push({ kind: "copy-if-missing", from: c.boot.uefiVarsTemplate, to: firmware.vars });

  if (c.onReboot === "preserve" && c.onPoweroff !== "preserve")
    notes.push(`onReboot preserve: QEMU pauses at reboot and at poweroff alike; at a poweroff (SHUTDOWN reason guest-shutdown) vmstackd applies onPoweroff=${c.onPoweroff}`);
  const helpers: Helper[] = c.shares.map((s, i) => {
    const socketPath = run(`virtiofs-${i}.sock`);
    // One virtiofsd per share, the same command line as `vmstack run --share` (read-only enforced on the host).
    return { name: `virtiofsd-${s.tag}`, argv: virtiofsdArgv({ source: s.source, readOnly: s.readOnly }, socketPath, ctx.virtiofsd), socketPath };
  });

  const nics: NicArgsConfig[] = c.nics.map((n) => {
    const b = bootIndex.get(n.id);
    return { id: n.id, mac: n.mac, model: n.model, backend: netBackend(n), ...(b === undefined ? {} : { bootRom: true, bootIndex: b }) };
  });

  const paths = {
    qmp: run("qmp.sock"),
    ...(c.serial === "socket" ? { console: run("console.sock") } : c.serial === "file" ? { console: run("console.log") } : {}),
    ...(c.agent ? { agent: run("agent.sock"), xenstore: run(XENSTORE_SOCKET_NAME) } : {}),
    ...(c.graphics ? { vnc: run("vnc.sock") } : {}),
  };

  const machine: MachineConfig = {
    machine: c.machine,
    accel,
    name: c.name,
    ...(c.uuid === undefined ? {} : { uuid: c.uuid }),
    // Xen's memory < maxmem ("pre-ballooned"): boot with maxmem, the balloon holds `memory`.
    memoryMiB: c.maxmem,
    balloon: c.maxmem > c.memory,
    cpus: c.vcpus,
    maxCpus: c.maxvcpus,
    ...(kernel === undefined ? {} : { kernel }),
    ...(initrd === undefined ? {} : { initrd }),
    ...(append === undefined ? {} : { append }),
    ...(firmware === undefined ? {} : { firmware }),
    localtime: c.localtime,
    serial: c.serial === "none" ? { kind: "none" } : { kind: c.serial, path: paths.console as string },
    qmpSocket: paths.qmp,
    // The guest tools' two ports: the agent's protocol, and xenstore bound to the domid by vmstackd.
    channels: c.agent
      ? [
          { name: AGENT_PORT_NAME, socketPath: paths.agent as string },
          { name: XENSTORE_PORT_NAME, socketPath: paths.xenstore as string },
        ]
      : [],
    drives,
    filesystems: helpers.map((h, i) => ({ id: `fs${i}`, tag: (c.shares[i] as { tag: string }).tag, socketPath: h.socketPath })),
    nics,
    rng: c.rng,
    ...(c.machine === "q35" && (c.hotplugSlots ?? 0) > 0 ? { hotplugPorts: c.hotplugSlots } : {}),
    ...(paths.vnc === undefined ? {} : { vncSocket: paths.vnc }),
    // on_reboot=destroy: QEMU exits instead of resetting. on_poweroff=preserve: QEMU stays, paused.
    // on_crash: pvpanic reports the panic; preserve keeps the guest paused for inspection.
    ...(c.onReboot === "destroy" ? { noReboot: true } : {}),
    // on_reboot=preserve: a reboot must stop the guest where it is, which QEMU only offers as
    // "reboot acts as shutdown" plus "shutdown pauses"; vmstackd tells the two apart by the
    // SHUTDOWN event's reason and applies onPoweroff itself (see the note).
    ...(c.onReboot === "preserve" ? { onReboot: "shutdown" as const } : {}),
    ...(c.onPoweroff === "preserve" || c.onReboot === "preserve" ? { onShutdown: "pause" as const } : {}),
    // The core-dump actions also keep the panicked guest paused: vmstackd dumps its memory, then ends it.
    onPanic: c.onCrash === "preserve" || c.onCrash.startsWith("coredump-") ? "pause" : "shutdown",
    ...(ctx.paused ? { paused: true } : {}),
    ...(c.extraArgs.length > 0 ? { extraArgs: c.extraArgs } : {}),
  };
  const mounts = c.shares.flatMap((s) => (s.target === undefined ? [] : [{ tag: s.tag, target: s.target, readOnly: s.readOnly }]));
  return { machine, argv: buildQemuArgs(machine), prepare, helpers, paths, mounts, notes };
}

function createImage(qemuImg: string, d: DiskConfig, path: string): string[] {
  const fmt = QEMU_FORMAT[d.format];
  const backing = d.backing === undefined ? [] : ["-b", d.backing, "-F", QEMU_FORMAT[d.backingFormat]];
  return [qemuImg, "create", "-q", "-f", fmt, ...backing, path, ...(d.size === undefined ? [] : [`${d.size}M`])];
}

/**
 * A private network's multicast group and port, derived from its name so that every domain on
 * the same name meets without coordination (239.255.0.0/16: organisation-local scope, RFC 2365).
 */
export function privateNetworkAddress(network: string): { group: string; port: number } {
  const h = createHash("sha256").update(`vmstack-private-network/${network}`).digest();
  return { group: `239.255.${h[0] ?? 0}.${h[1] ?? 1}`, port: 20000 + (((h[2] ?? 0) << 8) | (h[3] ?? 0)) % 20000 };
}

function netBackend(n: NicConfig): NicArgsConfig["backend"] {
  switch (n.type) {
    case "user":
      return {
        kind: "user",
        restrict: n.restrict,
        hostForwards: n.forwards
          .filter((f) => f.from === "host")
          .map((f) => ({ proto: f.proto, hostAddress: f.hostAddress, hostPort: f.hostPort, guestAddress: f.guestAddress, guestPort: f.guestPort })),
        guestForwards: n.forwards
          .filter((f) => f.from === "guest")
          .map((f) => ({ guestAddress: f.guestAddress, guestPort: f.guestPort, hostAddress: f.hostAddress === "" ? "127.0.0.1" : f.hostAddress, hostPort: f.hostPort })),
      };
    case "private": {
      const a = privateNetworkAddress(n.network);
      return { kind: "mcast", group: a.group, port: a.port };
    }
    case "stream":
      return { kind: "stream", path: n.path, server: n.listen };
  }
}

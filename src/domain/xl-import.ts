/**
 * An xl.cfg / xm config → a vmstack DomainSpec, with the position of every option it came from.
 *
 * What maps (xl.cfg(5) → spec.ts): name, uuid, memory, maxmem, vcpus, maxvcpus, kernel/ramdisk,
 * cmdline (or `root=ROOT EXTRA` when cmdline is absent, as xl builds it), firmware/bios, boot,
 * disk, vif, serial, vnc/sdl/vfb/nographic, localtime, on_poweroff/on_reboot/on_crash,
 * device_model_args (→ extraArgs), p9 (→ virtiofs shares). pv-grub kernels and pygrub
 * bootloaders become boot.guestGrub ("boot what the guest's own GRUB menu names", resolved at
 * start). Everything else xl knows produces a warning naming it; unknown keys close to a known
 * one are errors with a did-you-mean (a typo that xl would silently ignore).
 */
import { type Origin, type Problem, OriginMap } from "./diagnostics.js";
import { closest } from "./did-you-mean.js";
import { parseDiskSpec, xlDiskToSpec } from "./disk-spec.js";
import { type DomainSpec, NAME_PATTERN } from "./spec.js";
import { DEFAULT_BRIDGE, parseVifSpec } from "./vif-spec.js";
import type { XlConfig, XlSetting, XlValue } from "./xl-config.js";

export interface ImportedXl {
  /** A plain object for parseDomainSpec (which validates it). */
  readonly spec: Record<string, unknown>;
  readonly origins: OriginMap;
  readonly problems: readonly Problem[];
}

/** xl options vmstack reads. */
const HANDLED = [
  "name", "uuid", "type", "builder", "memory", "maxmem", "vcpus", "maxvcpus", "kernel", "ramdisk", "cmdline", "root", "extra",
  "bootloader", "bootloader_args", "firmware", "bios", "boot", "disk", "vif", "serial", "vnc", "sdl", "vfb", "nographic",
  "localtime", "on_poweroff", "on_reboot", "on_crash", "device_model_args", "device_model_args_hvm", "device_model_args_pv", "p9",
] as const;

/** xl/xm options that exist but mean nothing under QEMU here (Xen scheduling, passthrough, …). */
const IGNORED = [
  "cpus", "cpus_soft", "cpu_weight", "cap", "pool", "seclabel", "init_seclabel", "device_model_version", "device_model_override",
  "device_model_stubdomain_override", "device_model", "pci", "usb", "usbdevice", "usbctrl", "usbdev", "channel", "soundhw", "vtpm",
  "rdm", "xen_platform_pci", "shadow_memory", "tsc_mode", "max_grant_frames", "max_maptrack_frames", "e820_host", "gfx_passthru",
  "acpi", "apic", "pae", "hap", "viridian", "nestedhvm", "hpet", "vpt_align", "timer_mode", "stdvga", "videoram", "vga", "vnclisten",
  "vncunused", "vncdisplay", "vncpasswd", "vncconsole", "keymap", "rtc_timeoffset", "on_watchdog", "on_soft_reset", "nomigrate",
  "driver_domain", "claim_mode", "blkid", "ip", "netmask", "gateway", "hostname", "dhcp", "interface", "on_xend_start",
  "on_xend_stop", "vif_other_config", "cpuid", "altp2m", "max_event_channels", "iomem", "ioports", "irqs", "vkb", "vdispl", "vsnd",
  "dtdev", "passthrough", "xendstore_domid", "event_channels", "suppress_vmdesc", "smbios", "acpi_firmware", "mmio_hole",
  "serial_console", "vcpu_hard_affinity", "vcpu_soft_affinity", "memory_sharing", "tee", "vuart", "gic_version", "cpu_cap",
] as const;

const ACTIONS: Readonly<Record<string, { action: string; note?: string }>> = {
  destroy: { action: "destroy" },
  restart: { action: "restart" },
  preserve: { action: "preserve" },
  "rename-restart": { action: "rename-restart" },
  "coredump-destroy": { action: "coredump-destroy" },
  "coredump-restart": { action: "coredump-restart" },
  "soft-reset": { action: "restart", note: "a soft reset is a plain restart here" },
};

export function importXlConfig(xl: XlConfig): ImportedXl {
  const origins = new OriginMap(xl.file);
  const problems: Problem[] = [];
  const spec: Record<string, unknown> = {};
  const s = xl.settings;
  const at = (st: XlSetting | XlValue): Origin => ({ file: xl.file, line: st.pos.line, col: st.pos.col });
  const warn = (where: XlSetting | XlValue, message: string): void => void problems.push({ severity: "warning", message, origin: at(where) });
  const error = (where: XlSetting | XlValue, message: string): void => void problems.push({ severity: "error", message, origin: at(where) });

  const str = (key: string): string | undefined => {
    const st = s.get(key);
    if (st === undefined) return undefined;
    if (st.value.kind === "string") return st.value.value;
    if (st.value.kind === "number") return st.value.text;
    error(st.value, `'${key}' must be a string, not a list`);
    return undefined;
  };
  const num = (key: string): number | undefined => {
    const st = s.get(key);
    if (st === undefined) return undefined;
    if (st.value.kind === "number") return st.value.value;
    if (st.value.kind === "string" && /^\d+$/.test(st.value.value)) return Number(st.value.value);
    error(st.value, `'${key}' must be a number, got ${st.value.kind === "string" ? JSON.stringify(st.value.value) : "a list"}`);
    return undefined;
  };
  /** A list of strings; a single string counts as a one-item list (xm often wrote them so). */
  const strings = (key: string): { value: string; v: XlValue }[] | undefined => {
    const st = s.get(key);
    if (st === undefined) return undefined;
    const items = st.value.kind === "list" ? st.value.items : [st.value];
    const out: { value: string; v: XlValue }[] = [];
    for (const v of items) {
      if (v.kind === "string") out.push({ value: v.value, v });
      else error(v, `each item of '${key}' must be a string`);
    }
    return out;
  };
  const put = (path: string, value: unknown, key: string): void => {
    const st = s.get(key);
    setPath(spec, path, value);
    if (st) origins.set(path, at(st.value));
  };

  for (const [key, st] of s) {
    if ((HANDLED as readonly string[]).includes(key)) continue;
    if ((IGNORED as readonly string[]).includes(key)) {
      warn(st, `'${key}' is ignored: vmstack runs the domain under QEMU and cannot honour it`);
      continue;
    }
    const near = closest(key, [...HANDLED, ...IGNORED]);
    if (near !== undefined) error(st, `unknown option '${key}' (did you mean '${near}'?)`);
    else warn(st, `unknown option '${key}' is ignored (not an xl.cfg(5) option)`);
  }

  const name = str("name");
  const fromFile = /([^/]+?)(\.(cfg|xl|conf|hvm|pv))?$/.exec(xl.file)?.[1];
  if (name !== undefined) put("name", name, "name");
  else if (fromFile !== undefined && NAME_PATTERN.test(fromFile) && !xl.file.startsWith("<")) {
    // xl requires name=; old xm files often relied on the file name instead.
    setPath(spec, "name", fromFile);
    problems.push({ severity: "warning", message: `no name= setting: the domain is named '${fromFile}' after the file`, origin: { file: xl.file } });
  } else problems.push({ severity: "error", message: "'name' is mandatory in an xl config", origin: { file: xl.file } });
  const uuid = str("uuid");
  if (uuid !== undefined) put("uuid", uuid, "uuid");

  const type = str("type") ?? (str("builder") === "hvm" ? "hvm" : undefined);
  if (s.has("builder")) warn(s.get("builder") as XlSetting, "'builder' is deprecated in xl.cfg(5); use type=");
  if (type !== undefined && !["pv", "pvh", "hvm"].includes(type)) error(s.get("type") as XlSetting, `type '${type}' is not pv, pvh or hvm`);

  for (const key of ["memory", "maxmem", "vcpus", "maxvcpus"] as const) {
    const v = num(key);
    if (v !== undefined) put(key, v, key);
  }
  if (s.has("localtime")) put("localtime", num("localtime") !== 0, "localtime");

  importBoot(xl, type, { str, strings, put, warn, error, spec, origins });

  // Disks.
  const disks = strings("disk") ?? [];
  const diskOut: Record<string, unknown>[] = [];
  disks.forEach(({ value, v }) => {
    const r = parseDiskSpec(value);
    for (const e of r.errors) error(v, `disk spec ${JSON.stringify(value)}: ${e}`);
    for (const w of r.warnings) warn(v, `disk spec ${JSON.stringify(value)}: ${w}`);
    if (!r.disk) return;
    const d = r.disk;
    const i = diskOut.length;
    if (d.vdev !== undefined && /^xvd[a-z]+[0-9]+$/.test(d.vdev))
      warn(v, `vdev '${d.vdev}' names a partition: QEMU attaches the image as a whole disk (/dev/vd${d.vdev.slice(3).replace(/[0-9]+$/, "")} in the guest)`);
    diskOut.push(xlDiskToSpec(d));
    origins.set(`disks[${i}]`, at(v));
  });
  if (s.has("disk")) origins.set("disks", at(s.get("disk") as XlSetting));
  spec["disks"] = diskOut;

  // NICs: no vif means no network in xl.
  const nicOut: Record<string, unknown>[] = [];
  (strings("vif") ?? []).forEach(({ value, v }) => {
    const r = parseVifSpec(value);
    for (const e of r.errors) error(v, `vif spec ${JSON.stringify(value)}: ${e}`);
    for (const w of r.warnings) warn(v, `vif spec ${JSON.stringify(value)}: ${w}`);
    if (!r.vif) return;
    const i = nicOut.length;
    const common = { ...(r.vif.mac === undefined ? {} : { mac: r.vif.mac }), ...(r.vif.model === "virtio" ? {} : { model: r.vif.model }) };
    if (r.vif.bridge === undefined || r.vif.bridge === DEFAULT_BRIDGE) {
      if (r.vif.bridge !== undefined) warn(v, `bridge '${DEFAULT_BRIDGE}' becomes user-mode NAT (host bridges need root)`);
      nicOut.push({ type: "user", ...common });
    } else {
      warn(v, `bridge '${r.vif.bridge}' becomes a private network of that name between vmstack domains (no host bridge)`);
      nicOut.push({ type: "private", network: r.vif.bridge, ...common });
    }
    origins.set(`nics[${i}]`, at(v));
  });
  if (s.has("vif")) origins.set("nics", at(s.get("vif") as XlSetting));
  spec["nics"] = nicOut;

  // 9pfs shares become virtiofs (the cloud kernel has no 9p at all; qemu-notes §2).
  const shares: Record<string, unknown>[] = [];
  (strings("p9") ?? []).forEach(({ value, v }) => {
    const kv = Object.fromEntries(value.split(",").map((x) => x.trim()).filter(Boolean).map((x) => [x.slice(0, x.indexOf("=")), x.slice(x.indexOf("=") + 1)]));
    if (kv["tag"] === undefined || kv["path"] === undefined) {
      error(v, `p9 spec ${JSON.stringify(value)}: needs tag= and path=`);
      return;
    }
    warn(v, `p9 share '${kv["tag"]}' is served over virtiofs: mount it with 'mount -t virtiofs ${kv["tag"]} DIR'`);
    origins.set(`shares[${shares.length}]`, at(v));
    shares.push({ tag: kv["tag"], source: kv["path"] });
  });
  if (shares.length > 0) spec["shares"] = shares;

  // Consoles and graphics.
  const serial = strings("serial");
  if (serial !== undefined) {
    const first = serial[0];
    if (first === undefined || ["none", "null"].includes(first.value)) put("serial", "none", "serial");
    else if (first.value === "pty" || first.value.startsWith("unix:")) put("serial", "socket", "serial");
    else if (first.value.startsWith("file:")) {
      put("serial", "file", "serial");
      warn(first.v, "the serial log is written to console.log in the domain's run directory, not to the path given");
    } else {
      put("serial", "socket", "serial");
      warn(first.v, `serial device '${first.value}' is not available here; the console goes to a socket for 'vmstack console'`);
    }
    if (serial.length > 1) warn(serial[1]?.v ?? s.get("serial") as XlSetting, "only the first serial port is used");
  }
  const vfb = strings("vfb");
  const graphics = (s.has("vnc") && num("vnc") !== 0) || (s.has("sdl") && num("sdl") !== 0) || (vfb !== undefined && vfb.length > 0);
  if (s.has("nographic") && num("nographic") !== 0) put("graphics", false, "nographic");
  else if (graphics) put("graphics", true, s.has("vnc") ? "vnc" : s.has("sdl") ? "sdl" : "vfb");

  for (const [key, field] of [["on_poweroff", "onPoweroff"], ["on_reboot", "onReboot"], ["on_crash", "onCrash"]] as const) {
    const v = str(key);
    if (v === undefined) continue;
    const a = ACTIONS[v];
    if (a === undefined) {
      error((s.get(key) as XlSetting).value, `${key} '${v}' is not one of ${Object.keys(ACTIONS).join(", ")}`);
      continue;
    }
    if (a.action.startsWith("coredump-") && key !== "on_crash") {
      // A guest that shut down left no memory to dump (QEMU has ended).
      const plain = a.action.slice("coredump-".length);
      warn(s.get(key) as XlSetting, `${key}=${v} acts as ${plain}: core dumps are written for crashed guests only`);
      put(field, plain, key);
      continue;
    }
    if (a.note) warn(s.get(key) as XlSetting, `${key}=${v} acts as ${a.action}: ${a.note}`);
    put(field, a.action, key);
  }

  const extra = [...(strings("device_model_args") ?? []), ...(strings(type === "hvm" ? "device_model_args_hvm" : "device_model_args_pv") ?? [])];
  if (extra.length > 0) {
    spec["extraArgs"] = extra.map((e) => e.value);
    origins.set("extraArgs", at(s.get("device_model_args") ?? (s.get("device_model_args_hvm") as XlSetting)));
  }
  return { spec, origins, problems };
}

interface Helpers {
  str(key: string): string | undefined;
  strings(key: string): { value: string; v: XlValue }[] | undefined;
  put(path: string, value: unknown, key: string): void;
  warn(where: XlSetting | XlValue, message: string): void;
  error(where: XlSetting | XlValue, message: string): void;
  spec: Record<string, unknown>;
  origins: OriginMap;
}

/** A pv-grub image (pv-grub-x86_64.gz, grub-x86_64-xen.bin from pvgrub2, pvgrub64.bin …). */
const PV_GRUB = /(^|\/)(pv-?grub[^/]*|grub-[^/]*xen[^/]*)$/;
const PYGRUB = /(^|\/)pygrub$/;

function importBoot(xl: XlConfig, type: string | undefined, h: Helpers): void {
  const s = xl.settings;
  const kernel = h.str("kernel");
  const bootloader = h.str("bootloader");
  const firmware = h.str("firmware") ?? h.str("bios");
  const extra = h.str("extra");
  const root = h.str("root");
  const cmdline = h.str("cmdline");
  const kernelSetting = s.get("kernel");

  if (kernel !== undefined && PV_GRUB.test(kernel)) {
    // pv-grub reads a menu.lst named in `extra` as (hdN[,P])/path; the default is the first disk.
    const grub: Record<string, unknown> = {};
    const m = extra === undefined ? null : /^\s*\(hd(\d+)(?:,(\d+))?\)(\S+)\s*$/.exec(extra);
    if (m) {
      grub["menu"] = m[3];
      grub["disk"] = Number(m[1]);
      if (m[2] !== undefined) grub["partition"] = Number(m[2]);
    } else if (extra !== undefined) h.warn(s.get("extra") as XlSetting, `extra ${JSON.stringify(extra)} is not a pv-grub menu location like (hd0)/boot/grub/menu.lst; the menu is searched for`);
    h.put("boot.guestGrub", grub, "kernel");
    if (s.has("ramdisk")) h.warn(s.get("ramdisk") as XlSetting, "ramdisk is ignored with pv-grub: the guest's GRUB menu names the initrd");
    return;
  }
  if (bootloader !== undefined) {
    const st = s.get("bootloader") as XlSetting;
    if (!PYGRUB.test(bootloader)) h.warn(st, `bootloader '${bootloader}' is treated as pygrub: the guest's GRUB menu is read at start`);
    const grub: Record<string, unknown> = {};
    for (const { value, v } of h.strings("bootloader_args") ?? []) {
      for (const arg of value.split(/\s+/).filter(Boolean)) {
        const e = /^--entry=(\d+)$/.exec(arg);
        if (e) grub["entry"] = Number(e[1]);
        else h.warn(v, `bootloader argument '${arg}' is ignored`);
      }
    }
    h.put("boot.guestGrub", grub, "bootloader");
    if (kernel !== undefined) h.warn(kernelSetting as XlSetting, "kernel is ignored: the bootloader chooses the kernel");
    return;
  }
  if (kernel !== undefined) {
    h.put("boot.kernel", kernel, "kernel");
    const ramdisk = h.str("ramdisk");
    if (ramdisk !== undefined) h.put("boot.initrd", ramdisk, "ramdisk");
    // xl: `cmdline` wins; otherwise the command line is "root=ROOT EXTRA" (xl.cfg(5)).
    const line = cmdline ?? [root === undefined ? undefined : `root=${root}`, extra].filter((x) => x !== undefined).join(" ");
    if (cmdline !== undefined && (root !== undefined || extra !== undefined)) h.warn(s.get("cmdline") as XlSetting, "cmdline is set, so root and extra are ignored (as in xl)");
    if (line !== "") h.put("boot.cmdline", line, s.has("cmdline") ? "cmdline" : s.has("root") ? "root" : "extra");
    if (/(^|\s)console=hvc0/.test(line)) h.warn(s.get("cmdline") ?? s.get("extra") ?? (kernelSetting as XlSetting), "console=hvc0 is Xen's PV console; under QEMU the serial console is ttyS0");
    if (/\/dev\/xvd/.test(line)) h.warn(s.get("cmdline") ?? s.get("root") ?? (kernelSetting as XlSetting), "the command line names /dev/xvd* devices; virtio disks appear as /dev/vd* under QEMU");
  } else if (type === "pv" || (type === undefined && firmware === undefined && !s.has("boot") && !s.has("builder"))) {
    // xl's default type is pv, and a PV guest has no firmware: it needs a kernel or a bootloader.
    h.error(s.get("type") ?? ({ pos: { line: 1, col: 1 } } as XlValue), "a PV domain needs kernel= (or a pv-grub kernel, or bootloader=pygrub); use type=\"hvm\" to boot from the disk with firmware");
  }
  if (firmware !== undefined) {
    const st = (s.get("firmware") ?? s.get("bios")) as XlSetting;
    if (/^(uefi|ovmf)$/i.test(firmware) || /ovmf/i.test(firmware)) h.put("boot.firmware", "uefi", s.has("firmware") ? "firmware" : "bios");
    else if (/^(bios|seabios|rombios|hvmloader)$/i.test(firmware)) h.put("boot.firmware", "bios", s.has("firmware") ? "firmware" : "bios");
    else if (/^pvgrub(32|64)$/.test(firmware)) h.put("boot.guestGrub", {}, "firmware");
    else h.warn(st, `firmware '${firmware}' is not available; SeaBIOS is used`);
  }
  const boot = h.str("boot");
  if (boot !== undefined) {
    const order = [...new Set(boot.replace(/[^cdn]/g, ""))].join("");
    if (order !== boot) h.warn(s.get("boot") as XlSetting, `boot '${boot}': only c (disk), d (cdrom) and n (network) are known; using '${order || "cd"}'`);
    if (order !== "") h.put("boot.order", order, "boot");
  }
}

/** Set `a.b[0].c` style paths in a plain object. */
export function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split(".");
  let o = target;
  parts.forEach((p, i) => {
    if (i === parts.length - 1) o[p] = value;
    else {
      const next = o[p];
      if (typeof next !== "object" || next === null) o[p] = {};
      o = o[p] as Record<string, unknown>;
    }
  });
}

export type { DomainSpec };

/**
 * xl disk specs (xl-disk-configuration(5)) → a vmstack disk.
 *
 * Canonical form: comma-separated items; `key=value` items and flags anywhere, and up to four
 * positional items in order target, format, vdev, access. `target=` must come last and takes the
 * rest of the string (so a path may contain commas). Legacy form, still common in the wild:
 * `[<format>:][<target>],<vdev>[:<devtype>],<access>`, e.g. `file:/img,xvda1,w`,
 * `phy:/dev/vg/lv,xvda,w`, `raw:/root/x.iso,hdc:cdrom,ro`, or an empty cdrom `,hdc:cdrom,r`;
 * the prefixes tapdisk: tap2: aio: ioemu: file: phy: are dropped, and iscsi: nbd: enbd: drbd:
 * name a hotplug script.
 */
import { didYouMean } from "./did-you-mean.js";
import type { DiskFormat, DiskInterface } from "./spec.js";

export interface XlDisk {
  readonly target?: string;
  readonly format: string;
  readonly vdev?: string;
  readonly access: "rw" | "ro";
  readonly devtype: "disk" | "cdrom";
  readonly discard?: boolean;
  readonly directIoSafe: boolean;
  /** key=value items and flags vmstack accepts but cannot honour. */
  readonly ignored: readonly string[];
}

export interface DiskSpecResult {
  readonly disk?: XlDisk;
  readonly errors: readonly string[];
  readonly warnings: readonly string[];
}

const FORMATS = ["raw", "qcow", "qcow2", "vhd", "qed"];
const ACCESS: Readonly<Record<string, "rw" | "ro">> = { rw: "rw", w: "rw", ro: "ro", r: "ro" };
const KEYS = ["target", "format", "vdev", "access", "devtype", "backend", "backendtype", "script", "specification", "grant_usage", "colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk"];
const FLAGS = ["cdrom", "direct-io-safe", "discard", "no-discard", "trusted", "untrusted", "colo"];
const DROPPED_PREFIXES = ["tapdisk", "tap2", "tap", "aio", "ioemu", "file", "phy"];
const SCRIPT_PREFIXES = ["iscsi", "nbd", "enbd", "drbd"];

export function parseDiskSpec(spec: string): DiskSpecResult {
  const errors: string[] = [];
  const warnings: string[] = [];
  const items = splitItems(spec);
  const positional = items.filter((it) => !it.includes("=") && !FLAGS.includes(it.trim()));
  const legacy = isLegacy(positional);
  let target: string | undefined;
  let format: string | undefined;
  let vdev: string | undefined;
  let access: "rw" | "ro" | undefined;
  let devtype: "disk" | "cdrom" | undefined;
  let discard: boolean | undefined;
  let directIoSafe = false;
  const ignored: string[] = [];

  const setAccess = (v: string): void => {
    const a = ACCESS[v];
    if (a === undefined) errors.push(`access '${v}' is not one of ro, r, rw, w`);
    else access = a;
  };
  const setFormat = (v: string): void => {
    if (v === "") return;
    if (!FORMATS.includes(v)) errors.push(`format '${v}' is not one of ${FORMATS.join(", ")}${didYouMean(v, FORMATS)}`);
    else format = v;
  };

  if (legacy) {
    // [<format>:][<target>],<vdev>[:<devtype>],<access>
    const [t = "", v = "", a] = positional.map((s) => s.trim());
    let rest = t;
    for (;;) {
      const m = /^([a-z0-9]+):(.*)$/.exec(rest);
      if (!m) break;
      const prefix = m[1] as string;
      if (DROPPED_PREFIXES.includes(prefix)) rest = m[2] as string;
      else if (FORMATS.includes(prefix)) {
        format = prefix;
        rest = m[2] as string;
      } else if (SCRIPT_PREFIXES.includes(prefix)) {
        ignored.push(`${prefix}: (script=block-${prefix})`);
        rest = m[2] as string;
      } else break;
    }
    target = rest === "" ? undefined : rest;
    const [name, type] = v.split(":");
    vdev = name === "" ? undefined : name;
    if (type !== undefined) {
      if (type === "cdrom" || type === "disk") devtype = type;
      else errors.push(`device type '${type}' after '${name ?? ""}:' is not cdrom or disk`);
    }
    if (a !== undefined) setAccess(a);
    if (positional.length > 3) errors.push(`the legacy form has 3 items (target,vdev,access), got ${positional.length}`);
  }

  let pos = 0;
  for (const raw of items) {
    const it = raw.trim();
    const eq = it.indexOf("=");
    if (eq < 0) {
      if (FLAGS.includes(it)) {
        if (it === "cdrom") devtype = "cdrom";
        else if (it === "discard") discard = true;
        else if (it === "no-discard") discard = false;
        else if (it === "direct-io-safe") directIoSafe = true;
        else ignored.push(it);
        continue;
      }
      if (legacy) continue;
      switch (pos++) {
        case 0:
          target = it === "" ? undefined : it;
          break;
        case 1:
          setFormat(it);
          break;
        case 2:
          vdev = it === "" ? undefined : it;
          break;
        case 3:
          if (it !== "") setAccess(it);
          break;
        default:
          errors.push(`unexpected positional item '${it}' (only target, format, vdev, access are positional)`);
      }
      continue;
    }
    const key = it.slice(0, eq).trim();
    const value = it.slice(eq + 1).trim();
    switch (key) {
      case "target":
        target = value === "" ? undefined : value;
        break;
      case "format":
        setFormat(value);
        break;
      case "vdev":
        vdev = value;
        break;
      case "access":
        setAccess(value);
        break;
      case "devtype":
        if (value === "cdrom" || value === "disk") devtype = value;
        else errors.push(`devtype '${value}' is not cdrom or disk`);
        break;
      case "specification":
        if (value !== "xen" && value !== "virtio") errors.push(`specification '${value}' is not xen or virtio`);
        break;
      default:
        if (KEYS.includes(key)) ignored.push(`${key}=${value}`);
        else errors.push(`unknown disk parameter '${key}'${didYouMean(key, KEYS)}`);
    }
  }

  if (vdev === undefined) errors.push("the disk has no vdev (e.g. xvda, hda, sdb): it is mandatory");
  else if (!/^(xvd|hd|sd|vd)[a-z]+[0-9]*$/.test(vdev)) errors.push(`vdev '${vdev}' is not a virtual device name like xvda, hdc or sdb`);
  const type = devtype ?? "disk";
  if (target === undefined && type !== "cdrom") errors.push("the disk has no target (image path or device); only a cdrom may be empty");
  if (target !== undefined && !target.startsWith("/")) target = "/dev/" + target;
  if (ignored.length > 0) warnings.push(`disk parameters ignored (QEMU attaches the image itself, with no Xen backend): ${ignored.join(", ")}`);
  if (errors.length > 0) return { errors, warnings };
  return {
    disk: {
      ...(target === undefined ? {} : { target }),
      format: format ?? "raw",
      ...(vdev === undefined ? {} : { vdev }),
      access: access ?? (type === "cdrom" ? "ro" : "rw"),
      devtype: type,
      ...(discard === undefined ? {} : { discard }),
      directIoSafe,
      ignored,
    },
    errors,
    warnings,
  };
}

/** Split on commas, except that `target=` takes the rest of the string (xl-disk-configuration(5)). */
function splitItems(spec: string): string[] {
  const out: string[] = [];
  let rest = spec;
  for (;;) {
    if (/^\s*target\s*=/.test(rest)) {
      out.push(rest);
      return out;
    }
    const comma = rest.indexOf(",");
    if (comma < 0) {
      out.push(rest);
      return out;
    }
    out.push(rest.slice(0, comma));
    rest = rest.slice(comma + 1);
  }
}

/**
 * The legacy form is recognised by its shape: a `prefix:` on the target, a `:cdrom`/`:disk`
 * suffix on the vdev, or a second positional item that is a vdev rather than a format.
 */
function isLegacy(positional: readonly string[]): boolean {
  const [first = "", second] = positional.map((s) => s.trim());
  const prefix = /^([a-z0-9]+):/.exec(first)?.[1];
  if (prefix !== undefined && [...DROPPED_PREFIXES, ...FORMATS, ...SCRIPT_PREFIXES].includes(prefix)) return true;
  if (second !== undefined && /:(cdrom|disk)$/.test(second)) return true;
  return positional.length === 3 && second !== undefined && /^(xvd|hd|sd|vd)[a-z]/.test(second);
}

/** Which bus a Xen vdev name implies: xvd* are paravirtual (virtio here), hd* IDE, sd* SCSI. */
export function interfaceForVdev(vdev: string | undefined, devtype: "disk" | "cdrom"): DiskInterface {
  if (vdev?.startsWith("sd")) return "scsi";
  if (vdev?.startsWith("hd")) return "ide";
  return devtype === "cdrom" ? "ide" : "virtio";
}

export function diskFormat(xl: string): DiskFormat {
  return (FORMATS.includes(xl) ? xl : "raw") as DiskFormat;
}

/** An xl disk as a vmstack disk spec (the `disks[]` entry of a DomainSpec). */
export function xlDiskToSpec(d: XlDisk): Record<string, unknown> {
  return {
    ...(d.target === undefined ? {} : { path: d.target }),
    format: diskFormat(d.format),
    interface: interfaceForVdev(d.vdev, d.devtype),
    media: d.devtype,
    readOnly: d.access === "ro",
    ...(d.discard ? { discard: true } : {}),
    ...(d.directIoSafe ? { cache: "none" } : {}),
    ...(d.vdev === undefined ? {} : { vdev: d.vdev }),
  };
}

/** Render a vmstack disk back as a canonical xl disk spec. */
export function formatDiskSpec(d: { path?: string; format: string; vdev: string; readOnly: boolean; media: "disk" | "cdrom"; discard: boolean }): string {
  const parts = [`format=${d.format}`, `vdev=${d.vdev}`, `access=${d.readOnly ? "ro" : "rw"}`];
  if (d.media === "cdrom") parts.push("devtype=cdrom");
  if (d.discard) parts.push("discard");
  parts.push(`target=${d.path ?? ""}`);
  return parts.join(", ");
}

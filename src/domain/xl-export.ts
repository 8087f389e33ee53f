/**
 * A DomainConfig → xl.cfg text, for `vmstack config convert --to xl`. Lossless for what xl.cfg
 * can say (importing the output gives the same config back); every option xl.cfg has no words
 * for is listed in the returned warnings, never dropped silently.
 */
import { formatDiskSpec } from "./disk-spec.js";
import type { DomainConfig } from "./spec.js";
import { formatVifSpec } from "./vif-spec.js";
import { XEN_PATH_CONSTANTS, quoteXl } from "./xl-config.js";

export interface ExportedXl {
  readonly text: string;
  readonly warnings: readonly string[];
}

const VDEV_PREFIX = { virtio: "xvd", ide: "hd", scsi: "sd" } as const;

export function exportXlConfig(c: DomainConfig, header?: string): ExportedXl {
  const lines: string[] = [];
  const warnings: string[] = [];
  const set = (key: string, value: string | number): void => void lines.push(`${key} = ${typeof value === "number" ? value : quoteXl(value)}`);
  const setList = (key: string, items: readonly string[]): void => {
    if (items.length === 0) lines.push(`${key} = [ ]`);
    else lines.push(`${key} = [`, ...items.map((i) => `    ${quoteXl(i)},`), "]");
  };
  const drop = (what: string): void => void warnings.push(`${what} has no xl.cfg equivalent and is left out`);

  if (header !== undefined) lines.push(...header.split("\n").map((l) => `# ${l}`), "");
  set("name", c.name);
  if (c.uuid !== undefined) set("uuid", c.uuid);
  const b = c.boot;
  if (b.guestGrub !== undefined) {
    set("type", "pv");
    const g = b.guestGrub;
    if (g.menu !== undefined) {
      set("kernel", `${XEN_PATH_CONSTANTS["XENFIRMWAREDIR"] ?? ""}/pv-grub-x86_64.gz`);
      set("extra", `(hd${g.disk}${g.partition === undefined ? "" : `,${g.partition}`})${g.menu}`);
      if (g.entry !== undefined) drop("boot.guestGrub.entry together with a menu path");
    } else {
      set("bootloader", "pygrub");
      if (g.entry !== undefined) setList("bootloader_args", [`--entry=${g.entry}`]);
      if (g.disk !== 0 || g.partition !== undefined) drop("boot.guestGrub.disk/partition without a menu path");
    }
  } else if (b.kernel !== undefined) {
    set("type", "pvh");
    set("kernel", b.kernel);
    if (b.initrd !== undefined) set("ramdisk", b.initrd);
    if (b.cmdline !== undefined) set("cmdline", b.cmdline);
  } else {
    set("type", "hvm");
    if (b.firmware === "uefi") set("firmware", "uefi");
    set("boot", b.order);
  }
  if (b.firmware === "uefi" && (b.kernel !== undefined || b.guestGrub !== undefined)) drop("boot.firmware=uefi with a direct kernel");
  if (b.uefiVars !== undefined) drop("boot.uefiVars");
  set("memory", c.memory);
  if (c.maxmem !== c.memory) set("maxmem", c.maxmem);
  set("vcpus", c.vcpus);
  if (c.maxvcpus !== c.vcpus) set("maxvcpus", c.maxvcpus);
  if (c.localtime) set("localtime", 1);

  const counters = { xvd: 0, hd: 0, sd: 0 };
  const disks = c.disks.map((d, i) => {
    let vdev = d.vdev;
    if (vdev === undefined) {
      const prefix = VDEV_PREFIX[d.interface];
      vdev = prefix + String.fromCharCode(97 + counters[prefix]++);
    }
    if (d.scratch) drop(`disks[${i}].scratch`);
    if (d.size !== undefined) drop(`disks[${i}].size`);
    if (d.backing !== undefined) drop(`disks[${i}].backing`);
    if (d.serial !== undefined) drop(`disks[${i}].serial`);
    if (d.cache !== "writeback" && d.cache !== "none") drop(`disks[${i}].cache=${d.cache}`);
    const spec = formatDiskSpec({ ...(d.path === undefined ? {} : { path: d.path }), format: d.format, vdev, readOnly: d.readOnly, media: d.media, discard: d.discard });
    return d.cache === "none" ? `direct-io-safe, ${spec}` : spec;
  });
  if (disks.length > 0) setList("disk", disks);

  const vifs: string[] = [];
  c.nics.forEach((n, i) => {
    if (n.type === "stream") return drop(`nics[${i}] (a stream link)`);
    if (n.type === "user") {
      if (n.forwards.length > 0) drop(`nics[${i}].forwards`);
      if (n.restrict) drop(`nics[${i}].restrict`);
      vifs.push(formatVifSpec({ mac: n.mac, model: n.model }));
    } else vifs.push(formatVifSpec({ mac: n.mac, model: n.model, bridge: n.network }));
  });
  if (vifs.length > 0) setList("vif", vifs);
  if (c.shares.length > 0) {
    setList("p9", c.shares.map((s) => `tag=${s.tag},security_model=none,path=${s.source}`));
    c.shares.forEach((s, i) => {
      if (s.target !== undefined) drop(`shares[${i}].target`);
      if (s.readOnly) drop(`shares[${i}].readOnly`);
    });
  }
  setList("serial", [c.serial === "socket" ? "pty" : c.serial === "file" ? "file:console.log" : "none"]);
  if (c.graphics) set("vnc", 1);
  set("on_poweroff", c.onPoweroff);
  set("on_reboot", c.onReboot);
  set("on_crash", c.onCrash);
  if (c.extraArgs.length > 0) setList("device_model_args", c.extraArgs);
  if (c.machine !== "q35") drop(`machine=${c.machine}`);
  if (c.accel !== "auto") drop(`accel=${c.accel}`);
  if (!c.rng) drop("rng=false");
  if (!c.agent) drop("agent=false");
  return { text: lines.join("\n") + "\n", warnings };
}

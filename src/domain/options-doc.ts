/**
 * docs/options.md, rendered from the option table in spec.ts (the only place options are
 * described). `npm run docs:options` writes it; a unit test fails when the file is stale.
 */
import { type Field, type Schema, describeType } from "./schema.js";
import { parseDomainSpec } from "./parse-spec.js";
import { type DomainSpec, domainSchema } from "./spec.js";

/** The example in the doc; rendering parses it, so the doc cannot show an invalid config. */
export const EXAMPLE_SPEC: DomainSpec = {
  name: "web",
  memory: 512,
  vcpus: 2,
  boot: { kernel: "/var/lib/vmstack/kernels/vmlinux", initrd: "/var/lib/vmstack/kernels/initrd.gz", cmdline: "console=ttyS0 root=/dev/vda rw" },
  disks: [{ path: "/var/lib/vmstack/web/root.qcow2", backing: "/var/lib/vmstack/images/debian-12.qcow2", size: 8192 }],
  shares: [{ tag: "src", source: "/home/me/src", target: "/mnt/src" }],
  nics: [{ type: "user", forwards: [{ hostAddress: "127.0.0.1", hostPort: 8080, guestPort: 80 }] }],
};

interface Row {
  readonly path: string;
  readonly field: Field;
}

function rows(schema: Schema, prefix: string, out: Row[]): void {
  if (schema.kind === "object") {
    for (const [key, field] of Object.entries(schema.fields)) {
      const path = prefix === "" ? key : `${prefix}.${key}`;
      out.push({ path, field });
      rows(field.schema, path, out);
    }
  } else if (schema.kind === "list") rows(schema.item, `${prefix}[]`, out);
  else if (schema.kind === "union") {
    for (const [tag, variant] of Object.entries(schema.variants)) rows(variant, `${prefix}{${schema.tag}=${tag}}`, out);
  }
}

function defaultText(f: Field): string {
  switch (f.presence) {
    case "required":
      return "**required**";
    case "optional":
      return "absent";
    case "derived":
      return f.derivedFrom ?? "derived";
    case "default":
      return f.schema.kind === "object" ? "see below" : "`" + JSON.stringify(f.default) + "`";
  }
}

const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

export function renderOptionsDoc(): string {
  const all: Row[] = [];
  rows(domainSchema, "", all);
  return [
    "# Domain options",
    "",
    "<!-- Generated from src/domain/spec.ts by `npm run docs:options`; do not edit by hand. -->",
    "",
    "A domain is a JSON object (or an xl.cfg / xm file, converted on reading; see `vmstack config convert`).",
    "Unknown options are errors. `nics[]{type=user}` means: an entry of `nics` whose `type` is `user`.",
    "",
    "Example (`vmstack create --dry-run web.json` shows the QEMU command line it becomes):",
    "",
    "```json",
    JSON.stringify(parseDomainSpec(EXAMPLE_SPEC) && EXAMPLE_SPEC, null, 2),
    "```",
    "",
    "| option | type | default | description |",
    "| --- | --- | --- | --- |",
    ...all.map((r) => `| \`${r.path}\` | ${cell(describeType(r.field.schema))} | ${cell(defaultText(r.field))} | ${cell(r.field.description)} |`),
    "",
    ...XL_SECTION,
    "",
  ].join("\n");
}

/** How xl.cfg(5) settings map onto the options above (src/domain/xl-import.ts does it). */
const XL_MAPPING: readonly (readonly [string, string])[] = [
  ["name, uuid, memory, maxmem, vcpus, maxvcpus, localtime", "the options of the same name (`name` defaults to the file name, with a warning)"],
  ["kernel, ramdisk, cmdline", "`boot.kernel`, `boot.initrd`, `boot.cmdline`; without cmdline, `root=ROOT EXTRA` as xl builds it"],
  ["kernel = a pv-grub image, extra = \"(hd0,0)/boot/grub/menu.lst\"", "`boot.guestGrub` with `menu`, `disk`, `partition`"],
  ["bootloader = \"pygrub\", bootloader_args = [\"--entry=N\"]", "`boot.guestGrub` with `entry`"],
  ["firmware / bios = uefi, ovmf, seabios, bios; boot = \"cd\"", "`boot.firmware`, `boot.order`"],
  ["disk = [ DISKSPEC … ]", "`disks`: canonical, positional and legacy (`file:`, `phy:`, `raw:…,hdc:cdrom,ro`) forms; xvd* → virtio, hd* → ide, sd* → scsi"],
  ["vif = [ VIFSPEC … ]", "`nics`: no bridge or xenbr0 → user-mode NAT; another bridge name → a private network of that name; mac, model kept"],
  ["p9 = [ \"tag=T,path=DIR,…\" ]", "`shares` (served over virtiofs)"],
  ["serial, vnc, sdl, vfb, nographic", "`serial` (pty → socket, file: → file, none), `graphics`"],
  ["on_poweroff, on_reboot, on_crash", "the on* options (all of xl's actions; coredump-* on on_crash only); soft-reset acts as restart, with a warning"],
  ["device_model_args (and _hvm/_pv)", "`extraArgs`"],
];

const XL_SECTION: readonly string[] = [
  "## xl.cfg and xm files",
  "",
  "`vmstack create` and `vmstack config` read xl.cfg(5) files and the Python subset of old xm files",
  "(`from xen.util.path import *`, string concatenation, lists, `#` comments). Settings map as below.",
  "Other xl settings (cpus, pci, viridian, …) are accepted with a warning naming them; an unknown",
  "setting close to a known one is an error with a did-you-mean.",
  "",
  "| xl.cfg | vmstack |",
  "| --- | --- |",
  ...XL_MAPPING.map(([a, b]) => `| ${cell(a)} | ${cell(b)} |`),
];

/**
 * `vmstack image create|overlay|debian`: disk images without root or loop mounts, cached by
 * content. Parses argv and calls the image layer (house rule 3).
 */
import { resolve } from "node:path";
import type { Command, CommandContext } from "../command.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { openCache } from "../../image/index.js";
import { cachedDisk } from "../../image/disk-build.js";
import { copyImage, createOverlay, DISK_FORMATS, FS_TYPES, parseSize, type DiskFormat, type FsType } from "../../image/disk.js";
import { debianRootfs } from "../../image/rootfs.js";
import { installDebianInto } from "../../image/install-into.js";
import { guestArtifacts } from "../../guest/index.js";
import { VmstackError } from "../../lib/errors.js";

const options = {
  format: { type: "string", arg: "raw|qcow2", help: "image format (create: raw; debian: qcow2)" },
  size: { type: "string", arg: "SIZE", help: "virtual size, e.g. 2G (debian: default fits the tree + 256M)" },
  fs: { type: "string", arg: "ext2|ext3|ext4|none", default: "ext4", help: "file system (create, debian)" },
  label: { type: "string", short: "L", arg: "LABEL", help: "file system label (at most 16 bytes)" },
  from: { type: "string", arg: "DIR", help: "populate the file system from this host directory (create)" },
  release: { type: "string", arg: "NAME", default: "bookworm", help: "Debian release (debian)" },
  packages: { type: "string", short: "p", arg: "A,B,…", multiple: true, help: "Debian packages to include (debian; repeatable or comma-separated)" },
  into: { type: "string", arg: "IMAGE", help: "install Debian into this empty ext2/3/4 image, keeping its type, size, label and UUID (debian)" },
  "grub-menu": { type: "boolean", help: "make the image bootable from its own GRUB menu: fstab and /boot/grub/{menu.lst,grub.cfg} naming the installed kernel (debian)" },
  bootloader: { type: "string", arg: "grub-pc", help: "a partitioned disk with GRUB in its boot sector, for firmware (SeaBIOS) boot; implies --grub-menu (debian)" },
  hostname: { type: "string", arg: "NAME", help: "the guest's /etc/hostname (debian)" },
  output: { type: "string", short: "o", arg: "PATH", help: "copy the image here (default: print the path of the cached image)" },
  json: { type: "boolean", help: "print the result as JSON" },
} as const;

export const imageCommand: Command = {
  name: "image",
  summary: "make disk images (raw/qcow2, ext2/3/4 from a directory, overlays, Debian root file systems)",
  usage: "create [--format raw|qcow2] --size SIZE [--fs ext4] [-L LABEL] [--from DIR] [-o PATH]\n" +
    "       vmstack image overlay BASE OUTPUT\n" +
    "       vmstack image debian [--release bookworm] [-p gcc,make] [--format qcow2] [--fs ext4] [-L LABEL] [--grub-menu] [--bootloader grub-pc] [-o PATH]\n" +
    "       vmstack image debian --into IMAGE [-p PKGS] [--grub-menu] [--hostname NAME]",
  options,
  details: [
    "No root and no loop mounts for create/overlay: mkfs -d writes the file system straight into the file.",
    "Images are cached by content (the spec plus a hash of --from's tree): the same request builds once.",
    "debian runs mmdebstrap (or debootstrap) as root through apt's configured sources and installs",
    "vmstack's agent at /usr/local/sbin/vmstack-agent; use the result with `vmstack run --image`.",
    "The bootstrap result is cached on its own (release + packages), so other labels, sizes or menus",
    "reuse it. --grub-menu with a kernel and an init (-p linux-image-cloud-amd64,systemd-sysv) makes an",
    "image that boots from its own menu (pv-grub/pygrub domains), with the agent started at boot.",
    "",
    "Examples:",
    "  vmstack image create --size 64M -L data --from ./site -o site.img",
    "  vmstack image create --format qcow2 --size 4G --fs none -o blank.qcow2",
    "  vmstack image overlay base.qcow2 throwaway.qcow2",
    "  vmstack image debian -p gcc,make,libc6-dev",
    "  vmstack image create --size 4G --fs ext3 -L nixos -o mrkitty-root.img",
    "  vmstack image debian --into mrkitty-root.img -p linux-image-cloud-amd64,systemd-sysv,dbus --grub-menu",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("image", argv, options);
    const [verb, ...rest] = p.positionals;
    const print = (result: Record<string, unknown>, text: string): number => {
      ctx.stdout.write(boolOpt(p, "json") ? JSON.stringify(result) + "\n" : text + "\n");
      return 0;
    };
    const format = (dflt: DiskFormat): DiskFormat => {
      const f = stringOpt(p, "format") ?? dflt;
      if (!(DISK_FORMATS as readonly string[]).includes(f)) throw usageError("image", `--format expects raw or qcow2, got '${f}'`);
      return f as DiskFormat;
    };
    const store = openCache(process.env);
    switch (verb) {
      case "create": {
        if (rest.length > 0) throw usageError("image", `unexpected argument '${rest[0]}'`);
        const sizeText = stringOpt(p, "size");
        if (sizeText === undefined) throw usageError("image", "create needs --size");
        const fsName = stringOpt(p, "fs") ?? "ext4";
        if (fsName !== "none" && !(FS_TYPES as readonly string[]).includes(fsName)) throw usageError("image", `--fs expects ext2, ext3, ext4 or none, got '${fsName}'`);
        const from = stringOpt(p, "from");
        const label = stringOpt(p, "label");
        if (fsName === "none" && (from !== undefined || label !== undefined)) throw usageError("image", "--from and --label need a file system (--fs)");
        const spec = {
          format: format("raw"),
          sizeBytes: parseSize(sizeText),
          ...(fsName === "none"
            ? {}
            : { fs: { type: fsName as FsType, ...(label !== undefined ? { label } : {}), ...(from !== undefined ? { from: resolve(from) } : {}) } }),
        };
        const r = await cachedDisk(store, spec);
        return finish(ctx, p, r, print);
      }
      case "overlay": {
        const [base, out, ...more] = rest;
        if (!base || !out || more.length > 0) throw usageError("image", "overlay needs BASE and OUTPUT");
        const baseFormat = base.endsWith(".qcow2") ? "qcow2" : format("raw");
        await createOverlay(resolve(base), baseFormat, resolve(out));
        return print({ path: resolve(out), base: resolve(base), baseFormat }, resolve(out));
      }
      case "debian": {
        if (rest.length > 0) throw usageError("image", `unexpected argument '${rest[0]}'`);
        const packages = ((p.values["packages"] as string[] | undefined) ?? []).flatMap((s) => s.split(",")).filter((s) => s !== "");
        const sizeText = stringOpt(p, "size");
        const hostname = stringOpt(p, "hostname");
        if (hostname !== undefined && !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(hostname)) throw usageError("image", `--hostname expects a host name (RFC 1123 label), got '${hostname}'`);
        const common = {
          release: stringOpt(p, "release") ?? "bookworm",
          packages,
          ...(boolOpt(p, "grub-menu") ? { grubMenu: true } : {}),
          ...(hostname !== undefined ? { hostname } : {}),
        };
        const progress = { agentPath: guestArtifacts().agent, signal: ctx.signal, onProgress: (line: string) => ctx.stderr.write(`vmstack image: ${line}\n`) };
        const into = stringOpt(p, "into");
        if (into !== undefined) {
          for (const o of ["size", "format", "label", "output", "bootloader"] as const) {
            if (stringOpt(p, o) !== undefined) throw usageError("image", `--${o} does not go with --into: the target file system decides (it is written in place)`);
          }
          const r = await installDebianInto(store, resolve(into), common, progress);
          return print({ ...r }, r.target);
        }
        const fsName = stringOpt(p, "fs") ?? "ext4";
        if (!(FS_TYPES as readonly string[]).includes(fsName)) throw usageError("image", `--fs expects ext2, ext3 or ext4 for debian, got '${fsName}'`);
        const bootloader = stringOpt(p, "bootloader");
        if (bootloader !== undefined && bootloader !== "grub-pc") throw usageError("image", `--bootloader expects grub-pc, got '${bootloader}'`);
        const r = await debianRootfs(
          store,
          {
            ...common,
            ...(bootloader !== undefined ? { bootloader } : {}),
            format: format("qcow2"),
            fs: fsName as FsType,
            ...(sizeText !== undefined ? { sizeBytes: parseSize(sizeText) } : {}),
            ...(stringOpt(p, "label") !== undefined ? { label: stringOpt(p, "label")! } : {}),
          },
          progress,
        );
        return finish(ctx, p, r, print);
      }
      case undefined:
        throw usageError("image", "which one: create, overlay or debian?");
      default:
        throw usageError("image", `unknown subcommand '${verb}' (create, overlay, debian)`);
    }
  },
};

async function finish(
  ctx: CommandContext,
  p: ReturnType<typeof parseCommandArgs>,
  r: { path: string; key: string; cached: boolean },
  print: (result: Record<string, unknown>, text: string) => number,
): Promise<number> {
  const output = stringOpt(p, "output");
  if (ctx.verbose) ctx.stderr.write(`vmstack: [image] ${r.cached ? "cache hit" : "built"}: ${r.path}\n`);
  if (output === undefined) return print({ ...r }, r.path);
  if (ctx.signal.aborted) throw new VmstackError("ABORTED", "interrupted");
  await copyImage(r.path, resolve(output));
  return print({ ...r, output: resolve(output) }, resolve(output));
}

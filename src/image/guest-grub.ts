/**
 * Booting a guest through its own GRUB menu, as pv-grub and pygrub do: find the menu on the guest's
 * disk, choose the entry, copy its kernel and initrd out, and hand back the command line. No root
 * and no loop mounts: partitions are located from the partition table, files are read with e2fsprogs'
 * debugfs (`IMAGE?offset=N` opens a filesystem inside a disk image), and a qcow2 disk is first
 * converted to a temporary raw file.
 */
import { mkdtemp, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { runChild } from "../lib/run-child.js";
import { VmstackError } from "../lib/errors.js";
import { chooseGrubEntry, parseGrubCfg, parseMenuLst, type GrubEntry, type GrubMenu } from "./grub-menu.js";
import { hasExtSuperblock, readPartitionTable } from "./partition-table.js";

/** Where GRUB 2 and GRUB legacy keep their menus (relative to the filesystem holding /boot). */
export const MENU_CANDIDATES = ["/boot/grub/grub.cfg", "/grub/grub.cfg", "/boot/grub2/grub.cfg", "/grub2/grub.cfg", "/boot/grub/menu.lst", "/grub/menu.lst"] as const;

export interface GuestGrubOptions {
  readonly disk: string;
  readonly format: "raw" | "qcow2";
  /** Menu path inside the filesystem; MENU_CANDIDATES in order when absent. */
  readonly menu?: string | undefined;
  /** 0-based partition; when absent: the whole disk if it is a filesystem, else the first partition. */
  readonly partition?: number | undefined;
  /** Entry number; the menu's default when absent. */
  readonly entry?: number | undefined;
  /** Directory that receives `kernel` and `initrd`. */
  readonly outDir: string;
  readonly signal?: AbortSignal | undefined;
}

export interface GuestGrubBoot {
  readonly kernel: string;
  readonly initrd?: string;
  readonly cmdline: string;
  readonly entry: GrubEntry;
  readonly menuPath: string;
  readonly menuFormat: GrubMenu["format"];
  /** Which filesystem was read: "whole disk" or "partition N". */
  readonly filesystem: string;
  readonly note?: string;
}

export async function resolveGuestGrub(o: GuestGrubOptions): Promise<GuestGrubBoot> {
  const temp = await mkdtemp(join(o.outDir, ".grub-"));
  try {
    let raw = o.disk;
    if (o.format === "qcow2") {
      raw = join(temp, "disk.raw");
      await runChild(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", o.disk, raw], { signal: o.signal });
    }
    const { device, filesystem } = await locateFilesystem(raw, o.partition);
    const { text, path: menuPath } = await readMenu(device, o.menu, o.signal);
    const menu = menuPath.endsWith(".lst") ? parseMenuLst(text, menuPath) : parseGrubCfg(text, menuPath);
    const chosen = chooseGrubEntry(menu, o.entry);
    const kernel = join(o.outDir, "kernel");
    await dump(device, chosen.entry.kernel, kernel, o.signal);
    let initrd: string | undefined;
    const firstInitrd = chosen.entry.initrds[0];
    if (firstInitrd !== undefined) {
      initrd = join(o.outDir, "initrd");
      await dump(device, firstInitrd, initrd, o.signal);
    }
    return {
      kernel,
      ...(initrd ? { initrd } : {}),
      cmdline: chosen.entry.args,
      entry: chosen.entry,
      menuPath,
      menuFormat: menu.format,
      filesystem,
      ...(chosen.note ? { note: chosen.note } : {}),
    };
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
}

async function locateFilesystem(raw: string, partition: number | undefined): Promise<{ device: string; filesystem: string }> {
  const head = Buffer.alloc(64 * 1024);
  const fh = await open(raw, "r");
  try {
    await fh.read(head, 0, head.length, 0);
  } finally {
    await fh.close();
  }
  if (partition === undefined && hasExtSuperblock(head)) return { device: raw, filesystem: "whole disk" };
  const table = readPartitionTable(head);
  const wanted = partition ?? table.partitions[0]?.index;
  const p = table.partitions.find((x) => x.index === wanted);
  if (!p) {
    throw new VmstackError(
      "GUEST_FILESYSTEM_MISSING",
      partition === undefined
        ? `${raw} holds neither an ext2/3/4 filesystem nor a partition table`
        : `${raw} has no partition ${partition} (${table.scheme}: ${table.partitions.map((x) => x.index).join(", ") || "none"})`,
      { facts: { disk: raw, partition } },
    );
  }
  return { device: `${raw}?offset=${p.offsetBytes}`, filesystem: `partition ${p.index}` };
}

/** debugfs prints "File not found" on stderr and still exits 0: read stderr to know. */
async function debugfs(device: string, request: string, signal: AbortSignal | undefined): Promise<{ stdout: Buffer; stderr: string }> {
  const r = await runChild(["debugfs", "-R", request, device], { signal });
  if (/Bad magic number|Filesystem not open|Couldn't find valid filesystem superblock/.test(r.stderr)) {
    throw new VmstackError("GUEST_FILESYSTEM_UNSUPPORTED", `${device} is not an ext2/3/4 filesystem (pv-grub-style boot reads only those)`, {
      facts: { device, stderr: r.stderr.trim() },
    });
  }
  return r;
}

async function readMenu(device: string, menu: string | undefined, signal: AbortSignal | undefined): Promise<{ text: string; path: string }> {
  for (const path of menu ? [menu] : MENU_CANDIDATES) {
    const r = await debugfs(device, `cat ${path}`, signal);
    if (!/File not found|not found by ext2_lookup/.test(r.stderr)) return { text: r.stdout.toString("utf8"), path };
  }
  throw new VmstackError("GRUB_MENU_MISSING", `no GRUB menu on ${device} (looked for ${menu ?? MENU_CANDIDATES.join(", ")})`, { facts: { device } });
}

async function dump(device: string, path: string, out: string, signal: AbortSignal | undefined): Promise<void> {
  // GRUB 2 paths may carry a device prefix: "(hd0,msdos1)/boot/vmlinuz".
  const inFs = path.replace(/^\([^)]*\)/, "");
  const r = await debugfs(device, `dump ${inFs} ${out}`, signal);
  if (/File not found|not found by ext2_lookup/.test(r.stderr)) {
    throw new VmstackError("GRUB_FILE_MISSING", `the GRUB entry names ${path}, which is not on ${device}`, { facts: { device, path } });
  }
}

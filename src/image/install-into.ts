/**
 * "Install Debian into this file system image", as the NixOS wiki's walkthrough does after
 * `mkfs.ext3 -L nixos`, without root mounts or loop devices. e2fsprogs can fill a file system only
 * while making it (`mkfs -d`), so the empty file system is made again, from the Debian tree, with
 * the same type, size, label and UUID: to anything that names it (fstab, `root=LABEL=`, a menu) it
 * is the same file system, now holding Debian. A file system that holds anything but lost+found is
 * refused rather than overwritten.
 */
import { copyImage } from "./disk.js";
import { debianRootfs, type DebianRootfsSpec } from "./rootfs.js";
import type { BuildResult, ContentStore } from "./cache.js";
import type { FsType } from "./disk.js";
import type { ProgressOptions } from "./debian-tree.js";
import { runChild } from "../lib/run-child.js";
import { VmstackError, messageOf } from "../lib/errors.js";
import { open } from "node:fs/promises";

export interface ExtImageInfo {
  readonly type: FsType;
  readonly label?: string;
  readonly uuid: string;
  readonly sizeBytes: number;
}

/** `dumpe2fs -h` output → what the file system is. PURE. */
export function parseDumpe2fs(text: string, image: string): ExtImageInfo {
  const field = (name: string): string | undefined => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(text)?.[1]?.trim();
  const features = (field("Filesystem features") ?? "").split(/\s+/);
  const uuid = field("Filesystem UUID");
  const blocks = Number(field("Block count"));
  const blockSize = Number(field("Block size"));
  if (uuid === undefined || !Number.isSafeInteger(blocks) || !Number.isSafeInteger(blockSize) || blocks <= 0 || blockSize <= 0) {
    throw new VmstackError("IMAGE_NOT_EXT", `${image} does not hold an ext2/3/4 file system on the whole disk (make one with vmstack image create --fs ext3)`, { facts: { image } });
  }
  const label = field("Filesystem volume name");
  // ext4 = extents (or 64bit/flex_bg); ext3 = a journal without them; ext2 = neither.
  const type: FsType = features.includes("extent") || features.includes("64bit") ? "ext4" : features.includes("has_journal") ? "ext3" : "ext2";
  return { type, uuid, sizeBytes: blocks * blockSize, ...(label && label !== "<none>" ? { label } : {}) };
}

/** Names in the root directory from `debugfs -R "ls -p /"` lines (`/ino/mode/uid/gid/name/size/`). PURE. */
export function rootEntries(lsOutput: string): string[] {
  return lsOutput
    .split("\n")
    .map((l) => l.split("/")[5])
    .filter((n): n is string => n !== undefined && n !== "" && n !== "." && n !== "..");
}

/** "QFI\xfb": the first bytes of every qcow2 file (QEMU's docs/interop/qcow2.txt). */
const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

async function readHead(image: string, bytes: number): Promise<Buffer> {
  let fh;
  try {
    fh = await open(image, "r");
  } catch (e) {
    throw new VmstackError("IMAGE_NOT_FOUND", `cannot open ${image}: ${messageOf(e)}`, { cause: e, facts: { image } });
  }
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export async function inspectExtImage(image: string, signal?: AbortSignal): Promise<ExtImageInfo & { entries: string[] }> {
  if ((await readHead(image, 4)).equals(QCOW2_MAGIC)) {
    throw new VmstackError("IMAGE_NOT_RAW", `${image} is a qcow2 image; --into writes raw images (qemu-img convert -O raw ${image} disk.img first)`, { facts: { image } });
  }
  // dumpe2fs exits non-zero on anything that is not an ext file system: that is the answer, not a failure.
  const head = await runChild(["dumpe2fs", "-h", image], { signal, okExitCodes: [0, 1, 2, 8, 16, 19, 32] });
  const info = parseDumpe2fs(head.stdout.toString("utf8"), image);
  const ls = await runChild(["debugfs", "-R", "ls -p /", image], { signal });
  return { ...info, entries: rootEntries(ls.stdout.toString("utf8")) };
}

/**
 * Installs Debian (the cached image for `spec` made to match the target's file system) into the
 * empty ext file system image `target` (raw, no partition table).
 */
export async function installDebianInto(
  store: ContentStore,
  target: string,
  spec: Omit<DebianRootfsSpec, "format" | "sizeBytes" | "fs" | "uuid" | "label" | "extraBytes">,
  options: ProgressOptions & { agentPath: string },
): Promise<BuildResult & { tool: string; target: string; fs: ExtImageInfo }> {
  const info = await inspectExtImage(target, options.signal);
  const other = info.entries.filter((n) => n !== "lost+found");
  if (other.length > 0) {
    throw new VmstackError("IMAGE_NOT_EMPTY", `${target} already holds files (${other.slice(0, 5).join(", ")}${other.length > 5 ? ", …" : ""}); install into an empty file system`, {
      facts: { target, entries: other },
    });
  }
  const fs: ExtImageInfo = { type: info.type, uuid: info.uuid, sizeBytes: info.sizeBytes, ...(info.label !== undefined ? { label: info.label } : {}) };
  const built = await debianRootfs(store, { ...spec, format: "raw", fs: fs.type, uuid: fs.uuid, sizeBytes: fs.sizeBytes, ...(fs.label !== undefined ? { label: fs.label } : {}) }, options);
  options.signal?.throwIfAborted();
  options.onProgress?.(`writing the file system into ${target}`);
  await copyImage(built.path, target);
  return { ...built, target, fs };
}

/**
 * Disk images without root or loop mounts (docs/qemu-notes.md §5): `mkfs.ext4 -d DIR` populates a
 * file system straight from a host directory into a regular file, `qemu-img convert` turns it into
 * qcow2, and `qemu-img create -b` makes copy-on-write overlays. Nothing here mounts anything.
 */
import { lstat, mkdir, open, readdir, rm, truncate } from "node:fs/promises";
import { dirname } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { runCommand } from "../lib/process.js";

export type DiskFormat = "raw" | "qcow2";
export type FsType = "ext2" | "ext3" | "ext4";

export const DISK_FORMATS: readonly DiskFormat[] = ["raw", "qcow2"];
export const FS_TYPES: readonly FsType[] = ["ext2", "ext3", "ext4"];

export interface FsSpec {
  readonly type: FsType;
  /** Volume label (ext: at most 16 bytes), e.g. what `root=LABEL=…` or fstab names. */
  readonly label?: string;
  /** Host directory copied into the new file system (mkfs -d). */
  readonly from?: string;
  /** UUID, for reproducible images (default: mkfs picks a random one). */
  readonly uuid?: string;
}

export interface DiskSpec {
  readonly format: DiskFormat;
  readonly sizeBytes: number;
  /** Absent: an empty (sparse) disk with no file system. */
  readonly fs?: FsSpec;
}

const UNITS: Readonly<Record<string, number>> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** "64M", "2G", "1.5G", "4096" (bytes) → bytes. Binary units, as qemu-img and mkfs use. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  const unit = UNITS[(m?.[2] ?? "").toUpperCase()];
  if (!m || unit === undefined) {
    throw new VmstackError("BAD_SIZE", `'${text}' is not a size (examples: 512M, 2G, 1048576)`, { facts: { text } });
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (bytes <= 0) throw new VmstackError("BAD_SIZE", `size '${text}' must be more than 0 bytes`, { facts: { text } });
  return bytes;
}

/** ext labels are at most 16 bytes (struct ext2_super_block s_volume_name[16]). */
export function checkLabel(label: string): void {
  if (Buffer.byteLength(label) > 16 || /[\0/]/.test(label)) {
    throw new VmstackError("BAD_LABEL", `file system label '${label}' must be at most 16 bytes, without '/' or NUL`, { facts: { label } });
  }
}

/**
 * The mkfs argv for an ext file system in a regular file. `-F` because the target is not a block
 * device; `-E root_owner=0:0` so the root directory belongs to root even when vmstack does not run
 * as root; `-q` keeps it quiet. Sizes are given in KiB (mke2fs's `-b`-independent unit suffix "k").
 */
export function mkfsArgv(fs: FsSpec, path: string, sizeBytes: number): string[] {
  if (fs.label !== undefined) checkLabel(fs.label);
  return [
    `mkfs.${fs.type}`,
    "-q",
    "-F",
    "-E",
    "root_owner=0:0",
    ...(fs.label !== undefined ? ["-L", fs.label] : []),
    ...(fs.uuid !== undefined ? ["-U", fs.uuid] : []),
    ...(fs.from !== undefined ? ["-d", fs.from] : []),
    path,
    `${Math.ceil(sizeBytes / 1024)}k`,
  ];
}

/** Creates a sparse file of the given size (no blocks allocated until written). */
async function sparseFile(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, "w");
  await fh.close();
  await truncate(path, sizeBytes);
}

/** Writes a disk image to `path` (replacing it). qcow2 with a file system goes through a raw temp. */
export async function createDisk(path: string, spec: DiskSpec): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  if (spec.fs === undefined) {
    if (spec.format === "raw") await sparseFile(path, spec.sizeBytes);
    else await runCommand(["qemu-img", "create", "-q", "-f", "qcow2", path, String(spec.sizeBytes)], "qemu-img create");
    return;
  }
  const raw = spec.format === "raw" ? path : `${path}.raw`;
  try {
    await sparseFile(raw, spec.sizeBytes);
    await runCommand(mkfsArgv(spec.fs, raw, spec.sizeBytes), `mkfs.${spec.fs.type}`);
    if (spec.format === "qcow2") await runCommand(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path], "qemu-img convert");
  } catch (e) {
    await rm(path, { force: true });
    throw e;
  } finally {
    if (raw !== path) await rm(raw, { force: true });
  }
}

/**
 * A copy-on-write overlay over `base`: reads fall through to the base, writes land in the overlay,
 * and the base is never modified (so one cached image serves many throwaway runs).
 */
export async function createOverlay(base: string, baseFormat: DiskFormat, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await runCommand(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", baseFormat, path], "qemu-img create (overlay)");
}

/** Reads a file out of an ext image without mounting it (debugfs, from e2fsprogs). */
export async function readFileFromExtImage(image: string, path: string): Promise<Buffer> {
  return runCommand(["debugfs", "-R", `cat ${path}`, image], "debugfs");
}

/** Bytes and entries under `dir` (lstat; symlinks are not followed). */
export async function treeSize(dir: string): Promise<{ bytes: number; entries: number }> {
  let bytes = 0;
  let entries = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      entries++;
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) bytes += (await lstat(p)).size;
    }
  };
  await walk(dir);
  return { bytes, entries };
}

/**
 * A size for an ext4 image that will hold `tree` (mkfs -d fails on a full disk): the data with
 * block rounding per file, inode tables and the journal, plus slack.
 */
export function imageSizeFor(tree: { bytes: number; entries: number }): number {
  const MiB = 1024 * 1024;
  const need = tree.bytes * 1.15 + tree.entries * 8192 + 16 * MiB;
  return Math.ceil(need / MiB) * MiB;
}

/** Copies an image (e.g. out of the cache) keeping holes: a sparse 4G raw disk stays small. */
export async function copyImage(source: string, dest: string): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  await runCommand(["cp", "--sparse=always", "--reflink=auto", source, dest], "cp");
}

/**
 * PVH boot for any kernel: QEMU loads an uncompressed vmlinux through its PVH entry point when the
 * ELF carries the Xen note XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen"; Xen's
 * include/public/elfnote.h, Linux CONFIG_PVH). That skips the in-guest decompressor, which under
 * TCG costs 0.37 s (LZ4) to 3.4 s (XZ) per boot (docs/qemu-notes.md §2).
 *
 * The provisioned cloud kernel already has its vmlinux. For a bzImage a user brings (`--kernel`,
 * VMSTACK_KERNEL), withPvhVmlinux() extracts the vmlinux once into the cache (keyed by the
 * bzImage's content hash) and uses it if it has the PVH note; otherwise the bzImage is booted.
 */
import { open, realpath, stat } from "node:fs/promises";
import { openCache, type ContentStore, type Env } from "./cache.js";
import type { ResolvedKernel } from "./kernel.js";
import { extractVmlinux } from "./vmlinux.js";

const PT_NOTE = 4;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

const align4 = (n: number): number => (n + 3) & ~3;

/** True when a 64-bit little-endian ELF note segment has the Xen PVH entry note. Pure. */
export function notesHavePvhEntry(notes: Uint8Array): boolean {
  const b = Buffer.from(notes.buffer, notes.byteOffset, notes.byteLength);
  let off = 0;
  while (off + 12 <= b.length) {
    const nameSize = b.readUInt32LE(off);
    const descSize = b.readUInt32LE(off + 4);
    const type = b.readUInt32LE(off + 8);
    const name = b.toString("latin1", off + 12, off + 12 + Math.max(0, nameSize - 1));
    if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
    off += 12 + align4(nameSize) + align4(descSize);
  }
  return false;
}

/** Reads the program headers of an ELF64 file and checks its PT_NOTE segments for the PVH note. */
export async function hasPvhNote(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const header = Buffer.alloc(64);
    await fh.read(header, 0, 64, 0);
    // ELF magic, ELFCLASS64 (2), ELFDATA2LSB (1): the only kind of x86-64 vmlinux there is.
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return false;
    const phoff = Number(header.readBigUInt64LE(0x20));
    const phentsize = header.readUInt16LE(0x36);
    const phnum = header.readUInt16LE(0x38);
    if (phentsize < 56 || phnum === 0 || phnum > 64) return false;
    const phdrs = Buffer.alloc(phentsize * phnum);
    await fh.read(phdrs, 0, phdrs.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const ph = phdrs.subarray(i * phentsize);
      if (ph.readUInt32LE(0) !== PT_NOTE) continue;
      const offset = Number(ph.readBigUInt64LE(8));
      const size = Number(ph.readBigUInt64LE(32));
      if (size > 1 << 20) continue;
      const notes = Buffer.alloc(size);
      await fh.read(notes, 0, size, offset);
      if (notesHavePvhEntry(notes)) return true;
    }
    return false;
  } finally {
    await fh.close();
  }
}

export interface WithPvhOptions {
  readonly env?: Env;
  readonly cache?: ContentStore;
  readonly signal?: AbortSignal | undefined;
}

/**
 * The same kernel, booted through PVH when possible: a kernel that already has a vmlinux is
 * returned as it is; for a bzImage, its vmlinux is extracted into the cache (once per bzImage
 * file) and becomes `kernelPath` if it has the PVH note.
 *
 * The cache key is the bzImage's identity (real path, device, inode, size, mtime in ns), not its
 * content hash: hashing 8–14 MB on every run would cost ~40 ms, and replacing a kernel (install,
 * copy, rebuild) always changes one of those.
 */
export async function withPvhVmlinux(kernel: ResolvedKernel, options: WithPvhOptions = {}): Promise<ResolvedKernel> {
  if (kernel.vmlinuxPath !== undefined || kernel.bzImagePath === undefined) return kernel;
  const bzImage = kernel.bzImagePath;
  const cache = options.cache ?? openCache(options.env ?? process.env);
  const st = await stat(bzImage, { bigint: true });
  const identity = { path: await realpath(bzImage), dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs) };
  const built = await cache.buildOnce(
    { kind: "vmlinux", layout: 1, bzImage: identity },
    (tmp) => extractVmlinux(bzImage, tmp, options.signal),
    { ext: ".vmlinux" },
  );
  if (!(await hasPvhNote(built.path))) return kernel;
  return { ...kernel, vmlinuxPath: built.path, kernelPath: built.path };
}

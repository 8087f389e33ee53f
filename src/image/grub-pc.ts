/**
 * GRUB 2 for BIOS (i386-pc) in a disk image's boot sector, without grub-install, root or loop
 * devices, so firmware (SeaBIOS) boots the disk as it would a PC's: an MBR with one partition at
 * 1 MiB, GRUB's boot.img in the MBR, GRUB's core.img (made by grub-mkimage) in the gap after it,
 * and the modules in /boot/grub/i386-pc of the partition's file system.
 *
 * The layout follows GRUB's own defaults (grub-core/boot/i386/pc/boot.S and diskboot.S), so no
 * block list needs patching: boot.img loads the sector at `kernel_sector` (offset 0x5c, default 1),
 * and core.img's first sector (diskboot.img) loads the rest from sector 2 on, for as many sectors
 * as grub-mkimage wrote into its block list. What grub-bios-setup would still do for a hard disk
 * is done here: keep the partition table, and replace the boot-drive check (a 2-byte jump at 0x66)
 * with NOPs, so GRUB trusts the drive number the BIOS passes in DL.
 */
import { cp, mkdir, open, readFile, readdir, stat } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { runChild } from "../lib/run-child.js";

export const GRUB_PC_DIR = "/usr/lib/grub/i386-pc";
const SECTOR = 512;
/** The partition starts at 1 MiB, as every partitioner does since 2008; core.img lives before it. */
export const PARTITION_START_SECTOR = 2048;
/** GRUB's boot.S: where the LBA of core.img's first sector is kept, and the boot-drive check. */
const KERNEL_SECTOR_OFFSET = 0x5c;
const BOOT_DRIVE_CHECK_OFFSET = 0x66;
/** The MBR's code area ends where the disk signature and partition table begin (440 = 0x1b8). */
const MBR_CODE_BYTES = 440;

/** Modules core.img carries so it can read its prefix: the BIOS disk, MBR partitions, ext2/3/4. */
export const CORE_MODULES = ["biosdisk", "part_msdos", "ext2"] as const;

/**
 * The MBR: GRUB's boot.img code, one bootable Linux partition (type 0x83) from sector 2048 of
 * `partitionSectors` sectors, the 0x55AA signature. PURE.
 */
export function grubMbr(bootImg: Uint8Array, partitionSectors: number): Buffer {
  if (bootImg.length !== SECTOR) throw new VmstackError("GRUB_PC_INVALID", `GRUB's boot.img must be ${SECTOR} bytes, not ${bootImg.length}`);
  const mbr = Buffer.alloc(SECTOR);
  Buffer.from(bootImg).copy(mbr, 0, 0, MBR_CODE_BYTES);
  if (mbr.readUInt32LE(KERNEL_SECTOR_OFFSET) !== 1) throw new VmstackError("GRUB_PC_INVALID", "GRUB's boot.img does not load core.img from sector 1 (unknown GRUB version)");
  mbr[BOOT_DRIVE_CHECK_OFFSET] = 0x90;
  mbr[BOOT_DRIVE_CHECK_OFFSET + 1] = 0x90;
  const entry = 446;
  mbr[entry] = 0x80; // bootable
  // CHS fields say "use LBA" (1023/254/63), as partitioners write for disks past 8 GB.
  mbr.set([0xfe, 0xff, 0xff], entry + 1);
  mbr[entry + 4] = 0x83;
  mbr.set([0xfe, 0xff, 0xff], entry + 5);
  mbr.writeUInt32LE(PARTITION_START_SECTOR, entry + 8);
  mbr.writeUInt32LE(partitionSectors, entry + 12);
  mbr.writeUInt16LE(0xaa55, 510);
  return mbr;
}

function requireGrubPc(): void {
  if (!existsSync(join(GRUB_PC_DIR, "boot.img"))) {
    throw new VmstackError("GRUB_PC_MISSING", `GRUB for BIOS is not installed (${GRUB_PC_DIR}/boot.img): apt-get install grub-pc-bin (or ./setup)`);
  }
}

/** Copies GRUB's i386-pc modules and lists into `<root>/boot/grub/i386-pc`, where core.img's prefix points. */
export async function installGrubModules(root: string): Promise<void> {
  requireGrubPc();
  const dest = join(root, "boot", "grub", "i386-pc");
  await mkdir(dest, { recursive: true });
  for (const name of await readdir(GRUB_PC_DIR)) {
    if (name.endsWith(".mod") || name.endsWith(".lst")) await cp(join(GRUB_PC_DIR, name), join(dest, name));
  }
}

/**
 * Writes a whole disk to `out`: MBR + core.img + (at 1 MiB) the file system image `fsImage`,
 * copied with holes kept. The file system must already hold /boot/grub/{grub.cfg,i386-pc/}.
 */
export async function writeGrubPcDisk(fsImage: string, out: string, work: string, signal?: AbortSignal): Promise<void> {
  requireGrubPc();
  const core = join(work, "core.img");
  await runChild(["grub-mkimage", "-O", "i386-pc", "-d", GRUB_PC_DIR, "-o", core, "-p", "(hd0,msdos1)/boot/grub", ...CORE_MODULES], { signal });
  const coreBytes = await readFile(core);
  if (coreBytes.length > (PARTITION_START_SECTOR - 1) * SECTOR) {
    throw new VmstackError("GRUB_PC_INVALID", `GRUB's core.img is ${coreBytes.length} bytes, more than the ${PARTITION_START_SECTOR - 1} sectors before the partition`);
  }
  const fsBytes = (await stat(fsImage)).size;
  if (fsBytes % SECTOR !== 0) throw new VmstackError("GRUB_PC_INVALID", `the file system image is not a whole number of sectors (${fsBytes} bytes)`);
  const mbr = grubMbr(await readFile(join(GRUB_PC_DIR, "boot.img")), fsBytes / SECTOR);
  const fh = await open(out, "w");
  try {
    await fh.write(mbr, 0, SECTOR, 0);
    await fh.write(coreBytes, 0, coreBytes.length, SECTOR);
    await fh.truncate(PARTITION_START_SECTOR * SECTOR + fsBytes);
  } finally {
    await fh.close();
  }
  // conv=sparse skips all-zero blocks instead of writing them, so a 4 GiB file system with 400 MB
  // of data stays a 400 MB file.
  await runChild(["dd", `if=${fsImage}`, `of=${out}`, "bs=1M", `seek=${PARTITION_START_SECTOR / 2048}`, "conv=sparse,notrunc", "status=none"], { signal });
}

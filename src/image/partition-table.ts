/**
 * Partition tables of raw disk images, enough to find where a partition's filesystem starts.
 * PURE: bytes in, byte ranges out. MBR (4 primary entries at offset 446, 0x55AA signature) and GPT
 * (header "EFI PART" at LBA 1, entry array at the LBA it names), 512-byte sectors.
 */
import { VmstackError } from "../lib/errors.js";

export interface Partition {
  /** 0-based, as GRUB legacy's (hd0,N) and xl's partition numbers minus one. */
  readonly index: number;
  readonly offsetBytes: number;
  readonly sizeBytes: number;
}

const SECTOR = 512;

/** The partitions of a disk whose first bytes are `head` (at least 34 sectors for GPT). */
export function readPartitionTable(head: Uint8Array): { scheme: "mbr" | "gpt" | "none"; partitions: Partition[] } {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (head.length < SECTOR || view.getUint16(510, true) !== 0xaa55) return { scheme: "none", partitions: [] };
  const mbr: Partition[] = [];
  let protective = false;
  for (let i = 0; i < 4; i++) {
    const at = 446 + i * 16;
    const type = head[at + 4]!;
    if (type === 0) continue;
    if (type === 0xee) protective = true;
    const start = view.getUint32(at + 8, true);
    const sectors = view.getUint32(at + 12, true);
    mbr.push({ index: i, offsetBytes: start * SECTOR, sizeBytes: sectors * SECTOR });
  }
  if (!protective) return { scheme: "mbr", partitions: mbr };
  if (head.length < 2 * SECTOR || Buffer.from(head.subarray(SECTOR, SECTOR + 8)).toString("latin1") !== "EFI PART") {
    throw new VmstackError("PARTITION_TABLE_INVALID", "the disk has a protective MBR but no GPT header at LBA 1");
  }
  const entriesLba = Number(view.getBigUint64(SECTOR + 72, true));
  const count = view.getUint32(SECTOR + 80, true);
  const size = view.getUint32(SECTOR + 84, true);
  const partitions: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const at = entriesLba * SECTOR + i * size;
    if (at + size > head.length) {
      throw new VmstackError("PARTITION_TABLE_INVALID", `GPT entry ${i} lies beyond the ${head.length} bytes read`, { facts: { at } });
    }
    const typeGuidUsed = head.subarray(at, at + 16).some((b) => b !== 0);
    if (!typeGuidUsed) continue;
    const first = Number(view.getBigUint64(at + 32, true));
    const last = Number(view.getBigUint64(at + 40, true));
    partitions.push({ index: i, offsetBytes: first * SECTOR, sizeBytes: (last - first + 1) * SECTOR });
  }
  return { scheme: "gpt", partitions };
}

/** True when `head` holds an ext2/3/4 superblock at offset 1024 (magic 0xEF53 at +56). */
export function hasExtSuperblock(head: Uint8Array): boolean {
  return head.length >= 1024 + 58 && head[1024 + 56] === 0x53 && head[1024 + 57] === 0xef;
}

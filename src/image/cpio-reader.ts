/**
 * A strict reader for cpio "newc" archives, the inverse of cpio.ts. vmstack uses it to inspect
 * initrds it built (tests, `--verbose` listings); it accepts only what the format allows and
 * reports the offset of the first thing that is wrong.
 */
import { VmstackError } from "../lib/errors.js";
import { CPIO_HEADER_SIZE, CPIO_NEWC_MAGIC, CPIO_TRAILER } from "./cpio.js";

export interface CpioRecord {
  readonly path: string;
  readonly ino: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly mtime: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly data: Buffer;
}

const align4 = (n: number): number => (n + 3) & ~3;

function bad(offset: number, what: string): VmstackError {
  return new VmstackError("CPIO_CORRUPT", `cpio: ${what} at offset ${offset}`, { facts: { offset } });
}

/** Parses every entry up to (not including) TRAILER!!!. Throws CPIO_CORRUPT on malformed input. */
export function readCpio(archive: Uint8Array): CpioRecord[] {
  const buf = Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength);
  const records: CpioRecord[] = [];
  let off = 0;
  for (;;) {
    if (off + CPIO_HEADER_SIZE > buf.length) throw bad(off, "truncated header (no TRAILER!!!)");
    const header = buf.toString("latin1", off, off + CPIO_HEADER_SIZE);
    if (!header.startsWith(CPIO_NEWC_MAGIC)) throw bad(off, `bad magic '${header.slice(0, 6)}'`);
    const field = (i: number): number => {
      const text = header.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw bad(off, `bad header field ${i} '${text}'`);
      return parseInt(text, 16);
    };
    const nameSize = field(11);
    const fileSize = field(6);
    const nameStart = off + CPIO_HEADER_SIZE;
    if (nameSize < 1 || nameStart + nameSize > buf.length || buf[nameStart + nameSize - 1] !== 0) {
      throw bad(off, "bad name");
    }
    const path = buf.toString("utf8", nameStart, nameStart + nameSize - 1);
    const dataStart = off + align4(CPIO_HEADER_SIZE + nameSize);
    if (dataStart + fileSize > buf.length) throw bad(off, `truncated data of '${path}'`);
    if (path === CPIO_TRAILER) return records;
    records.push({
      path,
      ino: field(0),
      mode: field(1),
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      rdevMajor: field(9),
      rdevMinor: field(10),
      data: buf.subarray(dataStart, dataStart + fileSize),
    });
    off = dataStart + align4(fileSize);
  }
}

/**
 * One journal file's bytes on their way to the page cache (persist.ts has the journal itself):
 * stored into a shared mapping of the file when the native addon is built and the filesystem
 * allows it (records encoded in place, or copied), appended with write(2) otherwise.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { getSystemErrorName } from "node:util";
import { log } from "../lib/log.js";
import { xsio, type XsioAddon } from "./native.js";
import { RECORD_HEADER, SHORT_FIELD, zeroTailStart } from "./persist-records.js";

/** Bytes a mapped journal file reserves and maps at a time (a multiple of the page size). */
export const JOURNAL_CHUNK = 1024 * 1024;

/** One journal file's bytes on their way to the page cache. */
export interface JournalFile {
  readonly fd: number;
  /** Bytes of records in the file. */
  readonly size: number;
  append(bytes: Buffer): void;
  /**
   * Room for the next `n` bytes where they are already in the page cache once stored (a mapped
   * file): the buffer to store them in, from `placeAt`; undefined where that cannot be (append()
   * them instead). Call placed(n) once they are stored.
   */
  place(n: number): Buffer | undefined;
  readonly placeAt: number;
  placed(n: number): void;
  close(): void;
}

/** write(2) at `at`, all of it. */
export function writeAt(fd: number, bytes: Buffer, at: number): void {
  let written = 0;
  while (written < bytes.length) written += fs.writeSync(fd, bytes, written, bytes.length - written, at + written);
}

/** Appends with write(2). */
class WrittenJournal implements JournalFile {
  constructor(
    readonly fd: number,
    public size: number,
  ) {}

  append(bytes: Buffer): void {
    writeAt(this.fd, bytes, this.size);
    this.size += bytes.length;
  }

  readonly placeAt = 0;

  place(): undefined {
    return undefined;
  }

  placed(): void {
    throw new Error("a written journal places nothing");
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/**
 * Appends by copying into a shared mapping of the file (native/xsio.c), or lets the journal
 * encode records straight into it (place/placed): once stored, the bytes are in the page cache
 * as write(2) would have put them (a killed daemon loses nothing; fdatasync writes them back),
 * without a system call per reply — at one request in flight that call was the journal's whole
 * cost.
 *
 * - The file is reserved (posix_fallocate) and mapped `chunk` bytes at a time, and a batch's
 *   chunks are reserved and mapped before any of it is copied. If that fails (a full disk, no
 *   memory for a mapping) or the batch is larger than a chunk, the batch goes out with write(2)
 *   instead, at the same place: a full disk is then write(2)'s error, as without the addon.
 * - Records encoded in place (place/placed) store their length first and their magic last
 *   (persist-records.ts), so a daemon killed while encoding one leaves it without its magic:
 *   skipped whole and reported at load.
 * - Records copied in a batch are copied one at a time, in order (a short one byte by byte,
 *   cheaper than a native copy's call). A copy may store its first bytes last (memmove does for
 *   larger sizes), so a daemon killed in the middle of a batch leaves its records whole up to one
 *   torn record, never a later record without an earlier one: a suffix lost, as with write(2).
 *   None of those records was acknowledged.
 * - Until close() trims it, the file ends in zeros, which the loader takes as the journal's end
 *   (scanRecords' zeroTail).
 * - Only on filesystems that allocate at fallocate time (ext4, XFS, tmpfs): on a copy-on-write
 *   one a store could still need space, and a full disk would be SIGBUS instead of an error.
 */
class MappedJournal implements JournalFile {
  size = 0;
  /** The file is allocated up to here. */
  #reserved = 0;
  /** The mappings of the current batch's chunks (at most two): chunk index, mapping. */
  #maps: [number, Buffer][] = [];

  constructor(
    readonly fd: number,
    private readonly addon: XsioAddon,
    private readonly chunk: number,
  ) {
    if (!this.#prepare(0, 1)) throw Object.assign(new Error(this.why), { code: "EJOURNALMAP" });
  }

  /** Reserve and map what bytes [from, to) need; false if that fails or they span more than two chunks. */
  #prepare(from: number, to: number): boolean {
    const first = Math.floor(from / this.chunk);
    const last = Math.floor((to - 1) / this.chunk);
    // The common case, one reply's records within the chunk already mapped: nothing to allocate.
    if (first === last && this.#maps.length > 0 && this.#maps[this.#maps.length - 1]![0] === first) return true;
    if (last - first > 1) return false;
    const need = (last + 1) * this.chunk;
    if (this.#reserved < need) {
      const r = this.addon.reserve(this.fd, this.#reserved, need - this.#reserved);
      if (r < 0) return this.#cannot(`cannot reserve journal space: ${getSystemErrorName(r)}`);
      this.#reserved = need;
    }
    const maps: [number, Buffer][] = [];
    for (let i = first; i <= last; i++) {
      const have = this.#maps.find(([k]) => k === i);
      try {
        maps.push(have ?? [i, this.addon.mapShared(this.fd, i * this.chunk, this.chunk)]);
      } catch (e) {
        // mmap's errors carry their errno name; anything else is a bug.
        if (!(e instanceof Error && typeof (e as NodeJS.ErrnoException).code === "string")) throw e;
        return this.#cannot(e.message);
      }
    }
    this.#maps = maps;
    return true;
  }

  /** Why the last batch could not be mapped (the first time it happens, logged). */
  why = "";

  #cannot(why: string): false {
    if (this.why === "" && this.size > 0) log("warn", "xenstored", `journal: a batch appended with write(2) (${why}); later ones are mapped again when they can be`);
    this.why = why;
    return false;
  }

  append(bytes: Buffer): void {
    const end = this.size + bytes.length;
    if (!this.#prepare(this.size, end)) {
      writeAt(this.fd, bytes, this.size);
      this.size = end;
      return;
    }
    let off = 0;
    while (off < bytes.length) {
      const len = bytes.length - off >= RECORD_HEADER ? RECORD_HEADER + bytes.readUInt32LE(off + 4) : bytes.length - off;
      const to = Math.min(bytes.length, off + len);
      this.#copy(bytes, off, to);
      off = to;
    }
  }

  placeAt = 0;

  /** The mapping for the next `n` bytes if they fall within one chunk and it can be reserved and mapped. */
  place(n: number): Buffer | undefined {
    const i = Math.floor(this.size / this.chunk);
    if (Math.floor((this.size + n - 1) / this.chunk) !== i || !this.#prepare(this.size, this.size + n)) return undefined;
    const [k0, m0] = this.#maps[0]!;
    this.placeAt = this.size - i * this.chunk;
    return k0 === i ? m0 : this.#maps[1]![1];
  }

  placed(n: number): void {
    this.size += n;
  }

  /** Copy bytes [from, to) to the end of the records (within the prepared mappings). */
  #copy(bytes: Buffer, from: number, to: number): void {
    while (from < to) {
      const i = Math.floor(this.size / this.chunk);
      const [k0, m0] = this.#maps[0]!;
      const map = k0 === i ? m0 : this.#maps[1]![1];
      const at = this.size - i * this.chunk;
      const n = Math.min(this.chunk - at, to - from);
      if (n <= SHORT_FIELD) for (let k = 0; k < n; k++) map[at + k] = bytes[from + k]!;
      else bytes.copy(map, at, from, from + n);
      from += n;
      this.size += n;
    }
  }

  close(): void {
    // The mappings are not touched again (they are unmapped when collected), so the file may shrink under them.
    this.#maps = [];
    fs.ftruncateSync(this.fd, this.size);
    fs.closeSync(this.fd);
  }
}

/** True if the file holds nothing but zero bytes (checked only up to a few reserve chunks). */
export function onlyZeros(file: string): boolean {
  const size = fs.statSync(file).size;
  if (size === 0) return true;
  if (size > 4 * JOURNAL_CHUNK) return false;
  return zeroTailStart(fs.readFileSync(file)) === 0;
}

/** Filesystems whose fallocate allocates the blocks (statfs f_type): ext4 (and ext2/3), XFS, tmpfs. */
const MAPPABLE_FS = new Set([0xef53, 0x58465342, 0x01021994]);

/** True if journals in `dir` are written through a mapping (the addon is built and the filesystem allows it). */
export function journalMaps(dir: string, addon: XsioAddon | undefined = xsio): boolean {
  return addon !== undefined && MAPPABLE_FS.has(fs.statfsSync(dir).type);
}

/**
 * Open (or create) a journal file: mapped when the addon is there, the file is new and its
 * filesystem allocates at fallocate time; else written.
 */
export function openJournalFile(file: string, chunk: number, addon: XsioAddon | undefined): JournalFile {
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  const size = fs.fstatSync(fd).size;
  if (addon !== undefined && size === 0 && chunk > 0 && journalMaps(path.dirname(file), addon)) {
    try {
      return new MappedJournal(fd, addon, chunk);
    } catch (e) {
      if (!(e instanceof Error && typeof (e as NodeJS.ErrnoException).code === "string")) throw e;
      // No room, or no mapping: write(2) reports a full disk in its turn.
      fs.ftruncateSync(fd, 0);
      log("warn", "xenstored", `journal ${file}: appending with write(2) (${e.message})`);
    }
  }
  return new WrittenJournal(fd, size);
}

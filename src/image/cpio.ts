/**
 * A pure, deterministic cpio "newc" writer (the format the Linux kernel unpacks as initramfs).
 *
 * Format (Documentation/driver-api/early-userspace/buffer-format.rst, cpio(5)): each entry is a
 * 110-byte ASCII header — magic "070701" then 13 fields of 8 hex digits: ino, mode, uid, gid,
 * nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize (with the NUL),
 * check (0 for newc) — then the NUL-terminated name padded to a multiple of 4 bytes (counted from
 * the header start), then the data padded to 4. The archive ends with an entry named TRAILER!!!.
 *
 * Determinism: the same entries give the same bytes, whatever order they were given in. Entries
 * are sorted by their path bytes (a parent is a prefix of its children, so it always comes first,
 * which the kernel needs to create them), missing parent directories are added (0755), mtime is
 * 0, uid/gid are 0, and inode numbers are the 1-based position in that sorted order.
 *
 * nlink is 2 for directories and 1 for everything else: the kernel's unpacker treats a regular
 * file with nlink >= 2 as a hard link candidate (init/initramfs.c maybe_link()), so 1 is required
 * for files that are not meant to be linked.
 */
import { VmstackError, assertNever } from "../lib/errors.js";

export type CpioEntry =
  | { readonly type: "dir"; readonly path: string; readonly mode?: number }
  | { readonly type: "file"; readonly path: string; readonly mode?: number; readonly data: Uint8Array }
  | { readonly type: "symlink"; readonly path: string; readonly target: string }
  | {
      readonly type: "char" | "block";
      readonly path: string;
      readonly mode?: number;
      readonly major: number;
      readonly minor: number;
    };

/** File type bits of st_mode (POSIX <sys/stat.h>). */
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

export const CPIO_NEWC_MAGIC = "070701";
export const CPIO_HEADER_SIZE = 110;
export const CPIO_TRAILER = "TRAILER!!!";

/**
 * Normalises an archive path: no leading "/", no empty, "." or ".." segments. Archive names carry
 * no leading slash, as in the kernel's own gen_init_cpio output; the kernel accepts both.
 */
export function normalizeArchivePath(path: string): string {
  const segments = path.split("/").filter((s) => s !== "" && s !== ".");
  if (segments.length === 0 || segments.some((s) => s === "..") || path.includes("\0")) {
    throw new VmstackError("CPIO_BAD_PATH", `cpio: invalid archive path '${path}'`, { facts: { path } });
  }
  return segments.join("/");
}

function checkMode(path: string, mode: number): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new VmstackError("CPIO_BAD_MODE", `cpio: invalid permission bits ${String(mode)} for '${path}'`, {
      facts: { path, mode },
    });
  }
  return mode;
}

interface Resolved {
  readonly path: string;
  readonly mode: number;
  readonly data: Uint8Array;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
}

const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);

function resolveEntry(entry: CpioEntry): Resolved {
  const path = normalizeArchivePath(entry.path);
  switch (entry.type) {
    case "dir":
      return { path, mode: S_IFDIR | checkMode(path, entry.mode ?? 0o755), data: EMPTY, rdevMajor: 0, rdevMinor: 0 };
    case "file":
      return { path, mode: S_IFREG | checkMode(path, entry.mode ?? 0o644), data: entry.data, rdevMajor: 0, rdevMinor: 0 };
    case "symlink":
      if (entry.target === "") throw new VmstackError("CPIO_BAD_PATH", `cpio: empty symlink target for '${path}'`);
      // A symlink's data is its target, without a NUL (cpio(5)); permissions are always 0777.
      return { path, mode: S_IFLNK | 0o777, data: utf8.encode(entry.target), rdevMajor: 0, rdevMinor: 0 };
    case "char":
    case "block":
      return {
        path,
        mode: (entry.type === "char" ? S_IFCHR : S_IFBLK) | checkMode(path, entry.mode ?? 0o600),
        data: EMPTY,
        rdevMajor: entry.major,
        rdevMinor: entry.minor,
      };
    default:
      return assertNever(entry, "cpio entry");
  }
}

/** Byte-wise comparison of UTF-8 paths, so the order does not depend on the locale. */
function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * The entries as they will be written: validated, parents added, sorted. Throws on a duplicate
 * path or on a path whose parent is not a directory.
 */
function plan(entries: readonly CpioEntry[]): Resolved[] {
  const byPath = new Map<string, Resolved>();
  for (const e of entries) {
    const r = resolveEntry(e);
    if (byPath.has(r.path)) {
      throw new VmstackError("CPIO_DUPLICATE", `cpio: '${r.path}' is given twice`, { facts: { path: r.path } });
    }
    byPath.set(r.path, r);
  }
  for (const path of [...byPath.keys()]) {
    const segments = path.split("/");
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join("/");
      const existing = byPath.get(parent);
      if (existing === undefined) {
        byPath.set(parent, { path: parent, mode: S_IFDIR | 0o755, data: EMPTY, rdevMajor: 0, rdevMinor: 0 });
      } else if ((existing.mode & S_IFMT) !== S_IFDIR) {
        throw new VmstackError("CPIO_NOT_A_DIRECTORY", `cpio: '${path}' is inside '${parent}', which is not a directory`, {
          facts: { path, parent },
        });
      }
    }
  }
  return [...byPath.values()].sort((a, b) => comparePaths(a.path, b.path));
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, "0");
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

interface HeaderFields {
  readonly ino: number;
  readonly mode: number;
  readonly nlink: number;
  readonly fileSize: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly name: Uint8Array;
}

function pushEntry(parts: Uint8Array[], h: HeaderFields, data: Uint8Array): void {
  const nameSize = h.name.length + 1;
  const header =
    CPIO_NEWC_MAGIC +
    hex8(h.ino) +
    hex8(h.mode) +
    hex8(0) + // uid
    hex8(0) + // gid
    hex8(h.nlink) +
    hex8(0) + // mtime
    hex8(h.fileSize) +
    hex8(0) + // devmajor
    hex8(0) + // devminor
    hex8(h.rdevMajor) +
    hex8(h.rdevMinor) +
    hex8(nameSize) +
    hex8(0); // check
  parts.push(utf8.encode(header), h.name, new Uint8Array(1 + pad4(CPIO_HEADER_SIZE + nameSize)));
  if (data.length > 0) parts.push(data, new Uint8Array(pad4(data.length)));
}

/** Writes a newc archive of `entries`. Pure: same entries (in any order) → same bytes. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Uint8Array[] = [];
  plan(entries).forEach((r, i) => {
    const isDir = (r.mode & S_IFMT) === S_IFDIR;
    pushEntry(
      parts,
      {
        ino: i + 1,
        mode: r.mode,
        nlink: isDir ? 2 : 1,
        fileSize: r.data.length,
        rdevMajor: r.rdevMajor,
        rdevMinor: r.rdevMinor,
        name: utf8.encode(r.path),
      },
      r.data,
    );
  });
  pushEntry(parts, { ino: 0, mode: 0, nlink: 1, fileSize: 0, rdevMajor: 0, rdevMinor: 0, name: utf8.encode(CPIO_TRAILER) }, EMPTY);
  return Buffer.concat(parts);
}

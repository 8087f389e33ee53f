/**
 * The save file of `vmstack save` / `vmstack restore` (xl's checkpoint file): one file holding the
 * domain's config and QEMU's migration stream. PURE: encoding and checking the fixed prefix and
 * the header; reading, hashing and streaming the file is manager-save.ts.
 *
 * Layout (integers little-endian):
 *
 *   offset  size  field
 *        0    16  magic "VMSTACK SAVE\r\n\x1a\n" (PNG's trick: a file mangled by a text-mode copy,
 *                 CRLF or Ctrl-Z handling, fails the magic instead of failing later)
 *       16     4  format version (1)
 *       20     4  header length H (bytes of UTF-8 JSON)
 *       24     8  payload length P
 *       32    32  SHA-256 over header bytes + payload bytes
 *       64     H  header (SaveHeader as JSON)
 *     64+H     P  payload: QEMU's migration stream, compressed as `header.compression` says
 *
 * Length and checksum sit at fixed offsets so the saver can stream the payload once and fill them
 * in at the end, without buffering the state or copying the file. A restore checks all of it
 * (magic, version, lengths against the file's size, header shape, checksum) before anything starts,
 * so a corrupt, truncated or foreign file changes nothing.
 */
import { VmstackError } from "../lib/errors.js";

export const SAVE_MAGIC = Buffer.from("VMSTACK SAVE\r\n\x1a\n", "latin1");
export const SAVE_FORMAT_VERSION = 1;
export const SAVE_PREFIX_BYTES = 64;
/** A header is a domain config plus a few facts: far below this. A bigger claim means a broken file. */
export const SAVE_HEADER_MAX = 1 << 20;

export type SaveCompression = "zstd" | "none";

/** A file the launch reads (kernel, initrd), pinned by size and hash so a restore can say when it changed. */
export interface BootFile {
  readonly role: "kernel" | "initrd";
  readonly path: string;
  readonly size: number;
  /** Modification time at the save: the same size and mtime spare a restore re-hashing (the kernel is ~50 MB). */
  readonly mtimeMs: number;
  readonly sha256: string;
}

export interface SaveHeader {
  readonly name: string;
  readonly uuid: string;
  /** The validated DomainConfig: it rebuilds the same QEMU device set (machine, memory, CPUs, disks, NICs with MACs, channels). */
  readonly config: Record<string, unknown>;
  /** The accelerator the domain ran with: the state of a TCG guest loads into TCG. */
  readonly accel: "kvm" | "tcg";
  readonly qemuVersion: string;
  readonly savedAt: string;
  readonly compression: SaveCompression;
  /** Whether the guest was running (not paused) when saved: restore resumes it only then (and without -p). */
  readonly wasRunning: boolean;
  readonly bootFiles: readonly BootFile[];
}

export interface SavePrefix {
  readonly version: number;
  readonly headerLength: number;
  readonly payloadLength: number;
  readonly sha256: Buffer;
}

function saveError(code: string, path: string, message: string, facts: Record<string, unknown> = {}): VmstackError {
  return new VmstackError(code, `${path}: ${message}`, { facts: { path, ...facts } });
}

/** The 64-byte prefix (with the length and checksum known, or zeros as a placeholder). */
export function encodePrefix(headerLength: number, payloadLength: number, sha256: Buffer = Buffer.alloc(32)): Buffer {
  const b = Buffer.alloc(SAVE_PREFIX_BYTES);
  SAVE_MAGIC.copy(b, 0);
  b.writeUInt32LE(SAVE_FORMAT_VERSION, 16);
  b.writeUInt32LE(headerLength, 20);
  b.writeBigUInt64LE(BigInt(payloadLength), 24);
  sha256.copy(b, 32);
  return b;
}

export function encodeHeader(h: SaveHeader): Buffer {
  return Buffer.from(JSON.stringify(h), "utf8");
}

/**
 * Checks the prefix of a file of `fileSize` bytes: magic, version, and that the lengths it claims
 * add up to exactly the file's size (shorter: truncated; longer: something appended).
 */
export function parsePrefix(prefix: Buffer, fileSize: number, path: string): SavePrefix {
  if (prefix.length < SAVE_MAGIC.length || !prefix.subarray(0, SAVE_MAGIC.length).equals(SAVE_MAGIC)) {
    throw saveError("SAVE_FILE_FOREIGN", path, "not a vmstack save file (no vmstack save signature at its start)");
  }
  if (prefix.length < SAVE_PREFIX_BYTES) throw saveError("SAVE_FILE_TRUNCATED", path, `truncated: ${fileSize} bytes, shorter than the ${SAVE_PREFIX_BYTES}-byte prefix`, { size: fileSize });
  const version = prefix.readUInt32LE(16);
  if (version !== SAVE_FORMAT_VERSION) {
    throw saveError("SAVE_FILE_VERSION", path, `save file format version ${version}; this vmstack reads version ${SAVE_FORMAT_VERSION}`, { version });
  }
  const headerLength = prefix.readUInt32LE(20);
  const payload = prefix.readBigUInt64LE(24);
  if (headerLength === 0 || headerLength > SAVE_HEADER_MAX) throw saveError("SAVE_FILE_CORRUPT", path, `corrupt: header length ${headerLength} is out of range`);
  const expected = BigInt(SAVE_PREFIX_BYTES + headerLength) + payload;
  if (BigInt(fileSize) < expected) {
    throw saveError("SAVE_FILE_TRUNCATED", path, `truncated: ${fileSize} bytes, the file says ${expected} (the save did not finish, or the copy was cut short)`, { size: fileSize, expected: Number(expected) });
  }
  if (BigInt(fileSize) > expected) throw saveError("SAVE_FILE_CORRUPT", path, `corrupt: ${fileSize} bytes, the file says ${expected}`, { size: fileSize, expected: Number(expected) });
  return { version, headerLength, payloadLength: Number(payload), sha256: Buffer.from(prefix.subarray(32, 64)) };
}

const isStr = (v: unknown): v is string => typeof v === "string" && v.length > 0;

/** The header's JSON → a SaveHeader, or SAVE_FILE_CORRUPT naming what is wrong. */
export function parseSaveHeader(bytes: Buffer, path: string): SaveHeader {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString("utf8"));
  } catch (e) {
    throw saveError("SAVE_FILE_CORRUPT", path, `corrupt: the header is not JSON (${(e as Error).message})`);
  }
  const o = v as Record<string, unknown>;
  const bad = (what: string): VmstackError => saveError("SAVE_FILE_CORRUPT", path, `corrupt: the header's ${what} is missing or wrong`);
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw bad("object");
  for (const k of ["name", "uuid", "qemuVersion", "savedAt"] as const) if (!isStr(o[k])) throw bad(k);
  if (typeof o["config"] !== "object" || o["config"] === null || Array.isArray(o["config"])) throw bad("config");
  if (o["accel"] !== "kvm" && o["accel"] !== "tcg") throw bad("accel");
  if (o["compression"] !== "zstd" && o["compression"] !== "none") throw bad("compression");
  if (typeof o["wasRunning"] !== "boolean") throw bad("wasRunning");
  const files = o["bootFiles"];
  const fileOk = (f: unknown): f is BootFile => {
    const x = f as Record<string, unknown>;
    return typeof x === "object" && x !== null && (x["role"] === "kernel" || x["role"] === "initrd") && isStr(x["path"]) && Number.isInteger(x["size"]) && typeof x["mtimeMs"] === "number" && isStr(x["sha256"]);
  };
  if (!Array.isArray(files) || !files.every(fileOk)) throw bad("bootFiles");
  return o as unknown as SaveHeader;
}

/** Compares the checksum a file claims with the one computed over its header and payload. */
export function checkDigest(claimed: Buffer, computed: Buffer, path: string): void {
  if (!claimed.equals(computed)) {
    throw saveError("SAVE_FILE_CORRUPT", path, "corrupt: the checksum does not match its contents (the file was damaged after it was written)", {
      claimed: claimed.toString("hex"),
      computed: computed.toString("hex"),
    });
  }
}

/**
 * bzImage inspection and vmlinux extraction.
 *
 * Why: QEMU can boot an uncompressed vmlinux ELF directly through its Xen PVH note (0x12), which
 * skips the real-mode setup and the in-guest decompressor. Under TCG that decompressor is slow:
 * about 0.37 s for the cloud kernel's LZ4 and 3.4 s for XZ (docs/qemu-notes.md §2).
 *
 * How: the x86 boot protocol (Documentation/arch/x86/boot.rst) puts a setup header in the bzImage:
 * "HdrS" at 0x202, the protocol version at 0x206, setup_sects at 0x1f1 (0 means 4), and since
 * protocol 2.08 payload_offset/payload_length at 0x248/0x24c, relative to the start of the
 * protected-mode code ((setup_sects + 1) * 512). The payload is the compressed vmlinux followed by
 * its uncompressed size as 4 little-endian bytes (the kernel's `size_append`). Cutting the payload
 * exactly and checking the decompressed size against those 4 bytes is more robust than scanning
 * for a magic number and tolerating the decompressor's "trailing garbage" complaints.
 */
import { open, readFile, rename, rm, stat } from "node:fs/promises";
import { VmstackError } from "../lib/errors.js";
import { runChild } from "../lib/run-child.js";
import { tempPathFor } from "./cache.js";

export type PayloadFormat = "lz4" | "xz" | "gzip" | "zstd" | "bzip2" | "lzma" | "lzo";

export interface BzImageInfo {
  readonly protocol: number;
  /** Kernel version string from the header, e.g. "6.1.0-56-cloud-amd64 (debian-kernel@…) #1 …". */
  readonly versionString: string | undefined;
  /** The release (first word of versionString), e.g. "6.1.0-56-cloud-amd64". */
  readonly release: string | undefined;
  readonly payloadOffset: number;
  readonly payloadLength: number;
  readonly format: PayloadFormat | undefined;
}

const MAGICS: ReadonlyArray<readonly [PayloadFormat, readonly number[]]> = [
  ["lz4", [0x02, 0x21, 0x4c, 0x18]], // LZ4 legacy frame (lz4 -l), as the kernel builds it
  ["xz", [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ["gzip", [0x1f, 0x8b]],
  ["zstd", [0x28, 0xb5, 0x2f, 0xfd]],
  ["bzip2", [0x42, 0x5a, 0x68]],
  ["lzo", [0x89, 0x4c, 0x5a, 0x4f]],
  ["lzma", [0x5d, 0x00, 0x00]],
];

export function detectPayloadFormat(bytes: Uint8Array): PayloadFormat | undefined {
  for (const [format, magic] of MAGICS) {
    if (magic.every((b, i) => bytes[i] === b)) return format;
  }
  return undefined;
}

export type KernelFileKind = "bzImage" | "vmlinux";

/** What a kernel file is, from its first bytes (at least 0x208 of them). */
export function kernelFileKind(head: Uint8Array): KernelFileKind | undefined {
  if (head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46) return "vmlinux";
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 0x206 && b.toString("latin1", 0x202, 0x206) === "HdrS") return "bzImage";
  return undefined;
}

function notBzImage(what: string, source: string): VmstackError {
  return new VmstackError("KERNEL_INVALID", `${source} is not a usable bzImage: ${what}`, { facts: { path: source } });
}

/** Parses the setup header of a whole bzImage. Pure. */
export function parseBzImage(image: Uint8Array, source = "kernel"): BzImageInfo {
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (kernelFileKind(b) !== "bzImage") throw notBzImage("no 'HdrS' setup header", source);
  const protocol = b.readUInt16LE(0x206);
  if (protocol < 0x208) throw notBzImage(`boot protocol ${protocol.toString(16)} is older than 2.08`, source);
  const setupSects = b[0x1f1] || 4;
  const payloadOffset = (setupSects + 1) * 512 + b.readUInt32LE(0x248);
  const payloadLength = b.readUInt32LE(0x24c);
  if (payloadLength < 8 || payloadOffset + payloadLength > b.length) throw notBzImage("payload outside the file", source);
  // kernel_version (0x20e) points at a NUL-terminated string, 0x200 bytes before its file offset.
  const versionPtr = b.readUInt16LE(0x20e);
  let versionString: string | undefined;
  if (versionPtr !== 0 && versionPtr + 0x200 < b.length) {
    const start = versionPtr + 0x200;
    const end = b.indexOf(0, start);
    if (end > start) versionString = b.toString("latin1", start, Math.min(end, start + 256));
  }
  return {
    protocol,
    versionString,
    release: versionString?.split(" ")[0],
    payloadOffset,
    payloadLength,
    format: detectPayloadFormat(b.subarray(payloadOffset, payloadOffset + 8)),
  };
}

/** The release named in a vmlinux's "Linux version …" banner, found by scanning the file. */
export function releaseOfVmlinux(image: Uint8Array): string | undefined {
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  const marker = Buffer.from("Linux version ");
  for (let at = b.indexOf(marker); at >= 0; at = b.indexOf(marker, at + 1)) {
    const start = at + marker.length;
    const word = /^[0-9][^\s\0]*/.exec(b.toString("latin1", start, start + 128));
    if (word) return word[0];
  }
  return undefined;
}

const DECOMPRESSORS: Readonly<Record<PayloadFormat, readonly string[]>> = {
  lz4: ["lz4", "-dc"],
  xz: ["xz", "-dc"],
  gzip: ["gzip", "-dc"],
  zstd: ["zstd", "-dcq"],
  bzip2: ["bzip2", "-dc"],
  lzma: ["xz", "--format=lzma", "-dc"],
  lzo: ["lzop", "-dc"],
};

/** Reads the first `n` bytes of a file. */
export async function readHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * Decompresses the vmlinux ELF out of `bzImagePath` into `outPath` (atomically). Checks the
 * result's size against the size the build appended and that it is an ELF file.
 */
export async function extractVmlinux(bzImagePath: string, outPath: string, signal?: AbortSignal): Promise<void> {
  const image = await readFile(bzImagePath);
  const info = parseBzImage(image, bzImagePath);
  if (info.format === undefined) throw notBzImage("unknown payload compression", bzImagePath);
  const payload = image.subarray(info.payloadOffset, info.payloadOffset + info.payloadLength);
  const expected = payload.readUInt32LE(payload.length - 4);
  const tmp = tempPathFor(outPath);
  try {
    await runChild(DECOMPRESSORS[info.format], { input: payload.subarray(0, payload.length - 4), stdoutFile: tmp, signal });
    const size = (await stat(tmp)).size;
    const head = await readHead(tmp, 4);
    if (size !== expected || kernelFileKind(head) !== "vmlinux") {
      throw new VmstackError(
        "KERNEL_INVALID",
        `decompressing ${bzImagePath} (${info.format}) gave ${size} bytes, expected an ELF file of ${expected}`,
        { facts: { path: bzImagePath, size, expected } },
      );
    }
    await rename(tmp, outPath);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * The I/O half of save files (the format is save-file.ts): hashing boot files, writing the
 * migration stream into a save file while hashing it, checking a whole file before a restore,
 * and feeding a file's stream back to QEMU.
 *
 * QEMU 7.2 has no `file:` migration URI; vmstack's test snapshots use `exec:` (a shell command
 * line). Here the stream goes over a Unix socket instead (`migrate unix:PATH` to save,
 * `-incoming unix:PATH` to restore): vmstackd holds both ends, so it hashes the bytes as they
 * pass, writes them at an offset behind the header, and no shell or quoting is involved
 * (house rule: argv arrays, never shell strings). Compression is zstd at level 1 in a child
 * process: QEMU sends zero pages compactly, but a guest's freed-yet-dirty pages and kernel image
 * are sent whole; zstd -1 shrinks a 94 MB state to ~41 MB (qemu-notes §4) at about the speed
 * QEMU produces it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import { Transform, Writable, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { VmstackError, isVmstackError, messageOf } from "../lib/errors.js";
import { SAVE_PREFIX_BYTES, checkDigest, parsePrefix, parseSaveHeader, type BootFile, type SaveCompression, type SaveHeader } from "./save-file.js";

/** zstd's level-1 argv: compress stdin to stdout, quiet (no progress on stderr). */
export const ZSTD_COMPRESS = ["zstd", "-1", "-q", "-c"] as const;
export const ZSTD_DECOMPRESS = ["zstd", "-d", "-q", "-c"] as const;

/**
 * Hashes of boot files by path, valid while size, mtime and inode stay the same: every save of a
 * domain would otherwise read its kernel and initrd again (tens of MB, tens of ms on a busy host).
 */
const hashCache = new Map<string, { key: string; sha256: string }>();

export async function sha256File(path: string): Promise<{ size: number; mtimeMs: number; sha256: string }> {
  const st = await stat(path);
  const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
  const hit = hashCache.get(path);
  if (hit?.key === key) return { size: st.size, mtimeMs: st.mtimeMs, sha256: hit.sha256 };
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  const sha256 = h.digest("hex");
  hashCache.set(path, { key, sha256 });
  return { size, mtimeMs: st.mtimeMs, sha256 };
}

export async function bootFileFacts(files: readonly { role: BootFile["role"]; path: string }[]): Promise<BootFile[]> {
  return Promise.all(files.map(async (f) => ({ ...f, ...(await sha256File(f.path)) })));
}

/** Why a boot file no longer matches what the save recorded, or undefined when it does. */
export async function bootFileProblem(f: BootFile): Promise<string | undefined> {
  let now: { size: number; sha256: string };
  try {
    const st = await stat(f.path);
    // Unchanged size and mtime: the file is taken as the same (as make and rsync do), sparing the hash.
    if (st.size === f.size && st.mtimeMs === f.mtimeMs) return undefined;
    now = await sha256File(f.path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return `its ${f.role} ${f.path} no longer exists`;
    return `its ${f.role} ${f.path} cannot be read: ${messageOf(e)}`;
  }
  if (now.size !== f.size || now.sha256 !== f.sha256) return `its ${f.role} ${f.path} has changed since the save (sha256 ${f.sha256.slice(0, 12)}…, now ${now.sha256.slice(0, 12)}…)`;
  return undefined;
}

function counting(hash: Hash, count: { bytes: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      count.bytes += chunk.length;
      done(null, chunk);
    },
  });
}

/**
 * Writes at increasing offsets of `fh` without taking ownership of it. (A FileHandle's own
 * createWriteStream holds a reference that makes `close()` wait for the stream to close, which
 * with autoClose off it never does.)
 */
function positionalWriter(fh: FileHandle, offset: number): Writable {
  let position = offset;
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      fh.write(chunk, 0, chunk.length, position).then(
        () => {
          position += chunk.length;
          done();
        },
        (e: unknown) => done(e as Error),
      );
    },
  });
}

/** A filter child (zstd) with its stderr kept for the error message. */
function filter(argv: readonly string[]): { child: ChildProcess; stdin: Writable; stdout: Readable; done: Promise<void> } {
  const [file, ...args] = argv as [string, ...string[]];
  const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  const done = new Promise<void>((resolve, reject) => {
    child.once("error", (e) => reject(new VmstackError("SAVE_COMPRESSOR", `cannot run ${file}: ${e.message} (apt-get install zstd, or ./setup)`, { cause: e })));
    child.once("close", (code, sig) => (code === 0 ? resolve() : reject(new VmstackError("SAVE_COMPRESSOR", `${argv.join(" ")} failed (${sig ?? `exit ${code}`}): ${stderr.trim() || "no message"}`))));
  });
  return { child, stdin: child.stdin as Writable, stdout: child.stdout as Readable, done };
}

/**
 * Writes everything `source` sends (QEMU's migration stream) into `out` from `offset`, through
 * zstd when asked, adding the written bytes to `hash`. Resolves with the payload length once the
 * source has ended and every byte is written.
 */
export async function writePayload(source: Readable, out: FileHandle, offset: number, hash: Hash, compression: SaveCompression, signal?: AbortSignal): Promise<number> {
  const count = { bytes: 0 };
  const sink = positionalWriter(out, offset);
  const opts = signal ? { signal } : {};
  switch (compression) {
    case "none":
      await pipeline(source, counting(hash, count), sink, opts);
      break;
    case "zstd": {
      const z = filter(ZSTD_COMPRESS);
      const stop = (): boolean => z.child.kill("SIGKILL");
      signal?.addEventListener("abort", stop, { once: true });
      try {
        await Promise.all([pipeline(source, z.stdin, opts), pipeline(z.stdout, counting(hash, count), sink, opts), z.done]);
      } catch (e) {
        stop();
        throw e;
      } finally {
        signal?.removeEventListener("abort", stop);
      }
      break;
    }
  }
  return count.bytes;
}

/** Sends a checked file's payload to `dest` (QEMU's incoming socket), decompressing as the header says. */
export async function sendPayload(path: string, payloadOffset: number, payloadLength: number, compression: SaveCompression, dest: Writable, signal?: AbortSignal): Promise<void> {
  const opts = signal ? { signal } : {};
  const source = (): Readable => createReadStream(path, payloadLength === 0 ? { start: payloadOffset, end: payloadOffset - 1 } : { start: payloadOffset, end: payloadOffset + payloadLength - 1 });
  switch (compression) {
    case "none":
      await pipeline(source(), dest, opts);
      return;
    case "zstd": {
      const z = filter(ZSTD_DECOMPRESS);
      try {
        await Promise.all([pipeline(source(), z.stdin, opts), pipeline(z.stdout, dest, opts), z.done]);
      } catch (e) {
        z.child.kill("SIGKILL");
        throw e;
      }
      return;
    }
  }
}

export interface CheckedSave {
  readonly path: string;
  readonly header: SaveHeader;
  readonly payloadOffset: number;
  readonly payloadLength: number;
  readonly fileBytes: number;
}

/**
 * Reads and checks a whole save file: magic, version, lengths against its size, the header, and
 * the checksum over header and payload. Nothing is started before this passes.
 */
export async function checkSaveFile(path: string, signal?: AbortSignal): Promise<CheckedSave> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new VmstackError("SAVE_FILE_MISSING", `${path}: no such save file`, { facts: { path } });
    throw new VmstackError("SAVE_FILE_UNREADABLE", `${path}: cannot open: ${messageOf(e)}`, { facts: { path }, cause: e });
  }
  try {
    return await checkOpen(fh, path, signal);
  } catch (e) {
    throw isVmstackError(e) ? e : new VmstackError("SAVE_FILE_UNREADABLE", `${path}: cannot read: ${messageOf(e)}`, { facts: { path }, cause: e });
  } finally {
    await fh.close();
  }
}

async function checkOpen(fh: FileHandle, path: string, signal?: AbortSignal): Promise<CheckedSave> {
  const st = await fh.stat();
  if (!st.isFile()) throw new VmstackError("SAVE_FILE_FOREIGN", `${path}: not a regular file`, { facts: { path } });
  const prefix = Buffer.alloc(Math.min(SAVE_PREFIX_BYTES, st.size));
  await fh.read(prefix, 0, prefix.length, 0);
  const p = parsePrefix(prefix, st.size, path);
  const headerBytes = Buffer.alloc(p.headerLength);
  await fh.read(headerBytes, 0, p.headerLength, SAVE_PREFIX_BYTES);
  const hash = createHash("sha256").update(headerBytes);
  const payloadOffset = SAVE_PREFIX_BYTES + p.headerLength;
  if (p.payloadLength > 0) {
    for await (const chunk of createReadStream(path, { start: payloadOffset })) {
      signal?.throwIfAborted();
      hash.update(chunk as Buffer);
    }
  }
  checkDigest(p.sha256, hash.digest(), path);
  // The header is parsed after the checksum passed: a damaged header is reported as damage, not as a strange config.
  return { path, header: parseSaveHeader(headerBytes, path), payloadOffset, payloadLength: p.payloadLength, fileBytes: st.size };
}

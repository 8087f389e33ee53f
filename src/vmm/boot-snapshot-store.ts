/**
 * Boot snapshots in the vmstack cache, content-addressed by their key (boot-snapshot-plan.ts):
 *
 *   boot-snapshots/<key>/state      QEMU's migration stream of the freshly booted guest
 *   boot-snapshots/<key>/meta.json  format, key, identity, size and sha256 of `state`
 *
 * A snapshot is written into a temporary directory next to its final one and renamed into place
 * (the cache's convention, src/image/cache.ts): a killed save leaves no entry under a final name,
 * and the temporary one is swept later. Before use, the meta must parse and match the key and the
 * state's size; the state's sha256 is checked while QEMU loads it (throwaway-snapshot.ts), before
 * the guest runs. A snapshot that fails any check is deleted and the run boots cold.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { cacheRoot, sweepStaleTemps, tempPathFor, touch, type Env } from "../image/index.js";
import { VmstackError, messageOf } from "../lib/errors.js";
import { BOOT_SNAPSHOT_FORMAT, type BootSnapshotIdentity } from "./boot-snapshot-plan.js";
import { readdirOrEmpty } from "../lib/fs.js";

/** Snapshots beyond this many (least recently used first) are removed when a new one is saved. */
export const BOOT_SNAPSHOTS_KEPT = 4;
/** Snapshots not used for this long are removed when a new one is saved. */
export const BOOT_SNAPSHOT_MAX_UNUSED_MS = 14 * 24 * 3600 * 1000;

export interface BootSnapshotMeta {
  readonly format: number;
  readonly key: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly savedAt: string;
  readonly identity: BootSnapshotIdentity;
}

export interface BootSnapshot {
  readonly key: string;
  readonly dir: string;
  readonly statePath: string;
  readonly meta: BootSnapshotMeta;
}

export type BootSnapshotLookup =
  | { readonly status: "missing" }
  | { readonly status: "found"; readonly snapshot: BootSnapshot }
  | { readonly status: "corrupt"; readonly reason: string };

export interface BootSnapshotEntry {
  readonly key: string;
  readonly bytes: number;
  readonly lastUsed: Date;
  readonly savedAt?: string;
}

/** Parses meta.json's content; throws a message naming the problem. */
export function parseBootSnapshotMeta(value: unknown): BootSnapshotMeta {
  const fail = (what: string): never => {
    throw new VmstackError("SNAPSHOT_CORRUPT", `meta.json: ${what}`);
  };
  if (typeof value !== "object" || value === null || Array.isArray(value)) return fail("not an object");
  const v = value as Record<string, unknown>;
  const known = new Set(["format", "key", "bytes", "sha256", "savedAt", "identity"]);
  for (const k of Object.keys(v)) if (!known.has(k)) fail(`unknown key '${k}'`);
  if (v["format"] !== BOOT_SNAPSHOT_FORMAT) fail(`format ${String(v["format"])}, expected ${BOOT_SNAPSHOT_FORMAT}`);
  if (typeof v["key"] !== "string" || !/^[0-9a-f]{64}$/.test(v["key"])) fail("key is not a sha256");
  if (typeof v["bytes"] !== "number" || !Number.isSafeInteger(v["bytes"]) || v["bytes"] <= 0) fail("bytes is not a positive integer");
  if (typeof v["sha256"] !== "string" || !/^[0-9a-f]{64}$/.test(v["sha256"])) fail("sha256 is not a sha256");
  if (typeof v["savedAt"] !== "string") fail("savedAt is not a string");
  if (typeof v["identity"] !== "object" || v["identity"] === null) fail("identity is not an object");
  return v as unknown as BootSnapshotMeta;
}

export class BootSnapshotStore {
  constructor(readonly root: string) {}

  static forEnv(env: Env): BootSnapshotStore {
    return new BootSnapshotStore(join(cacheRoot(env), "boot-snapshots"));
  }

  dirOf(key: string): string {
    if (!/^[0-9a-f]{64}$/.test(key)) throw new RangeError(`not a boot snapshot key: '${key}'`);
    return join(this.root, key);
  }

  /** The snapshot saved under `key`, after the cheap checks (meta, key, size). */
  async find(key: string): Promise<BootSnapshotLookup> {
    const dir = this.dirOf(key);
    let text: string;
    try {
      text = await readFile(join(dir, "meta.json"), "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      // A directory without meta.json is not a snapshot anyone finished; report it so it is cleaned.
      return (await existsDir(dir)) ? { status: "corrupt", reason: "meta.json is missing" } : { status: "missing" };
    }
    let meta: BootSnapshotMeta;
    try {
      meta = parseBootSnapshotMeta(JSON.parse(text));
    } catch (e) {
      return { status: "corrupt", reason: messageOf(e) };
    }
    if (meta.key !== key) return { status: "corrupt", reason: `meta.json names key ${meta.key.slice(0, 12)}, not ${key.slice(0, 12)}` };
    const statePath = join(dir, "state");
    let size: number;
    try {
      size = (await stat(statePath)).size;
    } catch (e) {
      return { status: "corrupt", reason: `the state file: ${messageOf(e)}` };
    }
    if (size !== meta.bytes) return { status: "corrupt", reason: `the state file has ${size} bytes, meta.json says ${meta.bytes}` };
    await touch(dir);
    return { status: "found", snapshot: { key, dir, statePath, meta } };
  }

  /** True when the state file's sha256 is the one recorded at save time. */
  async verify(snapshot: BootSnapshot): Promise<boolean> {
    return (await sha256Of(snapshot.statePath)) === snapshot.meta.sha256;
  }

  /**
   * Saves a snapshot: `writeState` writes the state to the path it is given (a temporary
   * directory), then meta.json is written and the directory renamed into place. When another run
   * saved the same key meanwhile, theirs stays and this one is dropped (same inputs, same state).
   */
  async save(key: string, identity: BootSnapshotIdentity, writeState: (path: string) => Promise<void>): Promise<{ bytes: number }> {
    const dir = this.dirOf(key);
    await mkdir(this.root, { recursive: true });
    await sweepStaleTemps(this.root);
    const tmp = tempPathFor(dir);
    try {
      await mkdir(tmp);
      const statePath = join(tmp, "state");
      await writeState(statePath);
      const bytes = (await stat(statePath)).size;
      if (bytes === 0) throw new VmstackError("SNAPSHOT_FAILED", "QEMU wrote an empty state file");
      const meta: BootSnapshotMeta = { format: BOOT_SNAPSHOT_FORMAT, key, bytes, sha256: await sha256Of(statePath), savedAt: new Date().toISOString(), identity };
      await writeFile(join(tmp, "meta.json"), JSON.stringify(meta, null, 2) + "\n");
      try {
        await rename(tmp, dir);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
      }
      await this.prune(key);
      return { bytes };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  async remove(key: string): Promise<void> {
    await rm(this.dirOf(key), { recursive: true, force: true });
  }

  /** Every snapshot directory, most recently used first. */
  async list(): Promise<BootSnapshotEntry[]> {
    const names = await readdirOrEmpty(this.root);
    const entries: BootSnapshotEntry[] = [];
    for (const key of names.filter((n) => /^[0-9a-f]{64}$/.test(n))) {
      try {
        const st = await stat(join(this.root, key));
        const state = await stat(join(this.root, key, "state")).catch(() => undefined);
        // A listing shows broken entries too (without their save time); find() reports why.
        const meta = await readFile(join(this.root, key, "meta.json"), "utf8")
          .then((t) => parseBootSnapshotMeta(JSON.parse(t)))
          .catch(() => undefined);
        entries.push({ key, bytes: state?.size ?? 0, lastUsed: st.mtime, ...(meta ? { savedAt: meta.savedAt } : {}) });
      } catch (e) {
        // Removed by another run while we looked.
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    return entries.sort((a, b) => b.lastUsed.getTime() - a.lastUsed.getTime());
  }

  /** Removes snapshots unused for too long, and all but the most recently used few. */
  async prune(keep?: string, now = Date.now()): Promise<string[]> {
    const entries = await this.list();
    const removed: string[] = [];
    entries.forEach((e, i) => {
      if (e.key !== keep && (i >= BOOT_SNAPSHOTS_KEPT || now - e.lastUsed.getTime() > BOOT_SNAPSHOT_MAX_UNUSED_MS)) removed.push(e.key);
    });
    await Promise.all(removed.map((k) => this.remove(k)));
    return removed;
  }
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  // Big reads: the state is tens of MB, and each chunk costs a turn of the event loop.
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), hash);
  return hash.digest("hex");
}

async function existsDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    // Absent (or unreadable): nothing to report or clean.
    return false;
  }
}


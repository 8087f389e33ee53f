/**
 * vmstack's cache directory and a content-addressed store inside it.
 *
 * Layout under the cache root:
 *   objects/<aa>/<sha256>        content-addressed blobs (key = sha256 of the bytes)
 *   builds/<recipe-key><ext>     outputs of buildOnce(), keyed by a hash of their inputs
 *   kernels/                     provisioned guest kernels (kernel-fetch.ts)
 *
 * Every write goes to a temporary file in the same directory and is renamed into place
 * (rename(2) is atomic within a file system), so a killed process never leaves a half entry
 * under a final name, and two processes writing the same key race harmlessly: both write the
 * same bytes and the last rename wins.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { readdirOrEmpty } from "../lib/fs.js";

export type Env = Readonly<Record<string, string | undefined>>;

/** `$VMSTACK_CACHE`, else `$XDG_CACHE_HOME/vmstack`, else `~/.cache/vmstack` (XDG base dir spec). */
export function cacheRoot(env: Env = process.env): string {
  const explicit = env["VMSTACK_CACHE"];
  if (explicit !== undefined && explicit !== "") return explicit;
  const xdg = env["XDG_CACHE_HOME"];
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
  if (xdg !== undefined && xdg.startsWith("/")) return join(xdg, "vmstack");
  return join(env["HOME"] ?? homedir(), ".cache", "vmstack");
}

export function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/**
 * A stable hash of a recipe (any JSON-able value): object keys are sorted so that the same inputs
 * always give the same key, whatever order they were written in.
 */
export function recipeKey(recipe: unknown): string {
  return sha256(canonicalJson(recipe));
}

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (value === undefined) return "null";
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** A temporary name next to `path`, unique per process and call. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.tmp-${process.pid}-${randomBytes(6).toString("hex")}`);
}

const TEMP_NAME = /^\.tmp-(\d+)-[0-9a-f]+$/;

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes temporary entries in `dir` left by vmstack processes that no longer exist (killed with
 * SIGKILL, or the machine lost power, so they could not clean up). Entries of live processes are
 * theirs and stay. Returns the names removed.
 */
export async function sweepStaleTemps(dir: string): Promise<string[]> {
  const names = await readdirOrEmpty(dir);
  const stale = names.filter((n) => {
    const m = TEMP_NAME.exec(n);
    return m?.[1] !== undefined && Number(m[1]) !== process.pid && !processExists(Number(m[1]));
  });
  await Promise.all(stale.map((n) => rm(join(dir, n), { recursive: true, force: true })));
  return stale;
}

/** Build outputs not used for this long are removed when something new is built. */
export const BUILD_MAX_UNUSED_MS = 14 * 24 * 3600 * 1000;

/**
 * Removes build outputs in `dir` whose mtime (refreshed on every cache hit, see buildOnce) is
 * older than `maxUnusedMs` before `now`. Without this, every change to the agent or init would
 * leave another few-MB initrd behind forever. Returns the names removed.
 */
export async function pruneUnused(dir: string, maxUnusedMs: number, now = Date.now()): Promise<string[]> {
  const names = await readdirOrEmpty(dir);
  const removed: string[] = [];
  for (const name of names) {
    if (TEMP_NAME.test(name)) continue;
    const path = join(dir, name);
    try {
      if (now - (await stat(path)).mtimeMs > maxUnusedMs) {
        await rm(path, { recursive: true, force: true });
        removed.push(name);
      }
    } catch (e) {
      // Another process pruned it first.
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
  return removed;
}

/** Writes `bytes` to `path` atomically (temp file + rename). */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

/** Marks a cache entry as used now (its mtime is its last use, for pruning the least recently used). */
export async function touch(path: string): Promise<void> {
  const now = new Date();
  try {
    await utimes(path, now, now);
  } catch (e) {
    // A read-only cache still serves hits; only pruning loses precision.
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EROFS" && code !== "EACCES" && code !== "EPERM") throw e;
  }
}

export interface BuildResult {
  /** Where the output is. */
  readonly path: string;
  /** The recipe key it is stored under. */
  readonly key: string;
  /** True when it was already there and nothing was built. */
  readonly cached: boolean;
}

export class ContentStore {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** The path an object with this key has (whether or not it exists). */
  objectPath(key: string): string {
    if (!/^[0-9a-f]{64}$/.test(key)) throw new RangeError(`not a sha256 key: '${key}'`);
    return join(this.root, "objects", key.slice(0, 2), key);
  }

  async putBytes(bytes: Uint8Array | string): Promise<string> {
    const key = sha256(bytes);
    const path = this.objectPath(key);
    if (!(await exists(path))) await writeFileAtomic(path, bytes);
    return key;
  }

  async putFile(source: string): Promise<string> {
    const key = await sha256File(source);
    const path = this.objectPath(key);
    if (!(await exists(path))) {
      await mkdir(dirname(path), { recursive: true });
      const tmp = tempPathFor(path);
      try {
        await copyFile(source, tmp);
        await rename(tmp, path);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
    }
    return key;
  }

  /** The path of the object with this key, or undefined when the store does not hold it. */
  async get(key: string): Promise<string | undefined> {
    const path = this.objectPath(key);
    return (await exists(path)) ? path : undefined;
  }

  /** Where buildOnce() keeps the output of a recipe. */
  buildPath(key: string, ext = ""): string {
    return join(this.root, "builds", key + ext);
  }

  /**
   * Builds once per recipe: if the output of `recipe` exists, returns it (`cached: true`) without
   * calling `build`, and refreshes its mtime as its last use. Otherwise outputs unused for
   * BUILD_MAX_UNUSED_MS are pruned, and `build` writes to the temporary path it is given, which is then
   * renamed into place. Same inputs → same key → no rebuild.
   */
  async buildOnce(
    recipe: unknown,
    build: (tmpPath: string) => Promise<void>,
    options: { readonly ext?: string } = {},
  ): Promise<BuildResult> {
    const key = recipeKey(recipe);
    const path = this.buildPath(key, options.ext ?? "");
    if (await exists(path)) {
      await touch(path);
      return { path, key, cached: true };
    }
    await mkdir(dirname(path), { recursive: true });
    await sweepStaleTemps(dirname(path));
    await pruneUnused(dirname(path), BUILD_MAX_UNUSED_MS);
    const tmp = tempPathFor(path);
    try {
      await build(tmp);
      await rename(tmp, path);
    } catch (e) {
      await rm(tmp, { force: true, recursive: true });
      throw e;
    }
    return { path, key, cached: false };
  }
}

/** The store at the cache root for this environment. */
export function openCache(env: Env = process.env): ContentStore {
  return new ContentStore(cacheRoot(env));
}

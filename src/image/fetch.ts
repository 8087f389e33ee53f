/**
 * `vmstack fetch RECIPE`: the only phase that touches the network. Every input goes into the
 * content-addressed store (objects/<aa>/<sha256>), hash-verified; the lock file next to the recipe
 * records what was found, and the build then works offline from the store alone.
 *
 * Downloads resume: bytes go to partial/<sha256> in the cache and a later fetch continues with an
 * HTTP Range request (RFC 9110 §14.2) where it stopped. A server that ignores Range (200 instead of
 * 206) restarts the file from zero.
 */
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { VmstackError } from "../lib/errors.js";
import { runCommand } from "../lib/process.js";
import { sha256File, writeFileAtomic, type ContentStore } from "./cache.js";
import { debianRootfs } from "./rootfs.js";
import type { InputSource, LockFile, Recipe } from "./recipe.js";

export interface FetchOptions {
  readonly store: ContentStore;
  /** Relative input paths are relative to the recipe's directory. */
  readonly recipeDir: string;
  readonly agentPath: string;
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: (line: string) => void;
}

export function lockPathFor(recipePath: string): string {
  return recipePath.replace(/\.json$/, "") + ".lock.json";
}

export function hashMismatch(what: string, expected: string, actual: string): VmstackError {
  return new VmstackError("HASH_MISMATCH", `${what}: sha256 mismatch: expected ${expected}, got ${actual}`, { facts: { expected, actual } });
}

export async function fetchRecipe(recipe: Recipe, o: FetchOptions): Promise<LockFile> {
  const inputs: Record<string, LockFile["inputs"][string]> = {};
  for (const [name, src] of recipe.inputs) {
    o.signal?.throwIfAborted();
    inputs[name] = await fetchInput(name, src, o);
    o.onProgress?.(`${name}: ${inputs[name].sha256.slice(0, 16)}… (${inputs[name].size} bytes)`);
  }
  let image: LockFile["image"];
  if (recipe.image.kind === "debian") {
    o.onProgress?.(`image: Debian ${recipe.image.release} with ${recipe.image.packages.join(", ") || "no extra packages"}`);
    const r = await debianRootfs(
      o.store,
      { release: recipe.image.release, packages: recipe.image.packages, format: "qcow2" },
      { agentPath: o.agentPath, signal: o.signal, ...(o.onProgress ? { onProgress: o.onProgress } : {}) },
    );
    image = { path: r.path };
  } else if (recipe.image.kind === "path") {
    image = { path: resolve(o.recipeDir, recipe.image.path) };
  }
  return { version: 1, inputs, ...(image ? { image } : {}) };
}

export async function writeLockFile(path: string, lock: LockFile): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(lock, null, 2) + "\n");
}

async function fetchInput(name: string, src: InputSource, o: FetchOptions): Promise<LockFile["inputs"][string]> {
  switch (src.kind) {
    case "path": {
      const p = resolve(o.recipeDir, src.path);
      let st;
      try {
        st = await stat(p);
      } catch {
        throw new VmstackError("INPUT_MISSING", `input '${name}': no file or directory at ${p}`, { facts: { input: name, path: p } });
      }
      if (st.isDirectory()) {
        const key = await putTree(o.store, p);
        return { sha256: key, size: (await stat(o.store.objectPath(key))).size, kind: "tree", source: `path:${src.path}` };
      }
      const key = await o.store.putFile(p);
      return { sha256: key, size: st.size, kind: "file", source: `path:${src.path}` };
    }
    case "url": {
      const size = await download(name, src.url, src.sha256, o);
      return { sha256: src.sha256, size, kind: "file", source: src.url };
    }
    case "debian": {
      const spec = src.version ? `${src.package}=${src.version}` : src.package;
      await mkdir(join(o.store.root, "work"), { recursive: true });
      const work = await mkdtemp(join(o.store.root, "work", "apt-"));
      try {
        o.onProgress?.(`${name}: apt-get download ${spec}`);
        await runCommand(["apt-get", "download", "-q", spec], "apt-get download", { cwd: work });
        const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
        if (!deb) throw new VmstackError("FETCH_FAILED", `input '${name}': apt-get download ${spec} produced no .deb`);
        const actual = await sha256File(join(work, deb));
        if (src.sha256 && actual !== src.sha256) throw hashMismatch(`input '${name}' (Debian package ${spec})`, src.sha256, actual);
        await o.store.putFile(join(work, deb));
        return { sha256: actual, size: (await stat(join(work, deb))).size, kind: "file", source: `debian:${deb}` };
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    }
  }
}

/** A directory as a deterministic tar (sorted, zero mtimes and owners): same tree, same hash. */
async function putTree(store: ContentStore, dir: string): Promise<string> {
  await mkdir(join(store.root, "work"), { recursive: true });
  const work = await mkdtemp(join(store.root, "work", "tree-"));
  try {
    const tar = join(work, "tree.tar");
    await runCommand(
      ["tar", "-c", "-f", tar, "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--format=gnu", "-C", dir, "."],
      "tar",
    );
    return await store.putFile(tar);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function download(name: string, url: string, sha256: string, o: FetchOptions): Promise<number> {
  const final = o.store.objectPath(sha256);
  if (existsSync(final)) {
    const actual = await sha256File(final);
    if (actual === sha256) return (await stat(final)).size;
    // A corrupted object is not a cache hit: fetch it again.
    o.onProgress?.(`${name}: cached copy is corrupt (sha256 ${actual}); downloading again`);
    await rm(final, { force: true });
  }
  const partial = join(o.store.root, "partial", sha256);
  await mkdir(dirname(partial), { recursive: true });
  let have = existsSync(partial) ? (await stat(partial)).size : 0;
  const res = await fetch(url, { ...(have > 0 ? { headers: { Range: `bytes=${have}-` } } : {}), ...(o.signal ? { signal: o.signal } : {}) });
  if (res.status === 416) {
    // The partial file is already complete (or longer than the resource): verify it below.
  } else if (!res.ok || !res.body) {
    throw new VmstackError("FETCH_FAILED", `input '${name}': GET ${url}: HTTP ${res.status} ${res.statusText}`, { facts: { url, status: res.status } });
  } else {
    if (res.status !== 206) have = 0;
    const total = Number(res.headers.get("content-length") ?? NaN) + have;
    if (have > 0) o.onProgress?.(`${name}: resuming at ${have} bytes`);
    let got = have;
    let last = 0;
    const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
    body.on("data", (c: Buffer) => {
      got += c.length;
      const now = Date.now();
      if (now - last > 1000) {
        last = now;
        o.onProgress?.(`${name}: ${(got / 1048576).toFixed(1)} MiB${Number.isFinite(total) ? ` of ${(total / 1048576).toFixed(1)} MiB` : ""}`);
      }
    });
    await pipeline(body, createWriteStream(partial, { flags: have > 0 ? "a" : "w" }));
  }
  const hash = createHash("sha256");
  await pipeline(createReadStream(partial), hash);
  const actual = hash.digest("hex");
  if (actual !== sha256) {
    await rm(partial, { force: true });
    throw hashMismatch(`input '${name}' (${url})`, sha256, actual);
  }
  await mkdir(dirname(final), { recursive: true });
  await rename(partial, final);
  return (await stat(final)).size;
}

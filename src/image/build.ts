/**
 * `vmstack build RECIPE`: runs the recipe's script in a throwaway VM, offline, from the inputs the
 * lock file names, and keeps /out in the cache under a key made of everything that determines it
 * (script, outputs, image, input hashes). An unchanged build is a cache hit and boots nothing.
 *
 * Before anything boots, every input is checked: missing ones are named all together, and a
 * cached object whose bytes no longer hash to the lock's sha256 is refused with both hashes.
 * The VM itself is injected (`BuildRunner`), so this file does not depend on the vmm layer.
 */
import { existsSync } from "node:fs";
import { link, copyFile, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { runCommand } from "../lib/process.js";
import { sha256File, recipeKey, type ContentStore } from "./cache.js";
import { hashTree } from "./disk-tree.js";
import { hashMismatch } from "./fetch.js";
import type { LockFile, Recipe } from "./recipe.js";

export interface BuildRunRequest {
  /** A root image to run in (absent: vmstack's busybox guest). */
  readonly rootImage?: { readonly path: string; readonly format: "raw" | "qcow2" };
  /** Host directory whose contents appear at /in. */
  readonly inputsDir: string;
  /** Host directory that receives /out, only when the script succeeds. */
  readonly outputDir: string;
  readonly script: string;
  readonly memoryMiB: number;
  readonly timeoutMs?: number;
  /** Only when the recipe says `"network": true`; otherwise the VM has no network card. */
  readonly network: boolean;
  readonly signal?: AbortSignal | undefined;
}

export type BuildRunner = (req: BuildRunRequest) => Promise<{ readonly exitCode: number | null; readonly signal?: string | null; readonly timedOut: boolean }>;

export interface BuildOptions {
  readonly store: ContentStore;
  readonly recipeDir: string;
  readonly runner: BuildRunner;
  readonly signal?: AbortSignal | undefined;
}

export interface BuildOutcome {
  readonly path: string;
  readonly key: string;
  readonly cached: boolean;
  /** Content hash of the output tree (see hashTree). */
  readonly outputHash: string;
}

const BUILD_RECIPE_VERSION = 1;

/** Everything the build needs, checked: missing inputs named together, corrupt objects refused. */
export async function checkBuildInputs(recipe: Recipe, lock: LockFile | undefined, o: Pick<BuildOptions, "store" | "recipeDir">): Promise<void> {
  const missing: string[] = [];
  for (const [name, src] of recipe.inputs) {
    const entry = lock?.inputs[name];
    if (!entry) missing.push(`${name} (not in the lock file)`);
    else if (!existsSync(o.store.objectPath(entry.sha256))) missing.push(`${name} (sha256 ${entry.sha256} not in the cache)`);
    else if (src.kind === "path" && entry.kind === "file") {
      // A local file edited since fetch: the lock no longer describes it.
      const p = resolve(o.recipeDir, src.path);
      if (!existsSync(p)) missing.push(`${name} (no file at ${p})`);
      else {
        const now = await sha256File(p);
        if (now !== entry.sha256) throw hashMismatch(`input '${name}' (${p}) changed since 'vmstack fetch'`, entry.sha256, now);
      }
    }
  }
  if (recipe.image.kind !== "busybox") {
    const img = lock?.image?.path;
    if (!img || !existsSync(img)) missing.push(`the guest image (${recipe.image.kind === "debian" ? `Debian ${recipe.image.release}` : recipe.image.path})`);
  }
  if (missing.length > 0) {
    throw new VmstackError("INPUTS_MISSING", `missing build inputs (run 'vmstack fetch' first; the build never downloads): ${missing.join("; ")}`, {
      facts: { missing },
    });
  }
  for (const [name] of recipe.inputs) {
    const entry = lock!.inputs[name]!;
    const actual = await sha256File(o.store.objectPath(entry.sha256));
    if (actual !== entry.sha256) throw hashMismatch(`cached input '${name}' is corrupt (run 'vmstack fetch' again)`, entry.sha256, actual);
  }
}

export async function buildRecipe(recipe: Recipe, lock: LockFile | undefined, o: BuildOptions): Promise<BuildOutcome> {
  await checkBuildInputs(recipe, lock, o);
  const image = lock?.image?.path;
  const imageId = image === undefined ? "busybox" : await imageIdentity(image);
  const key = {
    kind: "build",
    v: BUILD_RECIPE_VERSION,
    script: recipe.script,
    outputs: recipe.outputs,
    memoryMiB: recipe.memoryMiB,
    network: recipe.network,
    image: imageId,
    inputs: Object.fromEntries([...recipe.inputs.keys()].map((n) => [n, lock!.inputs[n]!.sha256])),
  };
  const r = await o.store.buildOnce(
    key,
    async (tmp) => {
      await mkdir(join(o.store.root, "work"), { recursive: true });
      const work = await mkdtemp(join(o.store.root, "work", "build-"));
      try {
        const inDir = join(work, "in");
        await mkdir(inDir);
        for (const [name] of recipe.inputs) await stageInput(o.store, lock!.inputs[name]!, join(inDir, name));
        const result = await o.runner({
          ...(image !== undefined ? { rootImage: { path: image, format: image.endsWith(".qcow2") ? "qcow2" : "raw" } } : {}),
          inputsDir: inDir,
          outputDir: tmp,
          script: recipe.script,
          memoryMiB: recipe.memoryMiB,
          network: recipe.network,
          ...(recipe.timeoutSeconds ? { timeoutMs: recipe.timeoutSeconds * 1000 } : {}),
          signal: o.signal,
        });
        o.signal?.throwIfAborted();
        if (result.exitCode !== 0) {
          const how = result.timedOut ? "timed out" : result.signal ? `was killed by ${result.signal}` : `exited with status ${result.exitCode}`;
          throw new VmstackError("BUILD_FAILED", `build '${recipe.name}': the script ${how}; nothing was kept`, { facts: { exitCode: result.exitCode } });
        }
        const absent = recipe.outputs.filter((n) => !existsSync(join(tmp, n)));
        if (absent.length > 0) throw new VmstackError("BUILD_FAILED", `build '${recipe.name}': the script did not produce ${absent.map((n) => `/out/${n}`).join(", ")}`);
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    },
    { ext: ".out" },
  );
  return { ...r, outputHash: await hashTree(r.path) };
}

/** A cached image is named by its content key already; another image by path, size and mtime. */
async function imageIdentity(path: string): Promise<string> {
  const m = /\/builds\/([0-9a-f]{64})\.[a-z0-9]+$/.exec(path);
  if (m?.[1]) return m[1];
  const st = await stat(path);
  return recipeKey({ path, size: st.size, mtimeMs: st.mtimeMs });
}

async function stageInput(store: ContentStore, entry: LockFile["inputs"][string], dest: string): Promise<void> {
  const obj = store.objectPath(entry.sha256);
  if (entry.kind === "tree") {
    await mkdir(dest, { recursive: true });
    await runCommand(["tar", "-x", "-f", obj, "-C", dest], "tar");
    return;
  }
  try {
    // Same file system: a hard link costs nothing. The build VM gets a copy over tar anyway.
    await link(obj, dest);
  } catch {
    await copyFile(obj, dest);
  }
}

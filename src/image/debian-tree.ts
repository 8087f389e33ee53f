/**
 * The Debian bootstrap result, cached by content: `mmdebstrap` (or `debootstrap`) for a release
 * and a package list, kept as one tar file in `builds/<key>.tar`. This is the slow step (tens of
 * seconds, downloads included), so every image made from the same release and packages — a
 * different file system, label, size, GRUB menu or agent — reuses it instead of bootstrapping again.
 * The tar keeps owners, modes and device nodes (`--numeric-owner`); unpacking it needs root, as
 * the bootstrap itself does here (mknod and chroot in the target).
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { spawnManaged } from "../lib/process.js";
import { runChild } from "../lib/run-child.js";
import type { BuildResult, ContentStore } from "./cache.js";

export interface DebianTreeSpec {
  readonly release: string;
  readonly packages: readonly string[];
}

export type BootstrapTool = "mmdebstrap" | "debootstrap";

/** Bump when the way the tree is made changes, so old cached trees are not reused. */
const DEBIAN_TREE_VERSION = 1;

/** Debian release names and package names (Debian policy §5.6.1: lowercase, digits, + - .). */
export function checkDebianSpec(spec: DebianTreeSpec): void {
  if (!/^[a-z][a-z0-9-]*$/.test(spec.release)) throw new VmstackError("BAD_RECIPE", `'${spec.release}' is not a Debian release name (e.g. bookworm)`);
  for (const p of spec.packages) {
    if (!/^[a-z0-9][a-z0-9+.-]+$/.test(p)) throw new VmstackError("BAD_RECIPE", `'${p}' is not a Debian package name`);
  }
}

export function bootstrapTool(): BootstrapTool | undefined {
  for (const dir of ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]) {
    if (existsSync(join(dir, "mmdebstrap"))) return "mmdebstrap";
  }
  for (const dir of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (existsSync(join(dir, "debootstrap"))) return "debootstrap";
  }
  return undefined;
}

/** The bootstrap argv; mmdebstrap writes the tar itself, debootstrap a directory (`target`). */
export function bootstrapArgv(tool: BootstrapTool, spec: DebianTreeSpec, target: string): string[] {
  const include = [...new Set(spec.packages)].sort().join(",");
  if (tool === "mmdebstrap") {
    // --variant=apt: essential packages + apt. The output name has no extension (a temporary
    // name in builds/), so the format is given rather than guessed from it.
    return ["mmdebstrap", "--variant=apt", "--format=tar", ...(include ? [`--include=${include}`] : []), spec.release, target];
  }
  return ["debootstrap", "--variant=minbase", ...(include ? [`--include=${include}`] : []), spec.release, target];
}

/** The cache recipe of a tree: what the bootstrap is given, and nothing about the image. */
export function debianTreeRecipe(spec: DebianTreeSpec): unknown {
  return { kind: "debian-tree", v: DEBIAN_TREE_VERSION, release: spec.release, packages: [...new Set(spec.packages)].sort() };
}

export interface ProgressOptions {
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: ((line: string) => void) | undefined;
}

/** The bootstrapped tree as a tar in the cache: built once per release and package list. */
export async function debianTree(store: ContentStore, spec: DebianTreeSpec, o: ProgressOptions = {}): Promise<BuildResult & { tool: string }> {
  checkDebianSpec(spec);
  const tool = bootstrapTool();
  const result = await store.buildOnce(
    debianTreeRecipe(spec),
    async (tmp) => {
      if (!tool) throw new VmstackError("NO_BOOTSTRAP_TOOL", "building a Debian image needs mmdebstrap or debootstrap: apt-get install mmdebstrap (or ./setup)");
      o.onProgress?.(`bootstrapping Debian ${spec.release} with ${tool} (${[...spec.packages].sort().join(", ") || "no extra packages"})`);
      if (tool === "mmdebstrap") {
        await runLogged(bootstrapArgv(tool, spec, tmp), tool, o);
        return;
      }
      await mkdir(join(store.root, "work"), { recursive: true });
      const work = await mkdtemp(join(store.root, "work", "tree-"));
      try {
        await runLogged(bootstrapArgv(tool, spec, work), tool, o);
        await runChild(["tar", "--numeric-owner", "-C", work, "-cf", tmp, "."], { signal: o.signal });
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    },
    { ext: ".tar" },
  );
  return { ...result, tool: tool ?? "none" };
}

/** Unpacks a cached tree into `dir` (which must exist), keeping owners, modes and device nodes. */
export async function unpackTree(tar: string, dir: string, signal?: AbortSignal): Promise<void> {
  await runChild(["tar", "--numeric-owner", "-p", "-C", dir, "-xf", tar], { signal });
}

/** Runs the bootstrap tool, passing its output lines to onProgress; abortable. */
async function runLogged(argv: string[], label: string, o: ProgressOptions): Promise<void> {
  const child = spawnManaged(argv, { label, stdio: ["ignore", "pipe", "pipe"] });
  const forward = (c: Buffer): void => {
    for (const line of c.toString().split("\n")) if (line.trim()) o.onProgress?.(line.trim());
  };
  child.process.stdout?.on("data", forward);
  child.process.stderr?.on("data", forward);
  const onAbort = (): void => void child.stop(2000);
  o.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const exit = await child.exited;
    o.signal?.throwIfAborted();
    if (exit.code !== 0) {
      throw new VmstackError("BOOTSTRAP_FAILED", `${label} failed (${exit.signal ?? `exit ${exit.code}`}): ${child.stderrTail.lines(5).join(" | ")}`, {
        facts: { argv },
      });
    }
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * A Debian root file system as a disk image, built from Debian's packages for a release and a
 * package list, with vmstack's guest agent installed (/usr/local/sbin/vmstack-agent), cached by
 * recipe: the same release + packages + agent build once.
 *
 * The tree is made by mmdebstrap (apt's own resolver, through apt's configured sources and proxy
 * settings; faster than debootstrap) or, when it is missing, debootstrap. Both need root here
 * (mknod, chroot in the target); mmdebstrap's `unshare` mode would work without root given
 * subordinate uid ranges. The image itself is made without root: `mkfs.ext4 -d`.
 */
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { spawnManaged } from "../lib/process.js";
import { sha256File, type BuildResult, type ContentStore } from "./cache.js";
import { createDisk, imageSizeFor, treeSize, type DiskFormat } from "./disk.js";

export interface DebianRootfsSpec {
  readonly release: string;
  readonly packages: readonly string[];
  readonly format: DiskFormat;
  /** Absent: the tree's size plus room (see imageSizeFor) and `extraBytes`. */
  readonly sizeBytes?: number;
  /** Free room to leave in an auto-sized image (default 256 MiB: builds write into it). */
  readonly extraBytes?: number;
  readonly label?: string;
}

export const ROOTFS_LABEL = "vmstack-root";
/** Where the agent lives in a vmstack Debian image. */
export const ROOTFS_AGENT_PATH = "/usr/local/sbin/vmstack-agent";
const ROOTFS_RECIPE_VERSION = 1;

/** Debian release names and package names (Debian policy §5.6.1: lowercase, digits, + - .). */
export function checkDebianSpec(spec: Pick<DebianRootfsSpec, "release" | "packages">): void {
  if (!/^[a-z][a-z0-9-]*$/.test(spec.release)) throw new VmstackError("BAD_RECIPE", `'${spec.release}' is not a Debian release name (e.g. bookworm)`);
  for (const p of spec.packages) {
    if (!/^[a-z0-9][a-z0-9+.-]+$/.test(p)) throw new VmstackError("BAD_RECIPE", `'${p}' is not a Debian package name`);
  }
}

export function bootstrapTool(): "mmdebstrap" | "debootstrap" | undefined {
  for (const dir of ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]) {
    if (existsSync(join(dir, "mmdebstrap"))) return "mmdebstrap";
  }
  for (const dir of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (existsSync(join(dir, "debootstrap"))) return "debootstrap";
  }
  return undefined;
}

export function bootstrapArgv(tool: "mmdebstrap" | "debootstrap", spec: DebianRootfsSpec, target: string): string[] {
  const include = [...spec.packages].sort().join(",");
  if (tool === "mmdebstrap") {
    // --variant=apt: essential packages + apt (no init system: the agent is the guest's init).
    return ["mmdebstrap", "--variant=apt", ...(include ? [`--include=${include}`] : []), spec.release, target];
  }
  return ["debootstrap", "--variant=minbase", ...(include ? [`--include=${include}`] : []), spec.release, target];
}

export async function debianRootfs(
  store: ContentStore,
  spec: DebianRootfsSpec,
  /** agentPath: the static vmstack-agent binary to install (guestArtifacts().agent). */
  options: { agentPath: string; signal?: AbortSignal | undefined; onProgress?: (line: string) => void },
): Promise<BuildResult & { tool: string }> {
  checkDebianSpec(spec);
  const tool = bootstrapTool();
  const agent = options.agentPath;
  if (!existsSync(agent)) throw new VmstackError("GUEST_PIECE_MISSING", `the guest agent is missing at ${agent}: npm run build`);
  const recipe = {
    kind: "debian-rootfs",
    v: ROOTFS_RECIPE_VERSION,
    release: spec.release,
    packages: [...new Set(spec.packages)].sort(),
    format: spec.format,
    sizeBytes: spec.sizeBytes,
    extraBytes: spec.extraBytes,
    label: spec.label ?? ROOTFS_LABEL,
    agent: await sha256File(agent),
  };
  const result = await store.buildOnce(
    recipe,
    async (tmp) => {
      if (!tool) {
        throw new VmstackError("NO_BOOTSTRAP_TOOL", "building a Debian image needs mmdebstrap or debootstrap: apt-get install mmdebstrap (or ./setup)");
      }
      await mkdir(join(store.root, "work"), { recursive: true });
      const work = await mkdtemp(join(store.root, "work", "rootfs-"));
      try {
        const tree = join(work, "root");
        await runLogged(bootstrapArgv(tool, spec, tree), tool, options);
        await installAgent(tree, agent, recipe);
        const size = spec.sizeBytes ?? imageSizeFor(await treeSize(tree)) + (spec.extraBytes ?? 256 * 1024 * 1024);
        options.onProgress?.(`making the ${spec.format} image (${Math.round(size / 1024 / 1024)} MiB)`);
        await createDisk(tmp, { format: spec.format, sizeBytes: size, fs: { type: "ext4", label: recipe.label, from: tree } });
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    },
    { ext: `.${spec.format}` },
  );
  return { ...result, tool: tool ?? "none" };
}

async function installAgent(tree: string, agent: string, recipe: unknown): Promise<void> {
  const dest = join(tree, ROOTFS_AGENT_PATH);
  await mkdir(join(dest, ".."), { recursive: true });
  await copyFile(agent, dest);
  await chmod(dest, 0o755);
  // What this image is, for people and for `vmstack image` listings.
  await writeFile(join(tree, "etc", "vmstack-image.json"), JSON.stringify(recipe, null, 2) + "\n");
}

/** Runs the bootstrap tool, passing its output lines to onProgress; abortable. */
async function runLogged(argv: string[], label: string, options: { signal?: AbortSignal | undefined; onProgress?: (line: string) => void }): Promise<void> {
  const child = spawnManaged(argv, { label, stdio: ["ignore", "pipe", "pipe"] });
  const forward = (c: Buffer): void => {
    for (const line of c.toString().split("\n")) if (line.trim()) options.onProgress?.(line.trim());
  };
  child.process.stdout?.on("data", forward);
  child.process.stderr?.on("data", forward);
  const onAbort = (): void => void child.stop(2000);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const exit = await child.exited;
    options.signal?.throwIfAborted();
    if (exit.code !== 0) {
      throw new VmstackError("BOOTSTRAP_FAILED", `${label} failed (${exit.signal ?? `exit ${exit.code}`}): ${child.stderrTail.lines(5).join(" | ")}`, {
        facts: { argv },
      });
    }
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

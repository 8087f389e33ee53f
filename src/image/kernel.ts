/**
 * Which guest kernel a VM boots, and where its modules are.
 *
 * Order (first that applies wins): an explicit path (`--kernel PATH`), the VMSTACK_KERNEL
 * environment variable, the kernel `vmstack kernel fetch` provisioned into the cache. Otherwise
 * KERNEL_MISSING, whose message says to run `vmstack kernel fetch`.
 *
 * A provisioned kernel lives in <cache>/kernels/<release>/ (see kernel-fetch.ts) with a
 * kernel.json manifest written last, so a directory without one is an interrupted fetch and is
 * ignored. `<cache>/kernels/current` names the release `resolveKernel` uses.
 */
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { cacheRoot, type Env } from "./cache.js";
import { hasPvhNote } from "./pvh.js";
import { kernelFileKind, parseBzImage, readHead, releaseOfVmlinux } from "./vmlinux.js";

export type KernelSource = "argument" | "env" | "cache";

export interface ResolvedKernel {
  readonly release: string;
  /** What to give QEMU's -kernel: the vmlinux (PVH boot, faster under TCG) when there is one. */
  readonly kernelPath: string;
  readonly bzImagePath?: string;
  readonly vmlinuxPath?: string;
  /** /lib/modules/<release> of this kernel (holds modules.dep), when known. */
  readonly modulesDir?: string;
  readonly configPath?: string;
  readonly source: KernelSource;
}

/** The manifest of a provisioned kernel; paths relative to its directory. */
export interface KernelManifest {
  readonly release: string;
  readonly package: string;
  readonly packageVersion: string;
  readonly bzImage: string;
  readonly vmlinux: string;
  readonly modulesDir: string;
  readonly config: string;
}

export const KERNEL_ENV = "VMSTACK_KERNEL";
export const MANIFEST_NAME = "kernel.json";

export function kernelsDir(env: Env): string {
  return join(cacheRoot(env), "kernels");
}

export function currentPointerPath(env: Env): string {
  return join(kernelsDir(env), "current");
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return false;
    throw e;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return false;
    throw e;
  }
}

export function parseKernelManifest(value: unknown, source: string): KernelManifest {
  const keys = ["release", "package", "packageVersion", "bzImage", "vmlinux", "modulesDir", "config"] as const;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new VmstackError("KERNEL_MANIFEST_INVALID", `${source}: expected a JSON object`, { facts: { source } });
  }
  const record = value as Record<string, unknown>;
  for (const k of Object.keys(record)) {
    if (!(keys as readonly string[]).includes(k)) {
      throw new VmstackError("KERNEL_MANIFEST_INVALID", `${source}: unknown key '${k}'`, { facts: { source, key: k } });
    }
  }
  for (const k of keys) {
    if (typeof record[k] !== "string" || record[k] === "") {
      throw new VmstackError("KERNEL_MANIFEST_INVALID", `${source}: '${k}' must be a non-empty string`, { facts: { source, key: k } });
    }
  }
  return record as unknown as KernelManifest;
}

/** The provisioned kernel in `dir` (a <cache>/kernels/<release> directory), if complete. */
export async function readProvisionedKernel(dir: string, source: KernelSource = "cache"): Promise<ResolvedKernel | undefined> {
  const manifestPath = join(dir, MANIFEST_NAME);
  let text: string;
  try {
    text = await readFile(manifestPath, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new VmstackError("KERNEL_MANIFEST_INVALID", `${manifestPath}: not JSON (${String(e)})`, { cause: e });
  }
  const m = parseKernelManifest(json, manifestPath);
  const k: ResolvedKernel = {
    release: m.release,
    kernelPath: join(dir, m.vmlinux),
    bzImagePath: join(dir, m.bzImage),
    vmlinuxPath: join(dir, m.vmlinux),
    modulesDir: join(dir, m.modulesDir),
    configPath: join(dir, m.config),
    source,
  };
  // A manifest is written last, but the files could have been removed since: then the kernel is
  // not there, and a fetch repairs it.
  return (await isFile(k.kernelPath)) && (await isDir(k.modulesDir ?? "")) ? k : undefined;
}

/** The kernel `vmstack kernel fetch` left in the cache, if any. */
export async function provisionedKernel(env: Env): Promise<ResolvedKernel | undefined> {
  let release: string;
  try {
    release = (await readFile(currentPointerPath(env), "utf8")).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  if (release === "" || release.includes("/")) return undefined;
  return readProvisionedKernel(join(kernelsDir(env), release));
}

async function findModulesDir(kernelFile: string, release: string, env: Env): Promise<string | undefined> {
  const dir = dirname(kernelFile);
  const candidates = [
    // <root>/boot/vmlinuz-<release> → <root>/lib/modules/<release> (a host /boot, or dpkg-deb -x output)
    ...(basename(dir) === "boot" ? [join(dir, "..", "lib/modules", release), join(dir, "..", "usr/lib/modules", release)] : []),
    join(dir, "lib/modules", release),
    join(dir, "modules", release),
    join(dir, "pkg/lib/modules", release),
    // Modules only load into the exact release they were built for (vermagic), so any copy of
    // the same release works: the provisioned one, then the host's.
    join(kernelsDir(env), release, "pkg/lib/modules", release),
    join("/lib/modules", release),
  ];
  for (const c of candidates) if (await isDir(c)) return resolve(c);
  return undefined;
}

/** Inspects a kernel file given by the user (bzImage or vmlinux) and finds its modules. */
export async function inspectKernelFile(path: string, source: KernelSource, env: Env = process.env): Promise<ResolvedKernel> {
  const abs = resolve(path);
  const what = source === "env" ? `${abs} (from ${KERNEL_ENV})` : abs;
  if (!(await isFile(abs))) {
    throw new VmstackError("KERNEL_NOT_FOUND", `kernel ${what} does not exist or is not a file`, { facts: { path: abs, source } });
  }
  // A file inside a provisioned kernel's directory: use its manifest (release, modules, vmlinux).
  for (const dir of [dirname(abs), dirname(dirname(abs)), dirname(dirname(dirname(abs)))]) {
    const k = await readProvisionedKernel(dir, source);
    if (k !== undefined && (abs === k.vmlinuxPath || abs === k.bzImagePath)) return { ...k, kernelPath: abs };
  }
  const kind = kernelFileKind(await readHead(abs, 0x300));
  if (kind === undefined) {
    throw new VmstackError("KERNEL_INVALID", `kernel ${what} is neither a bzImage nor a vmlinux ELF file`, { facts: { path: abs, source } });
  }
  // QEMU boots an ELF kernel only through its PVH entry; without the note it fails with
  // "Error loading uncompressed kernel without PVH ELF Note". Say so before starting a VM.
  if (kind === "vmlinux" && !(await hasPvhNote(abs))) {
    throw new VmstackError(
      "KERNEL_INVALID",
      `kernel ${what} is an ELF file without the PVH entry note (the kernel needs CONFIG_PVH=y); pass its bzImage instead`,
      { facts: { path: abs, source } },
    );
  }
  const image = await readFile(abs);
  const release = kind === "bzImage" ? parseBzImage(image, abs).release : releaseOfVmlinux(image);
  if (release === undefined) {
    throw new VmstackError("KERNEL_INVALID", `kernel ${what}: cannot find its release (no version string)`, { facts: { path: abs, source } });
  }
  const modulesDir = await findModulesDir(abs, release, env);
  return {
    release,
    kernelPath: abs,
    ...(kind === "bzImage" ? { bzImagePath: abs } : { vmlinuxPath: abs }),
    ...(modulesDir === undefined ? {} : { modulesDir }),
    source,
  };
}

export interface ResolveKernelOptions {
  readonly kernelPath?: string | undefined;
  readonly env: Env;
}

/** The guest kernel to boot (see the file comment for the order). */
export async function resolveKernel(options: ResolveKernelOptions): Promise<ResolvedKernel> {
  if (options.kernelPath !== undefined && options.kernelPath !== "") return inspectKernelFile(options.kernelPath, "argument", options.env);
  const fromEnv = options.env[KERNEL_ENV];
  if (fromEnv !== undefined && fromEnv !== "") return inspectKernelFile(fromEnv, "env", options.env);
  const cached = await provisionedKernel(options.env);
  if (cached !== undefined) return cached;
  throw new VmstackError(
    "KERNEL_MISSING",
    `no guest kernel: run 'vmstack kernel fetch' to download Debian's cloud kernel into ${kernelsDir(options.env)}, ` +
      `or pass --kernel PATH or set ${KERNEL_ENV}`,
    { facts: { cache: kernelsDir(options.env) } },
  );
}

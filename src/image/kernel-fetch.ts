/**
 * Provisions the guest kernel: Debian's cloud kernel, downloaded as a package and unpacked into
 * vmstack's cache, never installed into the host's /boot.
 *
 * Steps: `apt-cache depends linux-image-cloud-amd64` names the versioned package (the meta
 * package only depends on it); `apt-get download` fetches the .deb into a temporary directory;
 * `dpkg-deb -x` unpacks it; `depmod -b` writes modules.dep (the package has none: its postinst
 * normally runs depmod); the vmlinux ELF is extracted for PVH boot (vmlinux.ts); kernel.json is
 * written; the temporary directory is renamed to kernels/<release>; `kernels/current` is pointed
 * at it. Every step happens under a temporary name, so an interrupted fetch leaves nothing that
 * resolveKernel() would use, and a second fetch with the kernel present runs no process at all.
 */
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { VmstackError, isVmstackError } from "../lib/errors.js";
import { sweepStaleTemps, tempPathFor, writeFileAtomic, type Env } from "./cache.js";
import {
  MANIFEST_NAME,
  currentPointerPath,
  kernelsDir,
  provisionedKernel,
  readProvisionedKernel,
  type KernelManifest,
  type ResolvedKernel,
} from "./kernel.js";
import { runChild } from "../lib/run-child.js";
import { extractVmlinux } from "./vmlinux.js";

export const CLOUD_KERNEL_META_PACKAGE = "linux-image-cloud-amd64";

export interface FetchKernelOptions {
  readonly env: Env;
  readonly signal?: AbortSignal | undefined;
  /** Progress lines for a human (stderr). */
  readonly onProgress?: (line: string) => void;
  /** Ask apt for the newest versioned package even when a kernel is already provisioned. */
  readonly update?: boolean;
  readonly metaPackage?: string;
}

export interface FetchKernelResult {
  readonly kernel: ResolvedKernel;
  /** False when the kernel was already there and nothing was done. */
  readonly fetched: boolean;
}

/** The versioned package a meta package depends on, from `apt-cache depends` output. Pure. */
export function parseAptDepends(output: string, metaPackage: string): string {
  const match = /^\s*Depends:\s*(linux-image-[^\s<>]+)/m.exec(output);
  if (match?.[1] === undefined) {
    throw new VmstackError("KERNEL_PACKAGE_UNKNOWN", `apt does not know which kernel '${metaPackage}' depends on: run 'apt-get update' and try again`, {
      facts: { metaPackage, output },
    });
  }
  return match[1];
}

/** "linux-image-6.1.0-56-cloud-amd64" → "6.1.0-56-cloud-amd64". */
export function releaseOfPackage(pkg: string): string {
  return pkg.replace(/^linux-image-/, "").replace(/-unsigned$/, "");
}

/** "linux-image-…_6.1.192-2_amd64.deb" → "6.1.192-2" (dpkg's file naming; `%3a` is an epoch colon). */
export function versionOfDebFile(file: string): string {
  const parts = file.replace(/\.deb$/, "").split("_");
  return decodeURIComponent(parts[1] ?? "unknown");
}

export async function fetchKernel(options: FetchKernelOptions): Promise<FetchKernelResult> {
  const { env, signal } = options;
  const progress = options.onProgress ?? (() => undefined);
  if (options.update !== true) {
    const current = await provisionedKernel(env);
    if (current !== undefined) return { kernel: current, fetched: false };
  }
  const meta = options.metaPackage ?? CLOUD_KERNEL_META_PACKAGE;
  let depends: string;
  try {
    depends = (await runChild(["apt-cache", "depends", meta], { signal })).stdout.toString();
  } catch (e) {
    // apt-cache exits 100 ("No packages found") when the package lists are missing or stale.
    if (!isVmstackError(e, "CHILD_FAILED")) throw e;
    throw new VmstackError("KERNEL_PACKAGE_UNKNOWN", `apt does not know '${meta}': run 'apt-get update' and try again (${e.message})`, {
      cause: e,
      facts: { metaPackage: meta },
    });
  }
  const pkg = parseAptDepends(depends, meta);
  const release = releaseOfPackage(pkg);
  const root = kernelsDir(env);
  const finalDir = join(root, release);

  const existing = await readProvisionedKernel(finalDir);
  if (existing !== undefined) {
    await writeFileAtomic(currentPointerPath(env), release + "\n");
    return { kernel: existing, fetched: false };
  }

  await mkdir(root, { recursive: true });
  await sweepStaleTemps(root);
  const work = tempPathFor(finalDir);
  await mkdir(work);
  try {
    progress(`downloading ${pkg}`);
    // apt-get download writes into its working directory.
    await runChild(["apt-get", "download", "-q", pkg], { cwd: work, signal });
    const debs = (await readdir(work)).filter((f) => f.endsWith(".deb"));
    const deb = debs[0];
    if (deb === undefined || debs.length !== 1) {
      throw new VmstackError("KERNEL_FETCH_FAILED", `apt-get download ${pkg} did not leave exactly one .deb in ${work}`, { facts: { files: debs } });
    }
    progress(`unpacking ${deb}`);
    await runChild(["dpkg-deb", "-x", join(work, deb), join(work, "pkg")], { signal });
    await rm(join(work, deb));
    const manifest: KernelManifest = {
      release,
      package: pkg,
      packageVersion: versionOfDebFile(deb),
      bzImage: `pkg/boot/vmlinuz-${release}`,
      vmlinux: "vmlinux",
      modulesDir: `pkg/lib/modules/${release}`,
      config: `pkg/boot/config-${release}`,
    };
    progress(`depmod -b for ${release}`);
    await runChild(["depmod", "-b", join(work, "pkg"), release], { signal });
    progress("extracting vmlinux (uncompressed, for PVH boot)");
    await extractVmlinux(join(work, manifest.bzImage), join(work, manifest.vmlinux), signal);
    await writeFileAtomic(join(work, MANIFEST_NAME), JSON.stringify(manifest, null, 2) + "\n");
    await installDir(work, finalDir);
  } catch (e) {
    await rm(work, { recursive: true, force: true });
    throw e;
  }
  await writeFileAtomic(currentPointerPath(env), release + "\n");
  const kernel = await readProvisionedKernel(finalDir);
  if (kernel === undefined) throw new VmstackError("KERNEL_FETCH_FAILED", `${finalDir} is incomplete after fetching ${pkg}`);
  progress(`kernel ${release} ready in ${finalDir}`);
  return { kernel, fetched: true };
}

/**
 * Renames the finished `work` directory to `finalDir`. An incomplete directory already there (an
 * interrupted fetch of an older vmstack) is moved aside first and removed after.
 */
async function installDir(work: string, finalDir: string): Promise<void> {
  try {
    await rename(work, finalDir);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
  }
  // Another fetch may have finished meanwhile: then keep its result.
  if ((await readProvisionedKernel(finalDir)) !== undefined) {
    await rm(work, { recursive: true, force: true });
    return;
  }
  const aside = tempPathFor(finalDir);
  await rename(finalDir, aside);
  await rename(work, finalDir);
  await rm(aside, { recursive: true, force: true });
}

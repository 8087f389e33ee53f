/**
 * What `vmstack info` reports: versions, the guest kernel, the accelerator (probing once if no
 * verdict is cached), host CPUs and memory.
 */
import { cpus, totalmem, freemem } from "node:os";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { prepareGuestImage } from "./guest-image.js";
import { decideAccel } from "./guest-accel.js";
import { qemuBinary, qemuVersion, kvmDeviceUsable } from "./host.js";
import type { AccelChoice } from "./accel.js";
import { cacheRoot, type Env } from "../image/index.js";
import { BootSnapshotStore, type BootSnapshotEntry } from "./boot-snapshot-store.js";

export interface HostInfo {
  readonly qemu: { readonly binary: string; readonly version: string };
  readonly kernel: { readonly release: string; readonly path: string; readonly source: string } | { readonly error: string };
  readonly accelerator: { readonly accel: string; readonly reason: string } | { readonly error: string };
  readonly kvmDevice: boolean;
  readonly host: { readonly cpus: number; readonly memoryMiB: number; readonly freeMemoryMiB: number };
  readonly cache: string;
  /** Saved boot snapshots of `vmstack run` (docs/boot.md), most recently used first. */
  readonly bootSnapshots: { readonly dir: string; readonly count: number; readonly bytes: number; readonly entries: readonly BootSnapshotEntry[] };
}

export async function hostInfo(o: { env: Env; kernelPath?: string | undefined; accel: AccelChoice; signal?: AbortSignal }): Promise<HostInfo> {
  const version = await qemuVersion();
  let kernel: HostInfo["kernel"];
  let accelerator: HostInfo["accelerator"];
  try {
    const image = await prepareGuestImage({ kernelPath: o.kernelPath, env: o.env, signal: o.signal });
    kernel = { release: image.kernel.release, path: image.kernel.kernelPath, source: image.kernel.source };
    const runDir = mkdtempSync(join(tmpdir(), "vmstack-probe-"));
    try {
      const decision = await decideAccel({ choice: o.accel, image, env: o.env, runDir, signal: o.signal });
      accelerator = { accel: decision.accel, reason: decision.reason };
    } finally {
      rmSync(runDir, { recursive: true, force: true });
    }
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    kernel = { error };
    accelerator = { error: "unknown without a guest kernel to probe with" };
  }
  return {
    qemu: { binary: qemuBinary(o.env), version },
    kernel,
    accelerator,
    kvmDevice: kvmDeviceUsable(),
    host: { cpus: cpus().length, memoryMiB: Math.round(totalmem() / 2 ** 20), freeMemoryMiB: Math.round(freemem() / 2 ** 20) },
    cache: cacheRoot(o.env),
    bootSnapshots: await bootSnapshotsInfo(o.env),
  };
}

async function bootSnapshotsInfo(env: Env): Promise<HostInfo["bootSnapshots"]> {
  const store = BootSnapshotStore.forEnv(env);
  const entries = await store.list();
  return { dir: store.root, count: entries.length, bytes: entries.reduce((n, e) => n + e.bytes, 0), entries };
}

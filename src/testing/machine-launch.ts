/**
 * How a machine gets started: its QEMU options (image, cards on this test's VLANs, sockets), the
 * snapshot key of its shape, and whether a saved state of that shape exists (then it is restored
 * instead of booted). Also the one-time save of a shape (snapshot.ts has the QMP mechanics).
 */
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import type { GuestVmOptions } from "../vmm/guest-vm.js";
import type { QmpClient } from "../vmm/qmp/index.js";
import type { NicArgsConfig } from "../vmm/qemu-args.js";
import type { MachineHost } from "./machine-host.js";
import type { MachineOptions, MachineScope } from "./machine-types.js";
import { hostsFile, natNicArgs, vlanNicArgs } from "./network.js";
import { saveState, shellQuote, snapshotKey } from "./snapshot.js";

export interface LaunchPlan {
  /** GuestVm options without the callbacks (console sink, afterSpawn), which belong to the Machine. */
  readonly vm: Omit<GuestVmOptions, "onConsole" | "afterSpawn">;
  readonly qmpSocket: string;
  /** The /etc/hosts the guest gets at boot (part of the snapshot key). */
  readonly hosts: string;
  readonly key: string;
  /** A saved state of this shape: restore it instead of booting. */
  readonly saved: string | undefined;
}

export async function planLaunch(
  host: MachineHost,
  name: string,
  options: MachineOptions,
  addresses: ReadonlyMap<number, string>,
  scope: MachineScope,
): Promise<LaunchPlan> {
  const image = await host.image(["network"]);
  // Short: Unix socket paths are limited to 107 bytes.
  const runDir = mkdtempSync(join(host.runDir, `${name.slice(0, 12)}-`));
  const nics: NicArgsConfig[] = [
    ...(options.network ?? []).map((v) => vlanNicArgs(name, v.vlan, host.vlanEndpoint(v.vlan, scope.epoch))),
    ...(options.nat ? [natNicArgs(name)] : []),
  ];
  const memoryMiB = options.memory ?? 256;
  const cpus = options.cpus ?? 1;
  const hosts = hostsFile(name, scope.peers());
  const key = snapshotKey({
    name,
    memoryMiB,
    cpus,
    nicIds: nics.map((n) => n.id),
    addresses: [...addresses.entries()].map(([v, a]) => `${v}=${a}`),
    hosts,
    imageKey: image.initrd.key,
    accel: host.accel.accel,
  });
  const saved = host.snapshots ? await host.snapshots.lookup(key) : undefined;
  const qmpSocket = join(runDir, "qmp.sock");
  return {
    vm: {
      name,
      kernelPath: image.kernel.kernelPath,
      initrdPath: image.initrd.path,
      accel: host.accel.accel,
      memoryMiB,
      cpus,
      runDir,
      bootTimeoutMs: host.timeouts.bootMs,
      signal: scope.signal,
      qmpSocket,
      nics,
      consoleInput: true,
      ...(saved ? { incoming: `exec:cat ${shellQuote(saved)}` } : {}),
    },
    qmpSocket,
    hosts,
    key,
    saved,
  };
}

/**
 * Saves a freshly booted and set-up machine as the state of its shape, unless another machine
 * already did (or is doing) so, and resumes it. Returns the time taken, or undefined when skipped.
 */
export async function saveShape(host: MachineHost, key: string, qmp: QmpClient, signal: AbortSignal): Promise<number | undefined> {
  if (!host.snapshots || host.snapshots.lookup(key) !== undefined) return undefined;
  const claim = host.snapshots.claim(key);
  const t0 = performance.now();
  const timeoutMs = host.timeouts.bootMs;
  try {
    await saveState(qmp, claim.path, { timeoutMs, signal });
    await qmp.execute("cont", undefined, { timeoutMs, signal });
    claim.done(true);
    return performance.now() - t0;
  } catch (e) {
    claim.done(false);
    throw e;
  }
}

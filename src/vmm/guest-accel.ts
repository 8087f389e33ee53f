/**
 * The accelerator for booting a given guest image: the cached verdict, or a KVM probe boot of that
 * very image. A probe VM that boots is handed back so the caller can use it instead of booting again.
 */
import { join } from "node:path";
import { chooseAccel, DEFAULT_PROBE_DEADLINE_MS, type AccelChoice, type AccelDecision } from "./accel.js";
import { qemuBinary, qemuIdentity } from "./host.js";
import type { GuestImage } from "./guest-image.js";
import { GuestVm } from "./guest-vm.js";
import { cacheRoot, type Env } from "../image/index.js";

export async function accelForGuest(o: {
  readonly choice: AccelChoice;
  readonly image: GuestImage;
  readonly env: Env;
  readonly signal?: AbortSignal | undefined;
  /** Boots the image under KVM; must honour the signal (the probe's deadline). */
  readonly bootKvm: (signal: AbortSignal) => Promise<GuestVm>;
  readonly onProbe?: ((deadlineMs: number) => void) | undefined;
  /** Whether /dev/kvm opens (tests stand in for the host's answer). */
  readonly kvmDevice?: (() => boolean) | undefined;
}): Promise<{ decision: AccelDecision; probeVm: GuestVm | undefined }> {
  let probeVm: GuestVm | undefined;
  const decision = await chooseAccel({
    choice: o.choice,
    // Keyed on QEMU and the kernel, not the initrd: a new initrd (other modules) needs no new probe.
    bootIdentity: `${qemuIdentity(qemuBinary(o.env), o.env["PATH"] ?? "")}|${o.image.kernel.release}|${o.image.kernel.kernelPath}`,
    cacheFile: join(cacheRoot(o.env), "accel-probe.json"),
    signal: o.signal,
    onProbe: o.onProbe,
    ...(o.kvmDevice ? { kvmDevice: o.kvmDevice } : {}),
    probeBoot: async (signal) => {
      probeVm = await o.bootKvm(signal);
      return true;
    },
  });
  return { decision, probeVm };
}

/**
 * The accelerator for an image when no VM is wanted right away (`vmstack info`, a test host): a KVM
 * probe VM that boots is stopped again. Throwaway runs use accelForGuest to keep theirs.
 */
export async function decideAccel(o: {
  readonly choice: AccelChoice;
  readonly image: GuestImage;
  readonly env: Env;
  /** Where the probe VM's sockets go (a short private directory). */
  readonly runDir: string;
  readonly signal?: AbortSignal | undefined;
  readonly kvmDevice?: (() => boolean) | undefined;
}): Promise<AccelDecision> {
  const { decision, probeVm } = await accelForGuest({
    ...o,
    bootKvm: (signal) =>
      GuestVm.boot({
        name: "kvm-probe",
        // The QEMU of the caller's environment (vmstackd's), not necessarily this process's.
        qemu: qemuBinary(o.env),
        kernelPath: o.image.kernel.kernelPath,
        initrdPath: o.image.initrd.path,
        accel: "kvm",
        memoryMiB: 128,
        cpus: 1,
        runDir: o.runDir,
        bootTimeoutMs: DEFAULT_PROBE_DEADLINE_MS * 2,
        signal,
      }),
  });
  await probeVm?.destroy();
  return decision;
}

/**
 * The accelerator vmstackd gives domains whose spec says `accel: "auto"`: KVM only when a probe
 * boot proved it works on this host (guest-accel.ts; the verdict is cached per QEMU binary, host
 * kernel, CPU and guest kernel, so this is a file read after the first time), else TCG. As for
 * `vmstack run`, /dev/kvm existing proves nothing (docs/boot.md).
 *
 * `VMSTACK_ACCEL=kvm|tcg` overrides the probe. Anything that stops the probe from running (no guest
 * kernel yet, no agent built) gives TCG with the reason in the daemon log, never a failed start.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kvmDeviceUsable } from "./host.js";
import { decideAccel } from "./guest-accel.js";
import { prepareGuestImage } from "./guest-image.js";
import { messageOf } from "../lib/errors.js";

export async function daemonAccel(
  env: NodeJS.ProcessEnv,
  log: (message: string) => void,
  o: { readonly signal?: AbortSignal | undefined; readonly kvmUsable?: () => boolean } = {},
): Promise<"kvm" | "tcg"> {
  const signal = o.signal;
  const forced = env["VMSTACK_ACCEL"];
  if (forced === "kvm" || forced === "tcg") {
    log(`accelerator ${forced} (VMSTACK_ACCEL)`);
    return forced;
  }
  const kvmUsable = o.kvmUsable ?? kvmDeviceUsable;
  if (!kvmUsable()) {
    log("accelerator tcg (/dev/kvm cannot be opened)");
    return "tcg";
  }
  // Short: the probe VM's sockets live here (the 107-byte socket path limit).
  const runDir = mkdtempSync(join(tmpdir(), "vmstackd-probe-"));
  try {
    const image = await prepareGuestImage({ env, signal });
    const decision = await decideAccel({ choice: "auto", image, env, runDir, signal, kvmDevice: kvmUsable });
    log(`accelerator ${decision.accel} (${decision.reason})`);
    return decision.accel;
  } catch (e) {
    log(`accelerator tcg (the KVM probe could not run: ${messageOf(e)})`);
    return "tcg";
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}

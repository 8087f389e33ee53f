/**
 * vmstack's default guest for domains: a spec that names no kernel, no GRUB menu and no disk to
 * boot from gets the kernel and agent initrd of `vmstack run`, so `vmstack create name=demo
 * memory=256` needs no file at all and `vmstack exec` works in it.
 */
import type { DomainConfig } from "../domain/index.js";
import { prepareGuestImage, type GuestFeature } from "./guest-image.js";
import { kernelCommandLine } from "./guest-vm.js";

export function needsDefaultGuest(c: DomainConfig): boolean {
  return c.boot.kernel === undefined && c.boot.guestGrub === undefined && c.disks.length === 0;
}

export async function defaultGuestBoot(c: DomainConfig, accel: "kvm" | "tcg", env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<DomainConfig> {
  if (!needsDefaultGuest(c)) return c;
  const features: GuestFeature[] = [];
  if (c.nics.length > 0) features.push("network");
  if (c.shares.length > 0) features.push("share");
  const image = await prepareGuestImage({ env, features, signal });
  // tsc_early_khz for microvm is added by compileDomain; the rest is the throwaway VM's command line.
  const cmdline = kernelCommandLine(c.machine, accel, undefined);
  return { ...c, boot: { ...c.boot, kernel: image.kernel.kernelPath, initrd: image.initrd.path, cmdline: c.boot.cmdline ?? cmdline } };
}

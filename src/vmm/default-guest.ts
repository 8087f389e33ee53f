/**
 * The marker of a spec that boots vmstack's default guest (manager-guest.ts builds it). Apart from
 * the builder so that `vmstack create` of any other guest does not load the image code at all
 * (its CLI start-up is on the path of every create).
 */
import type { DomainConfig } from "../domain/index.js";

export const DEFAULT_GUEST_PLACEHOLDER = "/vmstack-default-guest";

/**
 * The least memory the default guest boots in (Debian's cloud kernel with vmstack's initrd,
 * measured: on pc with 1 vCPU 72 MiB panics with "System is deadlocked on memory" while the kernel
 * initialises, on microvm with 2 vCPUs 64 MiB does; both boot in 80 MiB, with 45 MiB left to
 * userspace). Below it a domain would panic before pvpanic's driver loads, reboot, and loop; so it
 * is refused up front.
 */
export const DEFAULT_GUEST_MIN_MEMORY_MIB = 80;

export function usesDefaultGuest(c: DomainConfig): boolean {
  return c.boot.kernel === DEFAULT_GUEST_PLACEHOLDER;
}

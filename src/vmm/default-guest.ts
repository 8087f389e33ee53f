/**
 * The marker of a spec that boots vmstack's default guest (manager-guest.ts builds it). Apart from
 * the builder so that `vmstack create` of any other guest does not load the image code at all
 * (its CLI start-up is on the path of every create).
 */
import type { DomainConfig } from "../domain/index.js";

export const DEFAULT_GUEST_PLACEHOLDER = "/vmstack-default-guest";

export function usesDefaultGuest(c: DomainConfig): boolean {
  return c.boot.kernel === DEFAULT_GUEST_PLACEHOLDER;
}

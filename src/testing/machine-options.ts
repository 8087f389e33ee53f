/**
 * `machine(name, options)` options from a user's test script, checked once where they enter
 * (house rule 5): a typo or a wrong type is an error naming the option, never a bad QEMU argv.
 */
import { VmstackError } from "../lib/errors.js";
import { parseVlan } from "./network.js";
import type { MachineOptions } from "./machine.js";

const KNOWN = ["memory", "cpus", "network", "nat"] as const;

function bad(machine: string, message: string): VmstackError {
  return new VmstackError("BAD_MACHINE_OPTIONS", `machine "${machine}": ${message}`);
}

function integer(machine: string, key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw bad(machine, `${key} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * A machine without a `network` option is on VLAN 1, as in the NixOS test driver: machines of a
 * test meet without ceremony. `network: []` means no VLAN at all.
 */
export const DEFAULT_NETWORK = [{ vlan: 1 }] as const;

export function parseMachineOptions(machine: string, input: unknown): MachineOptions {
  if (input === undefined) return { network: DEFAULT_NETWORK };
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw bad(machine, "options must be an object");
  const o = input as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(KNOWN as readonly string[]).includes(key)) throw bad(machine, `unknown option "${key}" (known: ${KNOWN.join(", ")})`);
  }
  const network = o["network"];
  if (network !== undefined && !Array.isArray(network)) throw bad(machine, "network must be a list of vlan(n)");
  const vlans = (network ?? []).map((v: unknown) => {
    if (typeof v !== "object" || v === null || !("vlan" in v)) throw bad(machine, "network entries must be vlan(n)");
    return parseVlan((v as { vlan: unknown }).vlan);
  });
  if (new Set(vlans.map((v) => v.vlan)).size !== vlans.length) throw bad(machine, "a VLAN is listed twice in network");
  if (o["nat"] !== undefined && typeof o["nat"] !== "boolean") throw bad(machine, "nat must be true or false");
  return {
    ...(o["memory"] !== undefined ? { memory: integer(machine, "memory", o["memory"], 64, 65536) } : {}),
    ...(o["cpus"] !== undefined ? { cpus: integer(machine, "cpus", o["cpus"], 1, 64) } : {}),
    network: network !== undefined ? vlans : DEFAULT_NETWORK,
    ...(o["nat"] !== undefined ? { nat: o["nat"] as boolean } : {}),
  };
}

/**
 * Test networks. A VLAN is one Ethernet segment shared by every machine on it, carried by QEMU's
 * own UDP multicast netdev on loopback (`-netdev socket,mcast=GROUP:PORT,localaddr=127.0.0.1`):
 * no root, no switch daemon (NixOS runs a vde_switch per VLAN), and each run picks its own group
 * and port, so concurrent runs on one host never share a segment. Addresses are static
 * (192.168.N.k for machine k on VLAN N, configured with busybox `ip` through the agent) and names
 * resolve through /etc/hosts, written in every guest. Pure: no I/O here.
 */
import { createHash } from "node:crypto";
import type { NicArgsConfig } from "../vmm/qemu-args.js";
import { VmstackError } from "../lib/errors.js";

/** A reference to VLAN `n` (1–254), as returned by a test's `vlan(n)`. */
export interface VlanRef {
  readonly vlan: number;
}

export function parseVlan(n: unknown): VlanRef {
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > 254) {
    throw new VmstackError("BAD_VLAN", `vlan(${String(n)}): a VLAN number is an integer from 1 to 254`);
  }
  return { vlan: n };
}

/** Where a run's VLAN lives: its multicast group and port, chosen once per run. */
export interface VlanEndpoint {
  readonly group: string;
  readonly port: number;
}

/**
 * A run-unique endpoint per VLAN from a random run seed: administratively scoped multicast
 * (239.0.0.0/8, RFC 2365) and a port above the usual ephemeral ones collide only by chance.
 */
export function vlanEndpoint(runSeed: number, vlan: number): VlanEndpoint {
  const h = createHash("sha256").update(`${runSeed}/${vlan}`).digest();
  return { group: `239.${h[0] ?? 0}.${h[1] ?? 0}.${1 + ((h[2] ?? 0) % 254)}`, port: 20000 + (h.readUInt16BE(3) % 30000) };
}

/**
 * A stable, locally administered unicast MAC (first octet 0x52, as QEMU's own 52:54:00 prefix)
 * from the machine name and the NIC's role. Stable on purpose: a machine restored from a snapshot
 * keeps the MAC its guest saw when it was saved.
 */
export function macAddress(machine: string, role: string): string {
  const h = createHash("sha256").update(`${machine}/${role}`).digest();
  return ["52", "54", ...[h[0], h[1], h[2], h[3]].map((b) => (b ?? 0).toString(16).padStart(2, "0"))].join(":");
}

export function vlanAddress(vlan: number, index: number): string {
  if (index < 0 || index > 253) throw new VmstackError("VLAN_FULL", `vlan ${vlan} has room for 254 machines`);
  return `192.168.${vlan}.${index + 1}`;
}

/** A NIC of a machine, as the guest must configure it. */
export interface GuestNic {
  readonly id: string;
  readonly mac: string;
  /** CIDR address, e.g. 192.168.1.2/24. */
  readonly address: string;
  readonly gateway?: string;
}

/** The QEMU side of a VLAN NIC. */
export function vlanNicArgs(machine: string, vlan: number, endpoint: VlanEndpoint): NicArgsConfig {
  return { id: `vlan${vlan}`, mac: macAddress(machine, `vlan${vlan}`), model: "virtio", backend: { kind: "mcast", group: endpoint.group, port: endpoint.port } };
}

/** User-mode NAT (SLIRP): the guest is 10.0.2.15, the host's loopback is reachable as 10.0.2.2. */
export function natNicArgs(machine: string): NicArgsConfig {
  return { id: "nat", mac: macAddress(machine, "nat"), model: "virtio", backend: { kind: "user", restrict: false, hostForwards: [], guestForwards: [] } };
}

export const NAT_GUEST_ADDRESS = "10.0.2.15/24";
export const NAT_GATEWAY = "10.0.2.2";

/**
 * A busybox sh script that finds each NIC by its MAC (virtio-mmio probe order is not the command
 * line order, so eth0/eth1 cannot be trusted), then sets the address, the link and a default route.
 * Shell builtins wherever possible: right after a snapshot restore TCG's translation cache is
 * empty and every fork+exec is slow. Values are from macAddress/vlanAddress only, never free text.
 */
export function networkScript(hostname: string, nics: readonly GuestNic[]): string {
  const lines = [`echo ${shellWord(hostname)} >/proc/sys/kernel/hostname`, "found=0", "for d in /sys/class/net/*; do", '  read -r mac <"$d/address"', '  dev=${d##*/}', '  case "$mac" in'];
  for (const n of nics) {
    const route = n.gateway ? ` && ip route replace default via ${n.gateway} dev "$dev"` : "";
    lines.push(`  ${n.mac}) ip addr add ${n.address} dev "$dev" && ip link set "$dev" up${route} || exit 1; found=$((found + 1)) ;;`);
  }
  lines.push("  esac", "done", `[ "$found" = ${nics.length} ] || { echo "found $found of ${nics.length} network interfaces" >&2; exit 1; }`);
  return lines.join("\n") + "\n";
}

/** /etc/hosts for a machine: localhost, itself, and every machine it shares a VLAN with. */
export function hostsFile(self: string, peers: ReadonlyArray<{ readonly name: string; readonly address: string }>): string {
  const lines = ["127.0.0.1 localhost", `127.0.1.1 ${self}`];
  for (const p of peers) if (p.name !== self) lines.push(`${p.address} ${p.name}`);
  return lines.join("\n") + "\n";
}

/** A machine name is also a host name and part of socket paths: keep it to a DNS label. */
export function parseMachineName(name: unknown): string {
  if (typeof name !== "string" || !/^[a-z][a-z0-9-]{0,30}$/.test(name)) {
    throw new VmstackError("BAD_MACHINE_NAME", `machine name ${JSON.stringify(name)}: use 1–31 lowercase letters, digits or '-', starting with a letter`);
  }
  return name;
}

function shellWord(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

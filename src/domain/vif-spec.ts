/**
 * xl vif specs (xl-network-configuration(5)) → a vmstack NIC. Every key is optional and `''` is
 * a valid spec (one NIC with defaults). vmstack has no host bridges (they need root), so:
 * no bridge or `bridge=xenbr0` gives user-mode NAT, and any other bridge name becomes a private
 * network of that name, shared by every vmstack domain attached to it.
 */
import { didYouMean } from "./did-you-mean.js";
import { MAC_PATTERN, type NicModel } from "./spec.js";

export interface XlVif {
  readonly mac?: string;
  readonly bridge?: string;
  readonly model: NicModel;
  readonly ignored: readonly string[];
}

export interface VifSpecResult {
  readonly vif?: XlVif;
  readonly errors: readonly string[];
  readonly warnings: readonly string[];
}

export const DEFAULT_BRIDGE = "xenbr0";
const KEYS = ["mac", "bridge", "model", "type", "vifname", "script", "ip", "backend", "rate", "devid", "mtu", "gatewaydev", "netdev", "vlan", "forwarddev", "trusted", "untrusted", "accel", "powerswitch", "connection"];
const MODELS: Readonly<Record<string, NicModel>> = { "virtio-net": "virtio", virtio: "virtio", e1000: "e1000", rtl8139: "rtl8139" };

export function parseVifSpec(spec: string): VifSpecResult {
  const errors: string[] = [];
  const warnings: string[] = [];
  const ignored: string[] = [];
  let mac: string | undefined;
  let bridge: string | undefined;
  let model: NicModel = "virtio";
  for (const raw of spec.split(",")) {
    const it = raw.trim();
    if (it === "") continue;
    if (it === "trusted" || it === "untrusted") {
      ignored.push(it);
      continue;
    }
    const eq = it.indexOf("=");
    if (eq < 0) {
      errors.push(`'${it}' is not key=value${didYouMean(it, KEYS)}`);
      continue;
    }
    const key = it.slice(0, eq).trim();
    const value = it.slice(eq + 1).trim();
    switch (key) {
      case "mac":
        if (!MAC_PATTERN.test(value)) errors.push(`mac '${value}' is not a MAC address like 00:16:3e:12:34:56`);
        else mac = value.toLowerCase();
        break;
      case "bridge":
        bridge = value;
        break;
      case "model": {
        const m = MODELS[value];
        if (m === undefined) warnings.push(`NIC model '${value}' is not available here; using virtio (also known: e1000, rtl8139)`);
        else model = m;
        break;
      }
      case "type":
        if (value !== "ioemu" && value !== "vif") errors.push(`type '${value}' is not ioemu or vif`);
        break;
      default:
        if (KEYS.includes(key)) ignored.push(`${key}=${value}`);
        else errors.push(`unknown vif parameter '${key}'${didYouMean(key, KEYS)}`);
    }
  }
  if (ignored.length > 0) warnings.push(`vif parameters ignored (no Xen backend or hotplug scripts here): ${ignored.join(", ")}`);
  if (errors.length > 0) return { errors, warnings };
  return { vif: { ...(mac === undefined ? {} : { mac }), ...(bridge === undefined ? {} : { bridge }), model, ignored }, errors, warnings };
}

export function formatVifSpec(v: { mac: string; model: NicModel; bridge?: string }): string {
  return [`mac=${v.mac}`, ...(v.bridge === undefined ? [] : [`bridge=${v.bridge}`]), ...(v.model === "virtio" ? [] : [`model=${v.model}`])].join(",");
}

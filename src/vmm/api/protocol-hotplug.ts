/**
 * The control requests that change a running domain's devices (xl block-attach, network-attach,
 * cd-insert, mem-set, vcpu-set and their list/detach verbs). Parsed here once (house rule 5);
 * protocol.ts joins them to the other requests. Device specs arrive already converted from xl's
 * syntax by the CLI (a `disks[]` or `nics[]` entry of a domain spec); vmstackd validates them
 * against the domain's whole config.
 */
import { VmstackError } from "../../lib/errors.js";

export type HotplugRequest =
  | { readonly op: "block-attach"; readonly domain: string; readonly disk: Record<string, unknown> }
  | { readonly op: "network-attach"; readonly domain: string; readonly nic: Record<string, unknown> }
  /** `device`: a vdev (xvdb), a Xen device number, or the disk's id; for NICs a devid, MAC or id. */
  | { readonly op: "block-detach" | "network-detach"; readonly domain: string; readonly device: string }
  | { readonly op: "block-list" | "network-list"; readonly domain: string }
  | { readonly op: "cd-insert"; readonly domain: string; readonly vdev: string; readonly path: string; readonly format: string }
  | { readonly op: "cd-eject"; readonly domain: string; readonly vdev: string }
  | { readonly op: "mem-set"; readonly domain: string; readonly memoryMiB: number }
  | { readonly op: "vcpu-set"; readonly domain: string; readonly vcpus: number };

export type HotplugOp = HotplugRequest["op"];

export const HOTPLUG_OPS = [
  "block-attach", "block-detach", "block-list", "network-attach", "network-detach", "network-list", "cd-insert", "cd-eject", "mem-set", "vcpu-set",
] as const satisfies readonly HotplugOp[];

export const HOTPLUG_KEYS: Readonly<Record<HotplugOp, readonly string[]>> = {
  "block-attach": ["domain", "disk"],
  "block-detach": ["domain", "device"],
  "block-list": ["domain"],
  "network-attach": ["domain", "nic"],
  "network-detach": ["domain", "device"],
  "network-list": ["domain"],
  "cd-insert": ["domain", "vdev", "path", "format"],
  "cd-eject": ["domain", "vdev"],
  "mem-set": ["domain", "memoryMiB"],
  "vcpu-set": ["domain", "vcpus"],
};

export function isHotplugOp(op: string): op is HotplugOp {
  return (HOTPLUG_OPS as readonly string[]).includes(op);
}

function get<T>(o: Record<string, unknown>, key: string, check: (v: unknown) => v is T, what: string): T {
  const v = o[key];
  if (!check(v)) throw new VmstackError("BAD_REQUEST", `bad request: '${key}' must be ${what}`);
  return v;
}
const isString = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 4096;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isPositive = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v > 0;

export function parseHotplugRequest(op: HotplugOp, value: Record<string, unknown>): HotplugRequest {
  const domain = get(value, "domain", isString, "a domain name or id");
  switch (op) {
    case "block-attach":
      return { op, domain, disk: get(value, "disk", isObject, "a disk spec object") };
    case "network-attach":
      return { op, domain, nic: get(value, "nic", isObject, "a NIC spec object") };
    case "block-detach":
    case "network-detach":
      return { op, domain, device: get(value, "device", isString, "a device name, number or MAC") };
    case "block-list":
    case "network-list":
      return { op, domain };
    case "cd-insert":
      return { op, domain, vdev: get(value, "vdev", isString, "a vdev"), path: get(value, "path", isString, "an image path"), format: get(value, "format", isString, "an image format") };
    case "cd-eject":
      return { op, domain, vdev: get(value, "vdev", isString, "a vdev") };
    case "mem-set":
      return { op, domain, memoryMiB: get(value, "memoryMiB", isPositive, "a positive number of MiB") };
    case "vcpu-set":
      return { op, domain, vcpus: get(value, "vcpus", isPositive, "a positive number of vCPUs") };
  }
}

/** One disk as block-list reports it (xl's columns plus what vmstack knows). */
export interface BlockInfo {
  readonly vdev: string;
  readonly devid: number;
  readonly id: string;
  readonly path: string | null;
  readonly format: string;
  readonly media: "disk" | "cdrom";
  readonly readOnly: boolean;
  readonly interface: string;
  readonly backendPath: string;
  readonly state: number;
}

export interface NicInfo {
  readonly devid: number;
  readonly id: string;
  readonly mac: string;
  readonly type: string;
  readonly model: string;
  readonly network: string | null;
  readonly backendPath: string;
  readonly state: number;
}

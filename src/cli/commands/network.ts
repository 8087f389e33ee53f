/**
 * `vmstack network-attach D VIFSPEC…`, `network-detach D DEV|MAC`, `network-list D`: xl's NIC
 * hotplug verbs with xl's vif spec (xl-network-configuration(5)); no bridge (or xenbr0) is
 * user-mode NAT, another bridge name a private network between vmstack domains.
 */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import { nicFragment } from "../../domain/index.js";
import type { NicInfo } from "../../vmm/api/protocol-hotplug.js";
import { specSource, takeFragment } from "./block.js";

const json = { json: { type: "boolean", help: "print the result as JSON" } } as const;

export const networkAttachCommand: Command = {
  name: "network-attach",
  summary: "attach a NIC to a running domain (xl vif spec)",
  usage: "[--json] DOMAIN [VIFSPEC…]",
  options: json,
  details: "VIFSPEC is xl's, e.g. `mac=00:16:3e:01:02:03,model=e1000` or `bridge=lan0`; empty gives a user-mode NIC.",
  async run(argv, ctx) {
    const p = parseCommandArgs("network-attach", argv, this.options);
    const [domain, ...parts] = p.positionals;
    if (domain === undefined) throw usageError("network-attach", "expected DOMAIN [VIFSPEC]");
    const nic = takeFragment("network-attach", "vif spec", nicFragment(parts.join(","), specSource("VIFSPEC", parts.length === 0 ? [""] : parts, 2)), ctx);
    const info = (await request({ op: "network-attach", domain, nic }, ctx)) as NicInfo;
    if (boolOpt(p, "json")) ctx.stdout.write(JSON.stringify(info, null, 2) + "\n");
    return 0;
  },
};

export const networkDetachCommand: Command = {
  name: "network-detach",
  summary: "detach a NIC from a running domain",
  usage: "DOMAIN DEVID|MAC",
  options: {},
  details: "DEVID is the Idx network-list shows (or the NIC's id).",
  async run(argv, ctx) {
    const [domain, device, extra] = parseCommandArgs("network-detach", argv, this.options).positionals;
    if (domain === undefined || device === undefined) throw usageError("network-detach", "expected DOMAIN DEVID|MAC");
    if (extra !== undefined) throw usageError("network-detach", `unexpected argument '${extra}'`);
    await request({ op: "network-detach", domain, device }, ctx);
    return 0;
  },
};

export function formatNetworkList(rows: readonly NicInfo[]): string {
  const out = ["Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                              Type     Network"];
  for (const r of rows) {
    out.push(
      `${String(r.devid).padEnd(3)} ${"0".padStart(2)} ${r.mac.padEnd(17)} ${String(r.devid).padStart(6)} ${String(r.state).padStart(5)} ${"-1".padStart(6)} ${"-1/-1".padStart(17)} ${r.backendPath.padEnd(36)} ${r.type.padEnd(8)} ${r.network ?? "-"}`,
    );
  }
  return out.join("\n") + "\n";
}

export const networkListCommand: Command = {
  name: "network-list",
  summary: "list a domain's NICs (xl network-list)",
  usage: "[--json] DOMAIN",
  options: json,
  async run(argv, ctx) {
    const p = parseCommandArgs("network-list", argv, this.options);
    const [domain, extra] = p.positionals;
    if (domain === undefined) throw usageError("network-list", "expected DOMAIN");
    if (extra !== undefined) throw usageError("network-list", `unexpected argument '${extra}'`);
    const rows = (await request({ op: "network-list", domain }, ctx)) as NicInfo[];
    ctx.stdout.write(boolOpt(p, "json") ? JSON.stringify(rows, null, 2) + "\n" : formatNetworkList(rows));
    return 0;
  },
};

/** `vmstack uptime [DOMAIN…]`: xl uptime. */
import type { Command } from "../command.js";
import { parseCommandArgs } from "../args.js";
import { request } from "./domain-verb.js";
import type { DomainInfo } from "../../vmm/api/protocol.js";

export function formatUptime(seconds: number): string {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const hms = `${Math.floor((s % 86400) / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  return d > 0 ? `${d} day${d === 1 ? "" : "s"}, ${hms}` : hms;
}

export const uptimeCommand: Command = {
  name: "uptime",
  summary: "print how long each domain has been up",
  usage: "[DOMAIN…]",
  options: {},
  async run(argv, ctx) {
    const p = parseCommandArgs("uptime", argv, this.options);
    const rows = (await request({ op: "list", domains: p.positionals }, ctx)) as DomainInfo[];
    ctx.stdout.write(`${"Name".padEnd(40)}${"ID".padStart(5)} Uptime\n`);
    for (const r of rows) ctx.stdout.write(`${r.name.padEnd(40)}${String(r.domid).padStart(5)} ${formatUptime(r.uptimeSeconds)}\n`);
    return 0;
  },
};

/** `vmstack list [-l|--json] [DOMAIN…]`: xl list. */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs } from "../args.js";
import { request } from "./domain-verb.js";
import type { DomainInfo } from "../../vmm/api/protocol.js";

/** xl's layout: `Name  ID  Mem VCPUs  State  Time(s)`. */
export function formatList(rows: readonly DomainInfo[]): string {
  const out = [`${"Name".padEnd(40)}${"ID".padStart(5)}${"Mem".padStart(6)}${"VCPUs".padStart(6)}\t${"State".padEnd(6)}\t${"Time(s)".padStart(9)}`];
  for (const r of rows) {
    out.push(`${r.name.padEnd(40)}${String(r.domid).padStart(5)}${String(r.memoryMiB).padStart(6)}${String(r.vcpus).padStart(6)}\t${r.state.padEnd(6)}\t${r.cpuSeconds.toFixed(1).padStart(9)}`);
  }
  return out.join("\n") + "\n";
}

export const listCommand: Command = {
  name: "list",
  summary: "list domains (Domain-0 first), with xl's state letters r b p s c d",
  usage: "[-l|--json] [DOMAIN…]",
  options: {
    long: { type: "boolean", short: "l", help: "JSON with each domain's config (as xl list -l)" },
    json: { type: "boolean", help: "JSON" },
  },
  details: "States: r running, b blocked (idle), p paused, s shut down (kept), c crashed, d dying.",
  async run(argv, ctx) {
    const p = parseCommandArgs("list", argv, this.options);
    const rows = (await request({ op: "list", domains: p.positionals }, ctx)) as DomainInfo[];
    if (boolOpt(p, "long") || boolOpt(p, "json")) {
      const shown = boolOpt(p, "long") ? rows : rows.map(({ config: _config, ...r }) => r);
      ctx.stdout.write(JSON.stringify(shown, null, 2) + "\n");
    } else ctx.stdout.write(formatList(rows));
    return 0;
  },
};

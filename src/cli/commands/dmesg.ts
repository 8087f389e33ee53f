/** `vmstack dmesg [-c]`: vmstackd's log (as xl dmesg shows the hypervisor's). */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const dmesgCommand: Command = {
  name: "dmesg",
  summary: "print vmstackd's log",
  usage: "[-c]",
  options: { clear: { type: "boolean", short: "c", help: "clear the log after printing it" } },
  async run(argv, ctx) {
    const p = parseCommandArgs("dmesg", argv, this.options);
    if (p.positionals.length > 0) throw usageError("dmesg", "takes no arguments");
    const lines = (await request({ op: "dmesg", clear: boolOpt(p, "clear") }, ctx)) as string[];
    for (const l of lines) ctx.stdout.write(l + "\n");
    return 0;
  },
};

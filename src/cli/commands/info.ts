/** `vmstack info`: the host as vmstack sees it (filled in by the vmm and image layers). */
import type { Command } from "../command.js";
import { parseCommandArgs, boolOpt } from "../args.js";
import { version } from "../main.js";

export const infoCommand: Command = {
  name: "info",
  summary: "show the host: guest kernel, QEMU version, accelerator",
  usage: "[--json]",
  options: { json: { type: "boolean", help: "print JSON" } },
  async run(argv, ctx) {
    const p = parseCommandArgs("info", argv, this.options);
    const info = { vmstack: version() };
    ctx.stdout.write(boolOpt(p, "json") ? JSON.stringify(info) + "\n" : `vmstack ${info.vmstack}\n`);
    return 0;
  },
};

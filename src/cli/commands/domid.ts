/** `vmstack domid NAME`: xl domid. */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const domidCommand: Command = {
  name: "domid",
  summary: "print a domain's id",
  usage: "NAME",
  options: {},
  async run(argv, ctx) {
    const [name, extra] = parseCommandArgs("domid", argv, this.options).positionals;
    if (name === undefined || extra !== undefined) throw usageError("domid", "expected one NAME");
    ctx.stdout.write(`${String(await request({ op: "domid", name }, ctx))}\n`);
    return 0;
  },
};

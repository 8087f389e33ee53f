/** `vmstack domname ID`: xl domname. */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const domnameCommand: Command = {
  name: "domname",
  summary: "print the name of the domain with this id",
  usage: "DOMID",
  options: {},
  async run(argv, ctx) {
    const [id, extra] = parseCommandArgs("domname", argv, this.options).positionals;
    if (id === undefined || extra !== undefined || !/^\d+$/.test(id)) throw usageError("domname", "expected one numeric DOMID");
    ctx.stdout.write(`${String(await request({ op: "domname", domid: Number(id) }, ctx))}\n`);
    return 0;
  },
};

/** `vmstack rename D NEW`: xl rename. */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const renameCommand: Command = {
  name: "rename",
  summary: "rename a domain",
  usage: "DOMAIN NEW-NAME",
  options: {},
  async run(argv, ctx) {
    const p = parseCommandArgs("rename", argv, this.options);
    const [domain, newName, extra] = p.positionals;
    if (domain === undefined || newName === undefined) throw usageError("rename", "expected DOMAIN NEW-NAME");
    if (extra !== undefined) throw usageError("rename", `unexpected argument '${extra}'`);
    await request({ op: "rename", domain, newName }, ctx);
    return 0;
  },
};

/** `vmstack sysrq D LETTER`: xl sysrq (Alt+SysRq+LETTER on the guest's keyboard). */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const sysrqCommand: Command = {
  name: "sysrq",
  summary: "send a magic SysRq key to a domain",
  usage: "DOMAIN LETTER",
  options: {},
  async run(argv, ctx) {
    const [domain, letter, extra] = parseCommandArgs("sysrq", argv, this.options).positionals;
    if (domain === undefined || letter === undefined || extra !== undefined || !/^[a-z0-9]$/.test(letter)) throw usageError("sysrq", "expected DOMAIN and one letter");
    await request({ op: "sysrq", domain, letter }, ctx);
    return 0;
  },
};

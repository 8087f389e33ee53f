/** `vmstack trigger D nmi|reset|power`: xl trigger. */
import type { Command } from "../command.js";
import { parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import { TRIGGERS, type Trigger } from "../../vmm/api/protocol.js";

export const triggerCommand: Command = {
  name: "trigger",
  summary: "send an NMI, a reset or an ACPI power-button press to a domain",
  usage: `DOMAIN ${TRIGGERS.join("|")}`,
  options: {},
  async run(argv, ctx) {
    const [domain, what, extra] = parseCommandArgs("trigger", argv, this.options).positionals;
    if (domain === undefined || what === undefined || extra !== undefined) throw usageError("trigger", "expected DOMAIN and a trigger");
    if (!(TRIGGERS as readonly string[]).includes(what)) throw usageError("trigger", `unknown trigger '${what}' (${TRIGGERS.join(", ")})`);
    await request({ op: "trigger", domain, trigger: what as Trigger }, ctx);
    return 0;
  },
};

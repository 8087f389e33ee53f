/**
 * Shared shape of the domain verbs that talk to vmstackd (pause, unpause, destroy, reboot, …):
 * parse argv, send one request, print the result. The daemon does the work (house rule 3).
 */
import type { Command, CommandContext } from "../command.js";
import { parseCommandArgs, usageError, type OptionSpecs } from "../args.js";
import { vmstackdRequest } from "../../vmm/api/client.js";
import type { Request } from "../../vmm/api/protocol.js";

export function request(req: Request, ctx: CommandContext): Promise<unknown> {
  return ctx.request ? ctx.request(req) : vmstackdRequest(req, { signal: ctx.signal });
}

/** `vmstack VERB D`: one domain argument, no options. */
export function domainVerb(name: "pause" | "unpause" | "destroy" | "reboot", summary: string, details?: string): Command {
  const options: OptionSpecs = {};
  return {
    name,
    summary,
    usage: "DOMAIN",
    options,
    ...(details === undefined ? {} : { details }),
    async run(argv, ctx) {
      const p = parseCommandArgs(name, argv, options);
      const [domain, extra] = p.positionals;
      if (domain === undefined) throw usageError(name, "missing DOMAIN (a name or domid)");
      if (extra !== undefined) throw usageError(name, `unexpected argument '${extra}'`);
      await request({ op: name, domain }, ctx);
      return 0;
    },
  };
}

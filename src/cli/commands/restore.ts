/** `vmstack restore [-p] [--force] [--json] FILE`: xl restore. */
import { callerPath, type Command } from "../command.js";
import { boolOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import type { DomainInfo } from "../../vmm/api/protocol.js";

export const restoreCommand: Command = {
  name: "restore",
  summary: "bring a domain back from a file written by vmstack save",
  usage: "[-p] [--force] [--json] FILE",
  options: {
    paused: { type: "boolean", short: "p", help: "leave the restored domain paused (vmstack unpause starts it)" },
    force: { type: "boolean", help: "restore even when the host's memory is already committed (overcommit)" },
    json: { type: "boolean", help: "print the restored domain as JSON" },
  },
  details: [
    "The whole file (signature, format version, length, checksum) is checked before anything starts:",
    "a corrupt, truncated or foreign file is refused and nothing changes. The domain keeps its name",
    "and uuid and gets a new domid; a domain of the same name must not be running. The kernel and",
    "initrd it was started with must still be there, unchanged.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("restore", argv, this.options);
    const [file, extra] = p.positionals;
    if (file === undefined) throw usageError("restore", "missing FILE");
    if (extra !== undefined) throw usageError("restore", `unexpected argument '${extra}' (vmstack restore takes the config from the file)`);
    const info = (await request({ op: "restore", file: callerPath(ctx, file), paused: boolOpt(p, "paused"), force: boolOpt(p, "force") }, ctx)) as DomainInfo;
    if (boolOpt(p, "json")) ctx.stdout.write(JSON.stringify(info) + "\n");
    else ctx.stdout.write(`restored ${info.name} (domid ${info.domid})\n`);
    return 0;
  },
};

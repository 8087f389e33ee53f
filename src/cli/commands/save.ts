/** `vmstack save [-c] [-p] [--json] DOMAIN FILE`: xl save. vmstackd writes the file (save-file.ts). */
import { callerPath, type Command } from "../command.js";
import { boolOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";
import type { SaveResult } from "../../vmm/manager-save.js";

export const saveCommand: Command = {
  name: "save",
  summary: "save a domain's memory, device state and config to a file (destroys it unless -c or -p)",
  usage: "[-c] [-p] [--json] DOMAIN FILE",
  options: {
    checkpoint: { type: "boolean", short: "c", help: "leave the domain running after the save (a checkpoint)" },
    paused: { type: "boolean", short: "p", help: "leave the domain paused after the save" },
    json: { type: "boolean", help: "print the result as JSON (file, bytes, compression, what became of the domain)" },
  },
  details: [
    "As xl save: once the state is safely in FILE the domain is destroyed, unless -c or -p keeps it.",
    "The file is written beside FILE and renamed into place, so a failed save leaves no file and",
    "the domain as it was. `vmstack restore FILE` brings the domain back, also after a restart of",
    "vmstackd or of the host. Domains with virtiofs shares or scratch disks cannot be saved.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("save", argv, this.options);
    const [domain, file, extra] = p.positionals;
    if (domain === undefined || file === undefined) throw usageError("save", "expected DOMAIN FILE");
    if (extra !== undefined) throw usageError("save", `unexpected argument '${extra}'`);
    const r = (await request({ op: "save", domain, file: callerPath(ctx, file), keepRunning: boolOpt(p, "checkpoint"), paused: boolOpt(p, "paused") }, ctx)) as SaveResult;
    if (boolOpt(p, "json")) ctx.stdout.write(JSON.stringify(r) + "\n");
    else ctx.stdout.write(`saved ${domain} to ${r.file} (${(r.bytes / 1048576).toFixed(1)} MiB); domain ${r.domain}\n`);
    return 0;
  },
};

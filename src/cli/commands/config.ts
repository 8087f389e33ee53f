/**
 * `vmstack config convert|check|show`: domain config files. `convert` goes between xl.cfg (and
 * xm) and vmstack's JSON, lossless for what both can say; what one side cannot express is listed
 * on stderr, never dropped silently.
 */
import { writeFile } from "node:fs/promises";
import type { Command } from "../command.js";
import { parseCommandArgs, stringOpt, usageError } from "../args.js";
import { exportXlConfig, formatProblem, loadDomainFile } from "../../domain/index.js";

const SUBCOMMANDS = ["convert", "check", "show"] as const;

export const configCommand: Command = {
  name: "config",
  summary: "convert domain configs between xl.cfg and JSON, check them, show them normalized",
  usage: "convert [--to xl|json] [-o OUT] FILE | check FILE | show FILE",
  options: {
    to: { type: "string", arg: "xl|json", help: "target format of convert (default: the other one)" },
    output: { type: "string", short: "o", arg: "OUT", help: "write to OUT instead of stdout" },
  },
  details: [
    "convert  xl.cfg/xm → JSON prints the options as written (defaults left out); JSON → xl.cfg",
    "         prints the normalized config in xl.cfg syntax.",
    "check    validate; print warnings; exit 1 with every error at once.",
    "show     print the normalized config (every default applied) as JSON.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("config", argv, this.options);
    const [sub, file, ...rest] = p.positionals;
    if (sub === undefined || !(SUBCOMMANDS as readonly string[]).includes(sub)) throw usageError("config", `expected one of ${SUBCOMMANDS.join(", ")}`);
    if (file === undefined) throw usageError("config", "missing FILE");
    if (rest.length > 0) throw usageError("config", `unexpected argument '${rest[0] ?? ""}'`);
    const loaded = await loadDomainFile(file);
    for (const w of loaded.warnings) ctx.stderr.write(formatProblem(w) + "\n");
    let text: string;
    switch (sub) {
      case "check":
        ctx.stdout.write(`${file}: ok (${loaded.dialect}, domain '${loaded.config.name}', ${loaded.warnings.length} warning(s))\n`);
        return 0;
      case "show":
        text = JSON.stringify(loaded.config, null, 2) + "\n";
        break;
      case "convert": {
        const to = stringOpt(p, "to") ?? (loaded.format === "xl" ? "json" : "xl");
        if (to !== "xl" && to !== "json") throw usageError("config", `--to expects xl or json, got '${to}'`);
        if (to === "json") text = JSON.stringify(loaded.format === "json" ? loaded.spec : loaded.spec, null, 2) + "\n";
        else {
          const out = exportXlConfig(loaded.config, `Converted by vmstack from ${file}`);
          for (const w of out.warnings) ctx.stderr.write(`warning: ${w}\n`);
          text = out.text;
        }
        break;
      }
      default:
        throw usageError("config", `unknown subcommand '${sub}'`);
    }
    const output = stringOpt(p, "output");
    if (output === undefined) ctx.stdout.write(text);
    else await writeFile(output, text);
    return 0;
  },
};

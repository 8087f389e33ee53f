/**
 * `vmstack create [-n|--dry-run] FILE [KEY=VALUE…]`: xl's create. For now only the dry run
 * exists: it prints the normalized config as JSON and the QEMU command line, starting nothing.
 */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { compileDomain, formatProblem, loadDomainFile } from "../../domain/index.js";
import { VmstackError } from "../../lib/errors.js";

export const QEMU_BINARY = "qemu-system-x86_64";

/** Quote one argument for display only (the argv itself is never run through a shell). */
export function displayArg(a: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`;
}

export const createCommand: Command = {
  name: "create",
  summary: "create a domain from an xl.cfg, xm or JSON config (only --dry-run for now)",
  usage: "[-n|--dry-run] [--json] [--run-dir DIR] [--state-dir DIR] FILE [KEY=VALUE…]",
  options: {
    "dry-run": { type: "boolean", short: "n", help: "print the normalized config and the QEMU command line; start nothing" },
    json: { type: "boolean", help: "print one JSON object (config, argv, prepare steps, helpers, notes, warnings)" },
    "run-dir": { type: "string", arg: "DIR", help: "run directory shown in paths (default /run/vmstack/NAME)" },
    "state-dir": { type: "string", arg: "DIR", help: "persistent directory shown in paths (default /var/lib/vmstack/NAME)" },
  },
  details: [
    "KEY=VALUE pairs override the file's settings, as with xl create: for xl.cfg files they are xl",
    "settings (memory=512, 'vif=[\"\"]'); for JSON files option paths (memory=512, boot.cmdline=...).",
    "",
    "Examples:",
    "  vmstack create -n /etc/xen/guest.cfg memory=256",
    "  vmstack create --dry-run --json guest.json",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("create", argv, this.options);
    const [file, ...overrides] = p.positionals;
    if (file === undefined) throw usageError("create", "missing FILE");
    for (const o of overrides) if (!o.includes("=")) throw usageError("create", `'${o}' is not KEY=VALUE`);
    if (!boolOpt(p, "dry-run")) {
      throw new VmstackError(
        "NOT_IMPLEMENTED",
        "starting domains is not implemented yet; only 'vmstack create --dry-run FILE' exists (it prints the config and the QEMU command line)",
      );
    }
    const loaded = await loadDomainFile(file, { overrides });
    const runDir = stringOpt(p, "run-dir") ?? `/run/vmstack/${loaded.config.name}`;
    const stateDir = stringOpt(p, "state-dir") ?? `/var/lib/vmstack/${loaded.config.name}`;
    const plan = compileDomain(loaded.config, { runDir, stateDir });
    if (boolOpt(p, "json")) {
      const out = {
        config: loaded.config,
        argv: [QEMU_BINARY, ...plan.argv],
        prepare: plan.prepare,
        helpers: plan.helpers,
        paths: plan.paths,
        mounts: plan.mounts,
        notes: plan.notes,
        warnings: loaded.warnings.map(formatProblem),
      };
      ctx.stdout.write(JSON.stringify(out, null, 2) + "\n");
      return 0;
    }
    for (const w of loaded.warnings) ctx.stderr.write(formatProblem(w) + "\n");
    ctx.stdout.write(JSON.stringify(loaded.config, null, 2) + "\n\n");
    for (const step of plan.prepare) {
      ctx.stdout.write(`# at start: ${step.kind === "copy-if-missing" ? `copy ${step.from} to ${step.to} if missing` : `${step.kind}: ${step.argv.map(displayArg).join(" ")}`}\n`);
    }
    for (const h of plan.helpers) ctx.stdout.write(`# helper ${h.name}: ${h.argv.map(displayArg).join(" ")}\n`);
    for (const m of plan.mounts) ctx.stdout.write(`# in the guest: mount -t virtiofs ${m.readOnly ? "-o ro " : ""}${m.tag} ${m.target}\n`);
    for (const n of plan.notes) ctx.stdout.write(`# note: ${n}\n`);
    ctx.stdout.write(displayCommandLine([QEMU_BINARY, ...plan.argv]) + "\n");
    return 0;
  },
};

/** One option and its value per line, for reading; display only. */
export function displayCommandLine(argv: readonly string[]): string {
  const lines: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const next = argv[i + 1];
    if (i > 0 && a.startsWith("-") && next !== undefined && !next.startsWith("-")) {
      lines.push(`${displayArg(a)} ${displayArg(next)}`);
      i++;
    } else lines.push(displayArg(a));
  }
  return lines.join(" \\\n    ");
}

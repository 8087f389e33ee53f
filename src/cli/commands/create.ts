/**
 * `vmstack create [-c] [-p] [-n|--dry-run] [FILE] [KEY=VALUE…]`: xl's create. The config is
 * loaded and validated here (errors name file:line:col) and vmstackd starts the domain; the dry
 * run prints the normalized config and the QEMU command line, starting nothing. Without FILE the
 * KEY=VALUE pairs are the whole spec (option paths, as for JSON files), and a spec without a
 * kernel or disk boots vmstack's default guest.
 */
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { readFile } from "node:fs/promises";
import { DomainConfigError, compileDomain, errorsOf, formatProblem, loadDomainFile, loadDomainText, type LoadedDomain } from "../../domain/index.js";
import { detectFormat } from "../../domain/load.js";
import { DEFAULT_GUEST_PLACEHOLDER, usesDefaultGuest } from "../../vmm/default-guest.js";
import { request } from "./domain-verb.js";
import { attachConsole, parseEscape } from "./console.js";
import type { DomainInfo } from "../../vmm/api/protocol.js";

export const QEMU_BINARY = "qemu-system-x86_64";

/** Quote one argument for display only (the argv itself is never run through a shell). */
export function displayArg(a: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`;
}

export const createCommand: Command = {
  name: "create",
  summary: "create and start a domain from an xl.cfg, xm or JSON config, or from KEY=VALUE alone",
  usage: "[-c] [-p] [--force] [-n|--dry-run] [--json] [--run-dir DIR] [--state-dir DIR] [FILE] [KEY=VALUE…]",
  options: {
    console: { type: "boolean", short: "c", help: "attach to the console once the domain runs (Ctrl-] detaches)" },
    paused: { type: "boolean", short: "p", help: "leave the domain paused (vmstack unpause starts it)" },
    force: { type: "boolean", help: "start even when the host's memory is already committed (overcommit)" },
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
    "  vmstack create name=demo memory=256        # vmstack's default guest, no file",
    "  vmstack create -c guest.cfg",
    "  vmstack create --dry-run --json guest.json",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("create", argv, this.options);
    const first = p.positionals[0];
    // xl's rule: the first argument is the config file unless it is KEY=VALUE.
    const file = first !== undefined && !first.includes("=") ? first : undefined;
    const overrides = file === undefined ? p.positionals : p.positionals.slice(1);
    if (file === undefined && overrides.length === 0) throw usageError("create", "missing FILE (or KEY=VALUE settings such as name=demo)");
    for (const o of overrides) if (!o.includes("=")) throw usageError("create", `'${o}' is not KEY=VALUE`);
    const load = (extra: readonly string[]): Promise<LoadedDomain> | LoadedDomain =>
      file === undefined ? loadDomainText("{}", "<command line>", { format: "json", overrides: [...overrides, ...extra] }) : loadDomainFile(file, { overrides: [...overrides, ...extra] });
    let loaded: LoadedDomain;
    try {
      loaded = await load([]);
    } catch (e) {
      // Nothing to boot and that is the only problem: vmstack's default guest (the kernel and agent initrd of `vmstack run`).
      if (!(e instanceof DomainConfigError) || !errorsOf(e.problems).every((x) => x.message.startsWith("nothing to boot"))) throw e;
      const xl = file !== undefined && detectFormat(file, await readFile(file, "utf8")) === "xl";
      loaded = await load([xl ? `kernel="${DEFAULT_GUEST_PLACEHOLDER}"` : `boot.kernel=${DEFAULT_GUEST_PLACEHOLDER}`]);
    }
    if (!boolOpt(p, "dry-run")) {
      for (const w of loaded.warnings) ctx.stderr.write(formatProblem(w) + "\n");
      // The image code loads only when needed: it is most of this command's start-up otherwise.
      let config = loaded.config;
      if (usesDefaultGuest(config)) {
        const guest = await import("../../vmm/manager-guest.js");
        for (const w of guest.unseenDrives(config)) ctx.stderr.write(`vmstack create: warning: ${w}\n`);
        config = await guest.withDefaultGuest(config, process.env, ctx.signal);
      }
      const info = (await request({ op: "create", config: config as unknown as Record<string, unknown>, paused: boolOpt(p, "paused"), force: boolOpt(p, "force") }, ctx)) as DomainInfo;
      if (boolOpt(p, "json")) ctx.stdout.write(JSON.stringify(info) + "\n");
      if (boolOpt(p, "console")) await attachConsole(info.name, parseEscape("^]"), ctx);
      return 0;
    }
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

/**
 * CLI entry: global flags, verb dispatch, --help/--version, and the single translation of errors
 * into a one-line message plus exit code (house rule 4). Detail (cause, facts, stack) with --debug.
 */
import { createRequire } from "node:module";
import { formatOptions, parseCommandArgs } from "./args.js";
import type { Command, CommandContext } from "./command.js";
import { commands } from "./commands/index.js";
import { isVmstackError, messageOf } from "../lib/errors.js";
import { setLogLevel } from "../lib/log.js";

/** Exit codes of vmstack's own failures. `vmstack run` otherwise exits with the guest command's status. */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export function version(): string {
  const pkg = createRequire(import.meta.url)("../../../package.json") as { version: string };
  return pkg.version;
}

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "vmstack — a virtual-machine toolstack: throwaway VMs, domains like xl, a Xen-compatible xenstored",
    "",
    "Usage: vmstack [--verbose] [--debug] COMMAND [ARGS…]",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Global options:",
    "  --verbose    log what vmstack does (accelerator, cache hits, QEMU command line) to stderr",
    "  --debug      on failure, print the error's cause, facts and stack",
    "  --version    print the version",
    "",
    "Run 'vmstack COMMAND --help' for a command's options.",
  ].join("\n");
}

export function commandHelp(c: Command): string {
  return [
    `Usage: vmstack ${c.name} ${c.usage}`,
    "",
    c.summary,
    "",
    "Options:",
    formatOptions({ ...c.options, help: { type: "boolean", short: "h", help: "show this help" } }),
    ...(c.details ? ["", c.details] : []),
  ].join("\n");
}

export async function main(argv: readonly string[], ctx: Omit<CommandContext, "verbose">): Promise<number> {
  let i = 0;
  let verbose = false;
  let debug = false;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--verbose" || a === "-v") verbose = true;
    else if (a === "--debug") debug = true;
    else break;
  }
  if (verbose || debug) setLogLevel("debug");
  const verb = argv[i];
  const rest = argv.slice(i + 1);
  if (verb === undefined || verb === "--help" || verb === "-h" || verb === "help") {
    const named = verb === "help" ? commands.find((c) => c.name === rest[0]) : undefined;
    ctx.stdout.write((named ? commandHelp(await named.load()) : mainHelp()) + "\n");
    return verb === undefined ? EXIT_USAGE : 0;
  }
  if (verb === "--version" || verb === "version") {
    ctx.stdout.write(`vmstack ${version()}\n`);
    return 0;
  }
  const entry = commands.find((c) => c.name === verb);
  if (!entry) {
    ctx.stderr.write(`vmstack: unknown command '${verb}' (see 'vmstack --help')\n`);
    return EXIT_USAGE;
  }
  const command = await entry.load();
  // --help anywhere before a `--` shows the command's help.
  const dashdash = rest.indexOf("--");
  const head = dashdash === -1 ? rest : rest.slice(0, dashdash);
  if (head.includes("--help") || head.includes("-h")) {
    ctx.stdout.write(commandHelp(command) + "\n");
    return 0;
  }
  try {
    return await command.run(rest, { ...ctx, verbose });
  } catch (e) {
    return reportError(e, debug, ctx.stderr, command);
  }
}

function reportError(e: unknown, debug: boolean, stderr: NodeJS.WritableStream, command: Command): number {
  if (isVmstackError(e)) {
    stderr.write(`vmstack ${command.name}: ${e.message}\n`);
    if (debug) {
      stderr.write(`  code: ${e.code}\n`);
      for (const [k, v] of Object.entries(e.facts)) stderr.write(`  ${k}: ${typeof v === "string" ? v : JSON.stringify(v)}\n`);
      if (e.cause !== undefined) stderr.write(`  cause: ${messageOf(e.cause)}\n`);
      if (e.stack) stderr.write(e.stack + "\n");
    }
    return e.code === "USAGE" ? EXIT_USAGE : EXIT_FAILURE;
  }
  // Not one of ours: a bug. Say so plainly, with the stack.
  stderr.write(`vmstack ${command.name}: internal error: ${messageOf(e)}\n`);
  if (e instanceof Error && e.stack) stderr.write(e.stack + "\n");
  return EXIT_FAILURE;
}

export { parseCommandArgs };

/** `vmstack shutdown [-w] [-a] [-F] D`: xl shutdown. */
import type { Command } from "../command.js";
import { boolOpt, intOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const shutdownCommand: Command = {
  name: "shutdown",
  summary: "ask a domain's guest to power off",
  usage: "[-w] [-F [--timeout S]] (-a | DOMAIN)",
  options: {
    wait: { type: "boolean", short: "w", help: "wait until the domain has shut down" },
    all: { type: "boolean", short: "a", help: "every domain" },
    force: { type: "boolean", short: "F", help: "destroy the domain when it has not shut down by the deadline (implies -w)" },
    timeout: { type: "string", arg: "S", help: "deadline for -F in seconds (default 60)" },
  },
  details: [
    "The guest is asked three ways: control/shutdown=poweroff in xenstore, the ACPI power button, and",
    "vmstack's guest agent when the guest runs it. on_poweroff decides what follows.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("shutdown", argv, this.options);
    const all = boolOpt(p, "all");
    const [domain, extra] = p.positionals;
    if (all ? domain !== undefined : domain === undefined || extra !== undefined) throw usageError("shutdown", "expected one DOMAIN, or -a");
    const force = boolOpt(p, "force");
    const seconds = intOpt("shutdown", p, "timeout", 1) ?? 60;
    await request({ op: "shutdown", domain: all ? null : (domain as string), wait: boolOpt(p, "wait") || force, forceAfterMs: force ? seconds * 1000 : null }, ctx);
    return 0;
  },
};

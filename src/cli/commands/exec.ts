/** `vmstack exec D [--timeout S] -- CMD [ARG…]`: run a command in a domain through vmstack's guest agent. */
import type { Command } from "../command.js";
import { intOpt, parseCommandArgs, usageError } from "../args.js";
import { request } from "./domain-verb.js";

export const execCommand: Command = {
  name: "exec",
  summary: "run a command in a domain whose guest runs vmstack's agent",
  usage: "[--timeout S] DOMAIN -- COMMAND [ARG…]",
  options: { timeout: { type: "string", arg: "S", help: "kill the command after S seconds" } },
  details: "Exits with the command's status (128+N when killed by signal N).",
  async run(argv, ctx) {
    const dd = argv.indexOf("--");
    const p = parseCommandArgs("exec", dd < 0 ? argv : argv.slice(0, dd), this.options);
    const command = dd < 0 ? p.positionals.slice(1) : argv.slice(dd + 1);
    const domain = p.positionals[0];
    if (domain === undefined || command.length === 0) throw usageError("exec", "expected DOMAIN -- COMMAND");
    const t = intOpt("exec", p, "timeout", 1);
    const r = (await request({ op: "exec", domain, argv: command, timeoutMs: t === undefined ? null : t * 1000 }, ctx)) as {
      exitCode: number | null;
      signal: number | null;
      stdout: string;
      stderr: string;
    };
    ctx.stdout.write(Buffer.from(r.stdout, "base64"));
    ctx.stderr.write(Buffer.from(r.stderr, "base64"));
    if (r.exitCode !== null) return r.exitCode;
    return 128 + (r.signal ?? 1);
  },
};

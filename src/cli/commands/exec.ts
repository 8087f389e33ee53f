/** `vmstack exec D [--timeout S] -- CMD [ARG…]`: run a command in a domain through vmstack's guest agent. */
import { constants } from "node:os";
import type { Command, CommandContext } from "../command.js";
import { intOpt, parseCommandArgs, usageError } from "../args.js";
import { exchange, openDaemon } from "../../vmm/api/client.js";
import { encodeLine, parseExecFrame, type ExecFrame } from "../../vmm/api/protocol.js";
import { VmstackError } from "../../lib/errors.js";

/** The shell's convention: 128 + the signal's number. */
export function exitStatus(exitCode: number | null, signal: string | null): number {
  if (exitCode !== null) return exitCode;
  const n = signal === null ? undefined : (constants.signals as Record<string, number | undefined>)[signal];
  return 128 + (n ?? 1);
}

/** Streams the command's output as it comes and our stdin to it; resolves to its exit status. */
async function streamed(domain: string, argv: readonly string[], timeoutMs: number | null, ctx: CommandContext): Promise<number> {
  const s = await openDaemon({ signal: ctx.signal });
  try {
    await exchange(s, { op: "exec", domain, argv, timeoutMs, stream: true }, ctx.signal);
  } catch (e) {
    s.destroy();
    throw e;
  }
  const stdin = ctx.stdin as NodeJS.ReadStream;
  // Once vmstackd has ended the session (the command exited), input has nowhere to go: writing
  // after its FIN would raise EPIPE on a socket nobody listens to for errors any more.
  const open = (): boolean => s.readable && s.writable;
  const onInput = (c: Buffer): void => void (open() && s.write(encodeLine({ i: c.toString("base64") } satisfies ExecFrame)));
  const onEnd = (): void => void (open() && s.write(encodeLine({ eof: true } satisfies ExecFrame)));
  stdin.on("data", onInput);
  stdin.once("end", onEnd);
  try {
    return await new Promise<number>((resolve, reject) => {
      let buf: Buffer = Buffer.alloc(0);
      let status: number | undefined;
      s.on("data", (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const f = parseExecFrame(JSON.parse(buf.subarray(0, nl).toString("utf8")));
          buf = buf.subarray(nl + 1);
          if ("o" in f) ctx.stdout.write(Buffer.from(f.o, "base64"));
          else if ("e" in f) ctx.stderr.write(Buffer.from(f.e, "base64"));
          else if ("x" in f) status = exitStatus(f.x.exitCode, f.x.signal);
        }
      });
      s.on("close", () => (status === undefined ? reject(new VmstackError("DAEMON_GONE", "vmstackd closed the exec session before the command ended")) : resolve(status)));
      ctx.signal.addEventListener("abort", () => s.destroy(), { once: true });
    });
  } finally {
    stdin.off("data", onInput);
    stdin.off("end", onEnd);
    // Our stdin was only for the command: a paused pipe would keep this process alive.
    stdin.destroy();
    s.destroy();
  }
}

export const execCommand: Command = {
  name: "exec",
  summary: "run a command in a domain whose guest runs vmstack's agent",
  usage: "[--timeout S] DOMAIN -- COMMAND [ARG…]",
  options: { timeout: { type: "string", arg: "S", help: "kill the command after S seconds" } },
  details: "Output is streamed as it comes; stdin is passed to the command. Exits with the command's status (128+N when killed by signal N).",
  async run(argv, ctx) {
    const dd = argv.indexOf("--");
    const p = parseCommandArgs("exec", dd < 0 ? argv : argv.slice(0, dd), this.options);
    const command = dd < 0 ? p.positionals.slice(1) : argv.slice(dd + 1);
    const domain = p.positionals[0];
    if (domain === undefined || command.length === 0) throw usageError("exec", "expected DOMAIN -- COMMAND");
    const t = intOpt("exec", p, "timeout", 1);
    return streamed(domain, command, t === undefined ? null : t * 1000, ctx);
  },
};

/** `vmstack console [-e ESC] D`: attach to a domain's serial console; Ctrl-] (or ESC) detaches. */
import type { Socket } from "node:net";
import type { Command, CommandContext } from "../command.js";
import { parseCommandArgs, stringOpt, usageError } from "../args.js";
import { openDaemon, exchange } from "../../vmm/api/client.js";

/** `^]` → 0x1d; a single character → its code. */
export function parseEscape(spec: string): number {
  if (/^\^[@-_a-z]$/.test(spec)) return (spec.toUpperCase().charCodeAt(1) - 0x40) & 0x1f;
  if (spec.length === 1) return spec.charCodeAt(0);
  throw usageError("console", `-e expects ^X or one character, got '${spec}'`);
}

/**
 * Console bytes to stdout, stdin to the console, until the escape byte is typed, the domain's
 * console ends, or the command is interrupted. A terminal is put in raw mode meanwhile.
 */
export async function attachConsole(domain: string, escape: number, ctx: CommandContext): Promise<void> {
  const s: Socket = await openDaemon({ signal: ctx.signal });
  try {
    await exchange(s, { op: "console", domain }, ctx.signal);
  } catch (e) {
    s.destroy();
    throw e;
  }
  const stdin = ctx.stdin as NodeJS.ReadStream;
  const tty = stdin.isTTY === true && typeof stdin.setRawMode === "function";
  if (tty) stdin.setRawMode(true);
  const restore = (): void => {
    if (tty) stdin.setRawMode(false);
  };
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      restore();
      stdin.off("data", onInput);
      // Detaching ends this process's use of stdin: a paused pipe would still keep it alive.
      stdin.destroy();
      ctx.signal.removeEventListener("abort", finish);
      s.end();
      s.destroy();
      resolve();
    };
    const onInput = (c: Buffer): void => {
      const i = c.indexOf(escape);
      if (i >= 0) {
        if (i > 0) s.write(c.subarray(0, i));
        finish();
      } else s.write(c);
    };
    s.on("data", (c: Buffer) => ctx.stdout.write(c));
    s.on("close", finish);
    s.on("error", finish);
    s.resume();
    stdin.on("data", onInput);
    stdin.resume();
    ctx.signal.addEventListener("abort", finish, { once: true });
  });
}

export const consoleCommand: Command = {
  name: "console",
  summary: "attach to a domain's serial console (Ctrl-] detaches)",
  usage: "[-e ESC] DOMAIN",
  options: { escape: { type: "string", short: "e", arg: "ESC", help: "detach character, e.g. ^] (the default) or ^A" } },
  details: "Several consoles may be attached to one domain at once; each sees all output.",
  async run(argv, ctx) {
    const p = parseCommandArgs("console", argv, this.options);
    const [domain, extra] = p.positionals;
    if (domain === undefined || extra !== undefined) throw usageError("console", "expected one DOMAIN");
    await attachConsole(domain, parseEscape(stringOpt(p, "escape") ?? "^]"), ctx);
    return 0;
  },
};

/**
 * What a CLI verb is. Each verb lives in cli/commands/<verb>.ts and only parses argv into a typed
 * request and calls into the layers below (house rule 3). `run` resolves to the process exit code.
 */
import type { OptionSpecs } from "./args.js";
import { resolve } from "node:path";
import type { Request } from "../vmm/api/protocol.js";

export interface CommandContext {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  /** Aborted on SIGINT/SIGTERM: commands stop their work and clean up. */
  readonly signal: AbortSignal;
  readonly verbose: boolean;
  /** Inside vmstackd (fast-path.ts): vmstackd's own handler, used instead of its socket. */
  readonly request?: (req: Request) => Promise<unknown>;
  /** The caller's working directory when it is not this process's (a verb run inside vmstackd). */
  readonly cwd?: string;
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  /** Usage lines after `vmstack <name>`, e.g. "[options] -- COMMAND [ARG…]". */
  readonly usage: string;
  readonly options: OptionSpecs;
  /** Extra help text after the options (examples, exit codes). */
  readonly details?: string;
  run(argv: readonly string[], ctx: CommandContext): Promise<number>;
}

/** A path argument as the user meant it: relative to the caller's working directory. */
export function callerPath(ctx: Pick<CommandContext, "cwd">, path: string): string {
  return ctx.cwd === undefined ? resolve(path) : resolve(ctx.cwd, path);
}

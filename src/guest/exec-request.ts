/** What a caller asks the guest to run, validated once at the entry point (house rule 5). */
import { VmstackError } from "../lib/errors.js";
import type { ExecFrameFields } from "./protocol.js";
import { MAX_PAYLOAD } from "./protocol.js";

export interface ExecRequest {
  /** The program and its arguments, run directly (PATH is searched). Exactly one of argv/shell. */
  readonly argv?: readonly string[];
  /** A script for `/bin/sh -c` in the guest. */
  readonly shell?: string;
  /** Variables to set (merged over the agent's environment unless clearEnv). */
  readonly env?: Readonly<Record<string, string>>;
  readonly clearEnv?: boolean;
  /** Working directory in the guest; default the agent's (`/`). */
  readonly cwd?: string;
  /**
   * "pipe": stream it with writeStdin/closeStdin. A string or bytes: sent, then EOF.
   * Default "null" (/dev/null), so a command that reads stdin never waits for the host.
   */
  readonly stdin?: "pipe" | "null" | string | Uint8Array;
  /** Enforced in the guest: the process group is killed with SIGKILL and the result says timedOut. */
  readonly timeoutMs?: number;
  /**
   * After the command exits, how long to wait for its stdout/stderr to close before reporting
   * the exit anyway with outputHeldOpen (a background process kept them open). Agent default 250.
   */
  readonly outputGraceMs?: number;
  /** Aborting kills the command's process group (SIGKILL); the result then reports the signal. */
  readonly signal?: AbortSignal;
}

export interface ParsedExec {
  readonly fields: ExecFrameFields;
  /** Bytes to send as stdin before EOF, when stdin was given as data. */
  readonly stdinData: Buffer | undefined;
  readonly signal: AbortSignal | undefined;
}

const KNOWN_KEYS = new Set(["argv", "shell", "env", "clearEnv", "cwd", "stdin", "timeoutMs", "outputGraceMs", "signal"]);
const U32_MAX = 0xffff_ffff;
/** The agent's limit on argv and env entries per exec (agent.c MAX_ITEMS). */
const MAX_ITEMS = 4096;

function bad(message: string, facts: Record<string, unknown> = {}): VmstackError {
  return new VmstackError("GUEST_BAD_EXEC_REQUEST", `exec request: ${message}`, { facts });
}

function checkString(s: unknown, what: string): string {
  if (typeof s !== "string") throw bad(`${what} must be a string`);
  if (s.includes("\0")) throw bad(`${what} contains a NUL byte`, { value: s });
  return s;
}

function checkMs(v: unknown, what: string): number {
  if (v === undefined) return 0;
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > U32_MAX) {
    throw bad(`${what} must be a positive integer number of milliseconds`, { value: v });
  }
  return v;
}

export function parseExecRequest(input: unknown): ParsedExec {
  if (typeof input !== "object" || input === null) throw bad("must be an object");
  const r = input as Record<string, unknown>;
  for (const key of Object.keys(r)) if (!KNOWN_KEYS.has(key)) throw bad(`unknown key "${key}"`);
  const { argv, shell } = r;
  let args: string[];
  if (argv !== undefined && shell !== undefined) throw bad("give argv or shell, not both");
  if (shell !== undefined) {
    args = [checkString(shell, "shell")];
  } else if (Array.isArray(argv) && argv.length > 0) {
    args = argv.map((a, i) => checkString(a, `argv[${i}]`));
  } else {
    throw bad("argv must be a non-empty array of strings (or give shell)");
  }
  const env: string[] = [];
  if (r["env"] !== undefined) {
    if (typeof r["env"] !== "object" || r["env"] === null) throw bad("env must be an object of strings");
    for (const [name, value] of Object.entries(r["env"])) {
      if (name === "" || name.includes("=")) throw bad(`env name "${name}" is empty or contains "="`);
      env.push(`${checkString(name, "env name")}=${checkString(value, `env ${name}`)}`);
    }
  }
  const stdin = r["stdin"] ?? "null";
  let stdinData: Buffer | undefined;
  if (typeof stdin === "string" && stdin !== "pipe" && stdin !== "null") stdinData = Buffer.from(stdin, "utf8");
  else if (stdin instanceof Uint8Array) stdinData = Buffer.from(stdin);
  else if (stdin !== "pipe" && stdin !== "null") throw bad('stdin must be "pipe", "null", a string or bytes');
  const signal = r["signal"];
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw bad("signal must be an AbortSignal");
  if (r["clearEnv"] !== undefined && typeof r["clearEnv"] !== "boolean") throw bad("clearEnv must be a boolean");
  const fields: ExecFrameFields = {
    shell: shell !== undefined,
    stdin: stdin === "pipe" || stdinData !== undefined,
    clearEnv: r["clearEnv"] === true,
    timeoutMs: checkMs(r["timeoutMs"], "timeoutMs"),
    graceMs: checkMs(r["outputGraceMs"], "outputGraceMs"),
    cwd: r["cwd"] === undefined ? "" : checkString(r["cwd"], "cwd"),
    argv: args,
    env,
  };
  if (args.length > MAX_ITEMS || env.length > MAX_ITEMS) throw bad(`at most ${MAX_ITEMS} argv and env entries`);
  const size = [...args, ...env, fields.cwd].reduce((n, s) => n + 4 + Buffer.byteLength(s), 24);
  if (size > MAX_PAYLOAD) throw bad(`argv, env and cwd take ${size} bytes; the limit is ${MAX_PAYLOAD}`);
  return { fields, stdinData, signal };
}

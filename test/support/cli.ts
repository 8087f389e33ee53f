/** Running the real, compiled CLI as a child process, as a user would. */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** dist/src/bin/vmstack.js (this file compiles to dist/test/support/cli.js). */
export const VMSTACK_BIN = fileURLToPath(new URL("../../src/bin/vmstack.js", import.meta.url));

/** dist/front/vmstack, the native front end (front/vmstack.c). */
export const FRONT_BIN = fileURLToPath(new URL("../../front/vmstack", import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export interface CliOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly stdin?: string;
  /** Run the native front end instead of the Node.js CLI. */
  readonly front?: boolean;
  /** Working directory (default: this process's). */
  readonly cwd?: string;
}

export function startCli(args: readonly string[], options: CliOptions = {}): {
  child: ChildProcess;
  done: Promise<CliResult>;
} {
  const t0 = Date.now();
  const [bin, argv] = options.front ? [FRONT_BIN, args] : [process.execPath, [VMSTACK_BIN, ...args]];
  const child = spawn(bin, argv, {
    env: { ...process.env, ...options.env },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdio: [options.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  if (options.stdin !== undefined) child.stdin?.end(options.stdin);
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 }));
  });
  return { child, done };
}

export function cli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  return startCli(args, options).done;
}

/** Why real-VM tests cannot run here, or undefined when they can. */
export async function vmUnavailable(): Promise<string | undefined> {
  if (!existsSync(VMSTACK_BIN)) return "the CLI is not built (npm run build)";
  const r = await cli(["kernel", "show", "--json"]);
  if (r.code !== 0) return `no guest kernel (${r.stderr.trim()}); ./setup provides it`;
  const q = spawn("qemu-system-x86_64", ["--version"], { stdio: "ignore" });
  const ok = await new Promise<boolean>((res) => {
    q.once("error", () => res(false));
    q.once("close", (c) => res(c === 0));
  });
  return ok ? undefined : "qemu-system-x86_64 is not installed; ./setup provides it";
}

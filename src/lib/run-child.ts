/**
 * Runs short-lived tools (apt-get, dpkg-deb, depmod, lz4, qemu-img, busybox --list-full…):
 * argv arrays only (house rule 8), cancellable, stderr tail kept for the error message.
 */
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { once } from "node:events";
import { VmstackError } from "./errors.js";

export interface ChildOptions {
  readonly cwd?: string;
  readonly signal?: AbortSignal | undefined;
  /** Bytes written to the child's stdin (then closed). Without it, stdin is /dev/null. */
  readonly input?: Uint8Array;
  /** Send stdout to this file instead of collecting it. */
  readonly stdoutFile?: string;
  /** Exit codes that count as success (default [0]). */
  readonly okExitCodes?: readonly number[];
  readonly env?: NodeJS.ProcessEnv;
}

export interface ChildResult {
  readonly exitCode: number;
  readonly stdout: Buffer;
  readonly stderr: string;
}

const STDERR_TAIL = 4096;

export async function runChild(argv: readonly string[], options: ChildOptions = {}): Promise<ChildResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new RangeError("runChild: empty argv");
  options.signal?.throwIfAborted();
  const child = spawn(file, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  const { stdout, stderr } = child;
  if (stdout === null || stderr === null) throw new Error("runChild: stdio pipes missing");
  const out: Buffer[] = [];
  let err = "";
  const sink = options.stdoutFile === undefined ? undefined : createWriteStream(options.stdoutFile);
  let sinkError: unknown;
  sink?.on("error", (e) => {
    sinkError = e;
    child.kill("SIGTERM");
  });
  if (sink !== undefined) stdout.pipe(sink);
  else stdout.on("data", (c: Buffer) => out.push(c));
  stderr.on("data", (c: Buffer) => {
    err = (err + c.toString()).slice(-STDERR_TAIL);
  });
  if (options.input !== undefined && child.stdin !== null) {
    // The child may exit before reading everything (lz4 stops at the end of its stream):
    // EPIPE on stdin is then expected and the exit code decides.
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input);
  }
  let exitCode: number;
  try {
    const [code, sig] = (await once(child, "close")) as [number | null, NodeJS.Signals | null];
    exitCode = code ?? 128;
    if (sig !== null && code === null) err += `\n(killed by ${sig})`;
  } catch (e) {
    if (options.signal?.aborted === true) throw options.signal.reason;
    const enoent = (e as NodeJS.ErrnoException).code === "ENOENT";
    throw new VmstackError(
      enoent ? "TOOL_MISSING" : "CHILD_FAILED",
      enoent ? `'${file}' is not installed (./setup installs what vmstack needs)` : `could not run '${file}': ${String(e)}`,
      { cause: e, facts: { argv } },
    );
  }
  if (sink !== undefined && !sink.closed && sinkError === undefined) await once(sink, "close");
  options.signal?.throwIfAborted();
  if (sinkError !== undefined) {
    throw new VmstackError("CHILD_FAILED", `cannot write the output of '${file}' to ${options.stdoutFile ?? ""}: ${String(sinkError)}`, {
      cause: sinkError,
      facts: { argv },
    });
  }
  if (!(options.okExitCodes ?? [0]).includes(exitCode)) {
    throw new VmstackError("CHILD_FAILED", `'${argv.join(" ")}' exited with ${exitCode}: ${err.trim().split("\n").slice(-5).join(" | ")}`, {
      facts: { argv, exitCode, stderr: err },
    });
  }
  return { exitCode, stdout: Buffer.concat(out), stderr: err };
}

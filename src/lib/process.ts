/**
 * Child processes (house rule 8): argv arrays only, every child registered so it can be reaped on
 * the way out, a staged stop, and a bounded tail of stderr for error messages.
 */
import { spawn, type ChildProcess, type SpawnOptions } from "node:child_process";
import { within } from "./abort.js";
import { VmstackError } from "./errors.js";
import { runChild, type ChildOptions } from "./run-child.js";

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Keeps the last `max` bytes of a stream, for "what did it say before it died". */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max = 8192) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - (this.chunks[0]?.length ?? 0) >= this.max && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.max)).toString("utf8");
  }
  /** The last `n` non-empty lines. */
  lines(n: number): string[] {
    return this.text()
      .split(/\r?\n/)
      .filter((l) => l.trim() !== "")
      .slice(-n);
  }
}

const live = new Set<ChildProcess>();

/** Kill every child still registered (synchronously: safe in an 'exit' handler). */
export function killAllChildren(signal: NodeJS.Signals = "SIGKILL"): void {
  for (const child of live) child.kill(signal);
}

export interface ManagedChild {
  readonly process: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<Exit>;
  readonly stderrTail: TailBuffer;
  /** Resolves once the process has exited: SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<Exit>;
}

export interface SpawnManagedOptions extends Omit<SpawnOptions, "stdio"> {
  readonly stdio?: SpawnOptions["stdio"];
  /** What this process is, for error messages ("QEMU", "virtiofsd"). */
  readonly label: string;
}

export function spawnManaged(argv: readonly string[], options: SpawnManagedOptions): ManagedChild {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("spawnManaged: empty argv");
  const { label, ...spawnOptions } = options;
  const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], ...spawnOptions });
  const stderrTail = new TailBuffer();
  child.stderr?.on("data", (c: Buffer) => stderrTail.push(c));
  live.add(child);
  const exited = new Promise<Exit>((resolve, reject) => {
    child.once("error", (e: NodeJS.ErrnoException) => {
      live.delete(child);
      reject(
        new VmstackError("SPAWN_FAILED", `cannot start ${label} (${file}): ${e.code === "ENOENT" ? "not found" : e.message}`, {
          cause: e,
          facts: { argv: [...argv] },
        }),
      );
    });
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  // Callers that never await `exited` must not turn a spawn error into an unhandled rejection.
  exited.catch(() => undefined);
  return {
    process: child,
    get pid() {
      return child.pid ?? -1;
    },
    exited,
    stderrTail,
    async stop(graceMs = 2000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGTERM");
      const exit = await within(exited, graceMs);
      if (exit) return exit;
      child.kill("SIGKILL");
      return exited;
    },
  };
}

/**
 * Run a short helper command to completion and return its stdout; a non-zero exit is an error
 * naming `label`. A thin form of runChild (the one implementation) for the common case.
 */
export async function runCommand(argv: readonly string[], label: string, options: ChildOptions = {}): Promise<Buffer> {
  try {
    return (await runChild(argv, options)).stdout;
  } catch (e) {
    if (e instanceof VmstackError && e.code === "CHILD_FAILED") {
      throw new VmstackError("COMMAND_FAILED", `${label} failed: ${e.message}`, { cause: e, facts: e.facts });
    }
    throw e;
  }
}

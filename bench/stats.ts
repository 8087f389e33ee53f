/** Small statistics and timing helpers shared by the benchmarks. */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface Summary {
  readonly n: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export function summarize(samples: readonly number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  return { n: s.length, median: r(median), min: r(s[0] ?? NaN), max: r(s[s.length - 1] ?? NaN) };
}

/**
 * Wall time in seconds of one process run; rejects on a non-zero exit. With `timeoutMs` the
 * process is killed at the deadline and the promise rejects with a TimeoutError.
 */
export function timeProcess(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, timeoutMs?: number): Promise<{ seconds: number; stderr: string }> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file!, args, { env, stdio: ["ignore", "ignore", "pipe"], ...(timeoutMs !== undefined ? { timeout: timeoutMs, killSignal: "SIGKILL" as const } : {}) });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("error", reject);
    child.once("close", (code) => {
      const seconds = (performance.now() - t0) / 1000;
      if (timeoutMs !== undefined && seconds * 1000 >= timeoutMs && code !== 0) reject(new TimeoutError(`${argv[0] ?? ""} did not finish within ${timeoutMs} ms`));
      else if (code === 0) resolve({ seconds, stderr });
      else reject(new Error(`${argv.join(" ")} exited ${code}: ${stderr.slice(-500)}`));
    });
  });
}

export class TimeoutError extends Error {
  override readonly name = "TimeoutError";
}

/**
 * The command line of `vmstack` as users run it: the native front end (dist/front/vmstack, what
 * ./setup puts on PATH) when built, else the Node.js CLI.
 */
export function vmstackCommand(): string[] {
  const front = fileURLToPath(new URL("../front/vmstack", import.meta.url));
  return existsSync(front) ? [front] : [process.execPath, fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url))];
}

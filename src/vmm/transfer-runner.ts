/**
 * The VM behind `vmstack build`: a throwaway run with the staged inputs at /in, /out published into
 * the cache's temporary build path only on success, no NIC (throwaway VMs have none), and the
 * script's output going to the build log.
 */
import type { Writable } from "node:stream";
import type { BuildRunner } from "../image/build.js";
import type { Env } from "../image/index.js";
import type { AccelChoice } from "./accel.js";
import { runThrowaway } from "./throwaway.js";

export function throwawayBuildRunner(o: { readonly log: Writable; readonly hostEnv: Env; readonly accel?: AccelChoice; readonly onConsole?: (c: Buffer) => void }): BuildRunner {
  return async (req) => {
    const r = await runThrowaway({
      command: { shell: req.script },
      cwd: "/out",
      memoryMiB: req.memoryMiB,
      cpus: 2,
      accel: o.accel ?? "auto",
      inputs: [{ hostPath: req.inputsDir, guestPath: "/in" }],
      outputs: [{ hostPath: req.outputDir, guestPath: "/out" }],
      ...(req.rootImage ? { rootImage: req.rootImage } : {}),
      ...(req.network ? { network: true } : {}),
      ...(req.timeoutMs ? { timeoutMs: req.timeoutMs } : {}),
      stdout: o.log,
      stderr: o.log,
      ...(o.onConsole ? { onConsole: o.onConsole } : {}),
      hostEnv: o.hostEnv,
      signal: req.signal,
    });
    return { exitCode: r.exitCode ?? null, signal: r.signal ?? null, timedOut: r.timedOut };
  };
}

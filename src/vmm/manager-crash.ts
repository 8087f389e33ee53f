/**
 * The pieces of xl's on_poweroff/on_reboot/on_crash actions beyond destroy/restart/preserve
 * (xl.cfg(5)): rename-restart keeps the old domain, renamed, next to a new one with the original
 * name; coredump-destroy and coredump-restart first write the crashed guest's memory to a file.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { CrashAction } from "../domain/index.js";
import type { Domain } from "./domain.js";
import type { DaemonPaths } from "./manager-paths.js";

/** What remains to do once the core dump (if any) is written. */
export function afterDump(action: CrashAction): "destroy" | "restart" | "preserve" | "rename-restart" {
  return action === "coredump-destroy" ? "destroy" : action === "coredump-restart" ? "restart" : action;
}

/** `NAME--incarnation-N` with the smallest N not taken, for the domain rename-restart keeps. */
export function incarnationName(name: string, taken: ReadonlySet<string>): string {
  for (let n = 1; ; n++) {
    const candidate = `${name}--incarnation-${n}`;
    if (!taken.has(candidate)) return candidate;
  }
}

/** `$STATE/dump/NAME-<UTC time>.core` (xl writes to /var/lib/xen/dump/). */
export function coreDumpPath(paths: DaemonPaths, name: string, now = new Date()): string {
  const dir = join(paths.stateDir, "dump");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return join(dir, `${name}-${now.toISOString().replace(/[:.]/g, "-")}.core`);
}

/**
 * The paused, panicked guest's memory as an ELF core (QMP dump-guest-memory; `crash` and gdb read
 * it). Synchronous on QEMU's side: the reply comes when the file is complete. Generous deadline:
 * TCG hosts write a 1 GiB guest in a few seconds, a loaded one in more.
 */
export async function dumpCore(d: Domain, file: string): Promise<void> {
  await d.qmpExecute("dump-guest-memory", { paging: false, protocol: `file:${file}` }, 300_000);
}

/**
 * Saving and restoring a VM's whole state through QMP (qemu-notes §4).
 *
 * QEMU 7.2 has no `file:` migration URI, so the state goes through a pipe: `migrate` with
 * `exec:cat > FILE` saves, and `-incoming "exec:cat FILE"` restores. The source is stopped first so
 * the snapshot is one consistent instant; the destination then stays paused after loading (the
 * migrated run state says so) and is resumed with `cont`.
 */
import type { QmpClient } from "./qmp/index.js";
import { VmstackError } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";

/** A path as one word for QEMU's `exec:` URIs, which go through /bin/sh -c. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** One QMP command: a QmpClient's, or a domain's (which checks that its QEMU still runs). */
export type QmpExecute = <T>(command: string) => Promise<T>;

/**
 * Until the migration started with `migrate` has completed; a failed or cancelled one throws
 * `code` with QEMU's reason (`what` names the VM in messages).
 */
export async function migrationCompleted(execute: QmpExecute, what: string, code: string, o: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<void> {
  await retryUntil(
    async () => {
      const r = await execute<{ status?: string; "error-desc"?: string }>("query-migrate");
      if (r.status === "failed" || r.status === "cancelled") throw new VmstackError(code, `saving ${what} failed: ${r["error-desc"] ?? r.status}`);
      return r.status === "completed" ? true : undefined;
    },
    { what: `${what} to be saved`, timeoutMs: o.timeoutMs, signal: o.signal, initialDelayMs: 5, maxDelayMs: 50 },
  );
}

/** Stops the VM and writes its state to `path`. The VM is left stopped: `cont` resumes it. */
export async function saveState(qmp: QmpClient, path: string, o: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<void> {
  await qmp.execute("stop", undefined, o);
  await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(path)}` }, o);
  await migrationCompleted((c) => qmp.execute(c, undefined, o), "the VM state", "SNAPSHOT_FAILED", o);
}

/** For a VM started with `-incoming`: waits until the state is loaded, then resumes it. */
export async function resumeRestored(qmp: QmpClient, o: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<void> {
  await waitLoaded(qmp, o);
  await qmp.execute("cont", undefined, o);
}

/** For a VM started with `-incoming`: waits until the state is loaded; the VM stays paused. */
export async function waitLoaded(qmp: QmpClient | QmpExecute, o: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<void> {
  const execute: QmpExecute = typeof qmp === "function" ? qmp : (c) => qmp.execute(c, undefined, o);
  await retryUntil(
    async () => {
      const r = await execute<{ status: string }>("query-status");
      if (r.status === "inmigrate") return undefined;
      if (r.status === "running") return true;
      if (r.status === "paused" || r.status === "postmigrate" || r.status === "prelaunch") return true;
      throw new VmstackError("SNAPSHOT_FAILED", `restoring the VM state ended in state ${r.status}`);
    },
    { what: "the saved VM state to load", timeoutMs: o.timeoutMs, signal: o.signal, initialDelayMs: 5, maxDelayMs: 25 },
  );
}

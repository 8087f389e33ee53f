/**
 * Snapshot fan-out: boot a machine once, save its whole state, and start later machines of the
 * same shape from that state instead of booting (qemu-notes §4: a restore takes ~0.1–0.2 s where
 * a cold TCG boot takes ~2 s).
 *
 * QEMU 7.2 has no `file:` migration URI, so the state goes through a pipe: `migrate` with
 * `exec:cat > FILE` saves, and `-incoming "exec:cat FILE"` restores. The source is stopped first so
 * the snapshot is one consistent instant; the destination then stays paused after loading (the
 * migrated run state says so) and is resumed with `cont`.
 *
 * What must match between save and restore is the device set (memory, CPUs, NICs with their MACs),
 * which is why the key covers the machine's shape; NIC backends (VLAN ports) and socket paths may
 * differ, which is what lets each test get fresh VLANs. The state is saved after the guest's network
 * setup and /etc/hosts (both are in the key), so a restored machine needs no setup at all.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import type { QmpClient } from "../vmm/qmp/index.js";
import { VmstackError } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";

export interface SnapshotShape {
  readonly name: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  readonly nicIds: readonly string[];
  /** VLAN addresses ("1=192.168.1.2"): configured in the guest before the save. */
  readonly addresses: readonly string[];
  /** The /etc/hosts the guest had when saved. */
  readonly hosts: string;
  /** The guest image and accelerator: a state only loads into the same kernel and QEMU setup. */
  readonly imageKey: string;
  readonly accel: string;
}

export function snapshotKey(shape: SnapshotShape): string {
  return createHash("sha256").update(JSON.stringify(shape)).digest("hex").slice(0, 16);
}

/** Saved states of one run, by key. A state being saved is a promise, so two users wait for one save. */
export class SnapshotStore {
  readonly #states = new Map<string, Promise<string | undefined>>();
  constructor(readonly dir: string) {}

  /** The state file for `key`, once saved; undefined when none was saved (or the save failed). */
  lookup(key: string): Promise<string | undefined> | undefined {
    return this.#states.get(key);
  }

  /** Claims `key` for a save; returns the file to save to and a function to publish the outcome. */
  claim(key: string): { path: string; done: (ok: boolean) => void } {
    const path = join(this.dir, `${key}.state`);
    let publish!: (v: string | undefined) => void;
    this.#states.set(key, new Promise((r) => (publish = r)));
    return { path, done: (ok) => publish(ok ? path : undefined) };
  }
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Stops the VM and writes its state to `path`. The VM is left stopped: `cont` resumes it. */
export async function saveState(qmp: QmpClient, path: string, o: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<void> {
  await qmp.execute("stop", undefined, o);
  await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(path)}` }, o);
  await retryUntil(
    async () => {
      const r = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate", undefined, o);
      if (r.status === "failed" || r.status === "cancelled") {
        throw new VmstackError("SNAPSHOT_FAILED", `saving the VM state failed: ${r["error-desc"] ?? r.status}`);
      }
      return r.status === "completed" ? true : undefined;
    },
    { what: "the VM state to be saved", timeoutMs: o.timeoutMs, signal: o.signal, initialDelayMs: 10, maxDelayMs: 50 },
  );
}

/** For a VM started with `-incoming`: waits until the state is loaded, then resumes it. */
export async function resumeRestored(qmp: QmpClient, o: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<void> {
  await retryUntil(
    async () => {
      const r = await qmp.execute<{ status: string }>("query-status", undefined, o);
      if (r.status === "inmigrate") return undefined;
      if (r.status === "running") return true;
      if (r.status === "paused" || r.status === "postmigrate" || r.status === "prelaunch") return true;
      throw new VmstackError("SNAPSHOT_FAILED", `restoring the VM state ended in state ${r.status}`);
    },
    { what: "the saved VM state to load", timeoutMs: o.timeoutMs, signal: o.signal, initialDelayMs: 5, maxDelayMs: 25 },
  );
  await qmp.execute("cont", undefined, o);
}

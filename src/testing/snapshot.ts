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

// The QMP mechanics of a save and a restore live in the vmm layer (`vmstack run` boot snapshots
// use them too).
export { saveState, resumeRestored, shellQuote } from "../vmm/vm-state.js";

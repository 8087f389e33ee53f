/**
 * Boot snapshots for throwaway VMs (`vmstack run`), the VM side: save a freshly booted guest, and
 * start a later run from that state instead of booting (docs/boot.md, "Boot snapshots").
 *
 * Save (first run of a key): the agent has answered HELLO; a PING round trip makes sure every
 * reply to the handshake's repeated HELLOs has arrived (nothing of this connection is left in
 * flight inside the saved state); then QMP `stop`, `migrate` to the cache, `cont`, and the run
 * carries on with its command in the same VM.
 *
 * Restore: QEMU starts with `-incoming "exec:cat STATE"` while this process hashes the same file;
 * once QEMU has loaded it and the hash matched, the agent socket is connected, the VM resumed
 * (`cont`), the handshake done, and REFRESH gives the guest a fresh CRNG seed and the current time
 * before any command runs. Any failure stops that QEMU and the caller boots cold.
 */
import { randomBytes } from "node:crypto";
import { realpathSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { GuestVm, type GuestVmOptions } from "./guest-vm.js";
import { hostIdentity, qemuIdentity } from "./host.js";
import { QmpClient } from "./qmp/index.js";
import { saveState, shellQuote, waitLoaded } from "./vm-state.js";
import { bootSnapshotKey, normalizeArgv, type BootSnapshotIdentity } from "./boot-snapshot-plan.js";
import type { BootSnapshot, BootSnapshotStore } from "./boot-snapshot-store.js";
import { VmstackError, isVmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";

/** What happened about boot snapshots in one run (reported by --verbose and --json). */
export interface SnapshotReport {
  /** restored: started from a snapshot; saved: booted cold and saved one; cold: booted cold only. */
  readonly mode: "restored" | "saved" | "cold";
  /** Why there was no restore (or what was restored). */
  readonly reason: string;
  readonly key?: string;
  /** Size of the state file. */
  readonly bytes?: number;
  /** Saving: from `stop` to `cont`, plus hashing and writing the entry. */
  readonly saveMs?: number;
  /** Restoring: QEMU start to the agent having taken REFRESH. */
  readonly restoreMs?: number;
}

/** The identity of the state a VM with these options boots to (boot-snapshot-plan.ts). */
export function snapshotIdentity(vm: GuestVmOptions, initrdKey: string): BootSnapshotIdentity {
  const kernel = realpathSync(vm.kernelPath);
  const st = statSync(kernel);
  const { incoming: _incoming, ...options } = vm;
  return {
    qemu: qemuIdentity(),
    accel: vm.accel,
    ...(vm.accel === "kvm" ? { host: hostIdentity() } : {}),
    kernel: `${kernel}|${st.size}|${Math.round(st.mtimeMs)}|${st.ino}`,
    initrd: initrdKey,
    argv: normalizeArgv(GuestVm.argvFor(options), vm.runDir),
  };
}

export function snapshotKeyFor(vm: GuestVmOptions, initrdKey: string): { key: string; identity: BootSnapshotIdentity } {
  const identity = snapshotIdentity(vm, initrdKey);
  return { key: bootSnapshotKey(identity), identity };
}

/**
 * Starts a VM from `snapshot`. `vm` must be the options the snapshot was saved with (same key),
 * including its `qmpSocket`. Throws (with that QEMU stopped) when anything is wrong.
 */
export async function restoreVm(
  store: BootSnapshotStore,
  snapshot: BootSnapshot,
  vm: GuestVmOptions & { readonly qmpSocket: string },
): Promise<{ vm: GuestVm; qmp: QmpClient; ms: number }> {
  const t0 = performance.now();
  let qmp: QmpClient | undefined;
  // Hashed while QEMU loads the same bytes: checked before the guest runs, at no extra latency
  // on a machine with a second core.
  const hashOk = store.verify(snapshot);
  hashOk.catch(() => undefined);
  // A restore answers in well under a second; a snapshot that hangs the guest must not cost the
  // full cold-boot deadline before the fallback.
  const bootTimeoutMs = Math.min(vm.bootTimeoutMs, 30_000);
  try {
    const restored = await GuestVm.boot({
      ...vm,
      bootTimeoutMs,
      incoming: `exec:cat ${shellQuote(snapshot.statePath)}`,
      afterSpawn: async (signal) => {
        qmp = await QmpClient.connect(vm.qmpSocket, { timeoutMs: bootTimeoutMs, signal, label: vm.name });
        await waitLoaded(qmp, { timeoutMs: bootTimeoutMs, signal });
        const loaded = performance.now() - t0;
        const ok = await hashOk;
        log("debug", vm.name, `snapshot: state loaded after ${Math.round(loaded)} ms, hash checked after ${Math.round(performance.now() - t0)} ms`);
        if (!ok) throw new VmstackError("SNAPSHOT_CORRUPT", "the state file does not match the sha256 recorded when it was saved");
      },
      afterConnect: async (signal) => {
        if (!qmp) throw new Error("restoreVm: no QMP connection after spawn");
        await qmp.execute("cont", undefined, { timeoutMs: bootTimeoutMs, signal });
      },
    });
    try {
      // Before any command: every VM restored from this state would otherwise draw the same
      // random bytes and live at the moment of the save.
      const deadline = AbortSignal.timeout(bootTimeoutMs);
      await restored.agent.refresh({ seed: randomBytes(64), signal: vm.signal ? AbortSignal.any([vm.signal, deadline]) : deadline });
      log("debug", vm.name, `snapshot: fresh randomness and time taken after ${Math.round(performance.now() - t0)} ms`);
    } catch (e) {
      await restored.destroy();
      throw new VmstackError("SNAPSHOT_REFRESH_FAILED", `the restored guest did not take fresh randomness and time: ${messageOf(e)}`, { cause: e });
    }
    if (!qmp) throw new Error("restoreVm: no QMP connection");
    return { vm: restored, qmp, ms: performance.now() - t0 };
  } catch (e) {
    qmp?.close();
    // The cold boot that follows uses the same run directory: no stale socket paths.
    for (const sock of [vm.qmpSocket, join(vm.runDir, "agent.sock")]) rmSync(sock, { force: true });
    throw e;
  }
}

/**
 * Saves the state of `vm`, booted cold with `qmp` connected and its agent ready, under `key`;
 * the VM runs on afterwards. A failed save is the caller's to report; the VM is resumed anyway.
 */
export async function saveVm(
  store: BootSnapshotStore,
  key: string,
  identity: BootSnapshotIdentity,
  vm: GuestVm,
  qmp: QmpClient,
  o: { readonly timeoutMs: number; readonly signal?: AbortSignal | undefined },
): Promise<{ bytes: number; ms: number }> {
  const t0 = performance.now();
  // In order on one channel: once the PONG is here, so are the replies to every earlier HELLO.
  await vm.agent.ping(o.signal ? { signal: o.signal } : {});
  let stopped = false;
  try {
    const { bytes } = await store.save(key, identity, async (path) => {
      stopped = true;
      await saveState(qmp, path, o);
      // The guest runs on while the entry is hashed and renamed into place.
      await qmp.execute("cont", undefined, o);
      stopped = false;
    });
    return { bytes, ms: performance.now() - t0 };
  } finally {
    if (stopped) await qmp.execute("cont", undefined, o);
  }
}

/** The QMP socket of a throwaway run (only with snapshots: otherwise nothing talks QMP). */
export function qmpSocketIn(runDir: string): string {
  return join(runDir, "qmp.sock");
}

export interface SnapshotStart {
  readonly vm: GuestVm;
  readonly qmp: QmpClient | undefined;
  readonly report: SnapshotReport;
}

/**
 * The VM of a run that may use a boot snapshot: restored from the snapshot of `vm`'s key when
 * there is a good one; otherwise `coldBoot()` (or the accelerator probe's VM, already booted),
 * and a snapshot of it saved for the next run. Problems with a snapshot never fail the run: the
 * snapshot is deleted and the VM booted cold. Only an abort (Ctrl-C) and a failed cold boot throw.
 */
export async function startWithBootSnapshot(o: {
  readonly store: BootSnapshotStore;
  /** The options every VM of this key boots with (the key is computed from them). */
  readonly vm: GuestVmOptions & { readonly qmpSocket: string };
  readonly initrdKey: string;
  readonly probeVm: GuestVm | undefined;
  /** Boots cold, connecting QMP on vm.qmpSocket (qmpOf() returns that client afterwards). */
  readonly coldBoot: () => Promise<GuestVm>;
  readonly qmpOf: () => QmpClient | undefined;
  readonly saveTimeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}): Promise<SnapshotStart> {
  const { key, identity } = snapshotKeyFor(o.vm, o.initrdKey);
  let why = "no boot snapshot yet for this kernel, initrd, QEMU and machine";
  if (o.probeVm) {
    why = "this run's VM is the accelerator probe's";
  } else {
    let found: Awaited<ReturnType<BootSnapshotStore["find"]>>;
    try {
      found = await o.store.find(key);
    } catch (e) {
      found = { status: "corrupt", reason: messageOf(e) };
    }
    if (found.status === "found") {
      try {
        const r = await restoreVm(o.store, found.snapshot, o.vm);
        log("debug", o.vm.name, `restored from boot snapshot ${key.slice(0, 12)} in ${Math.round(r.ms)} ms`);
        return { vm: r.vm, qmp: r.qmp, report: { mode: "restored", reason: "restored from boot snapshot", key, bytes: found.snapshot.meta.bytes, restoreMs: Math.round(r.ms) } };
      } catch (e) {
        if (o.signal?.aborted) throw e;
        why = `the boot snapshot could not be used (${restoreFailure(e)}); it was deleted`;
        await o.store.remove(key);
      }
    } else if (found.status === "corrupt") {
      why = `the boot snapshot was corrupt (${found.reason}); it was deleted`;
      await o.store.remove(key);
    }
  }
  log("debug", o.vm.name, `cold boot: ${why}`);
  const vm = o.probeVm ?? (await o.coldBoot());
  const qmp = o.qmpOf();
  if (!qmp) return { vm, qmp, report: { mode: "cold", reason: `${why}; no QMP connection to save one` } };
  try {
    const saved = await saveVm(o.store, key, identity, vm, qmp, { timeoutMs: o.saveTimeoutMs, signal: o.signal });
    return { vm, qmp, report: { mode: "saved", reason: why, key, bytes: saved.bytes, saveMs: Math.round(saved.ms) } };
  } catch (e) {
    if (o.signal?.aborted) {
      await vm.destroy();
      throw e;
    }
    // A snapshot is an optimisation: the run goes on without one.
    return { vm, qmp, report: { mode: "cold", reason: `${why}; saving one failed: ${messageOf(e).split("\n")[0] ?? ""}` } };
  }
}

/** One line for a failed restore: the error's first line and what QEMU said last (e.g. "load of migration failed"). */
function restoreFailure(e: unknown): string {
  const first = messageOf(e).split("\n")[0] ?? "";
  const stderr = isVmstackError(e) ? e.facts["qemuStderr"] : undefined;
  const said = Array.isArray(stderr) ? stderr.filter((l): l is string => typeof l === "string" && l.trim() !== "").at(-1) : undefined;
  return said ? `${first}: ${said.trim()}` : first;
}

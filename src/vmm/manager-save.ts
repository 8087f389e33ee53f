/**
 * `vmstack save` and `vmstack restore` in vmstackd (xl save / xl restore): a domain's memory and
 * device state plus its config into one file (save-file.ts), and a domain back from it, also after
 * a vmstackd restart or on a freshly booted host (the file carries everything the launch needs).
 *
 * Semantics follow xl(1): after a successful save the domain is destroyed, unless `-c` (leave it
 * running) or `-p` (leave it paused). `restore -p` leaves the restored domain paused. A restored
 * domain gets a new domid (as in xl) and keeps its name and uuid; its xenstore nodes are written
 * afresh. A failed save leaves the domain as it was and no file; a failed restore leaves nothing.
 */
import { createHash } from "node:crypto";
import { connect, createServer, type Socket } from "node:net";
import { once } from "node:events";
import { open, rename, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { checkDomainSpec, errorsOf, formatProblem, type DomainConfig } from "../domain/index.js";
import type { Domain } from "./domain.js";
import { configOf, type DomainManager } from "./manager.js";
import { removeRecord } from "./domain-record.js";
import { removeDomain } from "./domain-xenstore.js";
import { removeDeviceBackends, writeDevices } from "./device-xenstore.js";
import { domainRunDir } from "./manager-paths.js";
import { killQuietly } from "./manager-launch.js";
import { SAVE_PREFIX_BYTES, encodeHeader, encodePrefix, type BootFile, type SaveCompression, type SaveHeader } from "./save-file.js";
import { bootFileFacts, bootFileProblem, checkSaveFile, sendPayload, writePayload } from "./save-stream.js";
import type { DomainInfo } from "./api/protocol.js";
import { retryUntil } from "../lib/retry.js";
import { VmstackError, isVmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { migrationCompleted, waitLoaded } from "./vm-state.js";

export interface SaveResult {
  readonly file: string;
  readonly bytes: number;
  readonly compression: SaveCompression;
  /** What became of the domain: destroyed (plain save), running (-c) or paused (-p). */
  readonly domain: "destroyed" | "running" | "paused";
}

/**
 * Migration is rate-limited to 128 MiB/s by default (QEMU's max-bandwidth); a save to a local file
 * of a stopped guest has no reason to be, so the limit is lifted (100 GiB/s, below QEMU's cap).
 */
const UNLIMITED_BANDWIDTH = 100 * 1024 ** 3;

export function saveCompression(env: NodeJS.ProcessEnv): SaveCompression {
  return env["VMSTACK_SAVE_COMPRESSION"] === "none" ? "none" : "zstd";
}

/** The kernel and initrd a direct-boot domain launches with (a GRUB-booted one rereads its disk at restore). */
function bootFilesOf(c: DomainConfig): { role: BootFile["role"]; path: string }[] {
  if (c.boot.guestGrub !== undefined) return [];
  return [
    ...(c.boot.kernel === undefined ? [] : [{ role: "kernel" as const, path: c.boot.kernel }]),
    ...(c.boot.initrd === undefined ? [] : [{ role: "initrd" as const, path: c.boot.initrd }]),
  ];
}

/** What the migration stream does not carry and a restore could not bring back: refused up front. */
function unsaveable(c: DomainConfig): string | undefined {
  if (c.shares.length > 0) return "it has virtiofs shares (QEMU cannot migrate vhost-user-fs devices)";
  const scratch = c.disks.find((d) => d.scratch);
  if (scratch) return `disk ${scratch.id} is a scratch disk, whose contents are discarded when the domain stops`;
  return undefined;
}

function migrationDone(d: Domain, signal?: AbortSignal): Promise<void> {
  return migrationCompleted((c) => d.qmpExecute(c), d.name, "SAVE_FAILED", { timeoutMs: 600_000, signal });
}

export async function saveDomain(m: DomainManager, d: Domain, file: string, o: { keepRunning: boolean; paused: boolean; signal?: AbortSignal }): Promise<SaveResult> {
  const result = await d.enqueue(() => saveLocked(m, d, file, o));
  if (result.domain === "destroyed") await m.waitGone(d, 10_000, o.signal);
  return result;
}

async function saveLocked(m: DomainManager, d: Domain, file: string, o: { keepRunning: boolean; paused: boolean; signal?: AbortSignal }): Promise<SaveResult> {
  const config = configOf(d.record);
  if (!d.qmp?.connected || d.record.preserved !== null) throw new VmstackError("DOMAIN_NOT_RUNNING", `${d.name} is not running: there is no state to save`, { facts: { domain: d.name } });
  const why = unsaveable(config);
  if (why !== undefined) throw new VmstackError("SAVE_UNSUPPORTED", `cannot save ${d.name}: ${why}`, { facts: { domain: d.name } });
  await d.refreshStatus();
  if (d.status !== "running" && d.status !== "paused") throw new VmstackError("DOMAIN_NOT_RUNNING", `cannot save ${d.name} in QEMU state '${d.status}'`, { facts: { domain: d.name, status: d.status } });
  const wasRunning = d.status === "running";
  const t0 = performance.now();
  const compression = saveCompression(m.o.env);
  const v = await d.qmpExecute<{ qemu: { major: number; minor: number; micro: number } }>("query-version");
  const header: SaveHeader = {
    name: d.name,
    uuid: d.record.uuid,
    config: d.record.config,
    accel: config.accel === "auto" ? m.o.accel : config.accel,
    qemuVersion: `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}`,
    savedAt: new Date().toISOString(),
    compression,
    wasRunning,
    bootFiles: await bootFileFacts(bootFilesOf(config)),
  };
  const headerBytes = encodeHeader(header);
  // Written beside the target and renamed over it at the end: a failed or interrupted save never
  // leaves a partial file under the name a later restore would read.
  const tmp = join(dirname(file), `.${basename(file)}.partial-${process.pid}-${d.domid}`);
  const sock = join(d.record.runDir, "save.sock");
  const server = createServer();
  let stopped = false;
  let migrating = false;
  const fh = await open(tmp, "wx", 0o600).catch((e: unknown) => {
    throw new VmstackError("SAVE_FILE_UNWRITABLE", `cannot write ${file}: ${messageOf(e)}`, { facts: { file }, cause: e });
  });
  try {
    await fh.write(encodePrefix(headerBytes.length, 0), 0, SAVE_PREFIX_BYTES, 0);
    await fh.write(headerBytes, 0, headerBytes.length, SAVE_PREFIX_BYTES);
    const hash = createHash("sha256").update(headerBytes);
    await rm(sock, { force: true });
    server.listen(sock);
    await once(server, "listening");
    const accepted = once(server, "connection") as Promise<[Socket]>;
    accepted.catch(() => undefined); // a server error before the race below must not go unhandled
    if (wasRunning) await d.qmpExecute("stop");
    stopped = true;
    await d.qmpExecute("migrate-set-parameters", { "max-bandwidth": UNLIMITED_BANDWIDTH });
    await d.qmpExecute("migrate", { uri: `unix:${sock}` });
    migrating = true;
    // Each promise below may settle after the other has failed the save: each gets a handler so a
    // late rejection is never an unhandled one (which would end vmstackd).
    const done = migrationDone(d, o.signal);
    done.catch(() => undefined);
    const noConnection = done.then(() => {
      throw new VmstackError("SAVE_FAILED", `QEMU finished saving ${d.name} without connecting`);
    });
    noConnection.catch(() => undefined);
    const [conn] = await Promise.race([accepted, noConnection]);
    // As for restore: a reset after the payload pipeline is done must not end vmstackd.
    conn.on("error", (e) => log("debug", "save", `migration socket: ${messageOf(e)}`));
    const written = writePayload(conn, fh, SAVE_PREFIX_BYTES + headerBytes.length, hash, compression, o.signal);
    written.catch(() => undefined);
    await Promise.all([done, written]);
    migrating = false;
    const payload = await written;
    await fh.write(encodePrefix(headerBytes.length, payload, hash.digest()), 0, SAVE_PREFIX_BYTES, 0);
    await fh.sync();
    await fh.close();
    await rename(tmp, file);
    const bytes = SAVE_PREFIX_BYTES + headerBytes.length + payload;
    m.o.log(`${d.name}: saved to ${file} (${bytes} bytes, ${compression}, ${Math.round(performance.now() - t0)} ms)`);
    if (!o.keepRunning && !o.paused) {
      // xl save: the domain is gone once its state is safe. Quit here, inside the domain's queue,
      // so nothing can resume the guest between the save and its end.
      d.dying = true;
      await d.qmpExecute("quit").catch((e: unknown) => m.o.log(`${d.name}: quit: ${messageOf(e)}`));
      if (d.record.qemuPid !== null) killQuietly(d.record.qemuPid, "SIGKILL");
      return { file, bytes, compression, domain: "destroyed" };
    }
    // After a completed migration QEMU has handed its disks over (inactivated); `cont` takes them back.
    if (o.keepRunning && !o.paused && wasRunning) await d.qmpExecute("cont");
    await d.refreshStatus();
    return { file, bytes, compression, domain: o.keepRunning && !o.paused && wasRunning ? "running" : "paused" };
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    if (migrating) await d.qmpExecute("migrate_cancel").catch((x: unknown) => m.o.log(`${d.name}: migrate_cancel: ${messageOf(x)}`));
    // The domain as it was: running again if it ran (a failed save must not leave it stopped).
    if (stopped && wasRunning && d.qmp?.connected) await d.qmpExecute("cont").catch((x: unknown) => m.o.log(`${d.name}: cont after a failed save: ${messageOf(x)}`));
    m.o.log(`${d.name}: save to ${file} failed: ${messageOf(e)}`);
    // File-system errors (ENOSPC, EIO) are the user's to act on, not vmstackd bugs: name the file.
    throw isVmstackError(e) ? e : new VmstackError("SAVE_FAILED", `saving ${d.name} to ${file} failed: ${messageOf(e)}`, { facts: { file }, cause: e });
  } finally {
    server.close();
    await rm(sock, { force: true });
  }
}

function qemuLogTail(runDir: string): string {
  try {
    return readFileSync(join(runDir, "qemu.log"), "utf8").split("\n").filter((l) => l.trim() !== "").slice(-3).join(" | ");
  } catch (e) {
    return `(no QEMU log: ${messageOf(e)})`;
  }
}

async function connectIncoming(path: string, signal?: AbortSignal): Promise<Socket> {
  return retryUntil(
    async () => {
      const s = connect(path);
      // Errors while the payload flows reach the pipeline; one after it (QEMU resetting the
      // connection when it rejects the state) must not be an unhandled 'error' event, which would
      // end vmstackd. The state check that follows reports the failure.
      s.on("error", (e) => log("debug", "restore", `incoming migration socket: ${messageOf(e)}`));
      try {
        await once(s, "connect");
        return s;
      } catch {
        // QEMU not listening yet (ENOENT/ECONNREFUSED): try again.
        s.destroy();
        return undefined;
      }
    },
    { what: `QEMU's incoming migration socket ${path}`, timeoutMs: 30_000, signal, initialDelayMs: 5, maxDelayMs: 50 },
  );
}

export async function restoreDomain(m: DomainManager, file: string, o: { paused: boolean; force: boolean; signal?: AbortSignal }): Promise<DomainInfo> {
  const t0 = performance.now();
  const saved = await checkSaveFile(file, o.signal);
  const h = saved.header;
  const checked = checkDomainSpec(h.config, { source: `${file} (saved config)` });
  if (checked.config === undefined || errorsOf(checked.problems).length > 0) {
    throw new VmstackError("BAD_CONFIG", `${file}: the saved config is not valid here:\n  ${errorsOf(checked.problems).map(formatProblem).join("\n  ")}`);
  }
  const config = checked.config;
  const accel = config.accel === "auto" ? m.o.accel : config.accel;
  if (accel !== h.accel) throw new VmstackError("SAVE_ACCEL_MISMATCH", `${file}: ${h.name} was saved under ${h.accel}; this host runs domains under ${accel}`, { facts: { saved: h.accel, host: accel } });
  for (const f of h.bootFiles) {
    const problem = await bootFileProblem(f);
    if (problem !== undefined) throw new VmstackError("SAVE_BOOT_FILE", `cannot restore ${h.name} from ${file}: ${problem}; the saved state only loads with the same ${f.role}`, { facts: { path: f.path } });
  }
  const claim = m.claim(config.name, config.maxmem, o.force);
  let d: Domain | undefined;
  try {
    const incoming = join(domainRunDir(m.o.paths, claim.domid), "incoming.sock");
    try {
      d = await m.launchRestored(claim.domid, h.uuid, config, `unix:${incoming}`, o.signal);
      // The devices as Xen lays them out, as create writes them (device/vbd, backend/vbd, …).
      await writeDevices(m.o.xs, claim.domid, config);
    } catch (e) {
      if (d !== undefined) throw e; // registered: the outer handler ends it like any failed restore
      await removeDomain(m.o.xs, claim.domid, h.uuid).catch((x: unknown) => m.o.log(`${config.name}: xenstore cleanup: ${messageOf(x)}`));
      await removeDeviceBackends(m.o.xs, claim.domid).catch((x: unknown) => m.o.log(`${config.name}: xenstore cleanup: ${messageOf(x)}`));
      removeRecord(m.o.paths.domainsDir, claim.domid);
      throw e;
    }
    const dom = d;
    // Until the state is loaded, QEMU ending means the restore failed, not that the guest crashed:
    // no on_crash restart of an empty machine.
    dom.dying = true;
    await dom.enqueue(async () => {
      try {
        const s = await connectIncoming(incoming, o.signal);
        await sendPayload(file, saved.payloadOffset, saved.payloadLength, h.compression, s, o.signal);
        await waitLoaded((c) => dom.qmpExecute(c), { timeoutMs: 120_000, signal: o.signal });
      } catch (e) {
        throw new VmstackError("RESTORE_FAILED", `QEMU could not load the state of ${config.name} from ${file}: ${messageOf(e)}; QEMU said: ${qemuLogTail(dom.record.runDir)}`, { cause: e });
      }
      if (h.wasRunning && !o.paused) await dom.qmpExecute("cont");
      await dom.refreshStatus();
    });
    dom.dying = false;
    // Only now the guest's xenstore channel: its first connection hangs up once (a "kick"), which a
    // guest whose port state came along in the stream must see to start clean. Attached while QEMU
    // was still loading the state, the hang-up would happen before the guest existed.
    m.xenstoreChannels.attach(dom.domid, dom.record.runDir, dom.name);
    m.o.log(`restored ${config.name} (domid ${dom.domid}) from ${file}${o.paused || !h.wasRunning ? ", paused" : ""} in ${Math.round(performance.now() - t0)} ms`);
    return m.info(dom);
  } catch (e) {
    if (d !== undefined) {
      const gone = d;
      gone.dying = true;
      if (gone.record.qemuPid !== null) killQuietly(gone.record.qemuPid, "SIGKILL");
      await m.waitGone(gone, 10_000).catch((x: unknown) => m.o.log(`${config.name}: cleanup after a failed restore: ${messageOf(x)}`));
    }
    m.o.log(`restore of ${config.name} from ${file} failed: ${messageOf(e)}`);
    throw isVmstackError(e) ? e : new VmstackError("RESTORE_FAILED", `restoring ${config.name} from ${file} failed: ${messageOf(e)}`, { facts: { file }, cause: e });
  } finally {
    claim.release();
  }
}

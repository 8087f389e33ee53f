/**
 * Choosing the accelerator. /dev/kvm existing proves nothing: on some hosts (nested PVM, see
 * docs/boot.md) stock kernels abort or crawl under KVM. So KVM is used only after a probe boot with a
 * short deadline has proved it works; the verdict is cached per host + QEMU version + guest kernel,
 * so the probe runs once. Without /dev/kvm, TCG is chosen with no probe at all.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { createHash } from "node:crypto";
import type { Accel } from "./qemu-args.js";
import { kvmDeviceUsable, hostIdentity } from "./host.js";
import { VmstackError, messageOf } from "../lib/errors.js";
import { log } from "../lib/log.js";
import { deadline } from "../lib/abort.js";

export type AccelChoice = "auto" | Accel;

export interface AccelDecision {
  readonly accel: Accel;
  /** Why, in words, for --verbose and `vmstack info`. */
  readonly reason: string;
  readonly probed: boolean;
  readonly cached: boolean;
}

export interface ProbeOptions {
  readonly choice: AccelChoice;
  /** Identifies what the probe boots (QEMU version + guest kernel), part of the cache key. */
  readonly bootIdentity: string;
  readonly cacheFile: string;
  /** Boots the guest under KVM and resolves true if it answered before the signal aborted. */
  readonly probeBoot: (signal: AbortSignal) => Promise<boolean>;
  readonly deadlineMs?: number;
  readonly signal?: AbortSignal | undefined;
  readonly kvmDevice?: () => boolean;
  /** Told before a probe boot starts (it may take the whole deadline): a CLI says so to its user. */
  readonly onProbe?: ((deadlineMs: number) => void) | undefined;
}

interface CacheEntry {
  readonly accel: Accel;
  readonly reason: string;
  readonly at: string;
}

/** A KVM guest that works boots to userspace in well under a second; TCG needs ~1.5 s here. */
export const DEFAULT_PROBE_DEADLINE_MS = 6000;

export async function chooseAccel(o: ProbeOptions): Promise<AccelDecision> {
  const hasKvm = (o.kvmDevice ?? kvmDeviceUsable)();
  if (o.choice === "tcg") return { accel: "tcg", reason: "requested with --accel tcg", probed: false, cached: false };
  if (o.choice === "kvm") {
    if (!hasKvm) throw new VmstackError("KVM_UNAVAILABLE", "--accel kvm was requested but /dev/kvm cannot be opened");
    return { accel: "kvm", reason: "requested with --accel kvm", probed: false, cached: false };
  }
  if (!hasKvm) return { accel: "tcg", reason: "/dev/kvm is not available", probed: false, cached: false };

  const key = createHash("sha256").update(`${hostIdentity()}|${o.bootIdentity}`).digest("hex");
  const cache = readCache(o.cacheFile);
  const hit = cache[key];
  if (hit) return { accel: hit.accel, reason: `${hit.reason} (probe cached ${hit.at})`, probed: false, cached: true };

  const deadlineMs = o.deadlineMs ?? DEFAULT_PROBE_DEADLINE_MS;
  o.onProbe?.(deadlineMs);
  const limit = deadline(deadlineMs, o.signal);
  let ok = false;
  let detail = "";
  try {
    ok = await o.probeBoot(limit.signal);
  } catch (e) {
    // The caller's own abort is not a verdict on KVM: do not cache it.
    o.signal?.throwIfAborted();
    // One line: QEMU's own complaint when it gave one, else the first line of the failure.
    const qemuSaid = (e as { facts?: { qemuStderr?: string[] } }).facts?.qemuStderr?.[0];
    detail = qemuSaid ?? messageOf(e).split("\n")[0] ?? "";
  } finally {
    limit.clear();
  }
  const entry: CacheEntry = ok
    ? { accel: "kvm", reason: "a KVM probe boot succeeded", at: new Date().toISOString() }
    : {
        accel: "tcg",
        reason: `a KVM probe boot failed${limit.expired() ? ` to answer within ${deadlineMs} ms` : ""}${detail ? `: ${detail}` : ""}`,
        at: new Date().toISOString(),
      };
  log("debug", "accel", `probe: ${entry.reason}`);
  writeCache(o.cacheFile, { ...cache, [key]: entry });
  return { accel: entry.accel, reason: entry.reason, probed: true, cached: false };
}

function readCache(file: string): Record<string, CacheEntry> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw e;
  }
  try {
    return JSON.parse(text) as Record<string, CacheEntry>;
  } catch (e) {
    // A damaged cache only costs a new probe.
    log("warn", "accel", `ignoring unreadable probe cache ${file}: ${messageOf(e)}`);
    return {};
  }
}

function writeCache(file: string, data: Record<string, CacheEntry>): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(data, null, 2));
  renameSync(tmp, file);
}

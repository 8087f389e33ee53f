/**
 * Host directories shared into a throwaway VM (`vmstack run --share HOST:GUEST[:ro]`).
 *
 * virtiofs is the real thing: one `virtiofsd` per share (it exits when the VM disconnects), a
 * vhost-user-fs device, and guest RAM that virtiofsd can map (a shared memfd backend;
 * docs/qemu-notes.md §3). It needs root on this host (virtiofsd's namespace sandbox).
 *
 * When virtiofsd cannot be used (not installed, not root, or VMSTACK_SHARE_MODE=copy), shares fall
 * back to copies that still behave: a read-only share becomes an ext4 image made with
 * `mkfs.ext4 -d` on a read-only virtio-blk disk (writes fail in the guest with EROFS, enforced by
 * QEMU, not by the guest's good will); a writable share is copied in over the agent channel
 * before the command and copied back after it (new and changed files; deletions are not
 * propagated, and changes appear only at the end, not live).
 */
import { existsSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { VmstackError } from "../lib/errors.js";
import { spawnManaged, type ManagedChild } from "../lib/process.js";
import { retryUntil } from "../lib/retry.js";
import { sharedMemoryArgs, virtiofsDeviceArgs } from "./qemu-args.js";
import { DEFAULT_VIRTIOFSD, virtiofsdArgv } from "./virtiofsd-argv.js";
import type { Env } from "../image/index.js";

export interface ShareSpec {
  readonly hostPath: string;
  readonly guestPath: string;
  readonly readOnly: boolean;
}

export type ShareMode = "virtiofs" | "copy";

export { DEFAULT_VIRTIOFSD };

/** Parses `HOST:GUEST[:ro|:rw]`; HOST must be an existing directory, GUEST an absolute path. */
export function parseShareSpec(text: string, cwd = process.cwd()): ShareSpec {
  const parts = text.split(":");
  let readOnly = false;
  if (parts.length === 3 && (parts[2] === "ro" || parts[2] === "rw")) {
    readOnly = parts[2] === "ro";
    parts.pop();
  }
  const [host, guest] = parts;
  if (parts.length !== 2 || !host || !guest) {
    throw new VmstackError("BAD_SHARE", `--share expects HOST:GUEST[:ro], got '${text}'`, { facts: { text } });
  }
  return { hostPath: resolve(cwd, host), guestPath: checkGuestPath(guest, "--share"), readOnly };
}

/** Guest paths are absolute, without `..`, and not the guest's own system directories. */
export function checkGuestPath(path: string, what: string): string {
  const clean = path.replace(/\/+$/, "");
  if (!isAbsolute(clean) || clean.split("/").includes("..") || /^\/(proc|sys|dev|bin|sbin|lib|etc|usr)?$/.test(clean)) {
    throw new VmstackError("BAD_GUEST_PATH", `${what}: guest path '${path}' must be absolute, without '..', and not / or a system directory`, {
      facts: { path },
    });
  }
  return clean;
}

export function checkHostDir(path: string, what: string): void {
  let ok = false;
  try {
    ok = statSync(path).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new VmstackError("NO_HOST_DIR", `${what}: '${path}' is not a directory on the host`, { facts: { path } });
}

/** Which mechanism shares use on this host, and why (for --verbose and the JSON result). */
export function chooseShareMode(env: Env): { mode: ShareMode; reason: string } {
  const forced = env["VMSTACK_SHARE_MODE"];
  if (forced === "copy") return { mode: "copy", reason: "VMSTACK_SHARE_MODE=copy" };
  const bin = virtiofsdPath(env);
  if (!existsSync(bin)) return { mode: "copy", reason: `no virtiofsd at ${bin}` };
  if (process.getuid?.() !== 0) return { mode: "copy", reason: "virtiofsd needs root here (its namespace sandbox)" };
  return { mode: "virtiofs", reason: `virtiofsd at ${bin}` };
}

export function virtiofsdPath(env: Env): string {
  return env["VMSTACK_VIRTIOFSD"] ?? DEFAULT_VIRTIOFSD;
}

/** virtiofsd for a `--share` (the same builder as domains' shares use). */
export function shareVirtiofsdArgv(share: ShareSpec, socketPath: string, bin: string): string[] {
  return virtiofsdArgv({ source: share.hostPath, readOnly: share.readOnly }, socketPath, bin);
}

/**
 * QEMU arguments for virtiofs shares on a throwaway microvm: the devices from qemu-args'
 * virtiofsDeviceArgs (the one builder, shared with domains) plus the shared memfd guest RAM that
 * vhost-user needs. `-machine` options merge, so `memory-backend=mem` joins the machine type given
 * earlier on the command line.
 */
export function virtiofsQemuArgs(shares: readonly { tag: string; socketPath: string }[], memoryMiB: number): string[] {
  if (shares.length === 0) return [];
  return [
    ...sharedMemoryArgs(memoryMiB),
    "-machine",
    "memory-backend=mem",
    ...virtiofsDeviceArgs(
      "microvm",
      shares.map((s, i) => ({ id: `fs${i}`, tag: s.tag, socketPath: s.socketPath })),
    ),
  ];
}

export interface RunningShare {
  readonly spec: ShareSpec;
  readonly tag: string;
  readonly socketPath: string;
  readonly daemon: ManagedChild;
}

/** Starts virtiofsd for a share and waits until its socket exists (QEMU must find it listening). */
export async function startVirtiofsd(spec: ShareSpec, tag: string, socketPath: string, env: Env, signal?: AbortSignal): Promise<RunningShare> {
  checkHostDir(spec.hostPath, "--share");
  const daemon = spawnManaged(shareVirtiofsdArgv(spec, socketPath, virtiofsdPath(env)), { label: "virtiofsd", stdio: ["ignore", "ignore", "pipe"] });
  const early = new AbortController();
  void daemon.exited.then(
    (exit) =>
      early.abort(
        new VmstackError("SHARE_FAILED", `virtiofsd for ${spec.hostPath} exited (${exit.signal ?? `status ${exit.code}`}): ${daemon.stderrTail.lines(3).join(" | ")}`),
      ),
    (e: unknown) => early.abort(e),
  );
  try {
    await retryUntil(() => (existsSync(socketPath) ? true : undefined), {
      what: `virtiofsd's socket for ${spec.hostPath}`,
      timeoutMs: 10_000,
      signal: AbortSignal.any([early.signal, ...(signal ? [signal] : [])]),
      initialDelayMs: 5,
      maxDelayMs: 50,
    });
  } catch (e) {
    await daemon.stop(500);
    if (early.signal.aborted) throw early.signal.reason;
    throw e;
  }
  return { spec, tag, socketPath, daemon };
}

/**
 * The guest-side script that mounts virtiofs shares and block-device filesystems before the
 * command. Constant text; every path and tag is a positional parameter, in groups of three:
 * KIND SOURCE TARGET (KIND: virtiofs | virtiofs-ro | fs (SOURCE is the type) | blk-ro | blk-rw; for blk the source is the virtio serial
 * number, found through /sys/block/vd*\/serial because virtio-mmio probe order is not the
 * command-line order).
 */
export const GUEST_MOUNT_SCRIPT = [
  "set -e",
  'while [ "$#" -ge 3 ]; do',
  '  kind=$1 src=$2 dst=$3; shift 3',
  '  mkdir -p "$dst"',
  '  case "$kind" in',
  '  virtiofs) mount -t virtiofs "$src" "$dst" ;;',
  '  virtiofs-ro) mount -t virtiofs -o ro "$src" "$dst" ;;',
  '  fs) mount -t "$src" "$src" "$dst" ;;',
  "  blk-*)",
  "    dev=",
  '    for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = "$src" ] && dev=/dev/${d##*/}; done',
  '    [ -n "$dev" ] || { echo "vmstack: no disk with serial $src" >&2; exit 1; }',
  '    if [ "$kind" = blk-ro ]; then mount -o ro "$dev" "$dst"; else mount "$dev" "$dst"; fi ;;',
  "  esac",
  "done",
].join("\n");

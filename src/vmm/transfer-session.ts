/**
 * Everything a throwaway run moves between host and guest, around one VM's life:
 *   before boot  scratch disks and read-only share images are made, virtiofsd daemons started;
 *   after boot   disks and shares mounted, `--in` trees and copy-mode shares copied in;
 *   after the command  copy-mode writable shares copied back; `--out` trees copied out into
 *                staging directories and renamed into place, only if the command succeeded;
 *   always       daemons stopped, staging removed (a failed or interrupted run leaves nothing).
 */
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { AgentClient } from "../guest/index.js";
import { createDisk, createOverlay, imageSizeFor, treeSize } from "../image/disk.js";
import type { Env } from "../image/index.js";
import { VmstackError } from "../lib/errors.js";
import { log } from "../lib/log.js";
import type { GuestFeature } from "./guest-image.js";
import type { DriveConfig, NicArgsConfig } from "./qemu-args.js";
import { checkHostDir, chooseShareMode, GUEST_MOUNT_SCRIPT, startVirtiofsd, virtiofsQemuArgs, type RunningShare, type ShareMode, type ShareSpec } from "./share.js";
import { copyFromGuest, copyIntoGuest, publishDir, stagingDirFor, type TransferStats } from "./transfer.js";

export interface DirMapping {
  readonly hostPath: string;
  readonly guestPath: string;
}

export interface ScratchSpec {
  readonly sizeBytes: number;
  readonly guestPath: string;
}

/** Where a root image is mounted in the guest; commands run chrooted into it. */
export const SYSROOT = "/sysroot";

export interface RootImage {
  readonly path: string;
  readonly format: "raw" | "qcow2";
}

export interface FilesOptions {
  /** Run the command inside this root file system image (a throwaway overlay keeps it unchanged). */
  readonly rootImage?: RootImage;
  readonly shares?: readonly ShareSpec[];
  readonly inputs?: readonly DirMapping[];
  readonly outputs?: readonly DirMapping[];
  readonly scratch?: readonly ScratchSpec[];
  /** A user-mode NAT card (SLIRP: guest 10.0.2.15, gateway 10.0.2.2, DNS 10.0.2.3). Default: no NIC at all. */
  readonly network?: boolean;
}

/**
 * SLIRP's fixed addresses (QEMU's `-netdev user` defaults): configured statically, because the
 * busybox guest has no DHCP client script. The single NIC is whatever is not `lo`.
 */
const GUEST_NET_SCRIPT = [
  "set -e",
  "for d in /sys/class/net/*; do n=${d##*/}; [ \"$n\" = lo ] || dev=$n; done",
  '[ -n "$dev" ] || { echo "vmstack: no network interface" >&2; exit 1; }',
  'ip addr add 10.0.2.15/24 dev "$dev"',
  'ip link set "$dev" up',
  "ip route add default via 10.0.2.2",
  'echo "nameserver 10.0.2.3" > "$1/etc/resolv.conf"',
].join("\n");

export interface TransferReport {
  readonly shareMode?: { readonly mode: ShareMode; readonly reason: string };
  readonly copiedIn: readonly (TransferStats & { readonly path: string })[];
  readonly copiedOut: readonly (TransferStats & { readonly path: string })[];
}

type Mount = readonly [kind: "virtiofs" | "blk-ro" | "blk-rw" | "fs", source: string, target: string];

export class TransferSession {
  readonly features: GuestFeature[] = [];
  readonly drives: DriveConfig[] = [];
  readonly nics: NicArgsConfig[] = [];
  readonly #mounts: Mount[] = [];
  readonly #virtiofs: ShareSpec[] = [];
  readonly #copyShares: ShareSpec[] = [];
  #daemons: RunningShare[] = [];
  #boots = 0;
  readonly #staging: string[] = [];
  readonly #copiedIn: (TransferStats & { path: string })[] = [];
  readonly #copiedOut: (TransferStats & { path: string })[] = [];
  readonly #shareMode: { mode: ShareMode; reason: string } | undefined;

  private constructor(
    readonly options: FilesOptions,
    private readonly runDir: string,
    private readonly env: Env,
  ) {
    if ((options.shares ?? []).length > 0) this.#shareMode = chooseShareMode(env);
  }

  /** Checks host paths up front (before any boot) and decides the guest features. */
  static plan(options: FilesOptions, runDir: string, env: Env): TransferSession {
    const s = new TransferSession(options, runDir, env);
    for (const sh of options.shares ?? []) checkHostDir(sh.hostPath, "--share");
    for (const i of options.inputs ?? []) checkHostDir(i.hostPath, "--in");
    // Found out before the boot, not after a long build: the staging directory goes next to DIR.
    for (const o of options.outputs ?? []) checkHostDir(dirname(o.hostPath), "--out (the parent directory)");
    if (options.rootImage && !existsSync(options.rootImage.path)) {
      throw new VmstackError("NO_IMAGE", `--image: no image at ${options.rootImage.path} (make one with 'vmstack image debian')`, { facts: { path: options.rootImage.path } });
    }
    const mode = s.#shareMode?.mode;
    for (const sh of options.shares ?? []) {
      if (mode === "virtiofs") s.#virtiofs.push(sh);
      else if (!sh.readOnly) s.#copyShares.push(sh);
    }
    const roImages = mode === "copy" ? (options.shares ?? []).filter((sh) => sh.readOnly) : [];
    if ((options.scratch ?? []).length > 0 || roImages.length > 0 || options.rootImage) s.features.push("disk");
    if (s.#virtiofs.length > 0) s.features.push("share");
    if (options.network) {
      s.features.push("network");
      s.nics.push({ id: "net0", mac: "52:54:00:12:34:56", model: "virtio", backend: { kind: "user", restrict: false, hostForwards: [], guestForwards: [] } });
    }
    return s;
  }

  get shareMode(): { mode: ShareMode; reason: string } | undefined {
    return this.#shareMode;
  }

  /** A guest path as the command sees it, in the guest's real namespace (under SYSROOT with a root image). */
  #g(path: string): string {
    return this.options.rootImage ? SYSROOT + path : path;
  }

  /**
   * Makes the disks (root image: a qcow2 overlay over it; scratch: empty ext4; read-only copy-mode
   * shares: ext4 populated with mkfs -d).
   */
  async makeDisks(): Promise<void> {
    let n = 0;
    const root = this.options.rootImage;
    if (root) {
      const overlay = join(this.runDir, "root.qcow2");
      await createOverlay(root.path, root.format, overlay);
      this.drives.push({ id: "root", path: overlay, format: "qcow2", bus: "virtio", media: "disk", readOnly: false, cache: "unsafe", discard: true, serial: "vmstackroot" });
      this.#mounts.push(["blk-rw", "vmstackroot", SYSROOT], ["fs", "proc", `${SYSROOT}/proc`], ["fs", "sysfs", `${SYSROOT}/sys`], ["fs", "devtmpfs", `${SYSROOT}/dev`]);
      this.#mounts.push(["fs", "tmpfs", `${SYSROOT}/tmp`]);
    }
    const addDisk = (path: string, readOnly: boolean, target: string): void => {
      const serial = `vmstack${n++}`;
      this.drives.push({ id: `disk${n}`, path, format: "raw", bus: "virtio", media: "disk", readOnly, cache: "unsafe", discard: true, serial });
      this.#mounts.push([readOnly ? "blk-ro" : "blk-rw", serial, this.#g(target)]);
    };
    for (const [i, sc] of (this.options.scratch ?? []).entries()) {
      const path = join(this.runDir, `scratch${i}.img`);
      // cache=unsafe: a scratch disk is thrown away with the VM, flushes buy nothing.
      await createDisk(path, { format: "raw", sizeBytes: sc.sizeBytes, fs: { type: "ext4", label: `scratch${i}` } });
      addDisk(path, false, sc.guestPath);
    }
    if (this.#shareMode?.mode === "copy") {
      for (const [i, sh] of (this.options.shares ?? []).entries()) {
        if (!sh.readOnly) continue;
        const path = join(this.runDir, `share${i}.img`);
        await createDisk(path, { format: "raw", sizeBytes: imageSizeFor(await treeSize(sh.hostPath)), fs: { type: "ext4", from: sh.hostPath } });
        addDisk(path, true, sh.guestPath);
      }
    }
  }

  /**
   * Starts one virtiofsd per share (each exits when its VM disconnects, so every boot, including a
   * retry after a failed KVM probe, gets fresh daemons) and returns QEMU's extra arguments.
   */
  async startDaemons(memoryMiB: number, signal?: AbortSignal): Promise<string[]> {
    await this.stopDaemons();
    const boot = this.#boots++;
    for (const [i, sh] of this.#virtiofs.entries()) {
      this.#daemons.push(await startVirtiofsd(sh, `share${i}`, join(this.runDir, `vfs${boot}-${i}.sock`), this.env, signal));
    }
    return virtiofsQemuArgs(this.#daemons, memoryMiB);
  }

  async stopDaemons(): Promise<void> {
    const daemons = this.#daemons;
    this.#daemons = [];
    await Promise.all(daemons.map((d) => d.daemon.stop(500)));
  }

  /** In the booted guest: mount disks and shares, copy inputs in, create output directories. */
  async intoGuest(agent: AgentClient, signal?: AbortSignal): Promise<void> {
    const mounts: Mount[] = [...this.#mounts, ...this.#daemons.map((d): Mount => ["virtiofs", d.tag, this.#g(d.spec.guestPath)])];
    const mkdirs = (this.options.outputs ?? []).map((o) => this.#g(o.guestPath));
    if (mounts.length > 0 || mkdirs.length > 0) {
      const script = `${GUEST_MOUNT_SCRIPT}\nfor d in ${mkdirs.map((_, i) => `"$VMSTACK_OUT${i}"`).join(" ")}; do mkdir -p "$d"; done`;
      const env = Object.fromEntries(mkdirs.map((d, i) => [`VMSTACK_OUT${i}`, d]));
      // A virtiofs mount whose daemon is gone blocks forever in the guest: bound it.
      const r = await agent.run({ argv: ["sh", "-c", script, "vmstack-mount", ...mounts.flat()], env, timeoutMs: 60_000, ...(signal ? { signal } : {}) });
      if (r.exitCode !== 0) {
        throw new VmstackError("GUEST_SETUP_FAILED", `mounting disks and shares in the guest failed: ${r.stderr.toString().trim() || `exit ${r.exitCode}`}`);
      }
    }
    if (this.options.network) {
      const root = this.options.rootImage ? SYSROOT : "";
      const r = await agent.run({ argv: ["sh", "-c", GUEST_NET_SCRIPT, "vmstack-net", root], timeoutMs: 30_000, ...(signal ? { signal } : {}) });
      if (r.exitCode !== 0) throw new VmstackError("GUEST_SETUP_FAILED", `configuring the guest's network failed: ${r.stderr.toString().trim() || `exit ${r.exitCode}`}`);
    }
    const copies = [...(this.options.inputs ?? []), ...this.#copyShares];
    for (const c of copies) {
      const stats = await copyIntoGuest(agent, c.hostPath, this.#g(c.guestPath), signal);
      log("debug", "run", `copied ${c.hostPath} in: ${stats.bytes} bytes in ${Math.round(stats.ms)} ms`);
      this.#copiedIn.push({ ...stats, path: c.hostPath });
    }
  }

  /**
   * After the command. Copy-mode writable shares are copied back whatever the command's status
   * (a share is not an output). `--out` trees are copied out only when `succeeded`.
   */
  async outOfGuest(agent: AgentClient, succeeded: boolean, signal?: AbortSignal): Promise<void> {
    for (const sh of this.#copyShares) this.#copiedOut.push({ ...(await copyFromGuest(agent, this.#g(sh.guestPath), sh.hostPath, signal)), path: sh.hostPath });
    if (!succeeded) return;
    const staged: [string, string][] = [];
    for (const o of this.options.outputs ?? []) {
      const staging = await stagingDirFor(o.hostPath);
      this.#staging.push(staging);
      const stats = await copyFromGuest(agent, this.#g(o.guestPath), staging, signal);
      this.#copiedOut.push({ ...stats, path: o.hostPath });
      staged.push([staging, o.hostPath]);
    }
    // Published only once every output was copied: several --out trees appear together or not at all
    // (each rename is atomic; a crash between two renames can leave the first one published).
    signal?.throwIfAborted();
    for (const [staging, target] of staged) await publishDir(staging, target);
  }

  report(): TransferReport {
    return { ...(this.#shareMode ? { shareMode: this.#shareMode } : {}), copiedIn: this.#copiedIn, copiedOut: this.#copiedOut };
  }

  async cleanup(): Promise<void> {
    await this.stopDaemons();
    await Promise.all(this.#staging.map((s) => rm(s, { recursive: true, force: true })));
  }
}

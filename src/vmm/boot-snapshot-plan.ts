/**
 * Boot snapshots for `vmstack run`, the pure part: what identifies a snapshot (its key) and when
 * one may be used at all. The I/O is in boot-snapshot-store.ts (the cache) and
 * throwaway-snapshot.ts (saving and restoring a VM); the design is in docs/boot.md.
 *
 * A boot snapshot is the whole state of a freshly booted guest, saved the moment its agent
 * answered and before any command ran. Every run restored from it gets a pristine, never-used VM,
 * like Firecracker's snapshot restore: QEMU loads the state instead of booting the kernel.
 */
import type { Accel } from "./qemu-args.js";
import { recipeKey } from "../image/index.js";

/** Bumped when the layout or the meaning of a saved snapshot changes: old ones are then unused. */
export const BOOT_SNAPSHOT_FORMAT = 1;

/** Everything that determines the saved guest state. Two runs with equal identities may share one. */
export interface BootSnapshotIdentity {
  /** `qemuIdentity()`: the binary's path, inode, size and mtime (a QEMU upgrade changes it). */
  readonly qemu: string;
  readonly accel: Accel;
  /** The host CPU and kernel, under KVM only (`-cpu host` exposes the real CPU to the guest). */
  readonly host?: string;
  /** The kernel file: path, size, mtime and inode. */
  readonly kernel: string;
  /** The initrd's content hash (its key in the cache: a hash of every file and module in it). */
  readonly initrd: string;
  /**
   * The QEMU command line with the run directory replaced by `$RUN`: machine type, memory, CPUs,
   * kernel command line, every device. Sockets live in each run's own directory, and their paths
   * are not part of the guest state.
   */
  readonly argv: readonly string[];
}

/** The run directory's placeholder in an identity's argv. */
export const RUN_DIR_PLACEHOLDER = "$RUN";

/** `argv` with every occurrence of `runDir` replaced by a placeholder. */
export function normalizeArgv(argv: readonly string[], runDir: string): string[] {
  return argv.map((a) => a.replaceAll(runDir, RUN_DIR_PLACEHOLDER));
}

/** The snapshot's key: sha256 of the identity (canonical JSON) and the format version. */
export function bootSnapshotKey(identity: BootSnapshotIdentity): string {
  return recipeKey({ format: BOOT_SNAPSHOT_FORMAT, ...identity });
}

/** What a run asks for; only the facts that decide whether a restore is safe. */
export interface BootSnapshotRequest {
  /** `--cold-boot`. */
  readonly coldBootFlag: boolean;
  /** `$VMSTACK_COLD_BOOT`. */
  readonly coldBootEnv: string | undefined;
  /** virtiofs shares (vhost-user-fs devices). */
  readonly virtiofsShares: number;
  /** Disks of any kind: --scratch, --image, read-only shares copied as disk images. */
  readonly drives: number;
  /** Network cards (--net). */
  readonly nics: number;
}

export type BootSnapshotEligibility = { readonly eligible: true } | { readonly eligible: false; readonly reason: string };

export const COLD_BOOT_ENV = "VMSTACK_COLD_BOOT";

/** `VMSTACK_COLD_BOOT`: unset, empty, 0, false or no mean "snapshots allowed". */
export function coldBootRequested(value: string | undefined): boolean {
  return value !== undefined && !["", "0", "false", "no"].includes(value.trim().toLowerCase());
}

/**
 * Whether a run may start from (and save) a boot snapshot. Only device sets where a restore is
 * known to be safe qualify: the agent channel alone, which also carries `--in`/`--out` copies.
 */
export function bootSnapshotEligibility(r: BootSnapshotRequest): BootSnapshotEligibility {
  if (r.coldBootFlag) return { eligible: false, reason: "--cold-boot was given" };
  if (coldBootRequested(r.coldBootEnv)) return { eligible: false, reason: `${COLD_BOOT_ENV}=${r.coldBootEnv ?? ""} is set` };
  // vhost-user-fs keeps its state in virtiofsd, outside QEMU: QEMU refuses to migrate it.
  if (r.virtiofsShares > 0) return { eligible: false, reason: "a virtiofs share cannot be saved in a snapshot (vhost-user-fs does not migrate)" };
  // The guest's page cache and block layer state from the snapshot's boot would not match a
  // different disk attached to the restored VM.
  if (r.drives > 0) return { eligible: false, reason: "the run has disks (--scratch, --image or a share copied as an image); a snapshot's page cache would not match them" };
  // Not verified: a NIC's link and the guest's network setup would be the snapshot's.
  if (r.nics > 0) return { eligible: false, reason: "the run has a network card (--net); boot snapshots cover the agent channel only" };
  return { eligible: true };
}

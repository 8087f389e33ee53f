/**
 * What machines of one run share: the guest images, the accelerator and its timeouts, the run's
 * private directory (sockets, saved states), the timeline, the VLAN endpoints and, with snapshot
 * fan-out on, the saved states. Created once per run by the runner.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomInt } from "node:crypto";
import { prepareGuestImage, type GuestFeature, type GuestImage } from "../vmm/guest-image.js";
import { decideAccel } from "../vmm/guest-accel.js";
import type { AccelChoice, AccelDecision } from "../vmm/accel.js";
import type { Env } from "../image/index.js";
import { defaultTimeouts, type Timeouts } from "./timeouts.js";
import { vlanEndpoint, type VlanEndpoint } from "./network.js";
import { SnapshotStore } from "./snapshot.js";
import { Timeline } from "./timeline.js";

export interface MachineHostOptions {
  readonly accel?: AccelChoice;
  readonly kernelPath?: string | undefined;
  readonly env?: Env;
  /** Boot each machine shape once and start later ones from its saved state. */
  readonly snapshots?: boolean;
  /** Where copyFromVm puts files by default and console logs are kept; default: the run directory. */
  readonly outDir?: string | undefined;
  readonly timeline?: Timeline;
  readonly signal?: AbortSignal | undefined;
}

export class MachineHost {
  readonly #images = new Map<string, Promise<GuestImage>>();
  readonly #seed = randomInt(2 ** 31);
  readonly snapshots: SnapshotStore | undefined;

  private constructor(
    readonly accel: AccelDecision,
    readonly timeouts: Timeouts,
    /** Short path (Unix socket paths are limited to 107 bytes). */
    readonly runDir: string,
    readonly outDir: string,
    readonly timeline: Timeline,
    readonly env: Env,
    readonly kernelPath: string | undefined,
    snapshots: boolean,
  ) {
    this.snapshots = snapshots ? new SnapshotStore(runDir) : undefined;
  }

  /** Prepares the base image and decides the accelerator (a KVM probe boot when it is not known yet). */
  static async create(o: MachineHostOptions = {}): Promise<MachineHost> {
    const env = o.env ?? process.env;
    const runDir = mkdtempSync(join(tmpdir(), "vmstack-test-"));
    try {
      const image = await prepareGuestImage({ kernelPath: o.kernelPath, env, features: ["network"], signal: o.signal });
      const decision = await decideAccel({ choice: o.accel ?? "auto", image, env, runDir, signal: o.signal });
      const host = new MachineHost(decision, defaultTimeouts(decision.accel, env), runDir, o.outDir ?? runDir, o.timeline ?? new Timeline(), env, o.kernelPath, o.snapshots ?? false);
      host.#images.set("network", Promise.resolve(image));
      return host;
    } catch (e) {
      rmSync(runDir, { recursive: true, force: true });
      throw e;
    }
  }

  /** The guest image with the kernel modules for these features (cached by content hash). */
  image(features: readonly GuestFeature[]): Promise<GuestImage> {
    const key = [...features].sort().join(",");
    let p = this.#images.get(key);
    if (!p) {
      p = prepareGuestImage({ kernelPath: this.kernelPath, env: this.env, features });
      this.#images.set(key, p);
    }
    return p;
  }

  /** This run's segment for VLAN n (a fresh one per test: pass the test's index as `epoch`). */
  vlanEndpoint(vlan: number, epoch: number): VlanEndpoint {
    return vlanEndpoint(this.#seed + epoch * 1000, vlan);
  }

  /** Removes the run directory (sockets, saved states). Machines must be stopped first. */
  dispose(): void {
    rmSync(this.runDir, { recursive: true, force: true });
  }
}

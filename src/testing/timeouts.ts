/**
 * Default deadlines, scaled with the accelerator the run measured (house rule 7): TCG runs guest
 * code 10–50× slower than KVM, and a 2-core host shared with other work stalls. NixOS uses 900 s
 * everywhere; vmstack's defaults are tighter so a broken test says so in minutes, and every call
 * can pass its own `timeout`. VMSTACK_TEST_TIMEOUT_SCALE multiplies them all (slow CI).
 */
import type { Accel } from "../vmm/qemu-args.js";
import type { Env } from "../image/index.js";
import { bootTimeoutMs } from "../vmm/index.js";

export interface Timeouts {
  /** Boot (or restore) until the agent answers. */
  readonly bootMs: number;
  /** One command (execute, succeed, fail): enforced in the guest and on the host. */
  readonly commandMs: number;
  /** A wait for a condition (waitUntilSucceeds, waitForFile, waitForOpenPort, waitForConsoleText…). */
  readonly waitMs: number;
  /** A clean shutdown until QEMU exits. */
  readonly shutdownMs: number;
}

const KVM: Omit<Timeouts, "bootMs"> = { commandMs: 60_000, waitMs: 30_000, shutdownMs: 15_000 };
const TCG_FACTOR = 5;

export function defaultTimeouts(accel: Accel, env: Env = process.env): Timeouts {
  const raw = Number(env["VMSTACK_TEST_TIMEOUT_SCALE"]);
  const scale = Number.isFinite(raw) && raw > 0 ? raw : 1;
  const f = (accel === "tcg" ? TCG_FACTOR : 1) * scale;
  return {
    bootMs: Math.round(bootTimeoutMs(accel, env) * scale),
    commandMs: Math.round(KVM.commandMs * f),
    waitMs: Math.round(KVM.waitMs * f),
    shutdownMs: Math.round(KVM.shutdownMs * f),
  };
}

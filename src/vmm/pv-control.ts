/**
 * The PV control protocol's answer: after a toolstack writes a command to control/shutdown, a
 * guest that honours it writes "" back (xenstore-paths.pandoc, ~/control/shutdown; Linux
 * drivers/xen/manage.c). A guest says up front whether it will: control/feature-poweroff and
 * control/feature-reboot = "1" (vmstack's agent sets them once it watches control/shutdown).
 *
 * vmstackd uses this to choose a path: a guest that acknowledged is powering off on its own, so
 * the agent's POWER request (the fallback for guests without PV control) is not sent; that keeps
 * one clean path instead of racing two.
 */
import type { XenstoreClient } from "../xenstore/client.js";
import { isVmstackError } from "../lib/errors.js";
import { retryUntil } from "../lib/retry.js";
import { domainPath } from "./domain-xenstore.js";

/** What a guest agent reports about one boot (xs-report.c); see forgetGuestReports. */
const BOOT_REPORTS = ["data/booted", "data/os_uname", "attr/vif", "drivers/0"] as const;

/**
 * True once the guest acknowledged the command in control/shutdown (or its home is gone, i.e.
 * it already shut down); false at once if it does not advertise `feature-<kind>`, or when
 * `timeoutMs` passes without an acknowledgement.
 */
export async function pvAcknowledged(xs: XenstoreClient, domid: number, kind: "poweroff" | "reboot", timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const home = domainPath(domid);
  if ((await xs.tryRead(`${home}/control/feature-${kind}`)) !== "1") return false;
  try {
    return await retryUntil(async () => {
      const v = await xs.tryRead(`${home}/control/shutdown`);
      return v === undefined || v === "" ? true : undefined;
    }, { what: `domain ${domid} to acknowledge control/shutdown`, timeoutMs, signal, maxDelayMs: 100 });
  } catch (e) {
    if (isVmstackError(e, "TIMEOUT")) return false;
    throw e;
  }
}

/**
 * The guest was reset (a reboot inside the same QEMU): what its agent reported belongs to the old
 * boot. Xen gets this for free, as a rebooted domain is a new domain with a fresh home; vmstack
 * keeps the domid, so it clears the reports: `data/booted` is absent until the new boot's agent
 * writes it, and `control/feature-*` go back to "" so that a shutdown during the boot does not
 * wait for an acknowledgement no one will send yet.
 */
export async function forgetGuestReports(xs: XenstoreClient, domid: number): Promise<void> {
  const home = domainPath(domid);
  await xs.transaction(async (tx) => {
    for (const p of BOOT_REPORTS) {
      try {
        await tx.rm(`${home}/${p}`);
      } catch (e) {
        if (!isVmstackError(e, "XS_ENOENT")) throw e;
      }
    }
    for (const f of ["poweroff", "reboot"]) {
      if ((await tx.tryRead(`${home}/control/feature-${f}`)) !== undefined) await tx.write(`${home}/control/feature-${f}`, "");
    }
  });
}

/**
 * A domain's shares with a `target` (qemu-vm.nix's sharedDirectories) are mounted in the guest by
 * vmstackd through the guest agent once it answers: after create and restart, after a guest
 * reboot (which unmounts everything), and at the first unpause of a domain created paused. A guest
 * without vmstack's agent mounts its shares itself (`mount -t virtiofs TAG DIR`).
 */
import type { Domain } from "./domain.js";
import type { ShareConfig } from "../domain/index.js";
import { GUEST_MOUNT_SCRIPT } from "./share.js";
import { messageOf } from "../lib/errors.js";

/** A booting TCG guest answers in seconds; a loaded host can take a minute or more. */
const AGENT_WAIT_MS = 180_000;

export async function mountShares(d: Domain, shares: readonly ShareConfig[], log: (m: string) => void): Promise<boolean> {
  const mounts = shares.flatMap((s) => (s.target === undefined ? [] : [[s.readOnly ? "virtiofs-ro" : "virtiofs", s.tag, s.target]]));
  if (mounts.length === 0) return true;
  try {
    const agent = await d.agent(AGENT_WAIT_MS);
    // A virtiofs mount whose daemon is gone blocks in the guest: bound it.
    const r = await agent.run({ argv: ["sh", "-c", GUEST_MOUNT_SCRIPT, "vmstack-mount", ...mounts.flat()], timeoutMs: 60_000 });
    if (r.exitCode !== 0) {
      log(`${d.name}: mounting its shares failed: ${r.stderr.toString().trim() || `exit ${String(r.exitCode)}`}`);
      return false;
    }
    log(`${d.name}: shares mounted (${mounts.map(([, tag, target]) => `${tag} at ${target}`).join(", ")})`);
    return true;
  } catch (e) {
    log(`${d.name}: shares not mounted: ${messageOf(e)}`);
    return false;
  }
}

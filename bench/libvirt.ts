/**
 * libvirt as the benchmarks' peer (/work/shared/docs/libvirt-peer.md): whether virsh is there, and
 * libvirtd + virtlogd started for the run when they are not running, stopped again afterwards.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export const haveVirsh = spawnSync("virsh", ["--version"]).status === 0;

/** Starts libvirtd and virtlogd unless they answer; returns whether it started them. */
export async function ensureLibvirt(): Promise<boolean> {
  if (!haveVirsh || spawnSync("virsh", ["-q", "list"]).status === 0) return false;
  spawnSync("virtlogd", ["-d"]);
  spawnSync("libvirtd", ["-d"]);
  for (let i = 0; i < 100 && spawnSync("virsh", ["-q", "list"]).status !== 0; i++) await sleep(100);
  return true;
}

/** Stops what ensureLibvirt started. */
export function stopLibvirt(started: boolean): void {
  if (!started) return;
  for (const f of ["/run/libvirtd.pid", "/run/virtlogd.pid"]) {
    if (existsSync(f)) process.kill(Number(readFileSync(f, "utf8")), "SIGTERM");
  }
}

/**
 * libvirt as the benchmarks' peer (/work/shared/docs/libvirt-peer.md): whether virsh is there, and
 * libvirtd + virtlogd started for the run when they are not running, stopped again afterwards; and
 * the one guest both sides boot, as vmstack settings and as libvirt domain XML.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
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

/** The guest of a vmstack-vs-libvirt benchmark: pc, TCG, one vCPU, no NIC, no agent, no balloon. */
export interface PeerGuest {
  readonly memoryMiB: number;
  readonly kernel: string;
  readonly initrd: string;
  readonly cmdline: string;
}

/** `vmstack create` KEY=VALUE settings for the guest. */
export function vmstackSettings(name: string, g: PeerGuest): string[] {
  return [
    `name=${name}`, `memory=${g.memoryMiB}`, "machine=pc", `boot.kernel=${g.kernel}`, `boot.initrd=${g.initrd}`, `boot.cmdline=${g.cmdline}`,
    "agent=false", "nics=[]", "rng=false", "accel=tcg",
  ];
}

/** Writes `dir/NAME.xml`, the same guest for libvirt with its serial console in `consoleLog`. */
export function writeLibvirtXml(dir: string, name: string, g: PeerGuest, consoleLog: string): string {
  const file = join(dir, `${name}.xml`);
  writeFileSync(
    file,
    `<domain type='qemu'><name>${name}</name><memory unit='MiB'>${g.memoryMiB}</memory><vcpu>1</vcpu>
 <os><type arch='x86_64' machine='pc'>hvm</type><kernel>${g.kernel}</kernel><initrd>${g.initrd}</initrd><cmdline>${g.cmdline}</cmdline></os>
 <features><acpi/></features>
 <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
 <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
  <serial type='file'><source path='${consoleLog}' append='on'/><target port='0'/></serial>
  <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>\n`,
  );
  return file;
}

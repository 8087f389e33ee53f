/**
 * bench/lifecycle: domain lifecycle latencies, vmstack against libvirt (virsh, QEMU driver) in the
 * same invocation, runs interleaved so both see the same machine load. CLI wall times, as users
 * see them (each includes its CLI's start-up).
 *
 *   node dist/bench/lifecycle.js [--runs N]       prints one JSON object
 *
 * Both sides boot the same guest: the cloud kernel's bzImage on the pc machine, 128 MiB, TCG, and
 * a busybox initrd whose init prints "tick N" on ttyS0 every second (libvirt-peer.md's guest). No
 * NIC, no agent, no rng on either side.
 * - create → first console line: from starting the create command until "tick 0" is in the
 *   domain's console log (vmstack: $STATE/log/NAME.console.log; libvirt: <serial type='file'>).
 * - list with 10 domains: 10 domains created paused (a paused TCG guest costs no CPU, so 10 boots
 *   do not drown the measurement on a 2-core host), then `vmstack list` / `virsh list`.
 * - pause/unpause (virsh suspend/resume) and destroy on a running domain.
 * - vmstackd RSS with 0 and with 10 domains (issue target: ≤ 80 MB + 2 MB per domain).
 * libvirt: libvirt-daemon-system (./setup installs it); libvirtd and virtlogd are started here
 * when not running and stopped again afterwards. Without virsh the libvirt side is reported absent.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureLibvirt, haveVirsh, stopLibvirt, vmstackSettings, writeLibvirtXml, type PeerGuest } from "./libvirt.js";
import { summarize, timeProcess, vmstackCommand, type Summary } from "./stats.js";
import { writeCpio } from "../src/image/cpio.js";
import { resolveKernel } from "../src/image/index.js";
import { vmstackdRequest } from "../src/vmm/api/client.js";
import type { HostInfo } from "../src/vmm/api/protocol.js";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1] || 3);
const bin = fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "vmstack-bench-lc-"));
const env = { ...process.env, VMSTACK_STATE_DIR: join(work, "s"), VMSTACK_RUN_DIR: join(work, "r") };
/** What `vmstack` on PATH is after ./setup: the native front end (front/vmstack.c), when built. */
const vmstackCli = vmstackCommand();
const vmstack = (...args: string[]): Promise<{ seconds: number }> => timeProcess([...vmstackCli, ...args], env);
const virsh = (...args: string[]): Promise<{ seconds: number }> => timeProcess(["virsh", "-q", ...args]);

const resolved = await resolveKernel({ env: process.env });
if (!resolved.bzImagePath) throw new Error("bench/lifecycle needs the kernel's bzImage (vmstack kernel fetch)");
// libvirt runs QEMU as libvirt-qemu: the kernel must be in a directory that user can traverse
// (the cache is under /root), so both sides boot a copy in the (world-traversable) work directory.
chmodSync(work, 0o755);
const kernel = { bzImagePath: join(work, "bzImage") };
copyFileSync(resolved.bzImagePath, kernel.bzImagePath);
const initrd = join(work, "tick.cpio");
writeFileSync(
  initrd,
  writeCpio([
    { type: "file", path: "bin/busybox", mode: 0o755, data: readFileSync("/bin/busybox") },
    {
      type: "file",
      path: "init",
      mode: 0o755,
      data: Buffer.from("#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\ni=0\nwhile true; do echo \"tick $i\" > /dev/ttyS0; i=$((i+1)); /bin/busybox sleep 1; done\n"),
    },
    { type: "dir", path: "dev" },
    { type: "dir", path: "proc" },
  ]),
);
const cmdline = "console=ttyS0 panic=-1";
const guest: PeerGuest = { memoryMiB: 128, kernel: kernel.bzImagePath, initrd, cmdline };
const vmstackSpec = (name: string): string[] => vmstackSettings(name, guest);
const libvirtXml = (name: string, consoleLog: string): string => writeLibvirtXml(work, name, guest, consoleLog);

async function firstTick(log: string, t0: number, timeoutMs = 120_000): Promise<number> {
  while (performance.now() - t0 < timeoutMs) {
    if (existsSync(log) && readFileSync(log, "latin1").includes("tick 0")) return (performance.now() - t0) / 1000;
    await sleep(5);
  }
  throw new Error(`no "tick 0" in ${log} within ${timeoutMs} ms`);
}

async function rssMiB(): Promise<number> {
  return ((await vmstackdRequest({ op: "host-info" }, { env })) as HostInfo).daemonRssMiB;
}

interface Side {
  createToFirstConsoleLineS: number[];
  pauseS: number[];
  unpauseS: number[];
  destroyS: number[];
  listWith10DomainsS: number[];
}
const empty = (): Side => ({ createToFirstConsoleLineS: [], pauseS: [], unpauseS: [], destroyS: [], listWith10DomainsS: [] });
const vs = empty();
const lv = empty();
let startedLibvirt = false;

async function vmstackRound(i: number): Promise<void> {
  const name = `vs${i}`;
  const t0 = performance.now();
  await vmstack("create", ...vmstackSpec(name));
  vs.createToFirstConsoleLineS.push(await firstTick(join(work, "s", "log", `${name}.console.log`), t0));
  vs.pauseS.push((await vmstack("pause", name)).seconds);
  vs.unpauseS.push((await vmstack("unpause", name)).seconds);
  vs.destroyS.push((await vmstack("destroy", name)).seconds);
}

async function libvirtRound(i: number): Promise<void> {
  const name = `lvbench${i}`;
  const log = join(work, `${name}.console.log`);
  const xml = libvirtXml(name, log);
  const t0 = performance.now();
  await virsh("create", xml);
  lv.createToFirstConsoleLineS.push(await firstTick(log, t0));
  lv.pauseS.push((await virsh("suspend", name)).seconds);
  lv.unpauseS.push((await virsh("resume", name)).seconds);
  lv.destroyS.push((await virsh("destroy", name)).seconds);
}

const ratio = (a: Summary, b: Summary): number => Math.round((a.median / b.median) * 100) / 100;

try {
  startedLibvirt = await ensureLibvirt();
  await vmstack("list"); // starts vmstackd
  const rss0 = await rssMiB();
  for (let i = 0; i < runs; i++) {
    await vmstackRound(i);
    if (haveVirsh) await libvirtRound(i);
  }
  for (let i = 0; i < 10; i++) {
    await vmstack("create", "-p", ...vmstackSpec(`idle${i}`));
    if (haveVirsh) await virsh("create", "--paused", libvirtXml(`lvidle${i}`, join(work, `lvidle${i}.log`)));
  }
  for (let i = 0; i < 15; i++) {
    vs.listWith10DomainsS.push((await vmstack("list")).seconds);
    if (haveVirsh) lv.listWith10DomainsS.push((await virsh("list")).seconds);
  }
  const rss10 = await rssMiB();
  for (let i = 0; i < 10; i++) {
    await vmstack("destroy", `idle${i}`);
    if (haveVirsh) await virsh("destroy", `lvidle${i}`);
  }
  const s = (side: Side): Record<keyof Side, Summary> =>
    Object.fromEntries(Object.entries(side).map(([k, v]) => [k, summarize(v as number[])])) as Record<keyof Side, Summary>;
  const vsS = s(vs);
  const lvS = haveVirsh ? s(lv) : undefined;
  console.log(
    JSON.stringify(
      {
        bench: "lifecycle",
        runs,
        vmstackCli: vmstackCli.length === 1 ? "native front end" : "node",
        host: { cpus: Number(spawnSync("nproc").stdout.toString().trim()), loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ") },
        vmstack: { ...vsS, vmstackdRssMiB: { domains0: rss0, domains10: rss10, perDomain: Math.round(((rss10 - rss0) / 10) * 100) / 100 } },
        libvirt: lvS ?? { measured: false, reason: "virsh is not installed (apt-get install libvirt-daemon-system libvirt-clients)" },
        // vmstack median / libvirt median: below 1 means vmstack is faster.
        ratios: lvS ? Object.fromEntries(Object.keys(vsS).map((k) => [k, ratio(vsS[k as keyof Side], lvS[k as keyof Side])])) : null,
        targets: {
          listUnder150ms: vsS.listWith10DomainsS.median <= 0.15,
          rssUnder80MiBPlus2PerDomain: rss0 <= 80 && rss10 <= 80 + 2 * 10,
          noSlowerThanLibvirt: lvS ? Object.keys(vsS).every((k) => vsS[k as keyof Side].median <= lvS[k as keyof Side].median) : null,
        },
      },
      null,
      2,
    ),
  );
} finally {
  spawnSync(process.execPath, [bin, "shutdown", "-a", "-F", "--timeout", "1"], { env, stdio: "ignore" });
  const pid = existsSync(join(work, "r", "vmstackd.pid")) ? Number(readFileSync(join(work, "r", "vmstackd.pid"), "utf8")) : 0;
  if (pid > 0) process.kill(pid, "SIGTERM");
  if (haveVirsh) {
    for (const n of [...Array(runs).keys()].map((i) => `lvbench${i}`).concat([...Array(10).keys()].map((i) => `lvidle${i}`))) spawnSync("virsh", ["-q", "destroy", n], { stdio: "ignore" });
  }
  stopLibvirt(startedLibvirt);
  await sleep(300);
  rmSync(work, { recursive: true, force: true });
}

/**
 * bench/save: `vmstack save` / `vmstack restore` of a 256 MiB guest against libvirt's
 * `virsh save` / `virsh restore` of the same guest, in the same invocation, rounds interleaved so
 * both see the same machine load. CLI wall times, as users see them.
 *
 *   node dist/bench/save.js [--runs N] [--no-init-on-free]      prints one JSON object
 *
 * The guest (both sides): the cloud kernel's bzImage on the pc machine, 256 MiB, TCG, no NIC, and
 * a busybox initrd whose init prints "tick N <MemTotal> <MemFree> <MemAvailable>" (kB, from the
 * guest's /proc/meminfo) on ttyS0 every second. The guest's used memory is MemTotal − MemAvailable
 * (the kernel's own estimate of what cannot be reclaimed without swapping; MemTotal − MemFree, which
 * also counts the page cache, is reported beside it), read from the last tick before the save.
 * Issue targets: save and restore each ≤ 1.5 s, no slower than libvirt; the save file ≤ used
 * memory + 10 %.
 * After each restore the next tick must carry on from the last one before the save (continuity).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { ensureLibvirt, haveVirsh, stopLibvirt, vmstackSettings, writeLibvirtXml, type PeerGuest } from "./libvirt.js";
import { summarize, timeProcess, vmstackCommand, type Summary } from "./stats.js";
import { writeCpio } from "../src/image/cpio.js";
import { resolveKernel } from "../src/image/index.js";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1] || 3);
const MEMORY_MIB = 256;
const bin = fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "vmstack-bench-save-"));
const env = { ...process.env, VMSTACK_STATE_DIR: join(work, "s"), VMSTACK_RUN_DIR: join(work, "r") };
/** As users run it (the native front end: save and restore are among its quick verbs). */
const vmstackCli = vmstackCommand();
const vmstack = (...args: string[]): Promise<{ seconds: number }> => timeProcess([...vmstackCli, ...args], env);
const virsh = (...args: string[]): Promise<{ seconds: number }> => timeProcess(["virsh", "-q", ...args]);

const resolved = await resolveKernel({ env: process.env });
if (!resolved.bzImagePath) throw new Error("bench/save needs the kernel's bzImage (vmstack kernel fetch)");
// libvirt runs QEMU as libvirt-qemu: boot a copy in the world-traversable work directory.
chmodSync(work, 0o755);
const kernel = join(work, "bzImage");
copyFileSync(resolved.bzImagePath, kernel);
const initrd = join(work, "tick.cpio");
const init = [
  "#!/bin/busybox sh",
  "/bin/busybox mount -t devtmpfs dev /dev",
  "/bin/busybox mount -t proc proc /proc",
  "i=0",
  "while true; do",
  "  while read k v u; do case $k in MemTotal:) t=$v;; MemFree:) f=$v;; MemAvailable:) a=$v;; esac; done < /proc/meminfo",
  '  echo "tick $i $t $f $a" > /dev/ttyS0',
  "  i=$((i+1)); /bin/busybox sleep 1",
  "done",
  "",
].join("\n");
writeFileSync(
  initrd,
  writeCpio([
    { type: "file", path: "bin/busybox", mode: 0o755, data: readFileSync("/bin/busybox") },
    { type: "file", path: "init", mode: 0o755, data: Buffer.from(init) },
    { type: "dir", path: "dev" },
    { type: "dir", path: "proc" },
  ]),
);
// init_on_free=1: the guest zeroes every page it frees (boot-time leftovers of the kernel's
// decompression and of the unpacked initrd included), and QEMU sends zero pages as a flag, so the
// state holds what the guest uses rather than everything it ever touched. --no-init-on-free
// measures without it. Both sides boot the same command line.
const initOnFree = !process.argv.includes("--no-init-on-free");
const cmdline = `console=ttyS0 panic=-1${initOnFree ? " init_on_free=1" : ""}`;
const guest: PeerGuest = { memoryMiB: MEMORY_MIB, kernel: kernel, initrd, cmdline };
const vmstackSpec = (name: string): string[] => vmstackSettings(name, guest);
const libvirtXml = (name: string, consoleLog: string): string => writeLibvirtXml(work, name, guest, consoleLog);

interface Tick { n: number; totalKiB: number; freeKiB: number; availableKiB: number }

function ticks(log: string): Tick[] {
  if (!existsSync(log)) return [];
  return [...readFileSync(log, "latin1").matchAll(/^tick (\d+) (\d+) (\d+) (\d+)\r?$/gm)].map((m) => ({ n: Number(m[1]), totalKiB: Number(m[2]), freeKiB: Number(m[3]), availableKiB: Number(m[4]) }));
}

async function waitTick(log: string, after: (t: Tick[]) => boolean, what: string, timeoutMs = 120_000): Promise<Tick[]> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    const t = ticks(log);
    if (after(t)) return t;
    await sleep(20);
  }
  throw new Error(`${log}: no ${what} within ${timeoutMs} ms`);
}

interface Side {
  saveS: number[];
  restoreS: number[];
  fileMiB: number[];
  usedMiB: number[];
  usedWithCacheMiB: number[];
  /** file / used (MemTotal − MemAvailable). */
  fileToUsed: number[];
  continued: boolean[];
}
const empty = (): Side => ({ saveS: [], restoreS: [], fileMiB: [], usedMiB: [], usedWithCacheMiB: [], fileToUsed: [], continued: [] });
const vs = empty();
const lv = empty();
let startedLibvirt = false;
const mib = (bytes: number): number => Math.round((bytes / 1048576) * 10) / 10;

/** Boot, settle (3 ticks), save, restore, check the count goes on; the side's own commands in `ops`. */
async function round(side: Side, log: string, file: string, ops: { create(): Promise<unknown>; save(): Promise<{ seconds: number }>; restore(): Promise<{ seconds: number }>; destroy(): Promise<unknown> }): Promise<void> {
  await ops.create();
  const before = await waitTick(log, (t) => t.length >= 4, "tick 3");
  const last = before[before.length - 1] as Tick;
  side.saveS.push((await ops.save()).seconds);
  const seen = ticks(log).length;
  const size = statSync(file).size;
  side.restoreS.push((await ops.restore()).seconds);
  const after = await waitTick(log, (t) => t.length > seen, "tick after the restore");
  const lastBefore = ticks(log).slice(0, seen).pop() as Tick;
  side.continued.push((after[seen] as Tick).n === lastBefore.n + 1);
  const used = (last.totalKiB - last.availableKiB) * 1024;
  side.usedMiB.push(mib(used));
  side.usedWithCacheMiB.push(mib((last.totalKiB - last.freeKiB) * 1024));
  side.fileMiB.push(mib(size));
  side.fileToUsed.push(Math.round((size / used) * 100) / 100);
  await ops.destroy();
  rmSync(file, { force: true });
}

const ratio = (a: Summary, b: Summary): number => Math.round((a.median / b.median) * 100) / 100;

try {
  startedLibvirt = await ensureLibvirt();
  await vmstack("list"); // starts vmstackd
  for (let i = 0; i < runs; i++) {
    const name = `vssave${i}`;
    const file = join(work, `${name}.save`);
    await round(vs, join(work, "s", "log", `${name}.console.log`), file, {
      create: () => vmstack("create", ...vmstackSpec(name)),
      save: () => vmstack("save", name, file),
      restore: () => vmstack("restore", file),
      destroy: () => vmstack("destroy", name),
    });
    if (!haveVirsh) continue;
    const lname = `lvsave${i}`;
    const lfile = join(work, `${lname}.save`);
    const log = join(work, `${lname}.console.log`);
    await round(lv, log, lfile, {
      create: () => virsh("create", libvirtXml(lname, log)),
      save: () => virsh("save", lname, lfile),
      restore: () => virsh("restore", lfile),
      destroy: () => virsh("destroy", lname),
    });
  }
  const s = (side: Side): Record<string, Summary | boolean> => ({
    saveS: summarize(side.saveS),
    restoreS: summarize(side.restoreS),
    fileMiB: summarize(side.fileMiB),
    usedMiB: summarize(side.usedMiB),
    usedWithCacheMiB: summarize(side.usedWithCacheMiB),
    fileToUsed: summarize(side.fileToUsed),
    continuedEveryRun: side.continued.every(Boolean),
  });
  const vsS = s(vs);
  const lvS = haveVirsh ? s(lv) : undefined;
  const med = (x: Record<string, Summary | boolean>, k: string): Summary => x[k] as Summary;
  console.log(
    JSON.stringify(
      {
        bench: "save",
        runs,
        vmstackCli: vmstackCli.length === 1 ? "native front end" : "node",
        guest: { memoryMiB: MEMORY_MIB, machine: "pc", accel: "tcg", cmdline, used: "MemTotal - MemAvailable from the guest's /proc/meminfo at the last tick before the save" },
        host: { cpus: Number(spawnSync("nproc").stdout.toString().trim()), loadavg: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ") },
        vmstack: { ...vsS, compression: process.env["VMSTACK_SAVE_COMPRESSION"] === "none" ? "none" : "zstd -1" },
        libvirt: lvS ?? { measured: false, reason: "virsh is not installed (apt-get install libvirt-daemon-system libvirt-clients)" },
        // vmstack median / libvirt median: below 1 means vmstack is faster (or smaller).
        ratios: lvS ? { saveS: ratio(med(vsS, "saveS"), med(lvS, "saveS")), restoreS: ratio(med(vsS, "restoreS"), med(lvS, "restoreS")), fileMiB: ratio(med(vsS, "fileMiB"), med(lvS, "fileMiB")) } : null,
        targets: {
          saveUnder1_5s: med(vsS, "saveS").median <= 1.5,
          restoreUnder1_5s: med(vsS, "restoreS").median <= 1.5,
          fileWithinUsedPlus10Percent: vs.fileToUsed.every((r) => r <= 1.1),
          noSlowerThanLibvirt: lvS ? med(vsS, "saveS").median <= med(lvS, "saveS").median && med(vsS, "restoreS").median <= med(lvS, "restoreS").median : null,
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
  if (haveVirsh) for (let i = 0; i < runs; i++) spawnSync("virsh", ["-q", "destroy", `lvsave${i}`], { stdio: "ignore" });
  stopLibvirt(startedLibvirt);
  await sleep(300);
  rmSync(work, { recursive: true, force: true });
}

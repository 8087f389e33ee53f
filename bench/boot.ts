/**
 * bench/boot: wall time of `vmstack run -- true` against a naive QEMU boot of the same kernel, in
 * the same invocation, runs interleaved so all contestants see the same machine load:
 *   - vmstack as a user gets it: restored from the boot snapshot (saved by an earlier run);
 *   - vmstack with `--cold-boot`: the kernel boots (the path of runs with disks, shares, --net);
 *   - the naive baseline.
 * Every vmstack run reports (`--json`) whether it was restored, so a figure cannot silently mix
 * restores and cold boots.
 *
 * Naive baseline: qemu-system-x86_64 with its defaults (pc machine, SeaBIOS, TCG, 128 MiB) booting
 * the same kernel's bzImage with a minimal busybox initrd whose init powers off at once, console on
 * the serial port as a user would start it.
 *
 *   node dist/bench/boot.js [--runs N]        prints one JSON object
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeCpio } from "../src/image/cpio.js";
import { resolveKernel, cacheRoot } from "../src/image/index.js";
import { qemuBinary, qemuVersion } from "../src/vmm/index.js";
import { TimeoutError, summarize, timeProcess } from "./stats.js";

const runs = Number(process.argv[process.argv.indexOf("--runs") + 1] || 7);
const bin = fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url));
const kernel = await resolveKernel({ env: process.env });
if (!kernel.bzImagePath) throw new Error("the naive baseline needs the kernel's bzImage (vmstack kernel fetch)");

const work = mkdtempSync(join(tmpdir(), "vmstack-bench-boot-"));
try {
  const naiveInitrd = join(work, "naive.cpio");
  writeFileSync(
    naiveInitrd,
    writeCpio([
      { type: "file", path: "bin/busybox", mode: 0o755, data: readFileSync("/bin/busybox") },
      { type: "file", path: "init", mode: 0o755, data: Buffer.from("#!/bin/busybox sh\n/bin/busybox poweroff -f\n") },
      { type: "dir", path: "dev" },
      { type: "dir", path: "proc" },
    ]),
  );
  const naive = [qemuBinary(), "-nographic", "-kernel", kernel.bzImagePath, "-initrd", naiveInitrd, "-append", "console=ttyS0"];
  const vmstack = [process.execPath, bin, "run", "--json", "--", "true"];
  const vmstackCold = [process.execPath, bin, "run", "--json", "--cold-boot", "--", "true"];
  const snapshotMode = (stderr: string): string => {
    const line = stderr.trim().split("\n").at(-1) ?? "";
    return (JSON.parse(line) as { snapshot?: { mode?: string } }).snapshot?.mode ?? "unknown";
  };

  // Cold: an empty cache except for the kernel (fetching it is setup, not a run): the first run
  // builds the initrd and probes the accelerator.
  const coldCache = join(work, "cache");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(coldCache);
  symlinkSync(join(cacheRoot(process.env), "kernels"), join(coldCache, "kernels"));
  const cold = await timeProcess([process.execPath, bin, "--verbose", "run", "--", "true"], { ...process.env, VMSTACK_CACHE: coldCache });
  const coldBuilt = /initrd built/.test(cold.stderr);
  const coldSave = /saved boot snapshot \S+ \(([\d.]+) MB\) in (\d+) ms/.exec(cold.stderr);

  // Warm up the default cache, then alternate the two contestants.
  const warm = await timeProcess([process.execPath, bin, "--verbose", "run", "--", "true"]);
  const warmHit = /initrd cached/.test(warm.stderr);
  const accel = /accelerator (\w+)/.exec(warm.stderr)?.[1] ?? "unknown";
  const naiveTimes: number[] = [];
  const vmstackTimes: number[] = [];
  const coldTimes: number[] = [];
  const modes = new Map<string, number>();
  const count = (m: string): void => void modes.set(m, (modes.get(m) ?? 0) + 1);
  // A TCG boot under load occasionally stalls in the kernel's initcalls and never recovers
  // (guest-vm.ts retries vmstack's own); the naive baseline has no such retry, so a naive boot
  // that outlives a generous deadline is counted as a stall and run again.
  let naiveStalls = 0;
  const naiveRun = async (): Promise<number> => {
    for (;;) {
      try {
        return (await timeProcess(naive, process.env, 60_000)).seconds;
      } catch (e) {
        if (!(e instanceof TimeoutError) || ++naiveStalls > 3) throw e;
      }
    }
  };
  for (let i = 0; i < runs; i++) {
    naiveTimes.push(await naiveRun());
    const restored = await timeProcess(vmstack);
    count(snapshotMode(restored.stderr));
    vmstackTimes.push(restored.seconds);
    const coldRun = await timeProcess(vmstackCold);
    if (snapshotMode(coldRun.stderr) !== "cold") throw new Error("a --cold-boot run did not boot cold");
    coldTimes.push(coldRun.seconds);
  }
  const n = summarize(naiveTimes);
  const v = summarize(vmstackTimes);
  const c = summarize(coldTimes);
  const ratio = (x: number): number => Math.round((x / n.median) * 1000) / 1000;
  console.log(
    JSON.stringify(
      {
        bench: "boot",
        qemu: await qemuVersion(),
        kernel: kernel.release,
        accelerator: accel,
        runs,
        vmstack_run_true_s: v,
        vmstack_run_true_snapshot_modes: Object.fromEntries(modes),
        vmstack_cold_boot_run_true_s: c,
        naive_qemu_boot_s: n,
        ratio_median: ratio(v.median),
        ratio_cold_boot_median: ratio(c.median),
        cold_first_run_s: Math.round(cold.seconds * 1000) / 1000,
        cold_first_run_snapshot_save: coldSave ? { mb: Number(coldSave[1]), ms: Number(coldSave[2]) } : null,
        cold_built_initrd: coldBuilt,
        warm_run_cache_hit: warmHit,
        naive_command: naive.join(" "),
        naive_stalls_rerun: naiveStalls,
      },
      null,
      2,
    ),
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}

/**
 * bench/files: throughput of moving files through `vmstack run`, one VM per run doing everything:
 *   --in   host tar → agent channel → guest tar -x (into guest RAM)
 *   --out  guest tar -c → agent channel → host tar -x (staged, then renamed)
 *   --share (virtiofs) guest reads a host file, guest writes a file (fsync'd)
 *   --scratch  guest writes to an ext4 scratch disk (fsync'd)
 * Guest-side times come from /proc/uptime around each step (10 ms resolution: use ≥ 32 MiB).
 * Baseline in the same invocation: the host reading the same file (page cache) and copying it.
 *
 * With --c-build: one small C build with the host's gcc and in `vmstack run --image` of a Debian
 * image with gcc (built once if the cache lacks it), wall time of each and the ratio.
 *
 *   node dist/bench/files.js [--mib N] [--runs N] [--c-build]      prints one JSON object
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const mib = arg("--mib", 32);
const runs = arg("--runs", 1);
const bin = fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "vmstack-bench-files-"));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const mbps = (bytes: number, ms: number): number => Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;

try {
  const inDir = join(work, "in");
  const share = join(work, "share");
  mkdirSync(inDir);
  mkdirSync(share);
  // Incompressible data so that no layer gets a free ride.
  const chunk = randomBytes(1024 * 1024);
  const data = Buffer.concat(Array.from({ length: mib }, () => chunk));
  writeFileSync(join(inDir, "big"), data);
  writeFileSync(join(share, "big"), data);
  const bytes = data.length;

  // Host baseline: read from page cache and copy, same file.
  const h0 = performance.now();
  readFileSync(join(inDir, "big"));
  const hostReadMs = performance.now() - h0;
  const h1 = performance.now();
  copyFileSync(join(inDir, "big"), join(work, "copy"));
  const hostCopyMs = performance.now() - h1;

  const script = [
    "t() { cut -d' ' -f1 /proc/uptime; }",
    "a=$(t); cat /share/big > /dev/null; b=$(t); echo share-read $a $b",
    `a=$(t); dd if=/in/big of=/share/w bs=1M conv=fsync 2>/dev/null; b=$(t); echo share-write $a $b`,
    `a=$(t); dd if=/in/big of=/scratch/w bs=1M conv=fsync 2>/dev/null; b=$(t); echo scratch-write $a $b`,
    "cp /in/big /out/big",
  ].join("\n");
  const samples: Record<string, number[]> = { in: [], out: [], "share-read": [], "share-write": [], "scratch-write": [] };
  let shareMode = "";
  for (let i = 0; i < runs; i++) {
    const out = join(work, `out${i}`);
    const r = spawnSync(
      process.execPath,
      [bin, "run", "--json", "--mem", "512", "--in", inDir, "--out", out, "--share", `${share}:/share`, "--scratch", `${mib * 2 + 64}M`, "-c", script],
      { encoding: "utf8" },
    );
    if (r.status !== 0) throw new Error(`vmstack run failed (${r.status}): ${r.stderr}`);
    const result = JSON.parse(r.stderr.trim().split("\n").pop() ?? "{}") as {
      files: { shareMode?: { mode: string }; copiedIn: { bytes: number; ms: number }[]; copiedOut: { bytes: number; ms: number }[] };
    };
    shareMode = result.files.shareMode?.mode ?? "";
    const cin = result.files.copiedIn[0];
    const cout = result.files.copiedOut[0];
    if (cin) samples["in"]!.push(mbps(cin.bytes, cin.ms));
    if (cout) samples["out"]!.push(mbps(cout.bytes, cout.ms));
    for (const line of r.stdout.split("\n")) {
      const [name, a, b] = line.split(" ");
      if (name && samples[name] && a && b) samples[name].push(mbps(bytes, Math.max(10, (Number(b) - Number(a)) * 1000)));
    }
    rmSync(out, { recursive: true, force: true });
  }
  // The same small C build on the host and in a Debian guest (warm image cache): wall time of the
  // whole `vmstack run --image` (boot included) against the host's gcc.
  let cBuild: Record<string, number> | undefined;
  if (process.argv.includes("--c-build")) {
    const src = join(work, "csrc");
    mkdirSync(src);
    writeFileSync(join(src, "hello.c"), '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n');
    const img = spawnSync(process.execPath, [bin, "image", "debian", "-p", "gcc,libc6-dev,make"], { encoding: "utf8" });
    if (img.status !== 0) throw new Error(`vmstack image debian failed: ${img.stderr}`);
    const t0 = performance.now();
    const host = spawnSync("gcc", ["-O2", "-o", join(work, "hello-host"), join(src, "hello.c")]);
    const hostMs = performance.now() - t0;
    if (host.status !== 0) throw new Error("host gcc failed");
    const t1 = performance.now();
    const guest = spawnSync(process.execPath, [bin, "run", "--mem", "512", "--image", img.stdout.trim(), "--in", src, "--out", join(work, "cout"), "-c", "a=$(cut -d' ' -f1 /proc/uptime); gcc -O2 -o /out/hello /in/hello.c; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"], { encoding: "utf8" });
    const guestMs = performance.now() - t1;
    if (guest.status !== 0) throw new Error(`guest gcc failed: ${String(guest.stderr)}`);
    const [a, b] = guest.stdout.trim().split(" ").map(Number);
    const gccInGuestMs = a !== undefined && b !== undefined ? Math.round((b - a) * 1000) : NaN;
    cBuild = {
      hostMs: Math.round(hostMs),
      guestRunMs: Math.round(guestMs),
      gccInGuestMs,
      ratioWholeRun: Math.round((guestMs / hostMs) * 10) / 10,
      ratioGccOnly: Math.round((gccInGuestMs / hostMs) * 10) / 10,
    };
  }
  const loadavg = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  const result = {
    bench: "files",
    mib,
    runs,
    shareMode,
    loadavg,
    mbPerS: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, { median: median(v), samples: v }])),
    baseline: { hostReadMbPerS: mbps(bytes, hostReadMs), hostCopyMbPerS: mbps(bytes, hostCopyMs) },
    ...(cBuild ? { cBuild } : {}),
    ratioInToHostCopy: Math.round((median(samples["in"]!) / mbps(bytes, hostCopyMs)) * 1000) / 1000,
  };
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
} finally {
  rmSync(work, { recursive: true, force: true });
}

/**
 * bench/build: what building in a throwaway VM costs, against the host in the same invocation.
 *
 *   1. the Debian build image (bookworm + gcc, libc6-dev, make): cold in an empty temporary cache
 *      (bootstrap and downloads included), then warm (the same request again: a cache hit), and
 *      "tree warm" (another image from the cached bootstrap: unpack + mkfs only);
 *   2. the same small C build (a few files, make -j2) with the host's gcc and inside
 *      `vmstack run --image` of that image (warm cache): wall time of the whole run, the time make
 *      itself took in the guest (/proc/uptime around it), and both ratios to the host;
 *   3. `--share` (virtiofs) read and write, and `--out`, in MB/s, in one run of vmstack's guest.
 *
 *   node dist/bench/build.js [--runs N] [--mib N] [--no-cold]      prints one JSON object
 *
 * --no-cold skips step 1's cold build (it needs the network and a minute). Needs root for the
 * Debian bootstrap and virtiofs, as vmstack does.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { summarize } from "./stats.js";

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const runs = arg("--runs", 3);
const mib = arg("--mib", 32);
const cold = !process.argv.includes("--no-cold");
const bin = fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "vmstack-bench-build-"));
const PACKAGES = "gcc,libc6-dev,make";
const mbps = (bytes: number, ms: number): number => Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;
const seconds = (ms: number): number => Math.round(ms) / 1000;

/** Runs vmstack; returns stdout, stderr and wall time; throws on failure. */
function vmstack(args: readonly string[], env: NodeJS.ProcessEnv = process.env): { stdout: string; stderr: string; ms: number } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", env, maxBuffer: 64 * 1024 * 1024 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`vmstack ${args.join(" ")} failed (${r.status}): ${r.stderr.slice(-800)}`);
  return { stdout: r.stdout, stderr: r.stderr, ms };
}

/** A small C program in several files: enough for make to have work, small enough for TCG. */
function writeProject(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const units = ["parse", "hash", "sort", "print"];
  for (const [i, u] of units.entries()) {
    writeFileSync(
      join(dir, `${u}.c`),
      `#include <stdint.h>\n#include <string.h>\nuint64_t ${u}_step(const char *s) {\n  uint64_t h = ${1469598103934665603n + BigInt(i)}ull;\n  for (size_t k = 0; k < strlen(s); k++) { h ^= (unsigned char)s[k]; h *= 1099511628211ull; }\n  return h;\n}\n`,
    );
  }
  writeFileSync(
    join(dir, "main.c"),
    `#include <stdio.h>\n#include <stdint.h>\n${units.map((u) => `uint64_t ${u}_step(const char *s);`).join("\n")}\nint main(int argc, char **argv) {\n  const char *s = argc > 1 ? argv[1] : "vmstack";\n  printf("%llx\\n", (unsigned long long)(${units.map((u) => `${u}_step(s)`).join(" ^ ")}));\n  return 0;\n}\n`,
  );
  writeFileSync(join(dir, "Makefile"), `CFLAGS = -O2 -Wall\nOBJS = main.o ${units.map((u) => `${u}.o`).join(" ")}\napp: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\nclean:\n\trm -f app $(OBJS)\n`);
}

try {
  const result: Record<string, unknown> = { bench: "build", runs, mib, loadavgBefore: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ") };

  // 1. The Debian image: cold (empty cache), warm (cache hit), tree warm (new image, cached bootstrap).
  if (cold) {
    const env = { ...process.env, VMSTACK_CACHE: join(work, "cache") };
    const c = vmstack(["image", "debian", "-p", PACKAGES, "--json"], env);
    const w = vmstack(["image", "debian", "-p", PACKAGES, "--json"], env);
    const t = vmstack(["image", "debian", "-p", PACKAGES, "-L", "bench-other", "--json"], env);
    const cached = (s: string): boolean => (JSON.parse(s) as { cached: boolean }).cached;
    if (cached(c.stdout) || !cached(w.stdout)) throw new Error("the cold build was a cache hit or the warm one was not");
    result["debianImage"] = { coldSeconds: seconds(c.ms), warmSeconds: seconds(w.ms), treeWarmSeconds: seconds(t.ms), coldToWarm: Math.round(c.ms / w.ms) };
    rmSync(join(work, "cache"), { recursive: true, force: true });
  }
  const image = vmstack(["image", "debian", "-p", PACKAGES]).stdout.trim(); // the user's cache: warm after the first time

  // 2. The same C build on the host and in the guest.
  const src = join(work, "src");
  writeProject(src);
  const host: number[] = [];
  const guestRun: number[] = [];
  const guestMake: number[] = [];
  for (let i = 0; i < runs; i++) {
    spawnSync("make", ["-s", "-C", src, "clean"]);
    const t0 = performance.now();
    const h = spawnSync("make", ["-s", "-j2", "-C", src]);
    host.push(performance.now() - t0);
    if (h.status !== 0) throw new Error(`host make failed: ${String(h.stderr)}`);
    spawnSync("make", ["-s", "-C", src, "clean"]);
    const out = join(work, `out${i}`);
    const script = "a=$(cut -d' ' -f1 /proc/uptime); make -s -j2 -C /in && cp /in/app /out/; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b";
    const g = vmstack(["run", "--mem", "512", "--cpus", "2", "--image", image, "--in", src, "--out", out, "-c", script]);
    guestRun.push(g.ms);
    const [a, b] = g.stdout.trim().split(" ").map(Number);
    if (a !== undefined && b !== undefined) guestMake.push((b - a) * 1000);
    if (spawnSync(join(out, "app")).status !== 0) throw new Error("the binary built in the guest does not run on the host");
  }
  const hs = summarize(host);
  const rs = summarize(guestRun);
  const ms = summarize(guestMake);
  result["cBuild"] = {
    hostMs: hs,
    guestWholeRunMs: rs,
    guestMakeMs: ms,
    ratioWholeRun: Math.round((rs.median / hs.median) * 10) / 10,
    ratioMakeOnly: Math.round((ms.median / hs.median) * 10) / 10,
  };

  // 3. --share read/write and --out in one run of vmstack's own guest (guest-side timing).
  const share = join(work, "share");
  mkdirSync(share);
  const chunk = randomBytes(1024 * 1024);
  writeFileSync(join(share, "big"), Buffer.concat(Array.from({ length: mib }, () => chunk)));
  const bytes = mib * 1024 * 1024;
  const samples: Record<string, number[]> = { "share-read": [], "share-write": [], out: [] };
  let shareMode = "";
  for (let i = 0; i < runs; i++) {
    const out = join(work, `files${i}`);
    const script = [
      "t() { cut -d' ' -f1 /proc/uptime; }",
      "a=$(t); cat /share/big > /dev/null; b=$(t); echo share-read $a $b",
      "a=$(t); dd if=/share/big of=/share/w bs=1M conv=fsync 2>/dev/null; b=$(t); echo share-write $a $b",
      "cp /share/big /out/big",
    ].join("\n");
    const r = vmstack(["run", "--json", "--mem", "512", "--share", `${share}:/share`, "--out", out, "-c", script]);
    const files = (JSON.parse(r.stderr.trim().split("\n").pop() ?? "{}") as { files?: { shareMode?: { mode: string }; copiedOut: { bytes: number; ms: number }[] } }).files;
    shareMode = files?.shareMode?.mode ?? "";
    const o = files?.copiedOut[0];
    if (o) samples["out"]!.push(mbps(o.bytes, o.ms));
    for (const line of r.stdout.split("\n")) {
      const [name, a, b] = line.split(" ");
      if (name && samples[name] && a && b) samples[name].push(mbps(bytes, Math.max(10, (Number(b) - Number(a)) * 1000)));
    }
    rmSync(out, { recursive: true, force: true });
    rmSync(join(share, "w"), { force: true });
  }
  result["filesMbPerS"] = { shareMode, ...Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summarize(v)])) };
  result["loadavgAfter"] = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
} finally {
  rmSync(work, { recursive: true, force: true });
}

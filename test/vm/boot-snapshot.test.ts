/**
 * `vmstack run` from a boot snapshot, end to end with the real CLI, QEMU and guest kernel: the first
 * run saves the freshly booted guest, later runs restore it and still get their own randomness and
 * the current time; a corrupt snapshot falls back to a cold boot; shares and disks never use one.
 *
 * A private cache (the provisioned kernel linked in) makes "the first run" really the first.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { cli, vmUnavailable } from "../support/cli.js";
import { cacheRoot } from "../../src/image/index.js";

let skip: string | undefined;
const work = mkdtempSync(join(tmpdir(), "vmstack-boot-snapshot-"));
const cache = join(work, "cache");
const env = { VMSTACK_CACHE: cache, VMSTACK_COLD_BOOT: "" };

before(async () => {
  skip = await vmUnavailable();
  if (skip) return console.log(`# skipping real-VM tests: ${skip}`);
  mkdirSync(cache);
  const shared = cacheRoot(process.env);
  symlinkSync(join(shared, "kernels"), join(cache, "kernels"));
  // The accelerator verdict is not what this file tests: reuse it rather than probe again.
  if (existsSync(join(shared, "accel-probe.json"))) copyFileSync(join(shared, "accel-probe.json"), join(cache, "accel-probe.json"));
});
after(() => rmSync(work, { recursive: true, force: true }));

const snapshots = (): string[] => (existsSync(join(cache, "boot-snapshots")) ? readdirSync(join(cache, "boot-snapshots")).filter((n) => /^[0-9a-f]{64}$/.test(n)) : []);

// Random bytes, the guest's wall clock, stdin, stdout and stderr apart, and a status of its own.
const PROBE = "tr a-z A-Z; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; echo to-stderr >&2; exit 3";

async function probe(): Promise<{ upper: string; random: string; skewS: number; stderr: string; code: number | null }> {
  const r = await cli(["--verbose", "run", "-c", PROBE], { env, stdin: "hello\n" });
  const [upper = "", random = "", seconds = ""] = r.stdout.split("\n");
  return { upper, random, skewS: Math.abs(Number(seconds) - Date.now() / 1000), stderr: r.stderr, code: r.code };
}

test("the first run boots cold and saves a boot snapshot; later runs restore it, each fresh", { timeout: 240_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const first = await cli(["--verbose", "run", "--", "echo", "first"], { env });
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout, "first\n");
  assert.match(first.stderr, /cold boot: no boot snapshot yet.*; saved boot snapshot [0-9a-f]{12} \([\d.]+ MB\) in \d+ ms/);
  assert.equal(snapshots().length, 1);
  const info = await cli(["info", "--json"], { env });
  const listed = (JSON.parse(info.stdout) as { bootSnapshots: { count: number; entries: { key: string; bytes: number }[] } }).bootSnapshots;
  assert.equal(listed.count, 1);
  assert.equal(listed.entries[0]?.key, snapshots()[0]);

  const a = await probe();
  const b = await probe();
  for (const r of [a, b]) {
    assert.match(r.stderr, /restored from boot snapshot [0-9a-f]{12}/);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.upper, "HELLO");
    assert.match(r.stderr, /^to-stderr$/m);
    assert.match(r.random, /^[0-9a-f]{32}$/);
    // The host sends its wall-clock time with REFRESH: the guest is not stuck at the save.
    assert.ok(r.skewS < 10, `guest clock off by ${r.skewS} s`);
  }
  // Both restored the very same state; REFRESH reseeded each guest's CRNG on its own.
  assert.notEqual(a.random, b.random);
});

test("a corrupt boot snapshot is deleted and the run boots cold, saving a good one", { timeout: 180_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const [key] = snapshots();
  assert.ok(key, "the first test saved a boot snapshot to corrupt");
  const state = join(cache, "boot-snapshots", key, "state");
  // Same size, one page of bytes changed: QEMU's loader rejects a broken stream, and the sha256
  // recorded at save time catches what QEMU would load without noticing (RAM contents).
  const bytes = readFileSync(state);
  bytes.fill(0x5a, bytes.length >> 1, (bytes.length >> 1) + 4096);
  writeFileSync(state, bytes);
  const r = await cli(["--verbose", "run", "--", "sh", "-c", "echo ok; exit 7"], { env });
  assert.equal(r.code, 7, r.stderr);
  assert.equal(r.stdout, "ok\n");
  assert.match(r.stderr, /the boot snapshot could not be used \(.*(sha256|QEMU exited|load of migration failed).*\); it was deleted/);
  assert.match(r.stderr, /saved boot snapshot/);
  // Contents that no longer match the recorded sha256 (what a flipped bit in a RAM page would be):
  // the restored VM is stopped before it ever runs.
  const meta = join(cache, "boot-snapshots", key, "meta.json");
  writeFileSync(meta, readFileSync(meta, "utf8").replace(/"sha256": "[0-9a-f]{64}"/, `"sha256": "${"0".repeat(64)}"`));
  const again = await cli(["--verbose", "run", "--", "echo", "again"], { env });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout, "again\n");
  assert.match(again.stderr, /the boot snapshot could not be used \(.*sha256.*\); it was deleted; saved boot snapshot/);
});

test("runs with a read-only share and a scratch disk boot cold and save nothing", { timeout: 180_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const data = join(work, "data");
  mkdirSync(data);
  writeFileSync(join(data, "f"), "shared\n");
  const before = snapshots();
  const r = await cli(["--verbose", "run", "--share", `${data}:/data:ro`, "--scratch", "8M", "--", "cat", "/data/f"], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "shared\n");
  assert.match(r.stderr, /cold boot: .*(virtiofs|disks)/);
  assert.doesNotMatch(r.stderr, /restored from boot snapshot|saved boot snapshot/);
  assert.deepEqual(snapshots(), before);
});

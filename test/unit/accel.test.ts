import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chooseAccel } from "../../src/vmm/accel.js";

const root = mkdtempSync(join(tmpdir(), "vmstack-accel-"));
after(() => rmSync(root, { recursive: true, force: true }));
const tmp = (): string => join(mkdtempSync(join(root, "t-")), "probe.json");

test("without /dev/kvm TCG is chosen and nothing is probed", async () => {
  let probed = false;
  const d = await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: tmp(), kvmDevice: () => false, probeBoot: async () => (probed = true) });
  assert.equal(d.accel, "tcg");
  assert.equal(probed, false);
});

test("a KVM probe that answers selects KVM and the verdict is cached", async () => {
  const file = tmp();
  let probes = 0;
  const probeBoot = async (): Promise<boolean> => (probes++, true);
  const first = await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: file, kvmDevice: () => true, probeBoot });
  const second = await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: file, kvmDevice: () => true, probeBoot });
  assert.deepEqual([first.accel, first.probed, second.accel, second.cached, probes], ["kvm", true, "kvm", true, 1]);
});

test("a probe that never answers falls back to TCG within its deadline", async () => {
  const started = Date.now();
  const d = await chooseAccel({
    choice: "auto",
    bootIdentity: "k",
    cacheFile: tmp(),
    kvmDevice: () => true,
    deadlineMs: 100,
    probeBoot: (signal) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("killed")))),
  });
  assert.equal(d.accel, "tcg");
  assert.match(d.reason, /within 100 ms/);
  assert.ok(Date.now() - started < 5000);
});

test("a different guest kernel is probed again", async () => {
  const file = tmp();
  let probes = 0;
  const probeBoot = async (): Promise<boolean> => (probes++, false);
  await chooseAccel({ choice: "auto", bootIdentity: "k1", cacheFile: file, kvmDevice: () => true, probeBoot });
  await chooseAccel({ choice: "auto", bootIdentity: "k2", cacheFile: file, kvmDevice: () => true, probeBoot });
  assert.equal(probes, 2);
});

test("a damaged probe cache is ignored, not fatal", async () => {
  const file = tmp();
  writeFileSync(file, "{not json");
  const d = await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: file, kvmDevice: () => true, probeBoot: async () => false });
  assert.equal(d.accel, "tcg");
  assert.doesNotThrow(() => JSON.parse(readFileSync(file, "utf8")));
});

test("--accel kvm without a usable /dev/kvm is a clear error", async () => {
  await assert.rejects(
    chooseAccel({ choice: "kvm", bootIdentity: "k", cacheFile: tmp(), kvmDevice: () => false, probeBoot: async () => true }),
    /\/dev\/kvm cannot be opened/,
  );
});

test("the caller is told before a probe boot, with its deadline, and not when the verdict needs no probe", async () => {
  const told: number[] = [];
  const onProbe = (ms: number): void => void told.push(ms);
  const file = tmp();
  const probeBoot = async (): Promise<boolean> => (assert.deepEqual(told, [250], "told before the probe boot starts"), true);
  await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: file, kvmDevice: () => true, deadlineMs: 250, probeBoot, onProbe });
  await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: file, kvmDevice: () => true, deadlineMs: 250, probeBoot, onProbe });
  await chooseAccel({ choice: "auto", bootIdentity: "k", cacheFile: tmp(), kvmDevice: () => false, probeBoot, onProbe });
  await chooseAccel({ choice: "tcg", bootIdentity: "k", cacheFile: tmp(), kvmDevice: () => true, probeBoot, onProbe });
  assert.deepEqual(told, [250], "cached, no /dev/kvm and --accel tcg probe nothing and say nothing");
});

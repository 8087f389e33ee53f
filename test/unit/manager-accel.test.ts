import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { daemonAccel } from "../../src/vmm/manager-accel.js";
import { cacheRoot } from "../../src/image/index.js";

void test("VMSTACK_ACCEL decides without a probe, and says so in the daemon log", async () => {
  const lines: string[] = [];
  assert.equal(await daemonAccel({ VMSTACK_ACCEL: "kvm" }, (m) => lines.push(m)), "kvm");
  assert.equal(await daemonAccel({ VMSTACK_ACCEL: "tcg" }, (m) => lines.push(m)), "tcg");
  assert.equal(await daemonAccel({}, (m) => lines.push(m), { kvmUsable: () => false }), "tcg");
  assert.deepEqual(lines, ["accelerator kvm (VMSTACK_ACCEL)", "accelerator tcg (VMSTACK_ACCEL)", "accelerator tcg (/dev/kvm cannot be opened)"]);
});

void test("domains get TCG when the KVM probe boot fails, with QEMU's reason in the log", async (t) => {
  const kernels = join(cacheRoot(process.env), "kernels");
  if (!existsSync(kernels)) return t.skip("no guest kernel in the cache; ./setup fetches it");
  const dir = mkdtempSync(join(tmpdir(), "vmstack-accel-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A fresh cache (no cached verdict) sharing the real kernels; a QEMU that fails as KVM does on
  // hosts where KVM is present but unusable.
  const cache = join(dir, "cache");
  mkdirSync(cache);
  symlinkSync(kernels, join(cache, "kernels"));
  const qemu = join(dir, "qemu");
  writeFileSync(qemu, "#!/bin/sh\necho 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2\nexit 1\n");
  chmodSync(qemu, 0o755);
  const lines: string[] = [];
  // As if /dev/kvm opened (it does on this kind of host): the probe boot is what decides.
  const accel = await daemonAccel({ ...process.env, VMSTACK_CACHE: cache, VMSTACK_QEMU: qemu, VMSTACK_ACCEL: "" }, (m) => lines.push(m), { kvmUsable: () => true });
  assert.equal(accel, "tcg");
  assert.equal(lines.length, 1);
  assert.match(lines[0] ?? "", /^accelerator tcg \(.*failed to set MSR 0x10a/);
});

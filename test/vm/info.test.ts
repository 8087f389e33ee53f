import { test } from "node:test";
import assert from "node:assert/strict";
import { cli, vmUnavailable } from "../support/cli.js";

test("vmstack info --json names the guest kernel, the QEMU version and the accelerator with its reason", async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const r = await cli(["info", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { qemu: { version: string }; kernel: { release: string }; accelerator: { accel: string; reason: string } };
  assert.match(info.qemu.version, /^\d+\.\d+\.\d+$/);
  assert.match(info.kernel.release, /^\d+\.\d+\.\d+-/);
  assert.ok(["kvm", "tcg"].includes(info.accelerator.accel));
  assert.ok(info.accelerator.reason.length > 0);
});

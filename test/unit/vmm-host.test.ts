import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { qemuIdentity } from "../../src/vmm/host.js";
import { isVmstackError } from "../../src/lib/errors.js";

void test("the QEMU identity is found through PATH and changes when the binary is replaced", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-host-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, "fake-qemu");
  writeFileSync(bin, "#!/bin/sh\necho 7.2\n");
  chmodSync(bin, 0o755);
  const first = qemuIdentity("fake-qemu", `/nonexistent:${dir}`);
  assert.ok(first.startsWith(`${bin}|`), first);
  assert.equal(qemuIdentity(bin), first, "an absolute path gives the same identity");
  rmSync(bin);
  writeFileSync(bin, "#!/bin/sh\necho 8.0.0 upgraded\n");
  assert.notEqual(qemuIdentity(bin), first, "an upgrade (a new file) is a new identity");
});

void test("a QEMU binary that is not there is a clear QEMU_MISSING error", () => {
  assert.throws(() => qemuIdentity("no-such-qemu-binary", "/nonexistent"), (e: unknown) => isVmstackError(e, "QEMU_MISSING") && /no-such-qemu-binary/.test(e.message));
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli } from "../support/in-process-cli.js";

/** Points the cache at an empty directory for the duration of a test (this file's process only). */
function emptyCache(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-kernel-cli-"));
  const saved = { cache: process.env["VMSTACK_CACHE"], kernel: process.env["VMSTACK_KERNEL"] };
  process.env["VMSTACK_CACHE"] = dir;
  delete process.env["VMSTACK_KERNEL"];
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    if (saved.cache === undefined) delete process.env["VMSTACK_CACHE"];
    else process.env["VMSTACK_CACHE"] = saved.cache;
    if (saved.kernel !== undefined) process.env["VMSTACK_KERNEL"] = saved.kernel;
  });
  return dir;
}

void test("vmstack kernel without a subcommand is a usage error", async () => {
  const r = await cli("kernel");
  assert.equal(r.code, 2);
  assert.match(r.err, /expected 'fetch' or 'show'/);
});

void test("vmstack kernel with an unknown subcommand is a usage error naming it", async () => {
  const r = await cli("kernel", "frob");
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown subcommand 'frob'/);
});

void test("vmstack kernel show with no kernel anywhere tells the user to run vmstack kernel fetch", async (t) => {
  emptyCache(t);
  const r = await cli("kernel", "show");
  assert.equal(r.code, 1);
  assert.match(r.err, /vmstack kernel fetch/);
});

void test("vmstack kernel show --kernel with a missing path names the path", async (t) => {
  const dir = emptyCache(t);
  const r = await cli("kernel", "show", "--kernel", join(dir, "nope"));
  assert.equal(r.code, 1);
  assert.ok(r.err.includes(join(dir, "nope")), r.err);
});

void test("vmstack kernel --help describes fetch and show", async () => {
  const r = await cli("kernel", "--help");
  assert.equal(r.code, 0);
  assert.match(r.out, /fetch/);
  assert.match(r.out, /show/);
});

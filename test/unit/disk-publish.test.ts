/** Publishing `--out` trees: staging next to the target, one rename, an old tree replaced whole. */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { publishDir, stagingDirFor } from "../../src/vmm/transfer.js";

const work = mkdtempSync(join(tmpdir(), "vmstack-publish-test-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("a staging directory is a hidden sibling of the target, so the final rename stays on one file system", async () => {
  const staging = await stagingDirFor(join(work, "out"));
  assert.equal(dirname(staging), work);
  assert.match(staging, /\/\.out\.vmstack-tmp-/);
  rmSync(staging, { recursive: true });
});

test("publishDir puts a new tree in place and replaces an existing one as a whole", async () => {
  const target = join(work, "result");
  const first = await stagingDirFor(target);
  writeFileSync(join(first, "a.txt"), "first\n");
  await publishDir(first, target);
  assert.deepEqual(readdirSync(target), ["a.txt"]);
  mkdirSync(join(target, "old-only"));
  const second = await stagingDirFor(target);
  writeFileSync(join(second, "b.txt"), "second\n");
  await publishDir(second, target);
  assert.deepEqual(readdirSync(target), ["b.txt"]);
  assert.equal(readFileSync(join(target, "b.txt"), "utf8"), "second\n");
  assert.deepEqual(readdirSync(work).filter((n) => n.includes("vmstack-tmp")), []);
});

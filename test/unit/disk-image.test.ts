/**
 * Disk images with the real tools (mkfs.ext4 -d, qemu-img, debugfs), no root and no mounts; each
 * test takes well under a second. Skips when e2fsprogs or qemu-utils are missing.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContentStore } from "../../src/image/cache.js";
import { cachedDisk } from "../../src/image/disk-build.js";
import { createDisk, createOverlay, readFileFromExtImage } from "../../src/image/disk.js";
import { hashTree } from "../../src/image/disk-tree.js";

const work = mkdtempSync(join(tmpdir(), "vmstack-disk-test-"));
after(() => rmSync(work, { recursive: true, force: true }));

function missingTools(): string | undefined {
  for (const tool of ["mkfs.ext4", "qemu-img", "debugfs"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `${tool} is not installed (e2fsprogs, qemu-utils)`;
    }
  }
  return undefined;
}
const skip = missingTools();

function tree(name: string, files: Record<string, string>): string {
  const d = join(work, name);
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(join(d, f, ".."), { recursive: true });
    writeFileSync(join(d, f), text);
  }
  return d;
}

test("an ext4 image populated from a directory holds its files and label, and stays sparse", async (t) => {
  if (skip) return t.skip(skip);
  const src = tree("src1", { "etc/motd": "hi\n", "bin/tool": "#!/bin/sh\n" });
  const img = join(work, "a.img");
  await createDisk(img, { format: "raw", sizeBytes: 64 * 1024 * 1024, fs: { type: "ext4", label: "mydata", from: src } });
  assert.equal((await readFileFromExtImage(img, "/etc/motd")).toString(), "hi\n");
  assert.match(execFileSync("dumpe2fs", ["-h", img], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }), /Filesystem volume name:\s+mydata/);
  const st = statSync(img);
  assert.equal(st.size, 64 * 1024 * 1024);
  assert.ok(st.blocks * 512 < st.size / 2, "the image should be sparse");
});

test("ext3 in qcow2, and an overlay whose writes leave the base untouched", async (t) => {
  if (skip) return t.skip(skip);
  const base = join(work, "b.qcow2");
  await createDisk(base, { format: "qcow2", sizeBytes: 32 * 1024 * 1024, fs: { type: "ext3", label: "old" } });
  const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", base], { encoding: "utf8" })) as { format: string; "virtual-size": number };
  assert.equal(info.format, "qcow2");
  assert.equal(info["virtual-size"], 32 * 1024 * 1024);
  const ov = join(work, "ov.qcow2");
  await createOverlay(base, "qcow2", ov);
  const ovInfo = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", ov], { encoding: "utf8" })) as { "backing-filename": string };
  assert.equal(ovInfo["backing-filename"], base);
  const before = execFileSync("sha256sum", [base], { encoding: "utf8" });
  execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0x55 0 64k", ov], { stdio: "ignore" });
  assert.equal(execFileSync("sha256sum", [base], { encoding: "utf8" }), before);
});

test("images are cached by content: the same tree elsewhere is a hit, a changed file is a rebuild", async (t) => {
  if (skip) return t.skip(skip);
  const store = new ContentStore(join(work, "cache"));
  const a = tree("ta", { "x.txt": "same\n" });
  const b = tree("tb", { "x.txt": "same\n" });
  const spec = (from: string) => ({ format: "raw" as const, sizeBytes: 16 * 1024 * 1024, fs: { type: "ext4" as const, from } });
  const first = await cachedDisk(store, spec(a));
  const second = await cachedDisk(store, spec(b));
  assert.equal(first.cached, false);
  assert.equal(second.cached, true);
  assert.equal(second.path, first.path);
  writeFileSync(join(b, "x.txt"), "changed\n");
  const third = await cachedDisk(store, spec(b));
  assert.equal(third.cached, false);
  assert.notEqual(third.key, first.key);
  assert.notEqual(await hashTree(a), await hashTree(b));
});

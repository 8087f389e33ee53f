import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCpio, type CpioEntry } from "../../src/image/cpio.js";

// GNU cpio (Debian package cpio) is an independent reader of the newc format.
const ENTRIES: CpioEntry[] = [
  { type: "file", path: "/init", mode: 0o755, data: Buffer.from("#!/bin/sh\nexit 0\n") },
  { type: "file", path: "usr/share/odd-size", mode: 0o640, data: Buffer.alloc(4099, 0x61) },
  { type: "file", path: "empty", data: new Uint8Array(0) },
  { type: "symlink", path: "bin/sh", target: "../usr/bin/busybox" },
  { type: "dir", path: "tmp", mode: 0o1777 },
  { type: "file", path: "lib/modules/6.1.0/kernel/drivers/virtio/virtio.ko", mode: 0o644, data: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]) },
];

function gnuCpio(args: string[], input: Buffer, cwd?: string): { status: number | null; stdout: string; stderr: string } | undefined {
  const r = spawnSync("cpio", args, { input, cwd, encoding: "buffer" });
  if (r.error !== undefined) return undefined;
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

void test("GNU cpio -t lists every entry of an archive writeCpio made, in sorted order", (t) => {
  const r = gnuCpio(["-t", "--quiet"], writeCpio(ENTRIES));
  if (r === undefined) {
    t.skip("GNU cpio is not installed (apt-get install cpio)");
    return;
  }
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split("\n"), [
    "bin", "bin/sh", "empty", "init", "lib", "lib/modules", "lib/modules/6.1.0", "lib/modules/6.1.0/kernel",
    "lib/modules/6.1.0/kernel/drivers", "lib/modules/6.1.0/kernel/drivers/virtio",
    "lib/modules/6.1.0/kernel/drivers/virtio/virtio.ko", "tmp", "usr", "usr/share", "usr/share/odd-size",
  ]);
});

void test("GNU cpio -i extracts the same contents, modes and symlinks writeCpio was given", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-cpio-gnu-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = gnuCpio(["-i", "-d", "-m", "--quiet", "--no-absolute-filenames", "--no-preserve-owner"], writeCpio(ENTRIES), dir);
  if (r === undefined) {
    t.skip("GNU cpio is not installed (apt-get install cpio)");
    return;
  }
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(dir, "init"), "utf8"), "#!/bin/sh\nexit 0\n");
  assert.equal(statSync(join(dir, "init")).mode & 0o7777, 0o755);
  assert.ok(readFileSync(join(dir, "usr/share/odd-size")).equals(Buffer.alloc(4099, 0x61)));
  assert.equal(statSync(join(dir, "usr/share/odd-size")).mode & 0o7777, 0o640);
  assert.equal(statSync(join(dir, "empty")).size, 0);
  assert.ok(lstatSync(join(dir, "bin/sh")).isSymbolicLink());
  assert.equal(readlinkSync(join(dir, "bin/sh")), "../usr/bin/busybox");
  assert.equal(statSync(join(dir, "tmp")).mode & 0o7777, 0o1777);
  assert.deepEqual([...readFileSync(join(dir, "lib/modules/6.1.0/kernel/drivers/virtio/virtio.ko"))], [0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]);
  assert.equal(statSync(join(dir, "init")).mtimeMs, 0, "mtime 0 is kept");
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { writeCpio, type CpioEntry } from "../../src/image/cpio.js";
import { readCpio } from "../../src/image/cpio-reader.js";
import { isVmstackError } from "../../src/lib/errors.js";

/** test/golden/cpio in the source tree (tests run from dist/test/unit). */
const GOLDEN = fileURLToPath(new URL("../../../test/golden/cpio/", import.meta.url));

/**
 * Compares with a golden file byte for byte. VMSTACK_UPDATE_GOLDEN=1 rewrites it; a rewritten
 * golden file must be checked by hand (and by the GNU cpio integration test) before committing.
 */
function assertGolden(name: string, bytes: Buffer): void {
  const path = join(GOLDEN, name);
  if (process.env["VMSTACK_UPDATE_GOLDEN"] === "1") {
    mkdirSync(GOLDEN, { recursive: true });
    writeFileSync(path, bytes);
  }
  assert.ok(existsSync(path), `golden file ${path} is missing (VMSTACK_UPDATE_GOLDEN=1 writes it)`);
  assert.ok(readFileSync(path).equals(bytes), `${name} differs from the golden file ${path}`);
}

const utf8 = (s: string): Buffer => Buffer.from(s);

const SAMPLE: CpioEntry[] = [
  { type: "file", path: "/init", mode: 0o755, data: utf8("#!/bin/sh\necho hi\n") },
  { type: "symlink", path: "bin/sh", target: "busybox" },
  { type: "file", path: "bin/busybox", mode: 0o755, data: utf8("not really busybox") },
  { type: "dir", path: "proc", mode: 0o555 },
  { type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 },
  { type: "file", path: "etc/motd", data: new Uint8Array(0) },
  { type: "file", path: "lib/modules/6.1.0/kernel/a.ko", mode: 0o644, data: utf8("abc") },
];

void test("writeCpio output for a sample tree matches the golden bytes", () => {
  assertGolden("sample.cpio", writeCpio(SAMPLE));
});

void test("writeCpio output for an empty archive is just the trailer and matches the golden bytes", () => {
  const bytes = writeCpio([]);
  assert.equal(bytes.length, 124); // 110 header + "TRAILER!!!\0" (11) padded to 124
  assertGolden("empty.cpio", bytes);
});

void test("writeCpio gives the same bytes whatever order the entries come in", () => {
  const reversed = [...SAMPLE].reverse();
  assert.ok(writeCpio(reversed).equals(writeCpio(SAMPLE)));
});

void test("every header starts with the newc magic on a 4-byte boundary and the archive ends with TRAILER!!!", () => {
  const bytes = writeCpio(SAMPLE);
  assert.equal(bytes.length % 4, 0);
  let count = 0;
  for (let at = bytes.indexOf("070701"); at >= 0; at = bytes.indexOf("070701", at + 1)) {
    assert.equal(at % 4, 0, `magic at ${at} is not 4-aligned`);
    count++;
  }
  assert.equal(count, readCpio(bytes).length + 1);
  assert.ok(bytes.includes(utf8("TRAILER!!!\0")));
});

void test("readCpio reads back paths, modes, contents, symlink targets and device numbers", () => {
  const records = readCpio(writeCpio(SAMPLE));
  assert.deepEqual(
    records.map((r) => r.path),
    ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "etc", "etc/motd", "init", "lib", "lib/modules",
      "lib/modules/6.1.0", "lib/modules/6.1.0/kernel", "lib/modules/6.1.0/kernel/a.ko", "proc"],
  );
  const byPath = new Map(records.map((r) => [r.path, r]));
  assert.equal(byPath.get("init")?.mode, 0o100755);
  assert.equal(byPath.get("init")?.data.toString(), "#!/bin/sh\necho hi\n");
  assert.equal(byPath.get("bin/sh")?.mode, 0o120777);
  assert.equal(byPath.get("bin/sh")?.data.toString(), "busybox");
  assert.equal(byPath.get("proc")?.mode, 0o040555);
  assert.equal(byPath.get("lib")?.mode, 0o040755, "implied parents are 0755 directories");
  assert.equal(byPath.get("etc/motd")?.mode, 0o100644, "files default to 0644");
  const console = byPath.get("dev/console");
  assert.equal(console?.mode, 0o020600);
  assert.deepEqual([console?.rdevMajor, console?.rdevMinor], [5, 1]);
});

void test("writeCpio uses mtime 0, uid/gid 0, inode numbers in path order and nlink 1 for files", () => {
  const records = readCpio(writeCpio(SAMPLE));
  records.forEach((r, i) => {
    assert.equal(r.mtime, 0);
    assert.equal(r.uid, 0);
    assert.equal(r.gid, 0);
    assert.equal(r.ino, i + 1);
    assert.equal(r.nlink, (r.mode & 0o170000) === 0o040000 ? 2 : 1);
  });
});

void test("a path given twice is an error naming it", () => {
  assert.throws(
    () => writeCpio([{ type: "dir", path: "a" }, { type: "dir", path: "/a/" }]),
    (e) => isVmstackError(e, "CPIO_DUPLICATE") && /'a'/.test(e.message),
  );
});

void test("an entry inside a regular file is an error", () => {
  assert.throws(
    () => writeCpio([{ type: "file", path: "a", data: new Uint8Array(0) }, { type: "dir", path: "a/b" }]),
    (e) => isVmstackError(e, "CPIO_NOT_A_DIRECTORY"),
  );
});

void test("paths with '..' or nothing in them are rejected", () => {
  for (const path of ["../etc", "a/../b", "/", ""]) {
    assert.throws(() => writeCpio([{ type: "dir", path }]), (e) => isVmstackError(e, "CPIO_BAD_PATH"), path);
  }
});

void test("permission bits beyond 07777 are rejected", () => {
  assert.throws(() => writeCpio([{ type: "dir", path: "a", mode: 0o40755 }]), (e) => isVmstackError(e, "CPIO_BAD_MODE"));
});

void test("file data that is not a multiple of 4 bytes is padded so the next header stays aligned", () => {
  for (const n of [0, 1, 2, 3, 4, 5]) {
    const bytes = writeCpio([{ type: "file", path: "f", data: new Uint8Array(n).fill(7) }, { type: "dir", path: "z" }]);
    const records = readCpio(bytes);
    assert.equal(records[0]?.data.length, n);
    assert.equal(records[1]?.path, "z");
  }
});

void test("readCpio reports a truncated archive with its offset", () => {
  const bytes = writeCpio(SAMPLE);
  assert.throws(() => readCpio(bytes.subarray(0, bytes.length - 20)), (e) => isVmstackError(e, "CPIO_CORRUPT") && /offset \d+/.test(e.message));
});

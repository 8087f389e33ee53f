import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { extractVmlinux, parseBzImage, readHead } from "../../src/image/vmlinux.js";
import { provisionedKernel, resolveKernel } from "../../src/image/kernel.js";
import { fetchKernel } from "../../src/image/kernel-fetch.js";
import { isVmstackError } from "../../src/lib/errors.js";

/** A bzImage around `compressed` (the setup header fields of Documentation/arch/x86/boot.rst). */
function bzImageAround(compressed: Uint8Array, uncompressedSize: number): Buffer {
  const payload = Buffer.alloc(compressed.length + 4);
  Buffer.from(compressed).copy(payload);
  payload.writeUInt32LE(uncompressedSize, compressed.length); // the kernel build's size_append
  const b = Buffer.alloc(1024 + payload.length + 64); // trailing bytes, as in a real bzImage
  b[0x1f1] = 1;
  b.write("HdrS", 0x202, "latin1");
  b.writeUInt16LE(0x020f, 0x206);
  b.writeUInt32LE(0, 0x248);
  b.writeUInt32LE(payload.length, 0x24c);
  payload.copy(b, 1024);
  return b;
}

const ELF = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(5000, 0x90)]);

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-vmlinux-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

void test("extractVmlinux decompresses a gzip payload and checks the appended size", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "bz"), bzImageAround(gzipSync(ELF), ELF.length));
  await extractVmlinux(join(dir, "bz"), join(dir, "vmlinux"));
  assert.ok(readFileSync(join(dir, "vmlinux")).equals(ELF));
});

void test("extractVmlinux decompresses an LZ4 legacy payload, as in Debian's cloud kernel", async (t) => {
  const lz4 = spawnSync("lz4", ["-l", "-c"], { input: ELF });
  if (lz4.error !== undefined) {
    t.skip("lz4 is not installed (apt-get install lz4)");
    return;
  }
  const dir = tempDir(t);
  writeFileSync(join(dir, "bz"), bzImageAround(lz4.stdout, ELF.length));
  await extractVmlinux(join(dir, "bz"), join(dir, "vmlinux"));
  assert.ok(readFileSync(join(dir, "vmlinux")).equals(ELF));
});

void test("a payload whose size does not match leaves no vmlinux behind", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "bz"), bzImageAround(gzipSync(ELF), ELF.length + 1));
  await assert.rejects(extractVmlinux(join(dir, "bz"), join(dir, "vmlinux")), (e) => isVmstackError(e, "KERNEL_INVALID"));
  assert.deepEqual(readdirSync(dir), ["bz"]);
});

void test("the provisioned cloud kernel resolves, with a vmlinux of the size its bzImage announces", async (t) => {
  const kernel = await provisionedKernel(process.env);
  if (kernel === undefined) {
    t.skip("no provisioned kernel (run 'vmstack kernel fetch')");
    return;
  }
  const resolved = await resolveKernel({ env: { ...process.env, VMSTACK_KERNEL: "" } });
  assert.deepEqual(resolved, kernel);
  assert.ok(kernel.bzImagePath !== undefined && kernel.vmlinuxPath !== undefined && kernel.modulesDir !== undefined);
  const image = readFileSync(kernel.bzImagePath);
  const info = parseBzImage(image, kernel.bzImagePath);
  assert.equal(info.release, kernel.release);
  const announced = image.readUInt32LE(info.payloadOffset + info.payloadLength - 4);
  assert.equal(statSync(kernel.vmlinuxPath).size, announced);
  assert.deepEqual([...(await readHead(kernel.vmlinuxPath, 4))], [0x7f, 0x45, 0x4c, 0x46]);
  assert.ok(existsSync(join(kernel.modulesDir, "modules.dep")), "depmod wrote modules.dep");
});

void test("fetching again with the kernel present does nothing", async (t) => {
  const kernel = await provisionedKernel(process.env);
  if (kernel === undefined) {
    t.skip("no provisioned kernel (run 'vmstack kernel fetch')");
    return;
  }
  const progress: string[] = [];
  const r = await fetchKernel({ env: process.env, onProgress: (l) => progress.push(l) });
  assert.equal(r.fetched, false);
  assert.deepEqual(r.kernel, kernel);
  assert.deepEqual(progress, []);
});

void test("a kernel package apt does not know is KERNEL_PACKAGE_UNKNOWN telling the user to run apt-get update", async (t) => {
  const dir = tempDir(t);
  await assert.rejects(
    fetchKernel({ env: { VMSTACK_CACHE: dir }, metaPackage: "vmstack-no-such-kernel-package" }),
    (e) => (isVmstackError(e, "KERNEL_PACKAGE_UNKNOWN") && /apt-get update/.test(e.message)) || isVmstackError(e, "TOOL_MISSING"),
  );
  assert.deepEqual(readdirSync(dir), [], "nothing is left in the cache");
});

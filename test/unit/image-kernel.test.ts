import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveKernel, KERNEL_ENV, parseKernelManifest } from "../../src/image/kernel.js";
import { parseAptDepends, releaseOfPackage, versionOfDebFile } from "../../src/image/kernel-fetch.js";
import { detectPayloadFormat, kernelFileKind, parseBzImage, releaseOfVmlinux } from "../../src/image/vmlinux.js";
import { isVmstackError } from "../../src/lib/errors.js";

/**
 * A minimal bzImage: the setup header fields vmstack reads (Documentation/arch/x86/boot.rst),
 * one setup sector, and `payload` (compressed kernel + 4-byte size) after it.
 */
function fakeBzImage(release: string, payload: Uint8Array): Buffer {
  const pm = 2 * 512; // (setup_sects + 1) * 512
  const b = Buffer.alloc(pm + 16 + payload.length);
  b[0x1f1] = 1; // setup_sects
  b.write("HdrS", 0x202, "latin1");
  b.writeUInt16LE(0x020f, 0x206); // protocol 2.15
  b.writeUInt16LE(0x100, 0x20e); // kernel_version: string at 0x100 + 0x200
  b.write(`${release} (builder@example) #1 SMP\0`, 0x300, "latin1");
  b.writeUInt32LE(16, 0x248); // payload_offset, from the protected-mode code
  b.writeUInt32LE(payload.length, 0x24c);
  Buffer.from(payload).copy(b, pm + 16);
  return b;
}

/**
 * A minimal ELF64 vmlinux: one PT_NOTE segment (with the Xen PVH entry note, type 18, unless
 * `pvh` is false) followed by `tail` (e.g. a "Linux version" banner).
 */
function fakeVmlinux(tail: string, pvh = true): Buffer {
  const note = Buffer.alloc(20);
  note.writeUInt32LE(4, 0); // namesz ("Xen\0")
  note.writeUInt32LE(4, 4); // descsz
  note.writeUInt32LE(pvh ? 18 : 6, 8);
  note.write("Xen\0", 12, "latin1");
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2;
  header[5] = 1;
  header.writeBigUInt64LE(64n, 0x20);
  header.writeUInt16LE(56, 0x36);
  header.writeUInt16LE(1, 0x38);
  const ph = Buffer.alloc(56);
  ph.writeUInt32LE(4, 0);
  ph.writeBigUInt64LE(120n, 8);
  ph.writeBigUInt64LE(BigInt(note.length), 32);
  return Buffer.concat([header, ph, note, Buffer.from(tail, "latin1")]);
}

const LZ4_PAYLOAD = Buffer.from([0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4, 9, 0, 0, 0]);

void test("parseBzImage reads the release, boot protocol and payload position from the setup header", () => {
  const info = parseBzImage(fakeBzImage("6.1.0-99-cloud-amd64", LZ4_PAYLOAD));
  assert.equal(info.release, "6.1.0-99-cloud-amd64");
  assert.equal(info.protocol, 0x020f);
  assert.equal(info.payloadOffset, 1024 + 16);
  assert.equal(info.payloadLength, LZ4_PAYLOAD.length);
  assert.equal(info.format, "lz4");
});

void test("a file without the HdrS signature is not a bzImage", () => {
  assert.throws(() => parseBzImage(Buffer.alloc(4096), "/x/vmlinuz"), (e) => isVmstackError(e, "KERNEL_INVALID") && e.message.includes("/x/vmlinuz"));
});

void test("a payload that runs past the end of the file is rejected", () => {
  const image = fakeBzImage("6.1.0", LZ4_PAYLOAD);
  image.writeUInt32LE(1 << 20, 0x24c);
  assert.throws(() => parseBzImage(image), (e) => isVmstackError(e, "KERNEL_INVALID"));
});

void test("detectPayloadFormat knows the kernel's compressions by their magic", () => {
  assert.equal(detectPayloadFormat(Buffer.from([0x02, 0x21, 0x4c, 0x18])), "lz4");
  assert.equal(detectPayloadFormat(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), "xz");
  assert.equal(detectPayloadFormat(Buffer.from([0x1f, 0x8b, 8])), "gzip");
  assert.equal(detectPayloadFormat(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), "zstd");
  assert.equal(detectPayloadFormat(Buffer.from([0, 0, 0, 0])), undefined);
});

void test("kernelFileKind tells a vmlinux ELF from a bzImage from anything else", () => {
  assert.equal(kernelFileKind(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2])), "vmlinux");
  assert.equal(kernelFileKind(fakeBzImage("6.1.0", LZ4_PAYLOAD)), "bzImage");
  assert.equal(kernelFileKind(Buffer.from("#!/bin/sh\n")), undefined);
});

void test("releaseOfVmlinux finds the release in the 'Linux version' banner", () => {
  const image = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.from("\0Linux version %s\0junk\0Linux version 6.1.0-7-amd64 (x@y) gcc\0")]);
  assert.equal(releaseOfVmlinux(image), "6.1.0-7-amd64");
  assert.equal(releaseOfVmlinux(Buffer.from("no banner")), undefined);
});

void test("parseAptDepends finds the versioned kernel package of the meta package", () => {
  const out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
  assert.equal(parseAptDepends(out, "linux-image-cloud-amd64"), "linux-image-6.1.0-56-cloud-amd64");
  assert.equal(releaseOfPackage("linux-image-6.1.0-56-cloud-amd64"), "6.1.0-56-cloud-amd64");
  assert.throws(() => parseAptDepends("", "linux-image-cloud-amd64"), (e) => isVmstackError(e, "KERNEL_PACKAGE_UNKNOWN"));
});

void test("versionOfDebFile reads the version from dpkg's file name", () => {
  assert.equal(versionOfDebFile("linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb"), "6.1.192-2");
  assert.equal(versionOfDebFile("foo_1%3a2.0-1_amd64.deb"), "1:2.0-1");
});

void test("parseKernelManifest rejects unknown keys and missing fields", () => {
  const good = { release: "r", package: "p", packageVersion: "v", bzImage: "b", vmlinux: "v", modulesDir: "m", config: "c" };
  assert.deepEqual(parseKernelManifest(good, "k.json"), good);
  assert.throws(() => parseKernelManifest({ ...good, extra: 1 }, "k.json"), (e) => isVmstackError(e, "KERNEL_MANIFEST_INVALID") && /'extra'/.test(e.message));
  assert.throws(() => parseKernelManifest({ ...good, vmlinux: 3 }, "k.json"), (e) => isVmstackError(e, "KERNEL_MANIFEST_INVALID") && /'vmlinux'/.test(e.message));
});

interface Sandbox {
  readonly dir: string;
  readonly env: Record<string, string>;
}

function sandbox(t: { after: (fn: () => void) => void }): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-kernel-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, env: { VMSTACK_CACHE: join(dir, "cache"), HOME: dir } };
}

/** Lays out a provisioned kernel in the sandbox's cache the way `vmstack kernel fetch` does. */
function provision(s: Sandbox, release: string): string {
  const dir = join(s.env["VMSTACK_CACHE"]!, "kernels", release);
  mkdirSync(join(dir, "pkg/boot"), { recursive: true });
  mkdirSync(join(dir, "pkg/lib/modules", release), { recursive: true });
  writeFileSync(join(dir, "pkg/boot", `vmlinuz-${release}`), fakeBzImage(release, LZ4_PAYLOAD));
  writeFileSync(join(dir, "vmlinux"), Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  writeFileSync(
    join(dir, "kernel.json"),
    JSON.stringify({
      release,
      package: `linux-image-${release}`,
      packageVersion: "1",
      bzImage: `pkg/boot/vmlinuz-${release}`,
      vmlinux: "vmlinux",
      modulesDir: `pkg/lib/modules/${release}`,
      config: `pkg/boot/config-${release}`,
    }),
  );
  writeFileSync(join(s.env["VMSTACK_CACHE"]!, "kernels", "current"), release + "\n");
  return dir;
}

void test("with nothing provisioned, resolveKernel says to run 'vmstack kernel fetch'", async (t) => {
  const s = sandbox(t);
  await assert.rejects(resolveKernel({ env: s.env }), (e) => isVmstackError(e, "KERNEL_MISSING") && e.message.includes("vmstack kernel fetch"));
});

void test("resolveKernel uses the provisioned kernel's vmlinux, bzImage and modules", async (t) => {
  const s = sandbox(t);
  const dir = provision(s, "6.1.0-1-cloud-amd64");
  const k = await resolveKernel({ env: s.env });
  assert.equal(k.source, "cache");
  assert.equal(k.release, "6.1.0-1-cloud-amd64");
  assert.equal(k.kernelPath, join(dir, "vmlinux"));
  assert.equal(k.vmlinuxPath, join(dir, "vmlinux"));
  assert.equal(k.bzImagePath, join(dir, "pkg/boot/vmlinuz-6.1.0-1-cloud-amd64"));
  assert.equal(k.modulesDir, join(dir, "pkg/lib/modules/6.1.0-1-cloud-amd64"));
});

void test("a provisioned directory whose manifest is missing (an interrupted fetch) is not used", async (t) => {
  const s = sandbox(t);
  const dir = provision(s, "6.1.0-1-cloud-amd64");
  rmSync(join(dir, "kernel.json"));
  await assert.rejects(resolveKernel({ env: s.env }), (e) => isVmstackError(e, "KERNEL_MISSING"));
});

void test("an explicit bzImage wins over VMSTACK_KERNEL and the cache, and its modules are found next to it", async (t) => {
  const s = sandbox(t);
  provision(s, "6.1.0-1-cloud-amd64");
  const root = join(s.dir, "root");
  mkdirSync(join(root, "boot"), { recursive: true });
  mkdirSync(join(root, "lib/modules/6.1.0-2-amd64"), { recursive: true });
  writeFileSync(join(root, "boot/vmlinuz-6.1.0-2-amd64"), fakeBzImage("6.1.0-2-amd64", LZ4_PAYLOAD));
  const k = await resolveKernel({ kernelPath: join(root, "boot/vmlinuz-6.1.0-2-amd64"), env: { ...s.env, [KERNEL_ENV]: "/nonexistent" } });
  assert.equal(k.source, "argument");
  assert.equal(k.release, "6.1.0-2-amd64");
  assert.equal(k.kernelPath, join(root, "boot/vmlinuz-6.1.0-2-amd64"));
  assert.equal(k.bzImagePath, k.kernelPath);
  assert.equal(k.vmlinuxPath, undefined);
  assert.equal(k.modulesDir, join(root, "lib/modules/6.1.0-2-amd64"));
});

void test("VMSTACK_KERNEL wins over the cache; a vmlinux there gets its release from its banner", async (t) => {
  const s = sandbox(t);
  provision(s, "6.1.0-1-cloud-amd64");
  const vmlinux = join(s.dir, "vmlinux");
  writeFileSync(vmlinux, fakeVmlinux("\0Linux version 6.6.6-custom (me@host)\0"));
  const k = await resolveKernel({ env: { ...s.env, [KERNEL_ENV]: vmlinux } });
  assert.equal(k.source, "env");
  assert.equal(k.release, "6.6.6-custom");
  assert.equal(k.vmlinuxPath, vmlinux);
  assert.equal(k.modulesDir, undefined);
});

void test("a kernel path inside a provisioned kernel uses its manifest", async (t) => {
  const s = sandbox(t);
  const dir = provision(s, "6.1.0-1-cloud-amd64");
  const bz = join(dir, "pkg/boot/vmlinuz-6.1.0-1-cloud-amd64");
  const k = await resolveKernel({ kernelPath: bz, env: s.env });
  assert.equal(k.kernelPath, bz);
  assert.equal(k.vmlinuxPath, join(dir, "vmlinux"));
  assert.equal(k.modulesDir, join(dir, "pkg/lib/modules/6.1.0-1-cloud-amd64"));
});

void test("a kernel path that does not exist is an error naming the path", async (t) => {
  const s = sandbox(t);
  const missing = join(s.dir, "no-such-kernel");
  await assert.rejects(resolveKernel({ kernelPath: missing, env: s.env }), (e) => isVmstackError(e, "KERNEL_NOT_FOUND") && e.message.includes(missing));
  await assert.rejects(
    resolveKernel({ env: { ...s.env, [KERNEL_ENV]: missing } }),
    (e) => isVmstackError(e, "KERNEL_NOT_FOUND") && e.message.includes(missing) && e.message.includes(KERNEL_ENV),
  );
});

void test("a kernel path that is neither a bzImage nor an ELF file is rejected", async (t) => {
  const s = sandbox(t);
  const junk = join(s.dir, "junk");
  writeFileSync(junk, "hello");
  await assert.rejects(resolveKernel({ kernelPath: junk, env: s.env }), (e) => isVmstackError(e, "KERNEL_INVALID") && e.message.includes(junk));
});

void test("a vmlinux without the PVH entry note is rejected with a hint to pass the bzImage", async (t) => {
  const s = sandbox(t);
  const vmlinux = join(s.dir, "vmlinux");
  writeFileSync(vmlinux, fakeVmlinux("\0Linux version 6.6.6-custom (me@host)\0", false));
  await assert.rejects(
    resolveKernel({ kernelPath: vmlinux, env: s.env }),
    (e) => isVmstackError(e, "KERNEL_INVALID") && e.message.includes(vmlinux) && /PVH/.test(e.message) && /bzImage/.test(e.message),
  );
});

void test("a lone kernel file of a provisioned release uses the provisioned modules", async (t) => {
  const s = sandbox(t);
  const dir = provision(s, "6.1.0-1-cloud-amd64");
  const lone = join(s.dir, "elsewhere-vmlinuz");
  writeFileSync(lone, fakeBzImage("6.1.0-1-cloud-amd64", LZ4_PAYLOAD));
  const k = await resolveKernel({ kernelPath: lone, env: s.env });
  assert.equal(k.kernelPath, lone);
  assert.equal(k.modulesDir, join(dir, "pkg/lib/modules/6.1.0-1-cloud-amd64"));
});

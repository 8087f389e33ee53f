import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { hasPvhNote, notesHavePvhEntry, withPvhVmlinux } from "../../src/image/pvh.js";
import { provisionedKernel, type ResolvedKernel } from "../../src/image/kernel.js";
import { ContentStore } from "../../src/image/cache.js";

/** One ELF note: namesz, descsz, type, name and desc padded to 4 bytes (ELF gABI). */
function note(name: string, type: number, desc: Buffer): Buffer {
  const n = Buffer.from(name + "\0");
  const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(n.length, 0);
  head.writeUInt32LE(desc.length, 4);
  head.writeUInt32LE(type, 8);
  return Buffer.concat([head, pad(n), pad(desc)]);
}

/** A minimal ELF64 little-endian file with one PT_NOTE segment holding `notes`. */
function elfWithNotes(notes: Buffer): Buffer {
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2; // ELFCLASS64
  header[5] = 1; // ELFDATA2LSB
  header[6] = 1;
  header.writeBigUInt64LE(64n, 0x20); // e_phoff
  header.writeUInt16LE(56, 0x36); // e_phentsize
  header.writeUInt16LE(1, 0x38); // e_phnum
  const ph = Buffer.alloc(56);
  ph.writeUInt32LE(4, 0); // PT_NOTE
  ph.writeBigUInt64LE(120n, 8); // p_offset
  ph.writeBigUInt64LE(BigInt(notes.length), 32); // p_filesz
  return Buffer.concat([header, ph, notes]);
}

/** A bzImage whose gzip payload is `elf` (setup header fields of Documentation/arch/x86/boot.rst). */
function bzImageOf(elf: Buffer): Buffer {
  const gz = gzipSync(elf);
  const payload = Buffer.alloc(gz.length + 4);
  gz.copy(payload);
  payload.writeUInt32LE(elf.length, gz.length);
  const b = Buffer.alloc(1024 + payload.length);
  b[0x1f1] = 1;
  b.write("HdrS", 0x202, "latin1");
  b.writeUInt16LE(0x020f, 0x206);
  b.writeUInt32LE(payload.length, 0x24c);
  payload.copy(b, 1024);
  return b;
}

const PVH_NOTES = Buffer.concat([note("Xen", 6, Buffer.from("linux\0")), note("Xen", 18, Buffer.alloc(4, 1))]);
const OTHER_NOTES = Buffer.concat([note("GNU", 3, Buffer.alloc(20)), note("Xen", 6, Buffer.from("linux\0"))]);

function sandbox(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-pvh-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

void test("notesHavePvhEntry finds the Xen PHYS32_ENTRY note among others", () => {
  assert.equal(notesHavePvhEntry(PVH_NOTES), true);
  assert.equal(notesHavePvhEntry(OTHER_NOTES), false);
  assert.equal(notesHavePvhEntry(Buffer.alloc(0)), false);
});

void test("hasPvhNote reads the PT_NOTE segments of an ELF file", async (t) => {
  const dir = sandbox(t);
  writeFileSync(join(dir, "pvh"), elfWithNotes(PVH_NOTES));
  writeFileSync(join(dir, "plain"), elfWithNotes(OTHER_NOTES));
  writeFileSync(join(dir, "text"), "not an ELF file at all, but long enough to have a header.........");
  assert.equal(await hasPvhNote(join(dir, "pvh")), true);
  assert.equal(await hasPvhNote(join(dir, "plain")), false);
  assert.equal(await hasPvhNote(join(dir, "text")), false);
});

void test("the provisioned cloud kernel's vmlinux has the PVH note", async (t) => {
  const kernel = await provisionedKernel(process.env);
  if (kernel?.vmlinuxPath === undefined) {
    t.skip("no provisioned kernel (run 'vmstack kernel fetch')");
    return;
  }
  assert.equal(await hasPvhNote(kernel.vmlinuxPath), true);
});

void test("withPvhVmlinux boots a user's bzImage through its extracted vmlinux, extracting it once", async (t) => {
  const dir = sandbox(t);
  writeFileSync(join(dir, "bzImage"), bzImageOf(elfWithNotes(PVH_NOTES)));
  const kernel: ResolvedKernel = { release: "6.6.6", kernelPath: join(dir, "bzImage"), bzImagePath: join(dir, "bzImage"), source: "argument" };
  const cache = new ContentStore(join(dir, "cache"));
  const first = await withPvhVmlinux(kernel, { cache });
  assert.ok(first.vmlinuxPath !== undefined);
  assert.equal(first.kernelPath, first.vmlinuxPath);
  assert.equal(first.bzImagePath, kernel.bzImagePath);
  const second = await withPvhVmlinux(kernel, { cache });
  assert.equal(second.kernelPath, first.kernelPath);
});

void test("withPvhVmlinux keeps the bzImage when its vmlinux has no PVH entry", async (t) => {
  const dir = sandbox(t);
  writeFileSync(join(dir, "bzImage"), bzImageOf(elfWithNotes(OTHER_NOTES)));
  const kernel: ResolvedKernel = { release: "6.6.6", kernelPath: join(dir, "bzImage"), bzImagePath: join(dir, "bzImage"), source: "argument" };
  assert.deepEqual(await withPvhVmlinux(kernel, { cache: new ContentStore(join(dir, "cache")) }), kernel);
});

void test("withPvhVmlinux leaves a kernel that already has a vmlinux alone", async () => {
  const kernel: ResolvedKernel = { release: "r", kernelPath: "/k/vmlinux", vmlinuxPath: "/k/vmlinux", bzImagePath: "/k/bz", source: "cache" };
  assert.equal(await withPvhVmlinux(kernel, { cache: new ContentStore("/nonexistent") }), kernel);
});

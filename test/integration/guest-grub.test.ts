/**
 * pv-grub-style boot resolution against real disk images made with mkfs.ext4 -d and qemu-img,
 * read with the real debugfs; the extracted kernel then boots for real.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveGuestGrub } from "../../src/image/guest-grub.js";
import { resolveKernel } from "../../src/image/index.js";
import { cli, vmUnavailable } from "../support/cli.js";

let dir = "";
let kernelBytes: Buffer;
let bzImage: string | undefined;
let release = "6.1.0-0-fake-amd64";

function have(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    return true;
  } catch {
    return false; // `command -v` failed: not installed
  }
}

/** An ext4 filesystem image holding `files` (path → bytes). */
function makeFs(name: string, files: Record<string, Buffer | string>): string {
  const src = join(dir, `${name}-src`);
  for (const [path, data] of Object.entries(files)) {
    mkdirSync(join(src, path, ".."), { recursive: true });
    writeFileSync(join(src, path), data);
  }
  const img = join(dir, `${name}.img`);
  execFileSync("mkfs.ext4", ["-q", "-d", src, "-F", img, "64M"], { stdio: "ignore" });
  return img;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "vmstack-grub-"));
  try {
    const k = await resolveKernel({ env: process.env });
    bzImage = k.bzImagePath;
    release = k.release;
  } catch {
    bzImage = undefined; // no provisioned kernel: the boot test skips, the others use fake bytes
  }
  kernelBytes = bzImage ? readFileSync(bzImage) : Buffer.from("not a real kernel");
});
after(() => rmSync(dir, { recursive: true, force: true }));

const menu = (): string => `default 0
title vmstack guest
root (hd0)
kernel /boot/vmlinuz-${release} root=/dev/xvda1 ro console=ttyS0
initrd /boot/initrd.img-${release}
`;

test("the NixOS wiki's pv-grub guest: menu.lst on a whole-disk filesystem gives its kernel, initrd and command line", async (t) => {
  if (!have("mkfs.ext4") || !have("debugfs")) return t.skip("e2fsprogs is not installed (./setup installs it)");
  const img = makeFs("whole", { "boot/grub/menu.lst": menu(), [`boot/vmlinuz-${release}`]: kernelBytes, [`boot/initrd.img-${release}`]: "INITRD" });
  const out = mkdtempSync(join(dir, "out-"));
  const boot = await resolveGuestGrub({ disk: img, format: "raw", menu: "/boot/grub/menu.lst", outDir: out });
  assert.equal(boot.filesystem, "whole disk");
  assert.equal(boot.cmdline, "root=/dev/xvda1 ro console=ttyS0");
  assert.equal(boot.entry.title, "vmstack guest");
  assert.ok(readFileSync(boot.kernel).equals(kernelBytes));
  assert.equal(readFileSync(boot.initrd!, "utf8"), "INITRD");
});

test("a partitioned qcow2 disk with grub.cfg: the first partition is found and the default entry booted", async (t) => {
  if (!have("mkfs.ext4") || !have("debugfs") || !have("qemu-img")) return t.skip("e2fsprogs or qemu-utils missing (./setup installs them)");
  const cfg = `set default=0\nmenuentry 'Debian' {\n  linux /boot/vmlinuz-${release} root=/dev/vda1 ro quiet\n  initrd /boot/initrd.img-${release}\n}\n`;
  const fs = makeFs("part", { "boot/grub/grub.cfg": cfg, [`boot/vmlinuz-${release}`]: kernelBytes, [`boot/initrd.img-${release}`]: "INITRD2" });
  // An MBR with one Linux partition at sector 2048, the filesystem behind it.
  const mbr = Buffer.alloc(2048 * 512);
  mbr[446 + 4] = 0x83;
  mbr.writeUInt32LE(2048, 446 + 8);
  mbr.writeUInt32LE((64 * 2 ** 20) / 512, 446 + 12);
  mbr.writeUInt16LE(0xaa55, 510);
  const raw = join(dir, "disk.raw");
  writeFileSync(raw, Buffer.concat([mbr, readFileSync(fs)]));
  const qcow2 = join(dir, "disk.qcow2");
  execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2]);
  const out = mkdtempSync(join(dir, "out-"));
  const boot = await resolveGuestGrub({ disk: qcow2, format: "qcow2", outDir: out });
  assert.equal(boot.filesystem, "partition 0");
  assert.equal(boot.menuPath, "/boot/grub/grub.cfg");
  assert.equal(boot.cmdline, "root=/dev/vda1 ro quiet");
  assert.equal(readFileSync(boot.initrd!, "utf8"), "INITRD2");
});

test("a disk without a menu says where it looked", async (t) => {
  if (!have("mkfs.ext4") || !have("debugfs")) return t.skip("e2fsprogs is not installed (./setup installs it)");
  const img = makeFs("nomenu", { "etc/hostname": "x" });
  await assert.rejects(resolveGuestGrub({ disk: img, format: "raw", outDir: mkdtempSync(join(dir, "out-")) }), /no GRUB menu .*looked for \/boot\/grub\/grub\.cfg/);
});

test("a menu naming a kernel that is not on the disk is a clear error", async (t) => {
  if (!have("mkfs.ext4") || !have("debugfs")) return t.skip("e2fsprogs is not installed (./setup installs it)");
  const img = makeFs("nokernel", { "boot/grub/menu.lst": menu() });
  await assert.rejects(resolveGuestGrub({ disk: img, format: "raw", outDir: mkdtempSync(join(dir, "out-")) }), /names \/boot\/vmlinuz-.* which is not on/);
});

test("the kernel taken from the guest's disk boots", async (t) => {
  const skip = (await vmUnavailable()) ?? (bzImage ? undefined : "no provisioned kernel to put on the disk");
  if (skip) return t.skip(skip);
  const img = makeFs("boot", { "boot/grub/menu.lst": menu(), [`boot/vmlinuz-${release}`]: kernelBytes, [`boot/initrd.img-${release}`]: "x" });
  const out = mkdtempSync(join(dir, "out-"));
  const boot = await resolveGuestGrub({ disk: img, format: "raw", outDir: out });
  // Next to the provisioned kernel's modules, as a user's own kernel file would be.
  const kernel = join(out, `vmlinuz-${release}`);
  copyFileSync(boot.kernel, kernel);
  const r = await cli(["run", "--kernel", kernel, "--", "uname", "-r"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), release);
});

/**
 * An HVM domain without a kernel boots its disk through SeaBIOS and the guest's own GRUB 2:
 * `vmstack image debian --bootloader grub-pc` writes GRUB's boot.img and core.img into the
 * image's first megabyte, and nothing on the host reads the menu. One boot, watched up to the
 * kernel mounting the root file system from the partition. The Debian tree is
 * the walkthrough's (cached in the user's vmstack cache; see wiki-walkthrough.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { vmUnavailable } from "../support/cli.js";
import { domainHarness } from "../support/domains.js";

function missing(): string | undefined {
  if (!existsSync("/usr/lib/grub/i386-pc/boot.img")) return "GRUB for BIOS is not installed (grub-pc-bin; ./setup installs it)";
  if (!["/usr/bin/mmdebstrap", "/usr/sbin/debootstrap"].some(existsSync)) return "neither mmdebstrap nor debootstrap is installed (./setup installs mmdebstrap)";
  if (process.getuid?.() !== 0) return "installing Debian needs root here (the bootstrap makes device nodes and chroots)";
  return undefined;
}

test("an HVM domain boots a Debian disk through SeaBIOS and the GRUB in its boot sector", { timeout: 900_000 }, async (t) => {
  const skip = (await vmUnavailable()) ?? missing();
  if (skip) return t.skip(skip);
  const h = domainHarness("grubpc");
  const { dir, ok } = h;
  try {
    const image = join(dir, "hvm.img"); // raw: xl's `file:` disks are raw unless a format is named
    await ok("image", "debian", "-p", "linux-image-cloud-amd64,systemd-sysv,dbus", "--bootloader", "grub-pc", "--format", "raw", "-L", "hvmroot", "--hostname", "hvm", "-o", image);
    const cfg = join(dir, "hvm.cfg");
    writeFileSync(cfg, ["name = 'hvm'", "type = 'hvm'", "memory = 512", `disk = [ 'file:${image},xvda,w' ]`, "vif = [ '' ]", ""].join("\n"));
    const dry = JSON.parse(await ok("create", "--dry-run", "--json", cfg)) as { argv: string[] };
    assert.ok(!dry.argv.includes("-kernel"), "QEMU gets no kernel: the firmware boots the disk");
    assert.ok(dry.argv.some((a) => /bootindex=0/.test(a)), "the disk is the first boot device");

    await ok("create", cfg);
    // Watched on the console up to the root file system (the walkthrough test boots the same kind
    // of image all the way to systemd; here one boot proves the firmware path and stays short).
    const log = join(dir, "s", "log", "hvm.console.log");
    const consoleText = (): string => (existsSync(log) ? readFileSync(log, "utf8") : "");
    for (let i = 0; i < 1500 && !/EXT4-fs \(vda1\): mounted filesystem/.test(consoleText()); i++) await sleep(200);
    const text = consoleText();
    assert.match(text, /Booting `Debian GNU\/Linux'/, "GRUB's own menu ran, on the serial console");
    // GRUB 2's `linux` command puts BOOT_IMAGE= first; QEMU's -kernel never does.
    assert.match(text, /Command line: BOOT_IMAGE=\/boot\/vmlinuz-\S+ root=LABEL=hvmroot ro console=ttyS0/);
    assert.match(text, /EXT4-fs \(vda1\): mounted filesystem/, `the root file system on the disk's first partition is mounted\n${text.slice(-1500)}`);
    await ok("destroy", "hvm");
  } finally {
    await h.close();
  }
});

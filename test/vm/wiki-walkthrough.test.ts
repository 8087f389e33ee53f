/**
 * The NixOS wiki's Xen walkthrough (nixos.org/wiki/NixOS_and_Xen, "Creating NixOS guests") with
 * vmstack alone and Debian in place of NixOS: a sparse 4 GiB image, an ext3 file system labelled
 * `nixos`, Debian installed into it with a GRUB menu, the wiki's `mrkitty` domain config (xm
 * syntax, pv-grub kernel, `extra` naming the menu, a `file:` disk, one vif), `vmstack create -c`
 * to the login prompt, detach, a working agent, shutdown. One boot.
 *
 * The Debian bootstrap is cached in the user's vmstack cache (builds/<key>.tar, then the image
 * made from it), so only the first run on a machine bootstraps (about a minute and ~100 MB of
 * downloads; `./setup` does it ahead of time); every later run unpacks nothing and boots once.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VMSTACK_BIN, vmUnavailable } from "../support/cli.js";
import { domainHarness } from "../support/domains.js";

/** What the walkthrough installs: a kernel, an init that shows a login prompt, and logind for the power button. */
const WALKTHROUGH_PACKAGES = "linux-image-cloud-amd64,systemd-sysv,dbus";

function missingTool(): string | undefined {
  for (const tool of ["dumpe2fs", "debugfs", "mkfs.ext3"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `${tool} is not installed (e2fsprogs; ./setup installs it)`; // `command -v` failed
    }
  }
  if (!["/usr/bin/mmdebstrap", "/usr/sbin/debootstrap"].some(existsSync)) return "neither mmdebstrap nor debootstrap is installed (./setup installs mmdebstrap)";
  if (process.getuid?.() !== 0) return "installing Debian needs root here (the bootstrap makes device nodes and chroots)";
  return undefined;
}

test("the wiki walkthrough: sparse image, ext3 labelled nixos, Debian with a GRUB menu, mrkitty's config, create -c to a login prompt, detach, agent, shutdown", { timeout: 900_000 }, async (t) => {
  const skip = (await vmUnavailable()) ?? missingTool();
  if (skip) return t.skip(skip);
  const h = domainHarness("wiki", { slow: (m) => t.diagnostic(m) });
  const { dir, env, v, ok } = h;
  const image = join(dir, "mrkitty-root.img");
  try {
    // dd if=/dev/zero of=mrkitty-root.img bs=1M seek=4096 count=0; mkfs.ext3 -F -L nixos mrkitty-root.img
    await ok("image", "create", "--size", "4G", "--fs", "ext3", "-L", "nixos", "-o", image);
    const st = statSync(image);
    assert.equal(st.size, 4 * 1024 ** 3);
    assert.ok(st.blocks * 512 < st.size / 8, `the image is sparse (${st.blocks * 512} bytes allocated)`);
    const head = execFileSync("dumpe2fs", ["-h", image], { stdio: ["ignore", "pipe", "ignore"] }).toString();
    assert.match(head, /^Filesystem volume name:\s+nixos$/m);
    assert.match(head, /^Filesystem features:.*has_journal/m);
    assert.doesNotMatch(head, /^Filesystem features:.*extent/m, "ext3, not ext4 (pv-grub reads ext2/3)");
    const uuid = /^Filesystem UUID:\s+(\S+)$/m.exec(head)?.[1];

    // "Now we install … on this filesystem": Debian, its kernel, a GRUB menu, the agent.
    const installed = JSON.parse(await ok("image", "debian", "--into", image, "-p", WALKTHROUGH_PACKAGES, "--grub-menu", "--hostname", "mrkitty", "--json")) as {
      cached: boolean;
      fs: { type: string; label: string; uuid: string };
    };
    t.diagnostic(`Debian image ${installed.cached ? "from the cache" : "built now"}`);
    assert.deepEqual([installed.fs.type, installed.fs.label, installed.fs.uuid], ["ext3", "nixos", uuid]);
    const after = execFileSync("dumpe2fs", ["-h", image], { stdio: ["ignore", "pipe", "ignore"] }).toString();
    assert.match(after, new RegExp(`^Filesystem UUID:\\s+${uuid}$`, "m"), "the same file system to anything that names it");
    const menu = execFileSync("debugfs", ["-R", "cat /boot/grub/menu.lst", image], { stdio: ["ignore", "pipe", "ignore"] }).toString();
    assert.match(menu, /^kernel \/boot\/vmlinuz-\S+ root=LABEL=nixos ro console=ttyS0$/m);
    const again = await v("image", "debian", "--into", image, "-p", WALKTHROUGH_PACKAGES, "--grub-menu");
    assert.notEqual(again.code, 0, "a file system that already holds files is refused");
    assert.match(again.stderr, /already holds files/);

    // The wiki's domain config, in xm syntax as it is written there.
    const cfg = join(dir, "mrkitty.cfg");
    writeFileSync(
      cfg,
      [
        "from xen.util.path import *",
        "name = 'mrkitty'",
        "memory = 512",
        "kernel = XENFIRMWAREDIR + '/pv-grub-x86_64.gz'",
        "extra = '(hd0)/boot/grub/menu.lst'",
        `disk = [ 'file:${image},xvda1,w' ]`,
        "vif = [ '' ]",
        "",
      ].join("\n"),
    );

    // xl create -c: the console from the start of the boot until the login prompt, then Ctrl-].
    const create = spawn(process.execPath, [VMSTACK_BIN, "create", "-c", cfg], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    create.stdout.on("data", (b: Buffer) => (out += b.toString()));
    create.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const closed = new Promise<number | null>((res) => create.once("close", res));
    const t0 = Date.now();
    for (let i = 0; i < 1500 && !/mrkitty login:/.test(out) && create.exitCode === null; i++) await sleep(200);
    assert.match(out, /mrkitty login:/, `no login prompt on the console (create: ${err.trim() || "still attached"})\n${out.slice(-2000)}`);
    t.diagnostic(`login prompt ${((Date.now() - t0) / 1000).toFixed(1)} s after create -c`);
    assert.match(out, /Debian GNU\/Linux 12 mrkitty ttyS0/);
    create.stdin.write(Buffer.from([0x1d]));
    assert.equal(await closed, 0, err);

    // Detached, the domain runs on: it is listed, its agent answers, and it is the Debian on the disk.
    assert.match(await ok("list"), /^mrkitty\s+\d+\s+512\s+1\s+[-r][-b]----/m);
    const inside = await ok("exec", "mrkitty", "--", "sh", "-c", "cat /etc/hostname /etc/debian_version /proc/cmdline; findmnt -no FSTYPE /");
    const [hostname, version, cmdline, fstype] = inside.trim().split("\n");
    assert.equal(hostname, "mrkitty");
    assert.match(version ?? "", /^12\./);
    assert.match(cmdline ?? "", /root=LABEL=nixos ro console=ttyS0/);
    assert.equal(fstype, "ext3");
    assert.match(await ok("dmesg"), /mrkitty: booting GRUB entry 0 'Debian GNU\/Linux' from \/boot\/grub\/menu\.lst \(whole disk\)/);

    // xl shutdown -w: the guest's systemd powers off cleanly (ACPI power button → logind).
    await ok("shutdown", "-w", "mrkitty");
    assert.doesNotMatch(await ok("list"), /^mrkitty\s/m);
    assert.match(readFileSync(join(dir, "s", "log", "mrkitty.console.log"), "utf8"), /reboot: Power down/);
  } finally {
    await h.close();
  }
});

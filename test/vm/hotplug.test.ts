/**
 * Hotplug on a real guest under TCG, through the CLI as a user runs it: one q35 domain booted once
 * (the default guest, whose initrd carries virtio_blk, virtio_net and virtio_balloon for this, and
 * the SCSI cdrom drivers for its empty cdrom drive), then cd-insert and cd-eject of a disc the
 * guest reads, block-attach of a raw image the guest reads back, mem-set through a balloon added on the
 * fly, network-attach, vcpu-set, a save and restore that must find every hot-plugged device where
 * the guest saw it, block-detach, and a vmstackd restart that still sees the current devices.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, vmUnavailable, type CliResult } from "../support/cli.js";
import { domainHarness } from "../support/domains.js";

test("hotplug: a disc and a disk the guest reads, balloon, a NIC, vCPUs, save/restore with them, detach, and the device set after a vmstackd restart", { timeout: 300_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const h = domainHarness("hp", { slow: (m) => t.diagnostic(m) });
  const { dir, v, ok } = h;
  const xsRead = (path: string): Promise<CliResult> => cli(["xenstore", "read", path], { env: { ...h.env, XENSTORED_PATH: join(dir, "r", "xenstored", "socket") } });
  /** The guest's answer, retried while the guest is still processing a hotplug event. */
  const guestUntil = async (what: string, argv: string[], check: (out: string) => boolean): Promise<string> => {
    let last = "";
    await h.until(what, async () => {
      const r = await v("exec", "hp", "--", ...argv);
      last = r.stdout;
      return r.code === 0 && check(r.stdout);
    });
    return last;
  };
  const memTotalKiB = async (): Promise<number> => Number(/MemTotal:\s+(\d+)/.exec(await ok("exec", "hp", "--", "cat", "/proc/meminfo"))?.[1]);
  const domid = async (): Promise<string> => (await ok("domid", "hp")).trim();
  const image = join(dir, "data.raw");
  writeFileSync(image, "hotplug-content-42\n");
  truncateSync(image, 4 * 1024 * 1024);
  const disc = join(dir, "disc.raw");
  writeFileSync(disc, "cd-content-77\n");
  truncateSync(disc, 1024 * 1024);
  try {
    const t0 = Date.now();
    // An empty SCSI cdrom drive, and the default guest asked for by name (with a drive, create
    // would otherwise boot it through the firmware).
    await ok("create", "name=hp", "memory=160", "maxvcpus=2", "boot.kernel=/vmstack-default-guest", 'disks=[{"media":"cdrom","interface":"scsi"}]');
    await ok("exec", "hp", "--", "true");
    t.diagnostic(`booted in ${Date.now() - t0} ms`);

    await t.test("cd-insert and cd-eject: the guest reads the disc, then finds no medium", async () => {
      assert.match(await ok("block-list", "hp"), /xvda\s+cdrom\s+\(empty\)$/m);
      await ok("cd-insert", "hp", "xvda", disc);
      assert.equal(await ok("exec", "hp", "--", "head", "-c", "14", "/dev/sr0"), "cd-content-77\n");
      assert.match(await ok("block-list", "hp"), /xvda\s+cdrom\s+.*disc\.raw$/m);
      await ok("cd-eject", "hp", "xvda");
      const empty = await v("exec", "hp", "--", "head", "-c", "14", "/dev/sr0");
      assert.notEqual(empty.code, 0);
      assert.match(empty.stderr, /No medium found/);
      assert.match(await ok("block-list", "hp"), /xvda\s+cdrom\s+\(empty\)$/m);
      // In again: the save and restore below must bring the disc back.
      await ok("cd-insert", "hp", "xvda", disc);
    });

    await t.test("block-attach: the guest sees a new virtio disk with the image's content; xenstore has it as Xen lays it out", async () => {
      assert.doesNotMatch(await ok("exec", "hp", "--", "cat", "/proc/partitions"), /\bvda\b/);
      const a0 = Date.now();
      await ok("block-attach", "hp", `${image},raw,xvdb,rw`);
      await guestUntil("vda in /proc/partitions", ["cat", "/proc/partitions"], (out) => /\bvda\b/.test(out));
      t.diagnostic(`disk visible in the guest ${Date.now() - a0} ms after block-attach`);
      assert.equal(await ok("exec", "hp", "--", "head", "-c", "19", "/dev/vda"), "hotplug-content-42\n");
      assert.match(await ok("block-list", "hp"), /^51728\s+0\s+51728\s+4\s.*xvdb\s+disk\s+.*data\.raw$/m);
      const id = await domid();
      assert.equal((await xsRead(`/local/domain/0/backend/vbd/${id}/51728/params`)).stdout.trim(), image);
      assert.equal((await xsRead(`/local/domain/${id}/device/vbd/51728/state`)).stdout.trim(), "4");
      const bad = await v("block-attach", "hp", `${image},qcow9,xvdc`);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /DISKSPEC \(argument 2\):1:\d+: error: format 'qcow9' is not one of/);
    });

    await t.test("mem-set: a balloon is added and inflated; the guest's MemTotal drops by the amount asked", async () => {
      const before = await memTotalKiB();
      await ok("mem-set", "hp", "112m");
      await guestUntil("MemTotal to drop by 48 MiB", ["cat", "/proc/meminfo"], (out) => Number(/MemTotal:\s+(\d+)/.exec(out)?.[1]) <= before - 47 * 1024);
      t.diagnostic(`MemTotal ${before} kB → ${await memTotalKiB()} kB`);
      assert.match(await ok("list", "hp"), /^hp\s+\d+\s+112\s/m);
      assert.equal((await xsRead(`/local/domain/${await domid()}/memory/target`)).stdout.trim(), String(112 * 1024));
      const over = await v("mem-set", "hp", "1g");
      assert.equal(over.code, 1);
      assert.match(over.stderr, /above hp's maxmem 160 MiB/);
    });

    await t.test("network-attach and vcpu-set: a second NIC and a second CPU appear in the guest", async () => {
      await ok("network-attach", "hp", "mac=00:16:3e:00:00:02");
      await guestUntil("eth1", ["ls", "/sys/class/net"], (out) => /\beth1\b/.test(out));
      assert.match(await ok("network-list", "hp"), /^1\s+0 00:16:3e:00:00:02\s/m);
      await ok("vcpu-set", "hp", "2");
      await guestUntil("two CPUs online", ["cat", "/sys/devices/system/cpu/online"], (out) => out.trim() === "0-1");
    });

    await t.test("save and restore bring back the inserted disc and the hot-plugged disk, NIC and balloon where the guest had them", async () => {
      const file = join(dir, "hp.save");
      const memBefore = await memTotalKiB();
      await ok("save", "hp", file);
      await ok("restore", file);
      assert.equal(await ok("exec", "hp", "--", "head", "-c", "19", "/dev/vda"), "hotplug-content-42\n");
      assert.equal(await ok("exec", "hp", "--", "head", "-c", "14", "/dev/sr0"), "cd-content-77\n");
      assert.match(await ok("exec", "hp", "--", "ls", "/sys/class/net"), /\beth1\b/);
      assert.equal(await memTotalKiB(), memBefore);
      assert.match(await ok("block-list", "hp"), /xvdb/);
    });

    await t.test("block-detach: the disk leaves the guest, block-list and xenstore", async () => {
      const d0 = Date.now();
      await ok("block-detach", "hp", "xvdb");
      t.diagnostic(`block-detach took ${Date.now() - d0} ms`);
      await guestUntil("vda to leave /proc/partitions", ["cat", "/proc/partitions"], (out) => !/\bvda\b/.test(out));
      assert.doesNotMatch(await ok("block-list", "hp"), /xvdb/);
      assert.equal((await xsRead(`/local/domain/0/backend/vbd/${await domid()}/51728/params`)).code, 1);
    });

    await t.test("after a vmstackd restart the domain's devices and resources are the current ones", async () => {
      process.kill(h.daemonPid(), "SIGKILL");
      const [row] = JSON.parse(await ok("list", "-l", "hp")) as Array<{ memoryMiB: number; vcpus: number; config: { disks: unknown[]; nics: Array<{ mac: string }> } }>;
      assert.ok(row);
      assert.deepEqual([row.memoryMiB, row.vcpus, row.config.disks.length], [112, 2, 1], "the cdrom drive stays; the detached disk is gone");
      assert.deepEqual(row.config.nics.map((n) => n.mac).slice(1), ["00:16:3e:00:00:02"]);
      await ok("network-detach", "hp", "00:16:3e:00:00:02");
      await guestUntil("eth1 to go", ["ls", "/sys/class/net"], (out) => !/\beth1\b/.test(out));
    });
  } finally {
    await h.close();
  }
});

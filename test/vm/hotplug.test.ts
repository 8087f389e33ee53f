/**
 * Hotplug on a real guest under TCG, through the CLI as a user runs it: one q35 domain booted once
 * (the default guest, whose initrd carries virtio_blk, virtio_net and virtio_balloon for this),
 * then block-attach of a raw image the guest reads back, block-detach, mem-set through a balloon
 * added on the fly, network-attach, vcpu-set, and a vmstackd restart that still sees the devices.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { cli, vmUnavailable, type CliResult } from "../support/cli.js";

test("hotplug: a disk the guest reads, detach, balloon, a NIC, vCPUs, and the device set after a vmstackd restart", { timeout: 240_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-hp-"));
  const env = { VMSTACK_STATE_DIR: join(dir, "s"), VMSTACK_RUN_DIR: join(dir, "r") };
  const v = async (...args: string[]): Promise<CliResult> => cli(args, { env });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await v(...args);
    assert.equal(r.code, 0, `vmstack ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  /** The guest's answer, retried while the guest is still processing a hotplug event. */
  const until = async (what: string, argv: string[], check: (out: string) => boolean): Promise<string> => {
    let last = "";
    for (let i = 0; i < 150; i++) {
      const r = await v("exec", "hp", "--", ...argv);
      last = r.stdout + r.stderr;
      if (r.code === 0 && check(r.stdout)) return r.stdout;
      await sleep(200);
    }
    assert.fail(`timed out waiting for ${what}; last output: ${last}`);
  };
  const xsRead = (path: string): Promise<CliResult> => cli(["xenstore", "read", path], { env: { ...env, XENSTORED_PATH: join(dir, "r", "xenstored", "socket") } });
  const memTotalKiB = async (): Promise<number> => Number(/MemTotal:\s+(\d+)/.exec(await ok("exec", "hp", "--", "cat", "/proc/meminfo"))?.[1]);
  const image = join(dir, "data.raw");
  writeFileSync(image, "hotplug-content-42\n");
  truncateSync(image, 4 * 1024 * 1024);
  try {
    const t0 = Date.now();
    await ok("create", "name=hp", "memory=160", "maxvcpus=2");
    await ok("exec", "hp", "--", "true");
    t.diagnostic(`booted in ${Date.now() - t0} ms`);

    await t.test("block-attach: the guest sees a new virtio disk with the image's content", async () => {
      const before = await ok("exec", "hp", "--", "cat", "/proc/partitions");
      assert.doesNotMatch(before, /\bvda\b/);
      const a0 = Date.now();
      await ok("block-attach", "hp", `${image},raw,xvdb,rw`);
      await until("vda in /proc/partitions", ["cat", "/proc/partitions"], (out) => /\bvda\b/.test(out));
      t.diagnostic(`disk visible in the guest ${Date.now() - a0} ms after block-attach`);
      assert.equal(await ok("exec", "hp", "--", "head", "-c", "19", "/dev/vda"), "hotplug-content-42\n");
      assert.match(await ok("block-list", "hp"), /^51728\s+0\s+51728\s+4\s.*xvdb\s+disk\s+.*data\.raw$/m);
      const id = (await ok("domid", "hp")).trim();
      assert.equal((await xsRead(`/local/domain/0/backend/vbd/${id}/51728/params`)).stdout.trim(), image);
      assert.equal((await xsRead(`/local/domain/${id}/device/vbd/51728/state`)).stdout.trim(), "4");
      const bad = await v("block-attach", "hp", `${image},qcow9,xvdc`);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /DISKSPEC \(argument 2\):1:\d+: error: format 'qcow9' is not one of/);
    });

    await t.test("block-detach: the disk leaves the guest, block-list and xenstore", async () => {
      const d0 = Date.now();
      await ok("block-detach", "hp", "xvdb");
      t.diagnostic(`block-detach took ${Date.now() - d0} ms`);
      await until("vda to leave /proc/partitions", ["cat", "/proc/partitions"], (out) => !/\bvda\b/.test(out));
      assert.doesNotMatch(await ok("block-list", "hp"), /xvdb/);
      const id = (await ok("domid", "hp")).trim();
      assert.equal((await xsRead(`/local/domain/0/backend/vbd/${id}/51728/params`)).code, 1);
      assert.equal((await xsRead(`/local/domain/${id}/memory/target`)).stdout.trim(), String(160 * 1024));
    });

    await t.test("mem-set: a balloon is added and inflated; the guest's MemTotal drops to about the target", async () => {
      const before = await memTotalKiB();
      await ok("mem-set", "hp", "112m");
      const target = before - 48 * 1024;
      await until("MemTotal to drop by 48 MiB", ["cat", "/proc/meminfo"], (out) => Number(/MemTotal:\s+(\d+)/.exec(out)?.[1]) <= target + 1024);
      t.diagnostic(`MemTotal ${before} kB → ${await memTotalKiB()} kB`);
      assert.match(await ok("list", "hp"), /^hp\s+\d+\s+112\s/m);
      const id = (await ok("domid", "hp")).trim();
      assert.equal((await xsRead(`/local/domain/${id}/memory/target`)).stdout.trim(), String(112 * 1024));
      const over = await v("mem-set", "hp", "1g");
      assert.equal(over.code, 1);
      assert.match(over.stderr, /above hp's maxmem 160 MiB/);
    });

    await t.test("network-attach and vcpu-set: a second NIC and a second CPU appear in the guest", async () => {
      await ok("network-attach", "hp", "mac=00:16:3e:00:00:02");
      await until("eth1", ["ls", "/sys/class/net"], (out) => /\beth1\b/.test(out));
      assert.match(await ok("network-list", "hp"), /^1\s+0 00:16:3e:00:00:02\s/m);
      await ok("vcpu-set", "hp", "2");
      await until("two CPUs online", ["cat", "/sys/devices/system/cpu/online"], (out) => out.trim() === "0-1");
    });

    await t.test("after a vmstackd restart the domain's devices and resources are the current ones", async () => {
      const pid = Number(readFileSync(join(dir, "r", "vmstackd.pid"), "utf8"));
      process.kill(pid, "SIGKILL");
      await sleep(200);
      const [row] = JSON.parse(await ok("list", "-l", "hp")) as Array<{ memoryMiB: number; vcpus: number; config: { disks: unknown[]; nics: Array<{ mac: string }> } }>;
      assert.ok(row);
      assert.deepEqual([row.memoryMiB, row.vcpus, row.config.disks.length], [112, 2, 0]);
      assert.deepEqual(row.config.nics.map((n) => n.mac).slice(1), ["00:16:3e:00:00:02"]);
      await ok("network-detach", "hp", "00:16:3e:00:00:02");
      await until("eth1 to go", ["ls", "/sys/class/net"], (out) => !/\beth1\b/.test(out));
    });
  } finally {
    await v("destroy", "hp");
    if (existsSync(join(dir, "r", "vmstackd.pid"))) process.kill(Number(readFileSync(join(dir, "r", "vmstackd.pid"), "utf8")), "SIGTERM");
    await sleep(300);
    rmSync(dir, { recursive: true, force: true });
  }
});

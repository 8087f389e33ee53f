/**
 * Domains on real VMs under TCG, through the CLI exactly as a user runs it: vmstackd started on
 * demand in temporary directories, two domains, every lifecycle verb, kill -9 of the daemon, a
 * killed QEMU, a guest reboot and a guest panic, and failed creates that must leave nothing behind.
 * Four boots in all (each costs seconds of CPU on a shared 2-core host).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VMSTACK_BIN, cli, vmUnavailable } from "../support/cli.js";
import { domainHarness, type DomainRow as Row } from "../support/domains.js";

test("domains: create, list, console, pause, rename, kill -9 vmstackd, on_crash, reboot, panic, shutdown, destroy, failed creates", { timeout: 240_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const h = domainHarness("lc", { slow: (m) => t.diagnostic(m) });
  const { dir, env, v, ok, list, daemonPid } = h;
  const row = async (name: string): Promise<Row | undefined> => (await list()).find((d) => d.name === name);
  const until = (what: string, check: () => Promise<boolean>): Promise<void> => h.until(what, check);
  try {
    await ok("create", "name=a", "memory=128", "machine=pc", "onCrash=preserve");
    await ok("create", "name=b", "memory=128", "machine=pc", "onCrash=restart");
    const table = await ok("list");
    assert.match(table, /^Name\s+ID\s+Mem VCPUs\s+State\s+Time\(s\)$/m);
    assert.match(table, /^Domain-0\s+0\s/m);
    assert.match(table, /^a\s+\d+\s+128\s+1\s+[-r][-b]----/m);

    await t.test("two consoles at once both see the guest's output; Ctrl-] detaches and the domain runs on", async () => {
      assert.equal((await ok("exec", "a", "--", "true")), ""); // the guest is up
      const viewers = [0, 1].map(() => {
        const c = spawn(process.execPath, [VMSTACK_BIN, "console", "a"], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
        let out = "";
        c.stdout.on("data", (b: Buffer) => (out += b.toString()));
        const closed = new Promise<number | null>((res) => c.once("close", res));
        return { c, out: () => out, closed };
      });
      // Printed again until both have seen it: a viewer's CLI may still be starting on a loaded host.
      await until("both viewers to see the mark", async () => {
        if (viewers.every((x) => x.out().includes("console-mark-42"))) return true;
        await ok("exec", "a", "--", "sh", "-c", "echo console-mark-42 > /dev/ttyS0");
        await sleep(300);
        return viewers.every((x) => x.out().includes("console-mark-42"));
      });
      for (const x of viewers) x.c.stdin.write(Buffer.from([0x1d]));
      assert.deepEqual(await Promise.all(viewers.map((x) => x.closed)), [0, 0]);
      assert.match((await row("a"))?.state ?? "", /^[r-][b-]----$/);
      assert.match(readFileSync(join(dir, "s", "log", "a.console.log"), "utf8"), /console-mark-42/);
    });

    await t.test("pause and unpause show p; rename, domid, domname, uptime, sysrq and trigger work", async () => {
      await ok("pause", "a");
      assert.equal((await row("a"))?.state, "--p---");
      await ok("unpause", "a");
      assert.notEqual((await row("a"))?.state, "--p---");
      await ok("rename", "a", "alpha");
      const id = (await ok("domid", "alpha")).trim();
      assert.equal((await ok("domname", id)).trim(), "alpha");
      assert.match(await ok("uptime"), /^alpha\s+\d+ 0:00:\d\d$/m);
      await ok("sysrq", "alpha", "h");
      await ok("trigger", "alpha", "nmi");
      assert.equal((await v("domid", "nosuch")).code, 1);
    });

    await t.test("after kill -9 of vmstackd both domains are listed and controllable", async () => {
      const guests = (rows: Row[]): unknown[] => rows.filter((d) => d.domid !== 0).map((d) => [d.name, d.domid, d.pid]);
      const before = await list();
      const old = daemonPid();
      process.kill(old, "SIGKILL");
      await sleep(200);
      const after = await list(); // starts a new vmstackd, which re-attaches
      assert.notEqual(daemonPid(), old);
      assert.equal(guests(before).length, 2);
      assert.deepEqual(guests(after), guests(before));
      await ok("pause", "b");
      assert.equal((await row("b"))?.state, "--p---");
      await ok("unpause", "b");
      assert.equal((await ok("exec", "b", "--", "echo", "still-here")).trim(), "still-here");
    });

    await t.test("a killed QEMU is a crash: on_crash=restart starts the domain again", async () => {
      const old = (await row("b"))?.pid;
      assert.ok(old);
      process.kill(old, "SIGKILL");
      await until("b to restart", async () => {
        const r = await row("b");
        return r !== undefined && r.pid !== null && r.pid !== old;
      });
      assert.match((await ok("dmesg")), /b: QEMU ended \(killed\); action restart/);
    });

    await t.test("shutdown -w ends the domain through the guest (on_poweroff=destroy)", async () => {
      await ok("exec", "b", "--", "true");
      await ok("shutdown", "-w", "b");
      assert.equal(await row("b"), undefined);
    });

    await t.test("a guest reboot applies on_reboot=restart; a guest panic (pvpanic) with on_crash=preserve shows c", async () => {
      const pid = (await row("alpha"))?.pid;
      await ok("reboot", "alpha");
      await until("the reset", async () => /alpha: reset/.test(await ok("dmesg")));
      assert.equal((await ok("exec", "alpha", "--", "echo", "rebooted")).trim(), "rebooted");
      assert.equal((await row("alpha"))?.pid, pid, "restart on reboot keeps the QEMU");
      await v("exec", "alpha", "--", "sh", "-c", "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger");
      await until("the crash", async () => ((await row("alpha"))?.state ?? "").includes("c"));
      await ok("destroy", "alpha");
      assert.equal(await row("alpha"), undefined);
    });

    await t.test("failed creates leave nothing behind: bad config, QEMU refusing to start, overcommit", async () => {
      const bad = await v("create", "name=x", "memory=nope");
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /memory/);
      const qemuFails = await v("create", "name=y", "memory=96", "machine=pc", 'extraArgs=["-no-such-option"]');
      assert.equal(qemuFails.code, 1);
      assert.match(qemuFails.stderr, /QEMU exited at start.*no-such-option/);
      const tooBig = await v("create", "name=z", "memory=99999999", "machine=pc");
      assert.equal(tooBig.code, 1);
      assert.match(tooBig.stderr, /not enough memory for 'z'.*--force/);
      assert.deepEqual((await list()).map((d) => d.name), ["Domain-0"]);
      assert.deepEqual(readdirSync(join(dir, "s", "domains")), []);
      assert.ok(!existsSync(join(dir, "r", "d")) || readdirSync(join(dir, "r", "d")).length === 0);
      const xs = await cli(["xenstore", "ls", "/local/domain"], { env: { ...env, XENSTORED_PATH: join(dir, "r", "xenstored", "socket") } });
      assert.equal(xs.code, 0, xs.stderr);
      assert.doesNotMatch(xs.stdout, /^\s*[1-9]\d* =/m, "only Domain-0 in xenstore");
      const ps = await cli(["list", "--json"], { env });
      assert.equal(ps.code, 0);
    });
  } finally {
    await h.close();
  }
});

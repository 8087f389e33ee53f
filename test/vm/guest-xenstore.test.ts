/**
 * Guests see xenstore, on real VMs under TCG through the CLI: two default-guest domains (q35 and
 * pc; the default guest of domains boots the sh init, which starts the agent), each with its xenstore channel
 * bound to its domid by vmstackd. Inside the guests: the xenstore tools read the domain's own
 * nodes, write under data/, watch, and get EACCES for another domain's and dom0's nodes; the
 * agent's reports appear in the store; the channel comes back after kill -9 of vmstackd; and
 * control/shutdown powers a guest off or reboots it, acknowledged by the agent. Two boots and a reboot.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { vmUnavailable, type CliResult } from "../support/cli.js";
import { domainHarness } from "../support/domains.js";

test("guest xenstore: tools in the guest, EACCES across domains, reports, vmstackd restart, control/shutdown", { timeout: 300_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const h = domainHarness("xsg");
  const { dir, v, ok } = h;
  const until = (what: string, check: () => Promise<boolean>): Promise<void> => h.until(what, check);
  const inGuest = (d: string, ...argv: string[]): Promise<CliResult> => v("exec", d, "--", ...argv);
  try {
    // Both settle before anything is asserted, so a failed create never races the clean-up.
    const created = await Promise.allSettled([ok("create", "name=xa", "memory=128"), ok("create", "name=xb", "memory=128", "machine=pc")]);
    for (const c of created) if (c.status === "rejected") throw c.reason;
    const ida = (await ok("domid", "xa")).trim();
    const idb = (await ok("domid", "xb")).trim();
    // The agent reports once its relay is connected: data/booted is written last.
    for (const id of [ida, idb]) {
      await until(`domain ${id}'s data/booted`, async () => (await v("xenstore", "read", `/local/domain/${id}/data/booted`)).stdout.trim() === "1");
    }

    await t.test("a guest reads its own nodes (relative and absolute) with the multi-call tools", async () => {
      assert.equal((await ok("exec", "xa", "--", "xenstore-read", "name")).trim(), "xa");
      assert.equal((await ok("exec", "xb", "--", "xenstore-read", `/local/domain/${idb}/domid`)).trim(), idb);
      assert.equal((await ok("exec", "xb", "--", "vmstack-agent", "xenstore", "read", "name")).trim(), "xb");
    });

    await t.test("a guest writes under data/ and the host sees it; the agent's reports are there", async () => {
      await ok("exec", "xa", "--", "xenstore-write", "data/from-guest", "hello");
      assert.equal((await ok("xenstore", "read", `/local/domain/${ida}/data/from-guest`)).trim(), "hello");
      const uname = (await ok("exec", "xa", "--", "uname", "-r")).trim();
      assert.equal((await ok("xenstore", "read", `/local/domain/${ida}/data/os_uname`)).trim(), uname);
      assert.match(await ok("xenstore", "read", `/local/domain/${ida}/drivers/0`), /^vmstack-agent /);
      assert.equal((await ok("xenstore", "read", `/local/domain/${ida}/control/feature-poweroff`)).trim(), "1");
      const ls = await ok("exec", "xa", "--", "xenstore-ls");
      assert.match(ls, /^ from-guest = "hello"$/m);
    });

    await t.test("another domain's home and dom0's nodes are EACCES from inside a guest", async () => {
      for (const p of [`/local/domain/${idb}/name`, "/local/domain/0/name"]) {
        const r = await inGuest("xa", "xenstore-read", p);
        assert.equal(r.code, 1, `${p}: ${r.stdout}`);
        assert.match(r.stderr, /Permission denied \(EACCES\)/);
      }
      const w = await inGuest("xb", "xenstore-write", `/local/domain/${ida}/data/from-guest`, "evil");
      assert.match(w.stderr, /EACCES/);
      assert.equal((await ok("xenstore", "read", `/local/domain/${ida}/data/from-guest`)).trim(), "hello");
    });

    await t.test("a watch in the guest sees a change the host makes", async () => {
      // In the background, into a file: the watch's own output is what is checked, nothing else.
      await ok("exec", "xa", "--", "sh", "-c", "xenstore-watch -n 2 data/ping >/tmp/watch.out 2>&1 &");
      let out = "";
      // Written until the watch reports it: the watch may register after the first write.
      for (let i = 0; out.split("\n").length < 3 && i < 100; i++) {
        await ok("xenstore", "write", `/local/domain/${ida}/data/ping`, String(i));
        await sleep(300);
        out = await ok("exec", "xa", "--", "cat", "/tmp/watch.out");
      }
      // The registration fires once (xenstore.txt), then the change.
      assert.deepEqual(out.trim().split("\n"), ["data/ping", "data/ping"]);
    });

    await t.test("vmstack reboot goes through control/shutdown; the rebooted guest reports again on the same channel", async () => {
      const boots = (): number => (readFileSync(join(dir, "s", "log", "xa.console.log"), "utf8").match(/vmstack-agent: ready/g) ?? []).length;
      const before = boots();
      await ok("reboot", "xa");
      assert.match(await ok("dmesg"), /xa: the guest acknowledged control\/shutdown = reboot/);
      // `reboot` returns once the guest acknowledged; the reset (which clears the old boot's
      // reports) and the new boot follow.
      await until("xa to boot again", async () => boots() === before + 1);
      await until("xa's new boot to report", async () => (await v("xenstore", "read", `/local/domain/${ida}/data/booted`)).stdout.trim() === "1");
      assert.equal((await ok("exec", "xa", "--", "xenstore-read", "name")).trim(), "xa");
      assert.equal((await ok("domid", "xa")).trim(), ida);
    });

    await t.test("after kill -9 of vmstackd the guest's xenstore channel works again", async () => {
      const pid = Number(readFileSync(join(dir, "r", "vmstackd.pid"), "utf8"));
      process.kill(pid, "SIGKILL");
      await sleep(200);
      await ok("list"); // a new vmstackd re-attaches, the channel included
      await until("the guest's relay to reconnect", async () => (await inGuest("xa", "xenstore-read", "name")).stdout.trim() === "xa");
      assert.match(await ok("dmesg"), /re-attached xa/);
    });

    await t.test("control/shutdown = poweroff: the agent acknowledges and the domain powers off", async () => {
      await ok("xenstore", "write", `/local/domain/${idb}/control/shutdown`, "poweroff");
      await until("xb to go", async () => !(await ok("list")).includes("xb "));
      assert.match(readFileSync(join(dir, "s", "log", "xb.console.log"), "utf8"), /control\/shutdown = poweroff: acknowledged; powering off/);
    });

    await t.test("vmstack shutdown -w reaches the agent through control/shutdown too", async () => {
      await ok("shutdown", "-w", "xa");
      assert.ok(!(await ok("list")).includes("xa "));
      assert.match(readFileSync(join(dir, "s", "log", "xa.console.log"), "utf8"), /control\/shutdown = poweroff: acknowledged/);
      assert.match(await ok("dmesg"), /xa: the guest acknowledged control\/shutdown = poweroff/);
    });
  } finally {
    await h.close();
  }
});

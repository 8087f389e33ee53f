/**
 * vmstackd against a fake QEMU (a small Node script speaking QMP on the socket its argv names and
 * writing a console line): the daemon's own logic — records, xenstore, re-attach after kill -9,
 * on_crash and on_poweroff actions, rollback of a failed create — in seconds, without booting.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { vmstackdRequest } from "../../src/vmm/api/client.js";
import type { DomainInfo, Request } from "../../src/vmm/api/protocol.js";
import { isVmstackError } from "../../src/lib/errors.js";
import { connectXenstore } from "../../src/xenstore/client.js";
import { writeFakeQemu, type FakeQemuParts } from "../support/fake-qemu.js";

const FAKE_QEMU: FakeQemuParts = {
  prelude: `
if (args.includes("-fail-at-start")) { process.stderr.write("fake-qemu: -fail-at-start: invalid option\\n"); process.exit(1); }
let status = args.includes("-S") ? "prelaunch" : "running";`,
  qmp: `
switch (m.execute) {
  case "query-status": reply({ status, running: status === "running" }); break;
  case "stop": status = "paused"; reply({}); event("STOP", {}); break;
  case "cont": status = "running"; reply({}); event("RESUME", {}); break;
  case "quit": reply({}); event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" }); setTimeout(() => process.exit(0), 5); break;
  case "system_powerdown":
    reply({}); event("SHUTDOWN", { guest: true, reason: "guest-shutdown" });
    // -action shutdown=pause (on_poweroff=preserve): QEMU stays, stopped.
    if (args.some((a) => a.includes("shutdown=pause"))) status = "shutdown"; else setTimeout(() => process.exit(0), 5);
    break;
  default: reply({});
}`,
  // Echo what viewers type, so a test can see input reach the guest and output reach every viewer.
  console: `
c.write("fake console line\\n");
c.on("data", (d) => c.write("echo:" + d));`,
};

interface Env {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  req(r: Request): Promise<unknown>;
  list(): Promise<DomainInfo[]>;
  daemonPid(): number;
}

const VMSTACKD = fileURLToPath(new URL("../../src/bin/vmstackd.js", import.meta.url));

async function withDaemon(fn: (e: Env) => Promise<void>, moreEnv: Record<string, string> = {}): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-lcd-"));
  const fake = writeFakeQemu(dir, FAKE_QEMU);
  const env = { ...process.env, VMSTACK_STATE_DIR: join(dir, "s"), VMSTACK_RUN_DIR: join(dir, "r"), VMSTACK_QEMU: fake, VMSTACK_LOG: "", VMSTACK_ACCEL: "tcg", ...moreEnv };
  const e: Env = {
    dir,
    env,
    req: (r) => vmstackdRequest(r, { env }),
    list: async () => (await vmstackdRequest({ op: "list", domains: [] }, { env })) as DomainInfo[],
    daemonPid: () => Number(readFileSync(join(dir, "r", "vmstackd.pid"), "utf8")),
  };
  try {
    await fn(e);
  } finally {
    try {
      for (const d of await e.list()) if (d.domid !== 0) await e.req({ op: "destroy", domain: String(d.domid) });
      process.kill(e.daemonPid(), "SIGTERM");
    } catch (err) {
      // Best effort: the test may have left no daemon; report only real surprises.
      if (!isVmstackError(err) && (err as NodeJS.ErrnoException).code !== "ESRCH" && (err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}

const spec = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name, memory: 64, machine: "pc", accel: "tcg", boot: { kernel: "/nonexistent/vmlinuz" }, nics: [], ...extra,
});

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await sleep(50);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const pidAlive = (pid: number): boolean => existsSync(`/proc/${pid}`) && !/\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));

test("create, pause, xenstore records, console log and destroy, against a fake QEMU", async () => {
  await withDaemon(async (e) => {
    const info = (await e.req({ op: "create", config: spec("one"), paused: false, force: false })) as DomainInfo;
    assert.equal(info.name, "one");
    assert.ok(info.pid !== null && pidAlive(info.pid));
    const xs = await connectXenstore({ socket: join(e.dir, "r", "xenstored", "socket"), reconnect: false });
    try {
      assert.equal(await xs.read(`/local/domain/${info.domid}/name`), "one");
      assert.equal(await xs.read("/local/domain/0/name"), "Domain-0");
    } finally {
      await xs.close();
    }
    await until("the console line in the log", async () => existsSync(join(e.dir, "s", "log", "one.console.log")) && readFileSync(join(e.dir, "s", "log", "one.console.log"), "utf8").includes("fake console line"));
    await e.req({ op: "pause", domain: "one" });
    await until("state p", async () => (await e.list()).find((d) => d.name === "one")?.state === "--p---");
    await assert.rejects(e.req({ op: "create", config: spec("one"), paused: false, force: false }), /already exists/);
    await e.req({ op: "destroy", domain: "one" });
    assert.deepEqual((await e.list()).map((d) => d.name), ["Domain-0"]);
    await until("QEMU to be gone", async () => !pidAlive(info.pid as number));
    assert.deepEqual(readdirSync(join(e.dir, "s", "domains")), []);
  });
});

test("after kill -9 of vmstackd a new one re-attaches to the same QEMU and can control it", async () => {
  await withDaemon(async (e) => {
    const info = (await e.req({ op: "create", config: spec("survivor"), paused: false, force: false })) as DomainInfo;
    process.kill(e.daemonPid(), "SIGKILL");
    await sleep(100);
    const after = (await e.list()).find((d) => d.name === "survivor");
    assert.equal(after?.pid, info.pid);
    assert.equal(after?.domid, info.domid);
    await e.req({ op: "pause", domain: "survivor" });
    await until("state p", async () => (await e.list()).find((d) => d.name === "survivor")?.state === "--p---");
  });
});

test("a killed QEMU gets on_crash: restart starts a new one, destroy removes the domain", async () => {
  await withDaemon(async (e) => {
    const r = (await e.req({ op: "create", config: spec("phoenix", { onCrash: "restart" }), paused: false, force: false })) as DomainInfo;
    const d = (await e.req({ op: "create", config: spec("mortal"), paused: false, force: false })) as DomainInfo;
    process.kill(r.pid as number, "SIGKILL");
    process.kill(d.pid as number, "SIGKILL");
    await until("phoenix restarted and mortal gone", async () => {
      const rows = await e.list();
      const p = rows.find((x) => x.name === "phoenix");
      return p !== undefined && p.pid !== r.pid && p.pid !== null && !rows.some((x) => x.name === "mortal");
    });
  });
});

test("a clean shutdown with on_poweroff=destroy ends the domain; shutdown -w returns once it is gone", async () => {
  await withDaemon(async (e) => {
    await e.req({ op: "create", config: spec("polite"), paused: false, force: false });
    await e.req({ op: "shutdown", domain: "polite", wait: true, forceAfterMs: null });
    assert.deepEqual((await e.list()).map((d) => d.name), ["Domain-0"]);
  });
});

test("a create whose QEMU fails leaves no record, run directory, xenstore node or process", async () => {
  await withDaemon(async (e) => {
    await assert.rejects(e.req({ op: "create", config: spec("doomed", { extraArgs: ["-fail-at-start"] }), paused: false, force: false }), /QEMU exited at start.*-fail-at-start: invalid option/);
    await assert.rejects(e.req({ op: "create", config: spec("greedy", { memory: 50_000_000 }), paused: false, force: false }), /not enough memory for 'greedy'/);
    await assert.rejects(e.req({ op: "create", config: { name: "bad", memory: "lots" }, paused: false, force: false }), /invalid domain config/);
    assert.deepEqual((await e.list()).map((d) => d.name), ["Domain-0"]);
    assert.deepEqual(readdirSync(join(e.dir, "s", "domains")), []);
    assert.deepEqual(existsSync(join(e.dir, "r", "d")) ? readdirSync(join(e.dir, "r", "d")) : [], []);
    const xs = await connectXenstore({ socket: join(e.dir, "r", "xenstored", "socket"), reconnect: false });
    try {
      assert.deepEqual(await xs.directory("/local/domain"), ["0"]);
      assert.deepEqual((await xs.exists("/vm")) ? await xs.directory("/vm") : [], []);
    } finally {
      await xs.close();
    }
  });
});

test("two concurrent creates of one name: exactly one wins", async () => {
  await withDaemon(async (e) => {
    const results = await Promise.allSettled([0, 1].map(() => e.req({ op: "create", config: spec("twin"), paused: false, force: false })));
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    const failed = results.find((r) => r.status === "rejected");
    assert.match(String((failed as PromiseRejectedResult).reason), /already exists/);
  });
});

test("vmstackd refuses to run twice on one run directory", async () => {
  await withDaemon(async (e) => {
    await e.list();
    const second = spawn(process.execPath, [VMSTACKD], { env: e.env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    second.stdout.on("data", (c: Buffer) => (out += c.toString()));
    const code = await new Promise<number | null>((res) => second.once("close", res));
    assert.equal(code, 0);
    assert.match(out, /already runs/);
  });
});

test("on_poweroff=preserve keeps a shut-down domain as s; on_poweroff=restart boots it again; on_crash=preserve keeps a dead one as c", async () => {
  await withDaemon(async (e) => {
    await e.req({ op: "create", config: spec("keeper", { onPoweroff: "preserve" }), paused: false, force: false });
    const again = (await e.req({ op: "create", config: spec("again", { onPoweroff: "restart" }), paused: false, force: false })) as DomainInfo;
    const corpse = (await e.req({ op: "create", config: spec("corpse", { onCrash: "preserve" }), paused: false, force: false })) as DomainInfo;
    await e.req({ op: "shutdown", domain: "keeper", wait: true, forceAfterMs: null });
    await e.req({ op: "shutdown", domain: "again", wait: false, forceAfterMs: null });
    process.kill(corpse.pid as number, "SIGKILL");
    await until("the three outcomes", async () => {
      const rows = await e.list();
      const by = (n: string): DomainInfo | undefined => rows.find((d) => d.name === n);
      return by("keeper")?.state === "---s--" && (by("again")?.pid ?? again.pid) !== again.pid && by("again")?.pid !== null && by("corpse")?.state === "----c-";
    });
    await e.req({ op: "destroy", domain: "corpse" });
    await e.req({ op: "destroy", domain: "keeper" });
    assert.deepEqual((await e.list()).map((d) => d.name), ["Domain-0", "again"], ((await e.req({ op: "dmesg", clear: false })) as string[]).join("\n"));
  });
});

test("several console viewers at once: each sees the output, input reaches the guest", async () => {
  const { openDaemon, exchange } = await import("../../src/vmm/api/client.js");
  await withDaemon(async (e) => {
    await e.req({ op: "create", config: spec("chatty"), paused: false, force: false });
    const viewers = await Promise.all(
      [0, 1].map(async () => {
        const s = await openDaemon({ env: e.env });
        await exchange(s, { op: "console", domain: "chatty" });
        let out = "";
        s.on("data", (c: Buffer) => (out += c.toString()));
        return { s, out: () => out };
      }),
    );
    viewers[0]?.s.write("ping\n");
    await until("both viewers to see the echo", async () => viewers.every((v) => v.out().includes("echo:ping")));
    for (const v of viewers) v.s.destroy();
    assert.ok((await e.list()).some((d) => d.name === "chatty"), "the domain runs on after its viewers leave");
  });
});

test("a pv-grub domain boots the kernel, initrd and command line its own disk's menu.lst names", async (t) => {
  const mkfs = spawn("sh", ["-c", "command -v mkfs.ext4 && command -v debugfs"], { stdio: "ignore" });
  if ((await new Promise<number | null>((r) => mkfs.once("close", r))) !== 0) return t.skip("e2fsprogs missing (./setup installs it)");
  await withDaemon(async (e) => {
    const src = join(e.dir, "rootfs");
    const boot = join(src, "boot");
    mkdirSync(join(boot, "grub"), { recursive: true });
    writeFileSync(join(boot, "grub", "menu.lst"), "default 0\ntitle guest\nroot (hd0)\nkernel /boot/vmlinuz-x root=/dev/xvda1 ro\ninitrd /boot/initrd-x\n");
    writeFileSync(join(boot, "vmlinuz-x"), "KERNEL BYTES");
    writeFileSync(join(boot, "initrd-x"), "INITRD BYTES");
    const img = join(e.dir, "guest.img");
    await new Promise<void>((resolve, reject) =>
      spawn("mkfs.ext4", ["-q", "-d", src, "-F", img, "16M"], { stdio: "ignore" }).once("close", (c) => (c === 0 ? resolve() : reject(new Error(`mkfs.ext4 ${c}`)))),
    );
    const info = (await e.req({
      op: "create",
      config: spec("grubby", { boot: { guestGrub: { menu: "/boot/grub/menu.lst" } }, disks: [{ path: img, format: "raw" }] }),
      paused: false,
      force: false,
    })) as DomainInfo;
    const argv = readFileSync(`/proc/${info.pid}/cmdline`, "utf8").split("\0");
    const kernel = argv[argv.indexOf("-kernel") + 1]!;
    const initrd = argv[argv.indexOf("-initrd") + 1]!;
    assert.equal(readFileSync(kernel, "utf8"), "KERNEL BYTES");
    assert.equal(readFileSync(initrd, "utf8"), "INITRD BYTES");
    assert.equal(argv[argv.indexOf("-append") + 1], "root=/dev/xvda1 ro");
    const dmesg = JSON.stringify(await e.req({ op: "dmesg", clear: false }));
    assert.match(dmesg, /booting GRUB entry 0 'guest' from \/boot\/grub\/menu\.lst \(whole disk\)/);
  });
});

test("the embedded xenstored's busy-poll window: 200 µs through native I/O by default, VMSTACK_XENSTORED_BUSY_POLL_US sets it, a bad value is an error naming the variable", async () => {
  for (const [setting, want] of [[undefined, "busy-poll 200 µs)"], ["0", "busy-poll 0 µs)"]] as const) {
    await withDaemon(
      async (e) => {
        await e.list();
        const log = ((await e.req({ op: "dmesg", clear: false })) as string[]).join("\n");
        assert.ok(log.includes(want), `log says "${want}":\n${log}`);
      },
      setting === undefined ? {} : { VMSTACK_XENSTORED_BUSY_POLL_US: setting },
    );
  }
  const { xenstoredBusyPollUs } = await import("../../src/vmm/manager-daemon.js");
  assert.equal(xenstoredBusyPollUs({ env: {} }), 200);
  assert.equal(xenstoredBusyPollUs({ env: { VMSTACK_XENSTORED_BUSY_POLL_US: "50" } }), 50);
  assert.equal(xenstoredBusyPollUs({ xenstoredBusyPollUs: 0, env: { VMSTACK_XENSTORED_BUSY_POLL_US: "50" } }), 0, "the option wins");
  for (const bad of ["-1", "1e3", "fast", "10001"]) {
    assert.throws(() => xenstoredBusyPollUs({ env: { VMSTACK_XENSTORED_BUSY_POLL_US: bad } }), /VMSTACK_XENSTORED_BUSY_POLL_US must be a whole number of µs from 0 to 10000/, bad);
  }
});

test("a journal failure in the embedded xenstored stops vmstackd and its log says why", async () => {
  await withDaemon(async (e) => {
    await e.list();
    const pid = e.daemonPid();
    // The first compaction (past 8 MiB of journal) writes snapshot-2.tmp: a directory there fails it.
    mkdirSync(join(e.dir, "s", "xenstored", "snapshot-2.tmp"));
    const xs = await connectXenstore({ socket: join(e.dir, "r", "xenstored", "socket"), reconnect: false });
    const big = "v".repeat(4000);
    let failed = false;
    for (let i = 0; i < 2400 && !failed; i += 16) {
      const batch = Array.from({ length: 16 }, (_, k) => xs.write(`/big/k${i + k}`, big));
      failed = (await Promise.allSettled(batch)).some((r) => r.status === "rejected");
    }
    assert.ok(failed, "the daemon stopped answering once the journal failed");
    await until("vmstackd to exit", async () => !pidAlive(pid));
    const log = readFileSync(join(e.dir, "s", "log", "vmstackd.log"), "utf8");
    assert.match(log, /vmstackd stopping: its xenstored cannot write the journal in .*xenstored \(EISDIR/);
    await xs.close().catch(() => undefined);
  });
});

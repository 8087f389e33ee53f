/**
 * xl's on_crash actions beyond destroy/restart/preserve, on real VMs under TCG: coredump-destroy
 * writes the panicked guest's memory as an ELF core and ends the domain; rename-restart keeps the
 * crashed domain as NAME--incarnation-1 and starts a new NAME. On the way: a share with a target
 * is mounted in the guest by vmstackd (at create, and in the new incarnation). Three boots.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdirSync, openSync, readSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { vmUnavailable, type CliResult } from "../support/cli.js";
import { domainHarness } from "../support/domains.js";

test("on_crash coredump-destroy dumps the guest's memory and ends it; rename-restart keeps the crashed one renamed and starts a new one", { timeout: 240_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const h = domainHarness("crash");
  const { dir, v, ok, list, until } = h;
  const panic = (d: string): Promise<CliResult> => v("exec", d, "--", "sh", "-c", "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger");
  try {
    await ok("create", "name=cd", "memory=128", "machine=pc", "onCrash=coredump-destroy");
    // rr also shares a host directory, read-only, with a target: vmstackd mounts it through the
    // agent at create and again in the new incarnation.
    const shared = join(dir, "shared");
    mkdirSync(shared);
    writeFileSync(join(shared, "hello.txt"), "hello from the host\n");
    const spec = join(dir, "rr.json");
    writeFileSync(spec, JSON.stringify({ name: "rr", memory: 128, machine: "pc", onCrash: "rename-restart", shares: [{ tag: "hostdir", source: shared, target: "/mnt/host", readOnly: true }] }));
    await ok("create", spec);
    const before = await list();
    const rrId = before.find((d) => d.name === "rr")?.domid;
    assert.ok(rrId !== undefined);
    // Both guests up (exec waits for the agent), then both panic.
    await ok("exec", "cd", "--", "true");
    await ok("exec", "rr", "--", "true");
    const readShare = async (): Promise<string> => {
      // The mount follows the agent's first answer: give it a moment.
      for (let i = 0; i < 100; i++) {
        const r = await v("exec", "rr", "--", "cat", "/mnt/host/hello.txt");
        if (r.code === 0) return r.stdout;
        await sleep(300);
      }
      return (await v("exec", "rr", "--", "cat", "/mnt/host/hello.txt")).stderr;
    };
    assert.equal(await readShare(), "hello from the host\n");
    const write = await v("exec", "rr", "--", "sh", "-c", "echo x > /mnt/host/new.txt");
    assert.notEqual(write.code, 0, "a read-only share refuses writes");
    assert.match(write.stderr, /Read-only file system/);
    await Promise.all([panic("cd"), panic("rr")]);

    await until("cd to be gone", async () => !(await list()).some((d) => d.name === "cd"), 120);
    const dumps = readdirSync(join(dir, "s", "dump"));
    const core = dumps.find((f) => /^cd-.*\.core$/.test(f));
    assert.ok(core, `a core file for cd in ${JSON.stringify(dumps)}`);
    const path = join(dir, "s", "dump", core);
    const head = Buffer.alloc(5);
    const fd = openSync(path, "r");
    readSync(fd, head, 0, 5, 0);
    closeSync(fd);
    assert.deepEqual([...head], [0x7f, 0x45, 0x4c, 0x46, 2], "an ELF64 core");
    assert.ok(statSync(path).size >= 128 * 1024 * 1024, `the whole 128 MiB of guest memory (${statSync(path).size} bytes)`);
    assert.match(await ok("dmesg"), /cd: guest memory dumped to /);

    await until("rr to be renamed and a new rr to start", async () => {
      const rows = await list();
      return rows.some((d) => d.name === "rr--incarnation-1") && rows.some((d) => d.name === "rr");
    }, 120);
    const rows = await list();
    const kept = rows.find((d) => d.name === "rr--incarnation-1");
    const fresh = rows.find((d) => d.name === "rr");
    assert.equal(kept?.domid, rrId, "the crashed domain keeps its domid under the new name");
    assert.match(kept?.state ?? "", /c/, "and is listed as crashed");
    assert.notEqual(fresh?.domid, rrId, "the new incarnation has a new domid");
    assert.equal((await ok("exec", "rr", "--", "cat", "/proc/sys/kernel/hostname")).trim().length > 0, true, "the new one runs");
    assert.equal(await readShare(), "hello from the host\n", "and has its share mounted again");
    await ok("destroy", "rr--incarnation-1");
    assert.ok(!(await list()).some((d) => d.name === "rr--incarnation-1"));
  } finally {
    await h.close();
  }
});

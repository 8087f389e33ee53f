/**
 * xl's on_crash actions beyond destroy/restart/preserve, on real VMs under TCG: coredump-destroy
 * writes the panicked guest's memory as an ELF core and ends the domain; rename-restart keeps the
 * crashed domain as NAME--incarnation-1 and starts a new NAME. Three boots.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { cli, vmUnavailable, type CliResult } from "../support/cli.js";

interface Row { name: string; domid: number; state: string }

test("on_crash coredump-destroy dumps the guest's memory and ends it; rename-restart keeps the crashed one renamed and starts a new one", { timeout: 240_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-crash-"));
  const env = { VMSTACK_STATE_DIR: join(dir, "s"), VMSTACK_RUN_DIR: join(dir, "r") };
  const v = (...args: string[]): Promise<CliResult> => cli(args, { env });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await v(...args);
    assert.equal(r.code, 0, `vmstack ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const list = async (): Promise<Row[]> => JSON.parse(await ok("list", "--json")) as Row[];
  const until = async (what: string, check: () => Promise<boolean>): Promise<void> => {
    for (let i = 0; i < 600; i++) {
      if (await check()) return;
      await sleep(200);
    }
    assert.fail(`timed out waiting for ${what}; vmstackd said:\n${await ok("dmesg")}`);
  };
  const panic = (d: string): Promise<CliResult> => v("exec", d, "--", "sh", "-c", "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger");
  try {
    await ok("create", "name=cd", "memory=128", "machine=pc", "onCrash=coredump-destroy");
    await ok("create", "name=rr", "memory=128", "machine=pc", "onCrash=rename-restart");
    const before = await list();
    const rrId = before.find((d) => d.name === "rr")?.domid;
    assert.ok(rrId !== undefined);
    // Both guests up (exec waits for the agent), then both panic.
    await ok("exec", "cd", "--", "true");
    await ok("exec", "rr", "--", "true");
    await Promise.all([panic("cd"), panic("rr")]);

    await until("cd to be gone", async () => !(await list()).some((d) => d.name === "cd"));
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
    });
    const rows = await list();
    const kept = rows.find((d) => d.name === "rr--incarnation-1");
    const fresh = rows.find((d) => d.name === "rr");
    assert.equal(kept?.domid, rrId, "the crashed domain keeps its domid under the new name");
    assert.match(kept?.state ?? "", /c/, "and is listed as crashed");
    assert.notEqual(fresh?.domid, rrId, "the new incarnation has a new domid");
    assert.equal((await ok("exec", "rr", "--", "cat", "/proc/sys/kernel/hostname")).trim().length > 0, true, "the new one runs");
    await ok("destroy", "rr--incarnation-1");
    assert.ok(!(await list()).some((d) => d.name === "rr--incarnation-1"));
  } finally {
    const r = await v("list", "--json");
    if (r.code === 0) for (const d of JSON.parse(r.stdout) as Row[]) if (d.domid !== 0) await v("destroy", String(d.domid));
    const pidFile = join(dir, "r", "vmstackd.pid");
    if (existsSync(pidFile)) process.kill(Number(readFileSync(pidFile, "utf8")), "SIGTERM");
    await sleep(300);
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Save and restore on real VMs under TCG, through the CLI as a user runs it: a counter in guest
 * memory keeps counting across `save -c` and `save -p`, across a save failing on a full disk,
 * across `save` + kill -9 of vmstackd + `restore -p`, and across `domains stop` + `domains start`
 * with a hand-made domain and one from the auto directory. Damaged save files are refused and
 * change nothing. Two boots in all.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnSync } from "node:child_process";
import { cli, vmUnavailable, type CliResult } from "../support/cli.js";
import { domainHarness, type DomainRow as Row } from "../support/domains.js";

/** A shell loop in the guest, detached from the agent's exec, counting into /tmp (guest RAM). */
const COUNTER = 'setsid sh -c "i=0; while true; do i=\\$((i+1)); echo \\$i > /tmp/count; sleep 0.1; done" </dev/null >/dev/null 2>&1 &';

test("save and restore: save -c/-p, a disk-full save, damaged files, save + vmstackd kill -9 + restore -p, domains stop/start round trip", { timeout: 300_000 }, async (t) => {
  const skip = await vmUnavailable();
  if (skip) return t.skip(skip);
  const h = domainHarness("save", { env: (dir) => ({ VMSTACK_AUTO_DIR: join(dir, "auto"), VMSTACK_SAVE_DIR: join(dir, "save") }) });
  const { dir, env, v, ok, daemonPid } = h;
  const autoDir = h.env["VMSTACK_AUTO_DIR"] ?? "";
  const saveDir = h.env["VMSTACK_SAVE_DIR"] ?? "";
  mkdirSync(autoDir);
  const list = async (): Promise<Row[]> => (await h.list()).filter((d) => d.domid !== 0);
  const count = async (name: string): Promise<number> => Number((await ok("exec", name, "--", "cat", "/tmp/count")).trim());
  /** The counter is still running: it moves on within a few seconds. */
  const counting = async (name: string, from: number): Promise<void> => {
    for (let i = 0; i < 100; i++) {
      if ((await count(name)) > from) return;
      await sleep(100);
    }
    assert.fail(`${name}'s counter stays at ${from}`);
  };
  try {
    await ok("create", "name=a", "memory=128", "machine=pc");
    const token = `token-${randomUUID()}`;
    await ok("exec", "a", "--", "sh", "-c", `echo ${token} > /tmp/token; ${COUNTER}`);
    await counting("a", 0);
    const f1 = join(dir, "a-checkpoint.save");

    await t.test("save -c writes the file and leaves the domain running, its counter going on", async () => {
      const before = await count("a");
      const r = JSON.parse(await ok("save", "-c", "--json", "a", f1)) as { bytes: number; domain: string };
      assert.equal(r.domain, "running");
      assert.equal(r.bytes, readFileSync(f1).length);
      assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith(".")), [], "no partial file is left");
      assert.match((await list())[0]?.state ?? "", /^[r-][b-]----$/);
      await counting("a", before);
      const nowhere = await v("save", "a", join(dir, "no-such-dir", "a.save"));
      assert.equal(nowhere.code, 1);
      assert.match(nowhere.stderr, /cannot write .*no-such-dir/);
      assert.match((await list())[0]?.state ?? "", /^[r-][b-]----$/, "a failed save leaves the domain running");
      await counting("a", await count("a"));
    });

    await t.test("a save that fails half-way (disk full) leaves no file and the domain running", async (st) => {
      // A 2 MiB tmpfs fills up mid-stream (the state is ~15 MiB).
      const full = join(dir, "full");
      mkdirSync(full);
      if (spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", full]).status !== 0) return st.skip("cannot mount a tmpfs here (CI runs as root, where it can)");
      try {
        const r = await v("save", "-c", "a", join(full, "a.save"));
        assert.equal(r.code, 1);
        assert.match(r.stderr, /saving a to .*full\/a\.save failed: ENOSPC/);
        assert.deepEqual(readdirSync(full), [], "no partial file is left");
      } finally {
        spawnSync("umount", [full]);
      }
      assert.match((await list())[0]?.state ?? "", /^[r-][b-]----$/);
      await counting("a", await count("a"));
    });

    await t.test("save -p leaves the domain paused (through the native front end, FILE relative to the caller's directory)", async () => {
      const paused = join(dir, "a-paused.save");
      const r = await cli(["save", "-p", "a", "a-paused.save"], { env, cwd: dir, front: true });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /domain paused/);
      assert.ok(existsSync(paused), "the file is where the caller named it");
      assert.equal((await list())[0]?.state, "--p---");
      await ok("unpause", "a");
      await counting("a", await count("a"));
      rmSync(paused);
    });

    await t.test("a corrupt, truncated or foreign save file, or a name already running, is refused and changes nothing", async () => {
      const good = readFileSync(f1);
      const flipped = Buffer.from(good);
      flipped[flipped.length >> 1] = (flipped[flipped.length >> 1] as number) ^ 0xff;
      const cases: [string, Buffer, RegExp][] = [
        ["flipped.save", flipped, /corrupt: the checksum does not match/],
        ["short.save", good.subarray(0, good.length - 4096), /truncated/],
        ["foreign.save", Buffer.from("name = 'a'\nmemory = 128\n"), /not a vmstack save file/],
      ];
      const ids = (rows: Row[]): unknown[] => rows.map((d) => [d.name, d.domid, d.pid]);
      const before = await list();
      const records = readdirSync(join(dir, "s", "domains")).sort();
      for (const [name, bytes, pattern] of cases) {
        const path = join(dir, name);
        writeFileSync(path, bytes);
        const r = await v("restore", path);
        assert.equal(r.code, 1, `${name} restored`);
        assert.match(r.stderr, pattern);
        assert.ok(r.stderr.includes(path), "the error names the file");
      }
      const dup = await v("restore", f1);
      assert.equal(dup.code, 1);
      assert.match(dup.stderr, /a domain named 'a' already exists/);
      assert.deepEqual(ids(await list()), ids(before));
      assert.deepEqual(readdirSync(join(dir, "s", "domains")).sort(), records);
      assert.deepEqual(readdirSync(join(dir, "r", "d")).sort(), before.map((d) => String(d.domid)).sort(), "no run directory of a half-restored domain");
    });

    await t.test("save destroys the domain; after kill -9 of vmstackd, restore -p brings it back paused, then it counts on", async () => {
      const f2 = join(dir, "a.save");
      const last = await count("a");
      const oldId = (await list())[0]?.domid;
      assert.match(await ok("save", "a", f2), /domain destroyed/);
      assert.deepEqual(await list(), []);
      const old = daemonPid();
      process.kill(old, "SIGKILL");
      await sleep(200);
      await ok("restore", "-p", f2);
      assert.notEqual(daemonPid(), old);
      const rows = await list();
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.name, "a");
      assert.notEqual(rows[0]?.domid, oldId, "a restored domain gets a new domid, as in xl");
      assert.equal(rows[0]?.state, "--p---");
      const xs = await cli(["xenstore", "read", `/local/domain/${rows[0]?.domid}/name`], { env: { ...env, XENSTORED_PATH: join(dir, "r", "xenstored", "socket") } });
      assert.equal(xs.stdout.trim(), "a", "the restored domain's xenstore nodes are there");
      await ok("unpause", "a");
      assert.equal((await ok("exec", "a", "--", "cat", "/tmp/token")).trim(), token, "guest memory is the saved one");
      assert.equal((await ok("exec", "a", "--", "xenstore-read", "domid")).trim(), String(rows[0]?.domid), "the guest's xenstore channel is bound to its new domid");
      const now = await count("a");
      assert.ok(now >= last, `the counter continues (${now} after restore, ${last} before the save)`);
      await counting("a", now);
    });

    await t.test("domains stop saves a hand-made domain and an autostart one; domains start restores both and creates nothing twice", async () => {
      writeFileSync(join(autoDir, "b.json"), JSON.stringify({ name: "b", memory: 128, machine: "pc" }));
      assert.match(await ok("domains", "start"), /^b: create ok/m);
      await ok("exec", "b", "--", "sh", "-c", COUNTER);
      await counting("b", 0);
      const lastA = await count("a");
      const lastB = await count("b");
      const stop = (await ok("domains", "stop", "--json")).trim().split("\n").map((l) => JSON.parse(l) as { domain: string; action: string; ok: boolean });
      assert.deepEqual(stop.map((p) => [p.domain, p.action, p.ok]).sort(), [["a", "save", true], ["b", "save", true]]);
      assert.deepEqual(await list(), []);
      assert.deepEqual(readdirSync(saveDir).sort(), ["a.save", "b.save"]);
      const start = (await ok("domains", "start", "--json")).trim().split("\n").map((l) => JSON.parse(l) as { domain: string; action: string; ok: boolean });
      assert.deepEqual(start.map((p) => [p.domain, p.action, p.ok]), [["a", "restore", true], ["b", "restore", true], ["b", "skip", true]]);
      assert.deepEqual(readdirSync(saveDir), [], "restored save files are deleted");
      assert.deepEqual((await list()).map((d) => d.name).sort(), ["a", "b"]);
      assert.ok((await count("a")) >= lastA);
      assert.ok((await count("b")) >= lastB);
      await counting("b", await count("b"));
    });
  } finally {
    await h.close();
  }
});

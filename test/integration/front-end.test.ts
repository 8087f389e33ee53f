/**
 * The native front end (front/vmstack.c) against a real vmstackd: for the quick verbs vmstackd
 * runs the command and the front end relays it, byte for byte what the Node.js CLI prints; for
 * every other verb, and when vmstackd is not running, it is the Node.js CLI.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, FRONT_BIN, VMSTACK_BIN } from "../support/cli.js";
import { retryUntil } from "../../src/lib/retry.js";

const frontMissing = existsSync(FRONT_BIN) ? undefined : "the native front end is not built (npm run build)";

async function startDaemon(env: NodeJS.ProcessEnv): Promise<() => Promise<void>> {
  const child = spawn(process.execPath, [VMSTACK_BIN, "vmstackd"], { env, stdio: "ignore" });
  const sock = join(env["VMSTACK_RUN_DIR"] ?? "", "vmstackd.sock");
  await retryUntil(
    async () => {
      const s = connect(sock);
      try {
        await once(s, "connect");
        return true;
      } catch {
        return undefined;
      } finally {
        s.destroy();
      }
    },
    { what: "vmstackd", timeoutMs: 20_000, initialDelayMs: 20, maxDelayMs: 100 },
  );
  return async () => {
    child.kill("SIGTERM");
    await once(child, "exit");
  };
}

void test("the quick verbs through vmstackd print exactly what the Node.js CLI prints, with its exit status", async (t) => {
  if (frontMissing) return t.skip(frontMissing);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-front-"));
  const env = { ...process.env, VMSTACK_RUN_DIR: join(dir, "run"), VMSTACK_STATE_DIR: join(dir, "state"), VMSTACK_NO_AUTOSTART: "1" };
  const stop = await startDaemon(env);
  t.after(async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const cases = [
    ["list"],
    ["list", "--json"],
    ["list", "--help"],
    ["domid", "nosuch"],
    ["pause"],
    ["list", 'quote" back\\slash\nnewline ünïcode'],
    ["destroy", "--bogus", "x"],
  ];
  for (const args of cases) {
    const viaNode = await cli(args, { env });
    const viaFront = await cli(args, { env, front: true });
    // Domain-0's CPU time and uptime move between the two calls (and may be whole numbers in one
    // and not the other): compare list's shape only.
    const norm = (s: string): string => s.replace(/"(cpuSeconds|uptimeSeconds)": [\d.]+/g, '"$1": N').replace(/\d+\.\d+/g, "N");
    assert.equal(viaFront.code, viaNode.code, `exit status of ${JSON.stringify(args)}`);
    assert.equal(norm(viaFront.stdout), norm(viaNode.stdout), `stdout of ${JSON.stringify(args)}`);
    assert.equal(viaFront.stderr, viaNode.stderr, `stderr of ${JSON.stringify(args)}`);
  }
  // save and restore behave the same through vmstackd from another directory (save's error here is
  // the missing domain; the save-restore VM test saves to a relative FILE through the front end)...
  const elsewhere = join(dir, "elsewhere");
  mkdirSync(elsewhere);
  for (const args of [["restore", "saves/nosuch.save"], ["save", "nosuch", "saves/x.save"]]) {
    const viaNode = await cli(args, { env, cwd: elsewhere });
    const viaFront = await cli(args, { env, cwd: elsewhere, front: true });
    assert.equal(viaFront.code, viaNode.code, `exit status of ${JSON.stringify(args)}`);
    assert.equal(viaFront.stderr, viaNode.stderr, `stderr of ${JSON.stringify(args)}`);
  }
  // ...and restore resolves FILE against the caller's directory, not vmstackd's.
  const restore = await cli(["restore", "saves/nosuch.save"], { env: { ...env, VMSTACK_NODE: join(dir, "no-such-node") }, cwd: elsewhere, front: true });
  assert.equal(restore.code, 1, "restore ran inside vmstackd (there is no Node.js CLI to fall back to)");
  assert.ok(restore.stderr.includes(join(elsewhere, "saves/nosuch.save")), restore.stderr);
  // Proof that the quick path went through vmstackd and not the Node.js CLI: with no Node.js to
  // exec it still works, while a verb that needs the CLI cannot start.
  const noNode = { ...env, VMSTACK_NODE: join(dir, "no-such-node") };
  const r = await cli(["list"], { env: noNode, front: true });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Name\s+ID\s+Mem/);
  const other = await cli(["info"], { env: noNode, front: true });
  assert.equal(other.code, 125);
  assert.match(other.stderr, /cannot run .*no-such-node/);
});

void test("without vmstackd, and for other verbs, the front end is the Node.js CLI", async (t) => {
  if (frontMissing) return t.skip(frontMissing);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-front-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env, VMSTACK_RUN_DIR: join(dir, "run"), VMSTACK_STATE_DIR: join(dir, "state"), VMSTACK_NO_AUTOSTART: "1" };
  for (const args of [["list"], ["--version"], ["info", "--help"], []]) {
    const viaNode = await cli(args, { env });
    const viaFront = await cli(args, { env, front: true });
    assert.equal(viaFront.code, viaNode.code, `exit status of ${JSON.stringify(args)}`);
    assert.equal(viaFront.stdout, viaNode.stdout);
    assert.equal(viaFront.stderr, viaNode.stderr);
  }
  const r = await cli(["list"], { env, front: true });
  assert.match(r.stderr, /vmstackd is not running/);
});

/**
 * vmstack/testing on real VMs (TCG here): two machines talking over a VLAN, every verb, timeouts
 * with useful messages, outcomes (FAILURE, ERROR, CRASH), cleanup after a thrown error and after
 * Ctrl-C, no hang when a background process holds stdout. Kept lean: every boot costs seconds of
 * CPU on a shared 2-core host, so the verbs share machines.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { runTests, TestFailure, type Machine, type RunReport, type TestDefinition } from "../../src/testing/index.js";
import { startCli, vmUnavailable } from "../support/cli.js";

let skip: string | undefined;
before(async () => {
  skip = await vmUnavailable();
  if (skip) console.log(`# skipping real-VM tests: ${skip}`);
});

const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/vm-tests/", import.meta.url));

function def(name: string, fn: TestDefinition["fn"]): TestDefinition {
  return { name, fn, file: "testing-machine.test.ts", options: {} };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function qemuChildren(parent: number): number[] {
  try {
    return execFileSync("pgrep", ["-P", String(parent), "qemu-system"], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map(Number);
  } catch (e) {
    // pgrep exits 1 when nothing matches.
    if ((e as { status?: number }).status === 1) return [];
    throw e;
  }
}

function explain(report: RunReport): string {
  return report.results.map((r) => `${r.name}: ${r.outcome} ${r.message ?? ""}`).join("\n");
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test("two machines reach each other by name over a VLAN, and every verb does what it says", async (t) => {
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-verbs-"));
  const hostPort = await freePort();
  const report = await runTests(
    [
      def("verbs", async ({ machine, vlan }) => {
        const server = await machine("server", { network: [vlan(1)] });
        await server.succeed("mkdir -p /srv && echo hello > /srv/index.html && httpd -p 80 -h /srv");
        // Declared once the server is up: the server's /etc/hosts must learn the newcomer.
        const client = await machine("client", { network: [vlan(1)], nat: true });

        // Network by name.
        await server.waitForOpenPort(80);
        assert.equal(await client.succeed("wget -qO- http://server/"), "hello\n");
        await client.start({ timeout: 120_000, signal: AbortSignal.timeout(180_000) });
        assert.match(await server.succeed(["cat", "/etc/hosts"]), /192\.168\.1\.2 client/);
        assert.match(await client.succeed(["cat", "/etc/hosts"]), /192\.168\.1\.1 server/);

        // execute keeps stdout, stderr and the status apart; succeed/fail check the status.
        const r = await server.execute("echo out; echo err >&2; exit 3");
        assert.deepEqual([r.exitCode, r.stdout, r.stderr], [3, "out\n", "err\n"]);
        await server.fail("false");
        await assert.rejects(server.succeed("exit 4"), (e: unknown) => e instanceof TestFailure && /exit status 4/.test(e.message));

        // A background process holding stdout does not hang succeed.
        assert.equal(await server.succeed("sleep 600 & echo started"), "started\n");

        // Polling waits.
        await server.succeed("(sleep 1; touch /tmp/later) >/dev/null 2>&1 &");
        await server.waitForFile("/tmp/later");
        await server.waitUntilSucceeds("test -e /tmp/later");
        await server.succeed("(sleep 1; rm /tmp/later) >/dev/null 2>&1 &");
        await server.waitUntilFails("test -e /tmp/later");
        await server.succeed("killall httpd");
        await server.waitForClosedPort(80);

        // Console: read and type.
        await server.succeed("echo marker-4711 >/dev/console");
        assert.equal(await server.waitForConsoleText(/marker-\d+/), "marker-4711");
        await server.succeed("head -n 1 /dev/ttyS0 >/tmp/typed 2>/dev/null &");
        await server.sendConsole("typed-on-the-console\n");
        await server.waitUntilSucceeds("grep -q typed-on-the-console /tmp/typed");

        // A timeout names what was awaited and shows the console tail.
        await assert.rejects(server.waitForFile("/nope", { timeout: 1500 }), (e: unknown) => {
          assert.ok(e instanceof TestFailure);
          assert.match(e.message, /server: timed out after 1500 ms waiting for waitForFile\("\/nope"\)/);
          assert.match(e.message, /last console lines:[\s\S]*marker-4711/);
          return true;
        });
        // ... and honours an AbortSignal.
        await assert.rejects(server.waitForFile("/nope", { signal: AbortSignal.timeout(200) }));

        // Files both ways.
        writeFileSync(join(dir, "in.txt"), "from the host\n");
        await client.copyFromHost(join(dir, "in.txt"), "/root/deep/in.txt");
        await client.succeed("sed s/host/guest/ /root/deep/in.txt >/root/out.txt");
        const back = await client.copyFromVm("/root/out.txt", dir);
        assert.equal(readFileSync(back, "utf8"), "from the guest\n");

        // Pulling the cable.
        await server.succeed("httpd -p 80 -h /srv");
        await client.block();
        await client.fail("timeout 2 wget -qO- http://server/");
        await client.unblock();
        // (busybox 1.35 wget -T segfaults, hence timeout(1).)
        await client.waitUntilSucceeds("timeout 2 wget -qO- http://server/");

        // A forwarded host port reaches the guest through NAT.
        await client.succeed("mkdir -p /www && echo forwarded > /www/index.html && httpd -p 8080 -h /www");
        await client.forwardPort(hostPort, 8080);
        const res = await fetch(`http://127.0.0.1:${hostPort}/`);
        assert.equal(await res.text(), "forwarded\n");

        // Power: crash, reboot, a guest that powers itself off.
        await server.crash();
        assert.equal(server.isUp, false);
        await assert.rejects(server.succeed("true"), /server is stopped/);
        await client.reboot();
        assert.equal(await client.succeed("cat /tmp/typed 2>/dev/null; echo fresh"), "fresh\n");
        await client.succeed("(sleep 1; poweroff -f) >/dev/null 2>&1 &");
        await client.waitForShutdown();
        assert.equal(client.isUp, false);
      }),
    ],
    { accel: "tcg" },
  );
  rmSync(dir, { recursive: true, force: true });
  assert.equal(report.outcome, "SUCCESS", explain(report));
});

test("failures, errors and crashes get their own outcomes, and every machine is stopped after each", async (t) => {
  if (skip) return t.skip(skip);
  const pids: number[] = [];
  const track = (m: Machine): void => void m.start().then(() => pids.push(m.pid), () => undefined);
  const report = await runTests(
    [
      def("a failed command", async ({ machine }) => {
        const m = await machine("box");
        track(m);
        await m.succeed("exit 3");
      }),
      def("a thrown error", async ({ machine }) => {
        const m = await machine("box");
        track(m);
        await m.start();
        throw new Error("bug in the test script");
      }),
      def("a guest panic", async ({ machine }) => {
        const m = await machine("box");
        track(m);
        await m.execute("echo c >/proc/sysrq-trigger");
      }),
      def("a throw while a machine still boots", async ({ machine }) => {
        await machine("late");
        throw new TypeError("bug before the machine was up");
      }),
    ],
    // The first test boots and saves "box"; the others start from that snapshot.
    { accel: "tcg", snapshots: true },
  );
  assert.deepEqual(
    report.results.map((r) => r.outcome),
    ["FAILURE", "ERROR", "CRASH", "ERROR"],
    explain(report),
  );
  assert.match(report.results[0]?.message ?? "", /box: succeed\("exit 3"\): expected the command to exit 0, got exit status 3/);
  assert.match(report.results[2]?.message ?? "", /box stopped unexpectedly \(guest kernel panic/);
  assert.equal(pids.length, 3);
  for (const pid of pids) assert.equal(alive(pid), false, `QEMU ${pid} still runs`);
  assert.deepEqual(qemuChildren(process.pid), [], "a QEMU outlived its test");
});

test("Ctrl-C during vmstack test stops every machine and exits 130", async (t) => {
  if (skip) return t.skip(skip);
  const { child, done } = startCli(["test", join(FIXTURES, "hang.vm.ts")]);
  let qemuPids: number[] = [];
  // Once the machine has booted and the endless command runs, interrupt.
  await new Promise<void>((resolve, reject) => {
    let err = "";
    const timer = setTimeout(() => reject(new Error(`no boot line in time:\n${err}`)), 120_000);
    child.stderr?.on("data", (c: Buffer) => {
      err += c.toString();
      if (/sleeper: boot/.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  qemuPids = qemuChildren(child.pid ?? -1);
  assert.equal(qemuPids.length, 1);
  child.kill("SIGINT");
  const r = await done;
  assert.equal(r.code, 130, r.stderr);
  assert.match(r.stderr, /interrupted; every machine was stopped/);
  for (const pid of qemuPids) assert.equal(alive(pid), false, `QEMU ${pid} still runs`);
});

test("--interactive keeps a failed test's machines up and runs shell lines in them through the agent", async (t) => {
  if (skip) return t.skip(skip);
  const { done } = startCli(["test", "--interactive", join(FIXTURES, "fails.vm.ts")], {
    stdin: ["box echo interactive-$((40 + 2))", ":use box", "uname -n", ":console box", ":continue", ""].join("\n"),
  });
  const r = await done;
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /FAILURE: a command fails: box: succeed/);
  assert.match(r.stderr, /^interactive-42$/m);
  assert.match(r.stderr, /^box$/m);
  assert.match(r.stderr, /vmstack-agent: ready/);
});

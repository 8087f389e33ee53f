/**
 * `vmstack run` end to end: the real CLI boots the real guest kernel under QEMU (TCG here) and runs
 * commands through the real agent.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { cli, startCli, vmUnavailable } from "../support/cli.js";

let skip: string | undefined;
before(async () => {
  skip = await vmUnavailable();
  if (skip) console.log(`# skipping real-VM tests: ${skip}`);
});


function qemuProcessesUsing(fragment: string): string[] {
  let out = "";
  try {
    out = execFileSync("pgrep", ["-af", "qemu-system"], { encoding: "utf8" });
  } catch (e) {
    // pgrep exits 1 when nothing matches.
    if ((e as { status?: number }).status !== 1) throw e;
  }
  return out.split("\n").filter((l) => l.includes(fragment));
}

test("stdout and stderr arrive separately and the exit status is the command's", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--mem", "256", "--cpus", "2", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
  assert.equal(r.stdout, "out\n");
  assert.equal(r.stderr, "err\n");
  assert.equal(r.code, 3);
});

test("stdin is streamed into the command", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--", "tr", "a-z", "A-Z"], { stdin: "hello\nworld\n" });
  assert.equal(r.stdout, "HELLO\nWORLD\n");
  assert.equal(r.code, 0);
});

test("the guest kernel is the provisioned Linux and the second run reuses the cached initrd", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["--verbose", "run", "--", "uname", "-a"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Linux vmstack \S+ .* x86_64/);
  assert.match(r.stderr, /initrd cached/);
  assert.match(r.stderr, /accelerator (tcg|kvm)/);
});

test("a command killed by a signal exits with 128 + the signal number", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--", "sh", "-c", "kill -TERM $$"]);
  assert.equal(r.code, 128 + 15);
});

test("--timeout kills the command inside the guest and exits 124", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--timeout", "1", "--", "sleep", "600"]);
  assert.equal(r.code, 124);
  assert.match(r.stderr, /timeout/);
});

test("a background process holding stdout open does not hang the run", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--", "sh", "-c", "sleep 600 & echo hi"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, "hi\n");
  assert.match(r.stderr, /background process .* held its output open/);
});

test("environment and working directory reach the command", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "-e", "GREETING=hi there", "-w", "/tmp", "-c", 'echo "$GREETING from $(pwd)"']);
  assert.equal(r.stdout, "hi there from /tmp\n");
});

test("a kernel path that does not exist is a clear error with vmstack's failure status", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--kernel", "/nonexistent/vmlinuz", "--", "true"]);
  assert.equal(r.code, 125);
  assert.match(r.stderr, /\/nonexistent\/vmlinuz/);
});

test("a guest that panics gives an error with the last console lines, not a hang", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["run", "--", "sh", "-c", "echo c > /proc/sysrq-trigger; sleep 600"]);
  assert.equal(r.code, 125);
  assert.match(r.stderr, /stopped unexpectedly/);
  assert.match(r.stderr, /Kernel panic|sysrq|SysRq/i);
});

test("Ctrl-C stops the VM and removes every temporary file and socket", async (t) => {
  if (skip) return t.skip(skip);
  // A private TMPDIR: other runs on the machine cannot be mistaken for this one.
  const tmp = mkdtempSync(join(tmpdir(), "vmstack-ctrlc-"));
  try {
    const runDirs = (): string[] => readdirSync(tmp).filter((n) => n.startsWith("vmstack-run-"));
    const { child, done } = startCli(["run", "--", "sh", "-c", "echo started; sleep 600"], { env: { TMPDIR: tmp } });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on("data", (c: Buffer) => c.toString().includes("started") && resolve());
      child.once("close", () => reject(new Error("vmstack run ended before the command started")));
    });
    const mine = runDirs();
    assert.equal(mine.length, 1, "one run directory while the VM runs");
    assert.equal(qemuProcessesUsing(mine[0]!).length, 1, "QEMU is running");
    child.kill("SIGINT");
    const r = await done;
    assert.equal(r.code, 130);
    assert.deepEqual(qemuProcessesUsing(mine[0]!), [], "no QEMU left running");
    assert.deepEqual(runDirs(), [], "run directory removed");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("a boot that stalls is retried with a new QEMU within the boot deadline", async (t) => {
  if (skip) return t.skip(skip);
  const dir = mkdtempSync(join(tmpdir(), "vmstack-stall-"));
  try {
    const marker = join(dir, "stalled");
    // --cold-boot: the stall happens in a kernel boot, which a restore from a boot snapshot skips.
    const r = await cli(["run", "--accel", "tcg", "--cold-boot", "--", "echo", "booted"], {
      env: {
        VMSTACK_QEMU: fileURLToPath(new URL("../../../test/fixtures/stalling-qemu", import.meta.url)),
        STALL_MARKER: marker,
        VMSTACK_BOOT_TIMEOUT_MS: "60000",
      },
    });
    assert.ok(existsSync(marker), "the first boot stalled");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "booted\n");
    assert.match(r.stderr, /boot attempt 1 stalled/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

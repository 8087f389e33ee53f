import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runChild } from "../../src/lib/run-child.js";
import { isVmstackError } from "../../src/lib/errors.js";

void test("runChild passes input on stdin and collects stdout", async () => {
  const r = await runChild(["tr", "a-z", "A-Z"], { input: Buffer.from("hello") });
  assert.equal(r.stdout.toString(), "HELLO");
  assert.equal(r.exitCode, 0);
});

void test("runChild can send stdout to a file", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-run-child-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await runChild(["printf", "%s", "to a file"], { stdoutFile: join(dir, "out") });
  assert.equal(readFileSync(join(dir, "out"), "utf8"), "to a file");
});

void test("a tool that is not installed is TOOL_MISSING naming it", async () => {
  await assert.rejects(runChild(["vmstack-no-such-tool", "x"]), (e) => isVmstackError(e, "TOOL_MISSING") && e.message.includes("vmstack-no-such-tool"));
});

void test("a failing tool is CHILD_FAILED with its exit code and the end of its stderr", async () => {
  await assert.rejects(
    runChild(["sh", "-c", "echo first >&2; echo 'the real reason' >&2; exit 3"]),
    (e) => isVmstackError(e, "CHILD_FAILED") && /exited with 3/.test(e.message) && e.message.includes("the real reason"),
  );
});

void test("aborting the signal stops the child and rejects with the abort reason", async () => {
  const controller = new AbortController();
  const started = Date.now();
  const pending = runChild(["sleep", "30"], { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("stop now")), 50);
  await assert.rejects(pending, /stop now/);
  assert.ok(Date.now() - started < 10_000, "the child did not run to completion");
});

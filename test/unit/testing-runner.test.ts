/**
 * The runner without booting any machine: loading TypeScript and JavaScript test files through the
 * real CLI, outcomes and exit statuses, JUnit and timeline files, a test's own deadline, Ctrl-C
 * between tests. Needs the guest image (the run prepares it), hence the skip without one.
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cli, vmUnavailable } from "../support/cli.js";
import { OUTCOME_EXIT, runTests, type TestDefinition } from "../../src/testing/index.js";

let skip: string | undefined;
before(async () => {
  skip = await vmUnavailable();
  if (skip) console.log(`# skipping: ${skip}`);
});

const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/vm-tests/", import.meta.url));

function def(name: string, fn: TestDefinition["fn"], timeout?: number): TestDefinition {
  return { name, fn, file: "runner", options: timeout === undefined ? {} : { timeout } };
}

test("vmstack test loads .ts (with its relative imports) and .mjs files and exits with the worst outcome", async (t) => {
  if (skip) return t.skip(skip);
  const out = mkdtempSync(join(tmpdir(), "vmstack-runner-"));
  try {
    const r = await cli(["test", "--out", out, join(FIXTURES, "loader-only.vm.ts"), join(FIXTURES, "no-machines.vm.mjs")]);
    assert.equal(r.code, OUTCOME_EXIT.FAILURE, r.stderr);
    assert.match(r.stderr, /✔ a TypeScript test file loads with its imports: SUCCESS/);
    assert.match(r.stderr, /✘ a failing expectation is a FAILURE: FAILURE/);
    assert.match(r.stderr, /○ a skipped test is a SKIP: SKIP/);
    assert.match(r.stderr, /✔ plain JavaScript test files work too: SUCCESS/);
    const junit = readFileSync(join(out, "junit.xml"), "utf8");
    assert.match(junit, /tests="4" failures="1" errors="0" skipped="1"/);
    const events = readFileSync(join(out, "timeline.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { type: string; t: number });
    assert.equal(events[0]?.type, "run-start");
    assert.equal(events.at(-1)?.type, "run-end");
    assert.ok(events.every((e, i) => i === 0 || e.t >= (events[i - 1]?.t ?? 0)), "timeline in time order");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("-t runs only the tests whose name matches, and a missing file is an error naming it", async (t) => {
  if (skip) return t.skip(skip);
  const r = await cli(["test", "-t", "loads", join(FIXTURES, "loader-only.vm.ts")]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /FAILURE/);
  const missing = await cli(["test", join(FIXTURES, "no-such.test.ts")]);
  assert.equal(missing.code, OUTCOME_EXIT.ERROR);
  assert.match(missing.stderr, /test file not found/);
  const none = await cli(["test"]);
  assert.equal(none.code, 2);
});

test("a test body that never settles ends at its deadline as a FAILURE saying so", async (t) => {
  if (skip) return t.skip(skip);
  const report = await runTests([def("stuck", () => new Promise<void>(() => undefined), 50)], { accel: "tcg" });
  assert.equal(report.results[0]?.outcome, "FAILURE");
  assert.match(report.results[0]?.message ?? "", /did not finish within 50 ms/);
});

test("an interrupt stops the run between tests and is reported as interrupted", async (t) => {
  if (skip) return t.skip(skip);
  const ac = new AbortController();
  const report = await runTests(
    [
      def("first", () => ac.abort(new Error("interrupted by SIGINT"))),
      def("second", () => undefined),
    ],
    { accel: "tcg", signal: ac.signal },
  );
  assert.equal(report.interrupted, true);
  assert.deepEqual(
    report.results.map((r) => r.name),
    ["first"],
  );
});

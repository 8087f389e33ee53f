/**
 * The xenstore conformance suite against vmstack's xenstored: in-process (openConnection) and over
 * its Unix socket, in memory and with a state directory (where every reply waits for its journal
 * record to be written, a different path for replies and events). The same cases run against Xen's daemons in xenstore-xen.test.ts.
 */
import { test } from "node:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCases } from "./xenstore-harness.js";
import { xenstoreCases } from "./xenstore-cases.js";
import { startVmstackInProcess, startVmstackSocket } from "./xenstore-targets.js";

await test("vmstack's xenstored in-process passes the xenstore conformance suite", async (t) => {
  const target = await startVmstackInProcess();
  try {
    await runCases(t, target, xenstoreCases);
  } finally {
    await target.stop();
  }
});

await test("vmstack's xenstored over its Unix socket passes the xenstore conformance suite", async (t) => {
  const target = await startVmstackSocket();
  try {
    await runCases(t, target, xenstoreCases);
  } finally {
    await target.stop();
  }
});

await test("vmstack's xenstored with a state directory (replies wait for the journal) passes the xenstore conformance suite", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-xs-state-"));
  const target = await startVmstackSocket({ stateDir: dir });
  try {
    await runCases(t, target, xenstoreCases);
  } finally {
    await target.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

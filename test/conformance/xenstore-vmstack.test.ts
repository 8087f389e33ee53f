/**
 * The xenstore conformance suite against vmstack's xenstored: in-process (openConnection) and over
 * its Unix socket. The same cases run against Xen's daemons in xenstore-xen.test.ts.
 */
import { test } from "node:test";
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

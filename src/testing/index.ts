/**
 * vmstack/testing: VM integration tests in TypeScript.
 *
 *   import { test, expect } from "vmstack/testing";
 *   test("web server answers", async ({ machine, vlan }) => {
 *     const server = await machine("server", { network: [vlan(1)] });
 *     const client = await machine("client", { network: [vlan(1)] });
 *     await server.succeed("mkdir -p /srv && echo hello > /srv/index.html && httpd -p 80 -h /srv");
 *     await server.waitForOpenPort(80);
 *     expect(await client.succeed("wget -qO- http://server/")).toContain("hello");
 *   });
 *
 * Run with `vmstack test FILE…`, or from a program with `runTests(registeredTests())`.
 */
export { test, runTests, registeredTests, collectTests } from "./test-run.js";
export type { TestContext, TestFn, TestOptions, TestDefinition, RunOptions, RunReport } from "./test-run.js";
export { Machine } from "./machine.js";
export type { MachineOptions, CommandOptions, WaitOptions, ExecuteResult, Command } from "./machine.js";
export { expect } from "./expect.js";
export type { Expectation } from "./expect.js";
export { TestFailure, TestSkipped, MachineCrashed, OUTCOMES, OUTCOME_EXIT, INTERRUPTED_EXIT, classifyError, worstOutcome } from "./errors.js";
export type { Outcome } from "./errors.js";
export { Timeline, humanLine, jsonLine } from "./timeline.js";
export type { TimelineEvent, Stamped, Sink } from "./timeline.js";
export { junitXml } from "./junit.js";
export type { TestResult } from "./junit.js";
export type { VlanRef } from "./network.js";
export { defaultTimeouts } from "./timeouts.js";
export type { Timeouts } from "./timeouts.js";
export { loadTestFiles } from "./load-tests.js";
export { startInteractive } from "./interactive.js";

/**
 * Tests and the runner. A test file calls `test(name, fn)` to register; `vmstack test` (or a
 * program through `runTests`) runs them one after another. Inside a test, `machine()` declares a
 * machine and starts booting it at once without waiting, so every machine of a test boots in
 * parallel; each verb then waits for its own machine. Whatever happens (an assertion, a crash,
 * Ctrl-C), every machine is stopped before the next test starts and before the run returns.
 */
import { MachineCrashed, TestFailure, TestSkipped, classifyError, worstOutcome, type Outcome } from "./errors.js";
import { Machine, type MachineOptions } from "./machine.js";
import { MachineHost, type MachineHostOptions } from "./machine-host.js";
import { parseMachineName, parseVlan, vlanAddress, type VlanRef } from "./network.js";
import { parseMachineOptions } from "./machine-options.js";
import { Timeline } from "./timeline.js";
import type { TestResult } from "./junit.js";
import { VmstackError, messageOf } from "../lib/errors.js";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestContext {
  /** Declares a machine and starts booting it (in parallel with the others); resolves at once. */
  machine(name: string, options?: MachineOptions): Promise<Machine>;
  /** VLAN n of this test (1–254); pass it in a machine's `network` list. */
  vlan(n: number): VlanRef;
  /** A line in the log and the timeline. */
  log(message: string): void;
  /** Ends the test as SKIP. */
  skip(reason: string): never;
  /** Aborted on Ctrl-C or when the test's deadline passes. */
  readonly signal: AbortSignal;
  /** Machines declared so far, by name. */
  readonly machines: ReadonlyMap<string, Machine>;
}

export type TestFn = (ctx: TestContext) => Promise<void> | void;

export interface TestOptions {
  /** Deadline for the whole test in ms (default: 4× the command timeout, scaled with the accelerator). */
  readonly timeout?: number;
}

export interface TestDefinition {
  readonly name: string;
  readonly fn: TestFn;
  readonly file: string;
  readonly options: TestOptions;
}

const registry: TestDefinition[] = [];
let currentFile = "(programmatic)";

/** Registers a test (collected by `vmstack test` when it imports a test file). */
export function test(name: string, fn: TestFn, options: TestOptions = {}): void {
  if (typeof name !== "string" || name === "") throw new VmstackError("BAD_TEST", "test(name, fn): the name must be a non-empty string");
  if (typeof fn !== "function") throw new VmstackError("BAD_TEST", `test(${JSON.stringify(name)}, fn): fn must be a function`);
  registry.push({ name, fn, file: currentFile, options });
}

/** The tests registered since the last call, tagged with `file` (used by the file loader). */
export function collectTests(file: string, load: () => Promise<void>): Promise<TestDefinition[]> {
  currentFile = file;
  const start = registry.length;
  return load().then(
    () => registry.splice(start),
    (e: unknown) => {
      registry.splice(start);
      throw e;
    },
  );
}

/** Tests registered outside any loader (a program that calls test() and then runTests()). */
export function registeredTests(): TestDefinition[] {
  return registry.splice(0);
}

export interface RunOptions extends MachineHostOptions {
  /** Only tests whose name contains this string. */
  readonly filter?: string;
  /**
   * Called when a test did not succeed, before its machines are stopped (interactive debugging).
   * The machines stay up until it resolves.
   */
  readonly onFailure?: (info: { test: string; outcome: Outcome; error: unknown; machines: ReadonlyMap<string, Machine> }) => Promise<void>;
}

export interface RunReport {
  readonly results: readonly TestResult[];
  readonly outcome: Outcome;
  readonly interrupted: boolean;
  readonly ms: number;
  readonly accel: string;
}

/** Runs tests one after another; never throws for a test's own failure (see the results). */
export async function runTests(tests: readonly TestDefinition[], options: RunOptions = {}): Promise<RunReport> {
  const t0 = performance.now();
  const timeline = options.timeline ?? new Timeline();
  const host = await MachineHost.create({ ...options, timeline });
  const results: TestResult[] = [];
  timeline.emit({ type: "run-start", accel: host.accel.accel, accelReason: host.accel.reason, files: [...new Set(tests.map((t) => t.file))] });
  try {
    const selected = options.filter === undefined ? tests : tests.filter((t) => t.name.includes(options.filter ?? ""));
    for (const [i, t] of selected.entries()) {
      if (options.signal?.aborted) break;
      results.push(await runOne(t, i, host, timeline, options));
    }
  } finally {
    host.dispose();
  }
  const interrupted = options.signal?.aborted ?? false;
  const outcome = worstOutcome(results.map((r) => r.outcome));
  const counts: Record<string, number> = {};
  for (const r of results) counts[r.outcome] = (counts[r.outcome] ?? 0) + 1;
  const ms = Math.round(performance.now() - t0);
  timeline.emit({ type: "run-end", outcome: interrupted ? "INTERRUPTED" : outcome, ms, counts });
  return { results, outcome, interrupted, ms, accel: host.accel.accel };
}

async function runOne(t: TestDefinition, epoch: number, host: MachineHost, timeline: Timeline, options: RunOptions): Promise<TestResult> {
  const t0 = performance.now();
  timeline.emit({ type: "test-start", test: t.name });
  const timeoutMs = t.options.timeout ?? host.timeouts.commandMs * 4;
  const controller = new AbortController();
  const deadline = setTimeout(() => controller.abort(new TestFailure(`test "${t.name}" did not finish within ${timeoutMs} ms`)), timeoutMs);
  const onRunAbort = (): void => controller.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onRunAbort, { once: true });
  const machines = new Map<string, Machine>();
  const ctx = testContext(t.name, epoch, host, timeline, machines, controller.signal);
  let outcome: Outcome = "SUCCESS";
  let message: string | undefined;
  let error: unknown;
  try {
    // The test body races its own deadline: a body stuck on something that ignores the signal
    // still ends the test.
    const aborted = new Promise<never>((_, reject) => controller.signal.addEventListener("abort", () => reject(controller.signal.reason), { once: true }));
    aborted.catch(() => undefined);
    await Promise.race([Promise.resolve().then(() => t.fn(ctx)), aborted]);
    const died = [...machines.values()].find((m) => m.unexpectedExit);
    if (died) throw new MachineCrashed(`${died.name} stopped during the test without being asked to (exit ${JSON.stringify(died.unexpectedExit)})`);
  } catch (e) {
    error = controller.signal.aborted && controller.signal.reason instanceof TestFailure ? controller.signal.reason : e;
    outcome = options.signal?.aborted ? "ERROR" : classifyError(error);
    message = options.signal?.aborted ? `interrupted: ${messageOf(options.signal.reason)}` : messageOf(error);
  } finally {
    clearTimeout(deadline);
    options.signal?.removeEventListener("abort", onRunAbort);
  }
  if (outcome !== "SUCCESS" && outcome !== "SKIP" && options.outDir !== undefined) saveConsoles(options.outDir, t.name, machines);
  try {
    if (outcome !== "SUCCESS" && outcome !== "SKIP" && options.onFailure && !options.signal?.aborted) {
      await options.onFailure({ test: t.name, outcome, error, machines });
    }
  } finally {
    controller.abort(new VmstackError("TEST_OVER", "the test is over"));
    await Promise.all([...machines.values()].map((m) => m.destroy()));
  }
  const ms = Math.round(performance.now() - t0);
  timeline.emit({ type: "test-end", test: t.name, outcome, ms, ...(message !== undefined ? { message } : {}) });
  return { name: t.name, file: t.file, outcome, ms, ...(message !== undefined ? { message } : {}) };
}

/** A failed test's console logs, one file per machine, for the post-mortem (house rule 9). */
function saveConsoles(outDir: string, test: string, machines: ReadonlyMap<string, Machine>): void {
  const dir = join(outDir, test.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "test");
  mkdirSync(dir, { recursive: true });
  for (const m of machines.values()) writeFileSync(join(dir, `${m.name}.console.log`), m.consoleText);
}

function testContext(
  test: string,
  epoch: number,
  host: MachineHost,
  timeline: Timeline,
  machines: Map<string, Machine>,
  signal: AbortSignal,
): TestContext {
  /** Machines per VLAN, in declaration order: the order gives the addresses. */
  const members = new Map<number, string[]>();
  const peers = (): Array<{ name: string; address: string }> =>
    [...machines.values()].flatMap((m) => {
      const first = [...m.addresses.values()][0];
      return first === undefined ? [] : [{ name: m.name, address: first }];
    });
  return {
    signal,
    machines,
    vlan: parseVlan,
    log: (message) => timeline.emit({ type: "log", test, message }),
    skip: (reason) => {
      throw new TestSkipped(reason);
    },
    machine: (rawName, rawOptions) => {
      let name: string;
      let options: MachineOptions;
      try {
        name = parseMachineName(rawName);
        options = parseMachineOptions(name, rawOptions);
      } catch (e) {
        return Promise.reject(e);
      }
      if (machines.has(name)) return Promise.reject(new VmstackError("DUPLICATE_MACHINE", `machine "${name}" is already declared in this test`));
      const addresses = new Map<number, string>();
      for (const v of options.network ?? []) {
        const list = members.get(v.vlan) ?? [];
        members.set(v.vlan, [...list, name]);
        addresses.set(v.vlan, vlanAddress(v.vlan, list.length));
      }
      const m = new Machine(name, options, host, { test, signal, epoch, peers }, addresses);
      // Machines already up learn the newcomer's name.
      if (addresses.size > 0) for (const other of machines.values()) if (other.addresses.size > 0) other.refreshHosts();
      machines.set(name, m);
      void m.start().catch(() => undefined);
      return Promise.resolve(m);
    },
  };
}

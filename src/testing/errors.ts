/**
 * Test outcomes, after XTF's model: SUCCESS, SKIP, FAILURE (the system under test misbehaved:
 * an assertion, a command that failed, a condition never reached), ERROR (the test could not be
 * carried out: a VM did not boot, QEMU or the agent broke, a bug in the test script) and CRASH (a
 * machine died while the test did not expect it: a guest panic, QEMU killed).
 * A test's outcome comes from what it threw, through `classifyError`, in one place.
 */
import { VmstackError, isVmstackError } from "../lib/errors.js";

export const OUTCOMES = ["SUCCESS", "SKIP", "FAILURE", "ERROR", "CRASH"] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** Process exit status of `vmstack test` for the worst outcome of a run. 2 is taken by usage errors. */
export const OUTCOME_EXIT: Readonly<Record<Outcome, number>> = { SUCCESS: 0, SKIP: 0, FAILURE: 1, ERROR: 3, CRASH: 4 };
/** Ctrl-C / SIGTERM: every machine was stopped. */
export const INTERRUPTED_EXIT = 130;

/** The system under test did not behave: an assertion, a failed command, a wait that timed out. */
export class TestFailure extends VmstackError {
  constructor(message: string, options: { cause?: unknown; facts?: Readonly<Record<string, unknown>> } = {}) {
    super("TEST_FAILED", message, options);
    this.name = "TestFailure";
  }
}

/** Thrown by `skip(reason)` inside a test. */
export class TestSkipped extends VmstackError {
  constructor(reason: string) {
    super("TEST_SKIPPED", reason);
    this.name = "TestSkipped";
  }
}

/** A machine stopped while the test did not ask for it. */
export class MachineCrashed extends VmstackError {
  constructor(message: string, options: { cause?: unknown; facts?: Readonly<Record<string, unknown>> } = {}) {
    super("MACHINE_CRASHED", message, options);
    this.name = "MachineCrashed";
  }
}

export function classifyError(e: unknown): Outcome {
  if (e instanceof TestSkipped) return "SKIP";
  if (e instanceof TestFailure) return "FAILURE";
  if (e instanceof MachineCrashed) return "CRASH";
  // node:assert's AssertionError is a test failure too: users may assert with it.
  if (e instanceof Error && e.name === "AssertionError") return "FAILURE";
  if (isVmstackError(e)) return "ERROR";
  return "ERROR";
}

const SEVERITY: Readonly<Record<Outcome, number>> = { SUCCESS: 0, SKIP: 1, FAILURE: 2, ERROR: 3, CRASH: 4 };

export function worstOutcome(outcomes: readonly Outcome[]): Outcome {
  return outcomes.reduce<Outcome>((w, o) => (SEVERITY[o] > SEVERITY[w] ? o : w), "SUCCESS");
}

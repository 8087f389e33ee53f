/**
 * Everything a test run does, as one ordered stream of events: test starts and ends, machine
 * boots, every command with its duration, console lines, QMP events. Sinks turn it into the
 * JSON-lines timeline file and the human log; the runner keeps per-test results for JUnit.
 */
export type TimelineEvent =
  | { readonly type: "run-start"; readonly accel: string; readonly accelReason: string; readonly files: readonly string[] }
  | { readonly type: "test-start"; readonly test: string }
  | { readonly type: "test-end"; readonly test: string; readonly outcome: string; readonly ms: number; readonly message?: string }
  | {
      readonly type: "step";
      readonly test: string;
      readonly machine?: string;
      readonly what: string;
      readonly ms: number;
      readonly ok: boolean;
      readonly error?: string;
      readonly detail?: Readonly<Record<string, unknown>>;
    }
  | {
      /** One agent command: what ran and how it ended (the step line shows it in the human log). */
      readonly type: "command";
      readonly test: string;
      readonly machine: string;
      readonly command: string | readonly string[];
      readonly exitCode: number | null;
      readonly signal: string | null;
      readonly timedOut: boolean;
      readonly outputHeldOpen: boolean;
      /** Host-side wall time of the request, in ms. */
      readonly ms: number;
      readonly stdoutBytes: number;
      readonly stderrBytes: number;
    }
  | { readonly type: "console"; readonly test: string; readonly machine: string; readonly line: string }
  | { readonly type: "qmp"; readonly test: string; readonly machine: string; readonly event: string; readonly data: Readonly<Record<string, unknown>> }
  | { readonly type: "log"; readonly test: string; readonly message: string }
  | { readonly type: "run-end"; readonly outcome: string; readonly ms: number; readonly counts: Readonly<Record<string, number>> };

/** An event as stored: with its time since the run started and the wall-clock time. */
export type Stamped = TimelineEvent & { readonly t: number; readonly at: string };

export type Sink = (e: Stamped) => void;

export class Timeline {
  readonly #sinks: Sink[] = [];
  readonly #t0 = performance.now();
  readonly #now: () => Date;

  constructor(options: { now?: () => Date } = {}) {
    this.#now = options.now ?? (() => new Date());
  }

  addSink(sink: Sink): void {
    this.#sinks.push(sink);
  }

  emit(e: TimelineEvent): void {
    const stamped: Stamped = { t: Math.round(performance.now() - this.#t0), at: this.#now().toISOString(), ...e };
    for (const s of this.#sinks) s(stamped);
  }
}

/** One JSON object per line (the timeline file). */
export function jsonLine(e: Stamped): string {
  return JSON.stringify(e) + "\n";
}

const DIM = "\x1b[2m";
const BOLD = "\x1b[1m";
const RED = "\x1b[31m";
const GREEN = "\x1b[32m";
const YELLOW = "\x1b[33m";
const RESET = "\x1b[0m";

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/**
 * The human log: a header per test, one indented line per step with its duration, console lines
 * dimmed and prefixed by machine, the outcome at the end. `undefined` means "print nothing".
 */
export function humanLine(e: Stamped, options: { color: boolean; console: boolean }): string | undefined {
  const c = (code: string, s: string): string => (options.color ? code + s + RESET : s);
  switch (e.type) {
    case "run-start":
      return c(DIM, `vmstack test: accelerator ${e.accel} (${e.accelReason})`);
    case "test-start":
      return c(BOLD, `▶ ${e.test}`);
    case "test-end": {
      const mark = e.outcome === "SUCCESS" ? c(GREEN, "✔") : e.outcome === "SKIP" ? c(YELLOW, "○") : c(RED, "✘");
      const msg = e.message ? `\n${indent(e.message, "    ")}` : "";
      return `${mark} ${e.test}: ${e.outcome} (${seconds(e.ms)})${msg}`;
    }
    case "step": {
      const who = e.machine ? `${e.machine}: ` : "";
      const line = `  ${who}${e.what} (${seconds(e.ms)})`;
      return e.ok ? line : c(RED, `${line} !! ${firstLine(e.error ?? "failed")}`);
    }
    case "console":
      return options.console ? c(DIM, `    ${e.machine} # ${e.line}`) : undefined;
    case "qmp":
      return undefined;
    case "command":
      // The step line already shows the command; only say what would otherwise surprise.
      return e.outputHeldOpen
        ? c(YELLOW, `  ${e.machine}: note: a background process kept the command's output open; it returned at its exit`)
        : undefined;
    case "log":
      return `  ${e.message}`;
    case "run-end": {
      const counts = Object.entries(e.counts)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${n} ${k}`)
        .join(", ");
      return c(BOLD, `${e.outcome} — ${counts || "no tests"} in ${seconds(e.ms)}`);
    }
  }
}

function firstLine(s: string): string {
  return s.split("\n")[0] ?? s;
}

function indent(s: string, prefix: string): string {
  return s
    .split("\n")
    .map((l) => prefix + l)
    .join("\n");
}

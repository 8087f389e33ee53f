/**
 * `vmstack test [options] FILE…`: run VM tests written with vmstack/testing. Parses argv and calls
 * the testing layer (house rule 3); the outputs are sinks on the run's timeline.
 */
import { createWriteStream, mkdirSync, writeFileSync, type WriteStream } from "node:fs";
import { dirname, join } from "node:path";
import type { Command, CommandContext } from "../command.js";
import { isVmstackError } from "../../lib/errors.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { INTERRUPTED_EXIT, OUTCOME_EXIT, Timeline, humanLine, jsonLine, junitXml, loadTestFiles, runTests, startInteractive } from "../../testing/index.js";
import type { AccelChoice } from "../../vmm/index.js";

const options = {
  out: { type: "string", short: "o", arg: "DIR", help: "write timeline.jsonl, junit.xml and copied files to DIR" },
  junit: { type: "string", arg: "FILE", help: "write JUnit XML to FILE" },
  timeline: { type: "string", arg: "FILE", help: "write the JSON-lines timeline to FILE" },
  filter: { type: "string", short: "t", arg: "TEXT", help: "run only tests whose name contains TEXT" },
  snapshots: { type: "boolean", help: "boot each machine shape once, then start it from a saved state in later tests" },
  interactive: { type: "boolean", short: "I", help: "on failure keep the machines up and open a shell prompt into them" },
  quiet: { type: "boolean", short: "q", help: "leave the machines' console lines out of the log (the timeline keeps them)" },
  accel: { type: "string", arg: "auto|kvm|tcg", default: "auto", help: "accelerator" },
  kernel: { type: "string", arg: "PATH", help: "guest kernel; also $VMSTACK_KERNEL" },
} as const;

export const testCommand: Command = {
  name: "test",
  summary: "run VM integration tests (files using vmstack/testing)",
  usage: "[options] FILE…",
  options,
  details: [
    "Test files are TypeScript (.ts, .mts: transpiled in memory, not type-checked) or JavaScript (.js, .mjs).",
    "",
    `Exit status: ${OUTCOME_EXIT.SUCCESS} all tests passed or were skipped; ${OUTCOME_EXIT.FAILURE} a test FAILED (assertion, command, timeout);`,
    `${OUTCOME_EXIT.ERROR} ERROR (the tests could not run: a file does not load, boot failure, broken test script); ${OUTCOME_EXIT.CRASH} CRASH (a machine died unexpectedly);`,
    `2 usage error; ${INTERRUPTED_EXIT} interrupted (every machine was stopped).`,
    "",
    "Examples:",
    "  vmstack test tests/web.test.ts",
    "  vmstack test --snapshots --out results/ tests/*.test.ts",
  ].join("\n"),
  async run(argv, ctx) {
    try {
      return await execute(argv, ctx);
    } catch (e) {
      if (ctx.signal.aborted) {
        ctx.stderr.write("vmstack test: interrupted; every machine was stopped\n");
        return INTERRUPTED_EXIT;
      }
      // A file that does not load, no guest kernel, no QEMU: the tests could not be carried out,
      // which is an ERROR (exit 3), not a test FAILURE (exit 1).
      if (isVmstackError(e) && e.code !== "USAGE") {
        ctx.stderr.write(`vmstack test: ${e.message}\n`);
        return OUTCOME_EXIT.ERROR;
      }
      throw e;
    }
  },
};

async function execute(argv: readonly string[], ctx: CommandContext): Promise<number> {
  const p = parseCommandArgs("test", argv, options);
  if (p.positionals.length === 0) throw usageError("test", "no test files given: vmstack test FILE…");
  const accel = stringOpt(p, "accel") ?? "auto";
  if (accel !== "auto" && accel !== "kvm" && accel !== "tcg") throw usageError("test", `--accel expects auto, kvm or tcg, got '${accel}'`);
  const out = stringOpt(p, "out");
  const junitPath = stringOpt(p, "junit") ?? (out ? join(out, "junit.xml") : undefined);
  const timelinePath = stringOpt(p, "timeline") ?? (out ? join(out, "timeline.jsonl") : undefined);
  if (out) mkdirSync(out, { recursive: true });

  const tests = await loadTestFiles(p.positionals);
  const timeline = new Timeline();
  const color = (ctx.stderr as { isTTY?: boolean }).isTTY === true;
  const showConsole = !boolOpt(p, "quiet");
  timeline.addSink((e) => {
    const line = humanLine(e, { color, console: showConsole });
    if (line !== undefined) ctx.stderr.write(line + "\n");
  });
  let jsonl: WriteStream | undefined;
  if (timelinePath) {
    mkdirSync(dirname(timelinePath), { recursive: true });
    const stream = createWriteStream(timelinePath);
    jsonl = stream;
    timeline.addSink((e) => stream.write(jsonLine(e)));
  }
  try {
    const report = await runTests(tests, {
      accel: accel as AccelChoice,
      kernelPath: stringOpt(p, "kernel"),
      snapshots: boolOpt(p, "snapshots"),
      outDir: out,
      timeline,
      signal: ctx.signal,
      ...(stringOpt(p, "filter") !== undefined ? { filter: stringOpt(p, "filter") ?? "" } : {}),
      ...(boolOpt(p, "interactive") ? { onFailure: (info) => startInteractive(info, { input: ctx.stdin, output: ctx.stderr, signal: ctx.signal }) } : {}),
    });
    if (junitPath) {
      mkdirSync(dirname(junitPath), { recursive: true });
      writeFileSync(junitPath, junitXml(p.positionals.join(" "), report.results));
    }
    if (report.interrupted) {
      ctx.stderr.write("vmstack test: interrupted; every machine was stopped\n");
      return INTERRUPTED_EXIT;
    }
    if (tests.length > 0 && report.results.length === 0) ctx.stderr.write("vmstack test: no test matched\n");
    return OUTCOME_EXIT[report.outcome];
  } finally {
    await new Promise<void>((r) => (jsonl ? jsonl.end(r) : r()));
  }
}

/**
 * bench/testing: VM tests end to end, through the real CLI, against `vmstack run -- true` measured
 * in the same invocation (runs interleaved, so all see the same machine load).
 *
 * - cold: `vmstack test web.vm.ts` — two machines boot in parallel and exchange one HTTP request.
 *   Target: under 2 × the `vmstack run -- true` time.
 * - fan-out: `vmstack test --snapshots fan-out.vm.ts` — the same exchange as 5 tests; test 1
 *   boots both machines and saves them, tests 2–5 start them from the saved states. Reported: the
 *   whole run, and per later test the time until both machines answered (they start in parallel).
 *   Target: <= 0.5 s per additional test.
 *
 *   node dist/bench/testing.js [--runs N]        prints one JSON object
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { summarize, timeProcess } from "./stats.js";

const runsArg = process.argv.indexOf("--runs");
const runs = runsArg >= 0 ? Number(process.argv[runsArg + 1]) : 3;
const bin = fileURLToPath(new URL("../src/bin/vmstack.js", import.meta.url));
const fixtures = fileURLToPath(new URL("../../test/fixtures/vm-tests/", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "vmstack-bench-testing-"));

interface Step {
  readonly type: string;
  readonly test?: string;
  readonly machine?: string;
  readonly what?: string;
  readonly ms?: number;
  readonly outcome?: string;
}

function timeline(path: string): Step[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Step);
}

try {
  const node = process.execPath;
  // Warm the image cache and the accelerator verdict first: neither is what is measured here.
  await timeProcess([node, bin, "run", "--", "true"]);
  const baseline: number[] = [];
  const cold: number[] = [];
  const coldBoot: number[] = [];
  for (let i = 0; i < runs; i++) {
    baseline.push((await timeProcess([node, bin, "run", "--", "true"])).seconds);
    const tl = join(work, `cold-${i}.jsonl`);
    cold.push((await timeProcess([node, bin, "test", "--timeline", tl, join(fixtures, "web.vm.ts")])).seconds);
    const boots = timeline(tl).filter((e) => e.type === "step" && e.what === "boot");
    coldBoot.push(Math.max(...boots.map((e) => e.ms ?? 0)) / 1000);
  }

  const fanTimes: number[] = [];
  const perTestStart: number[] = [];
  const perTestTotal: number[] = [];
  let saveMs: number[] = [];
  for (let i = 0; i < Math.max(1, Math.min(runs, 2)); i++) {
    const tl = join(work, `fan-${i}.jsonl`);
    fanTimes.push((await timeProcess([node, bin, "test", "--snapshots", "--timeline", tl, join(fixtures, "fan-out.vm.ts")])).seconds);
    const events = timeline(tl);
    saveMs = events.filter((e) => e.what === "snapshot saved").map((e) => e.ms ?? 0);
    const tests = [...new Set(events.filter((e) => e.type === "test-start").map((e) => e.test))];
    for (const t of tests.slice(1)) {
      const restores = events.filter((e) => e.test === t && e.what === "restore from snapshot");
      if (restores.length !== 2) throw new Error(`test ${t}: expected 2 restores, saw ${restores.length}`);
      perTestStart.push(Math.max(...restores.map((e) => e.ms ?? 0)) / 1000);
      perTestTotal.push((events.find((e) => e.type === "test-end" && e.test === t)?.ms ?? NaN) / 1000);
    }
  }

  const b = summarize(baseline);
  const c = summarize(cold);
  const start = summarize(perTestStart);
  console.log(
    JSON.stringify(
      {
        bench: "testing",
        unit: "seconds",
        runs,
        baselineRunTrue: b,
        coldTwoMachineHttp: c,
        coldMachineBoot: summarize(coldBoot),
        ratioColdToRun: Math.round((c.median / b.median) * 100) / 100,
        targetColdUnder2xRun: c.median < 2 * b.median,
        fanOut: {
          tests: 5,
          wholeRun: summarize(fanTimes),
          snapshotSaveMs: saveMs,
          additionalTestMachineStart: start,
          additionalTestTotal: summarize(perTestTotal),
          targetStartAtMost0_5s: start.median <= 0.5,
        },
        load: (await import("node:os")).loadavg().map((l) => Math.round(l * 100) / 100),
      },
      null,
      2,
    ),
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}

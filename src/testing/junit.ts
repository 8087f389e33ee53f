/**
 * JUnit XML for CI dashboards: one <testsuite> per run, one <testcase> per test. FAILURE maps to
 * <failure>, ERROR and CRASH to <error> (with the outcome as its type), SKIP to <skipped>.
 * Pure: results in, a string out.
 */
import type { Outcome } from "./errors.js";

export interface TestResult {
  readonly name: string;
  /** The file the test came from (the JUnit classname). */
  readonly file: string;
  readonly outcome: Outcome;
  readonly ms: number;
  readonly message?: string;
}

/** XML 1.0 text: escape markup and drop characters XML cannot carry (console output has them). */
export function xmlEscape(s: string): string {
  return s
    .replace(/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

export function junitXml(suite: string, results: readonly TestResult[]): string {
  const count = (o: Outcome): number => results.filter((r) => r.outcome === o).length;
  const total = results.reduce((n, r) => n + r.ms, 0);
  const cases = results.map((r) => {
    const head = `  <testcase classname="${xmlEscape(r.file)}" name="${xmlEscape(r.name)}" time="${(r.ms / 1000).toFixed(3)}"`;
    const msg = xmlEscape(r.message ?? "");
    const first = xmlEscape((r.message ?? "").split("\n")[0] ?? "");
    switch (r.outcome) {
      case "SUCCESS":
        return `${head}/>`;
      case "SKIP":
        return `${head}>\n    <skipped message="${first}"/>\n  </testcase>`;
      case "FAILURE":
        return `${head}>\n    <failure message="${first}" type="FAILURE">${msg}</failure>\n  </testcase>`;
      case "ERROR":
      case "CRASH":
        return `${head}>\n    <error message="${first}" type="${r.outcome}">${msg}</error>\n  </testcase>`;
    }
  });
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuite name="${xmlEscape(suite)}" tests="${results.length}" failures="${count("FAILURE")}" errors="${count("ERROR") + count("CRASH")}" skipped="${count("SKIP")}" time="${(total / 1000).toFixed(3)}">`,
    ...cases,
    `</testsuite>`,
    "",
  ].join("\n");
}

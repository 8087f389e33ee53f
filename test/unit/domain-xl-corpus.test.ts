/**
 * The xl.cfg / xm corpus in test/fixtures/xl: every good file parses, validates and compiles to a
 * QEMU argv, and round-trips through `config convert` both ways (xl → JSON and config → xl give the
 * same config back); every file in bad/ fails with the errors its `# expect-error: LINE:COL text` lines name, at those positions.
 * `# expect-warning: text` lines in good files name warnings that must appear.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { compileDomain, DomainConfigError, exportXlConfig, formatProblem, loadDomainText } from "../../src/domain/index.js";

const dir = new URL("../../../test/fixtures/xl/", import.meta.url);
const good = readdirSync(dir).filter((f) => f.endsWith(".cfg")).sort();
const bad = readdirSync(new URL("bad/", dir)).filter((f) => f.endsWith(".cfg")).sort();

test("the corpus holds at least 30 configs and a malformed variant per syntax error kind", () => {
  assert.ok(good.length >= 30, `only ${good.length} good configs`);
  assert.ok(bad.length >= 15, `only ${bad.length} bad configs`);
});

for (const file of good) {
  test(`corpus config ${file} parses, validates, compiles and round-trips through xl.cfg`, () => {
    const text = readFileSync(new URL(file, dir), "utf8");
    const loaded = loadDomainText(text, file);
    const plan = compileDomain(loaded.config, { runDir: "/run/vmstack/test" });
    assert.ok(plan.argv.length > 10);
    assert.ok(plan.argv.every((a) => typeof a === "string"));
    const warnings = loaded.warnings.map(formatProblem).join("\n");
    for (const m of text.matchAll(/^# expect-warning: (.*)$/gm)) assert.ok(warnings.includes(m[1] as string), `no warning with '${m[1]}' in:\n${warnings}`);
    const back = loadDomainText(exportXlConfig(loaded.config).text, `${file}.roundtrip.cfg`);
    assert.deepEqual(back.config, loaded.config);
    const viaJson = loadDomainText(JSON.stringify(loaded.spec), `${file}.json`);
    assert.deepEqual(viaJson.config, loaded.config);
  });
}

for (const file of bad) {
  test(`malformed config bad/${file} reports the expected errors with positions`, () => {
    const text = readFileSync(new URL(`bad/${file}`, dir), "utf8");
    const expected = [...text.matchAll(/^# expect-error: (\d+):(\d+) (.*)$/gm)].map((m) => ({ line: Number(m[1]), col: Number(m[2]), text: m[3] as string }));
    assert.ok(expected.length > 0, "the fixture names its expected error");
    let error: unknown;
    try {
      loadDomainText(text, file);
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof DomainConfigError, `expected a DomainConfigError, got ${String(error)}`);
    const errors = error.problems.filter((p) => p.severity === "error");
    for (const x of expected) {
      const hit = errors.find((p) => p.origin?.line === x.line && p.origin.col === x.col && p.message.includes(x.text));
      assert.ok(hit, `no error at ${x.line}:${x.col} containing '${x.text}'; got:\n${errors.map(formatProblem).join("\n")}`);
      assert.ok(error.message.includes(`${file}:${x.line}:${x.col}: error:`), "the message says file:line:col");
    }
  });
}

/**
 * Golden QEMU command lines (libvirt's `.args` tests): each test/golden/argv/<case>.json holds a
 * domain spec (or an xl fixture, or a raw MachineConfig as `vmstack run` builds it) and <case>.args
 * the expected argv, one argument per line. UPDATE_GOLDEN=1 rewrites the .args files; review the
 * diff before committing it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { compileDomain, type CompileContext, loadDomainText, parseDomainSpec } from "../../src/domain/index.js";
import { buildQemuArgs, type MachineConfig } from "../../src/vmm/qemu-args.js";

const dir = new URL("../../../test/golden/argv/", import.meta.url);
const xlDir = new URL("../../../test/fixtures/xl/", import.meta.url);
const update = process.env["UPDATE_GOLDEN"] === "1";

interface Case {
  readonly spec?: unknown;
  readonly xl?: string;
  readonly overrides?: readonly string[];
  readonly machine?: MachineConfig;
  readonly context?: Partial<CompileContext>;
}

function argvOf(c: Case): readonly string[] {
  if (c.machine !== undefined) return buildQemuArgs(c.machine);
  const config =
    c.xl !== undefined
      ? loadDomainText(readFileSync(new URL(c.xl, xlDir), "utf8"), c.xl, { overrides: c.overrides ?? [] }).config
      : parseDomainSpec(c.spec).config;
  return compileDomain(config, { runDir: `/run/vmstack/${config.name}`, stateDir: `/var/lib/vmstack/${config.name}`, ...c.context }).argv;
}

const cases = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();

test("there is a golden case per feature, the wiki example and an everything config", () => {
  assert.ok(cases.length >= 30);
  for (const name of ["nixos-wiki-xm.json", "everything.json", "run-machine-config.json"]) assert.ok(cases.includes(name), name);
});

for (const file of cases) {
  const name = file.replace(/\.json$/, "");
  test(`golden argv ${name} matches`, () => {
    const c = JSON.parse(readFileSync(new URL(file, dir), "utf8")) as Case;
    const actual = argvOf(c).join("\n") + "\n";
    const golden = new URL(`${name}.args`, dir);
    if (update || !existsSync(golden)) {
      if (!update) assert.fail(`${name}.args is missing: run with UPDATE_GOLDEN=1 and review it`);
      writeFileSync(golden, actual);
      return;
    }
    assert.equal(actual, readFileSync(golden, "utf8"));
  });
}

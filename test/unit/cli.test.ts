import { test } from "node:test";
import assert from "node:assert/strict";
import { cli } from "../support/in-process-cli.js";

test("--version prints the package version", async () => {
  const r = await cli("--version");
  assert.equal(r.code, 0);
  assert.match(r.out, /^vmstack \d+\.\d+\.\d+\n$/);
});

test("an unknown command is a usage error that points at --help", async () => {
  const r = await cli("frobnicate");
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown command 'frobnicate'.*--help/);
});

test("every command answers --help with its usage", async () => {
  const { commands } = await import("../../src/cli/commands/index.js");
  for (const c of commands) {
    const r = await cli(c.name, "--help");
    assert.equal(r.code, 0, c.name);
    assert.match(r.out, new RegExp(`^Usage: vmstack ${c.name} `), c.name);
  }
});

test("the registry's name and summary match each command's own", async () => {
  const { commands } = await import("../../src/cli/commands/index.js");
  for (const entry of commands) {
    const c = await entry.load();
    assert.equal(c.name, entry.name);
    assert.equal(c.summary, entry.summary, entry.name);
  }
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { Writable, Readable } from "node:stream";
import { main } from "../../src/cli/main.js";

function capture(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({ write(c: Buffer, _e, cb) { chunks.push(c); cb(); } });
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = capture();
  const err = capture();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, stdin: Readable.from([]), signal: new AbortController().signal });
  return { code, out: out.text(), err: err.text() };
}

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

/**
 * `vmstack fetch` then `vmstack build` on real VMs: a busybox build and its cache hit, a Ctrl-C in
 * the middle that leaves nothing in the cache, and a C program compiled with gcc inside a Debian
 * image (built once by fetch, then cached) whose binary comes back and runs on the host.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cli, startCli, vmUnavailable } from "../support/cli.js";

const fixtures = fileURLToPath(new URL("../../../test/fixtures/recipes/", import.meta.url));
let skip: string | undefined;
let work = "";
before(async () => {
  skip = await vmUnavailable();
  if (skip) console.log(`# skipping real-VM tests: ${skip}`);
  work = mkdtempSync(join(tmpdir(), "vmstack-build-test-"));
});
after(() => rmSync(work, { recursive: true, force: true }));

/** A copy of a fixture recipe whose script carries a fresh token, so the first build is never a cache hit. */
function recipeCopy(name: string, script?: (s: string) => string): string {
  const dir = join(work, `${name}-${randomBytes(4).toString("hex")}`);
  cpSync(join(fixtures, name), dir, { recursive: true });
  const file = join(dir, "recipe.json");
  const r = JSON.parse(readFileSync(file, "utf8")) as { script: string };
  r.script = `${(script ?? ((s) => s))(r.script)} # ${randomBytes(6).toString("hex")}`;
  writeFileSync(file, JSON.stringify(r, null, 2));
  return file;
}

test("fetch then build runs offline, and the same build again is a cache hit that boots nothing", async (t) => {
  if (skip) return t.skip(skip);
  const recipe = recipeCopy("shell");
  const early = await cli(["build", recipe]);
  assert.equal(early.code, 1);
  assert.match(early.stderr, /missing build inputs .*words\.txt/);
  assert.equal((await cli(["fetch", recipe])).code, 0);
  const first = await cli(["build", "--json", recipe]);
  assert.equal(first.code, 0, first.stderr);
  const r1 = JSON.parse(first.stdout) as { path: string; cached: boolean; outputHash: string };
  assert.equal(r1.cached, false);
  assert.equal(readFileSync(join(r1.path, "sorted.txt"), "utf8"), "two\nthree\none\n");
  const second = await cli(["build", "--json", recipe]);
  const r2 = JSON.parse(second.stdout) as { path: string; cached: boolean; outputHash: string };
  assert.equal(r2.cached, true);
  assert.equal(r2.outputHash, r1.outputHash);
  assert.ok(second.ms < first.ms, "a cache hit must not boot a VM");
});

test("Ctrl-C in the middle of a build leaves no output in the cache", async (t) => {
  if (skip) return t.skip(skip);
  const recipe = recipeCopy("shell", (s) => `${s} && echo started >&2 && sleep 600`);
  assert.equal((await cli(["fetch", recipe])).code, 0);
  const { child, done } = startCli(["build", "--json", recipe]);
  await new Promise<void>((resolve) => child.stderr?.on("data", (c: Buffer) => c.toString().includes("started") && resolve()));
  child.kill("SIGINT");
  const r = await done;
  assert.notEqual(r.code, 0);
  const builds = join(process.env["VMSTACK_CACHE"] ?? join(process.env["HOME"] ?? "/root", ".cache", "vmstack"), "builds");
  // Only this build's temporaries (named after its pid): other suites may be building in parallel.
  const partial = readdirSync(builds).filter((n) => n.includes(`.tmp-${child.pid}-`));
  assert.deepEqual(partial, []);
});

test("a C program compiled with gcc inside a Debian image comes back and runs on the host", async (t) => {
  if (skip) return t.skip(skip);
  if (!["/usr/bin/mmdebstrap", "/usr/sbin/debootstrap"].some((p) => existsSync(p))) return t.skip("neither mmdebstrap nor debootstrap is installed (./setup)");
  const recipe = recipeCopy("hello");
  // First time on a machine this builds the Debian image (about 1–2 minutes); then it is cached.
  const f = await cli(["fetch", recipe]);
  assert.equal(f.code, 0, f.stderr);
  const out = join(work, "hello-out");
  const b = await cli(["build", "-o", out, recipe]);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(readFileSync(join(out, "says.txt"), "utf8"), "hello from a vmstack build\n");
  assert.equal(execFileSync(join(out, "hello"), { encoding: "utf8" }), "hello from a vmstack build\n");
});

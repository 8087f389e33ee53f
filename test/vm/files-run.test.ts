/**
 * Files in and out of `vmstack run` on real VMs: --in, --out, --scratch, --share (virtiofs and the
 * copy fallback), read-only shares, and --out staying all-or-nothing on failure and on Ctrl-C.
 * Each test is one boot doing several checks (boots are the expensive part).
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { cli, startCli, vmUnavailable } from "../support/cli.js";

let skip: string | undefined;
let work = "";
before(async () => {
  skip = await vmUnavailable();
  if (skip) console.log(`# skipping real-VM tests: ${skip}`);
  work = mkdtempSync(join(tmpdir(), "vmstack-files-test-"));
});

function dir(name: string, files: Record<string, string> = {}): string {
  const d = join(work, name);
  mkdirSync(d, { recursive: true });
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(join(d, f, ".."), { recursive: true });
    writeFileSync(join(d, f), text);
  }
  return d;
}

/** Staging directories of --out (`.NAME.vmstack-tmp-*`) left in `parent`. */
const leftovers = (parent: string): string[] => readdirSync(parent).filter((n) => n.includes(".vmstack-tmp-"));

test("--in, --out, --scratch and --share (read-write and read-only) work together in one run", async (t) => {
  if (skip) return t.skip(skip);
  const src = dir("in1", { "hello.txt": "hello\n", "sub/deep.txt": "deep\n" });
  const rw = dir("rw1", { "old.txt": "old\n" });
  const ro = dir("ro1", { "data.txt": "data\n" });
  const out = join(work, "out1");
  const script = [
    "cat /in/hello.txt /in/sub/deep.txt",
    "df -k /scratch | tail -1",
    "cat /ro/data.txt",
    "echo guest > /rw/new.txt",
    "if echo x > /ro/evil.txt; then echo RO-WRITE-WORKED; else echo ro-refused; fi",
    "mkdir -p /out/bin && echo built > /out/bin/result && cp /in/hello.txt /out/",
  ].join("\n");
  const r = await cli(["--verbose", "run", "--in", src, "--out", out, "--scratch", "64M", "--share", `${rw}:/rw`, "--share", `${ro}:/ro:ro`, "-c", script]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^hello\ndeep\n/);
  assert.match(r.stdout, /\/scratch\n/);
  assert.match(r.stdout, /data\n/);
  assert.match(r.stdout, /ro-refused/);
  assert.match(r.stderr, /Read-only file system/);
  assert.equal(readFileSync(join(rw, "new.txt"), "utf8"), "guest\n");
  assert.equal(existsSync(join(ro, "evil.txt")), false, "a read-only share was written on the host");
  assert.equal(readFileSync(join(out, "bin/result"), "utf8"), "built\n");
  assert.equal(readFileSync(join(out, "hello.txt"), "utf8"), "hello\n");
  assert.deepEqual(leftovers(work), []);
});

test("a failing command leaves an existing --out directory untouched and no staging behind", async (t) => {
  if (skip) return t.skip(skip);
  const out = dir("out2", { "keep.txt": "previous\n" });
  const r = await cli(["run", "--out", out, "-c", "ls /sys/class/net; echo partial > /out/partial.txt; exit 7"]);
  assert.equal(r.code, 7);
  assert.equal(r.stdout, "lo\n", "without --net the guest has no network card");
  assert.deepEqual(readdirSync(out), ["keep.txt"]);
  assert.deepEqual(leftovers(work), []);
});

test("Ctrl-C during a run with --out leaves no output and no staging", async (t) => {
  if (skip) return t.skip(skip);
  const out = join(work, "out3");
  const { child, done } = startCli(["run", "--out", out, "-c", "echo partial > /out/p.txt; echo started; sleep 600"]);
  await new Promise<void>((resolve) => child.stdout?.on("data", (c: Buffer) => c.toString().includes("started") && resolve()));
  child.kill("SIGINT");
  const r = await done;
  assert.equal(r.code, 130, r.stderr);
  assert.equal(existsSync(out), false);
  assert.deepEqual(leftovers(work), []);
});

test("without virtiofs, shares fall back to copies: read-only stays read-only, writes come back", async (t) => {
  if (skip) return t.skip(skip);
  const rw = dir("rw4", { "a.txt": "a\n" });
  const ro = dir("ro4", { "b.txt": "b\n" });
  const script = "cat /rw/a.txt /ro/b.txt; echo new > /rw/c.txt; echo x > /ro/evil.txt || echo ro-refused";
  const r = await cli(["--verbose", "run", "--share", `${rw}:/rw`, "--share", `${ro}:/ro:ro`, "-c", script], { env: { VMSTACK_SHARE_MODE: "copy" } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /shares: copy/);
  assert.match(r.stdout, /^a\nb\n/);
  assert.match(r.stdout, /ro-refused/);
  assert.equal(readFileSync(join(rw, "c.txt"), "utf8"), "new\n");
  assert.equal(existsSync(join(ro, "evil.txt")), false);
});

test("--net gives the guest a NAT card through which it reaches a server on the host", async (t) => {
  if (skip) return t.skip(skip);
  const server = createServer((_req, res) => res.end("hello over the network\n"));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const port = (server.address() as AddressInfo).port;
    const r = await cli(["run", "--net", "--", "wget", "-q", "-O", "-", `http://10.0.2.2:${port}/`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello over the network\n");
  } finally {
    server.close();
  }
});

test("bad file options are refused before anything boots", async (t) => {
  if (skip) return t.skip(skip);
  const r1 = await cli(["run", "--in", join(work, "does-not-exist"), "--", "true"]);
  assert.equal(r1.code, 125);
  assert.match(r1.stderr, /does-not-exist' is not a directory/);
  const r2 = await cli(["run", "--out", `${work}/x:relative`, "--", "true"]);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, /must be absolute/);
  const r3 = await cli(["run", "--scratch", "lots", "--", "true"]);
  assert.notEqual(r3.code, 0);
  assert.match(r3.stderr, /not a size/);
  rmSync(work, { recursive: true, force: true });
});

/** `vmstack create --dry-run` and `vmstack config convert|check|show`, through the CLI entry point. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { main } from "../../src/cli/main.js";

const fixtures = new URL("../../../test/fixtures/xl/", import.meta.url);
const fixture = (name: string): string => new URL(name, fixtures).pathname;

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const chunks = { out: [] as Buffer[], err: [] as Buffer[] };
  const sink = (into: Buffer[]): Writable =>
    new Writable({
      write(c: Buffer, _e, cb) {
        into.push(c);
        cb();
      },
    });
  const code = await main(argv, { stdout: sink(chunks.out), stderr: sink(chunks.err), stdin: Readable.from([]), signal: new AbortController().signal });
  return { code, out: Buffer.concat(chunks.out).toString(), err: Buffer.concat(chunks.err).toString() };
}

test("create -n prints the normalized config as JSON and the QEMU command line, starting nothing", async () => {
  const r = await cli("create", "-n", fixture("nixos-wiki-pvgrub.cfg"), "name='mrkitty'");
  assert.equal(r.code, 0, r.err);
  const [json] = r.out.split("\n\n");
  const config = JSON.parse(json ?? "") as { name: string; boot: { guestGrub: { menu: string } } };
  assert.equal(config.name, "mrkitty");
  assert.equal(config.boot.guestGrub.menu, "/boot/grub/menu.lst");
  assert.match(r.out, /^qemu-system-x86_64 \\$/m);
  assert.match(r.out, /-blockdev driver=file,filename=\/vmdisks\/mrkitty-root\.img,node-name=disk0\.file/);
  assert.match(r.out, /# note: boot\.guestGrub/);
  assert.match(r.err, /xvda1' names a partition/);
});

test("create --dry-run --json prints one object with config, argv, plan and warnings", async () => {
  const r = await cli("create", "--dry-run", "--json", "--run-dir", "/tmp/rd", fixture("p9-share.cfg"));
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out) as { argv: string[]; helpers: { argv: string[] }[]; warnings: string[]; paths: { qmp: string } };
  assert.equal(out.argv[0], "qemu-system-x86_64");
  assert.equal(out.paths.qmp, "/tmp/rd/qmp.sock");
  assert.ok(out.helpers[0]?.argv.includes("source=/srv/share"));
  assert.ok(out.warnings.some((w) => w.includes("virtiofs")));
});

test("create without --dry-run asks vmstackd, and says so clearly when it is not running and may not be started", async () => {
  const saved = { auto: process.env["VMSTACK_NO_AUTOSTART"], run: process.env["VMSTACK_RUN_DIR"], state: process.env["VMSTACK_STATE_DIR"] };
  const dir = mkdtempSync(join(tmpdir(), "vmstack-create-"));
  Object.assign(process.env, { VMSTACK_NO_AUTOSTART: "1", VMSTACK_RUN_DIR: join(dir, "run"), VMSTACK_STATE_DIR: join(dir, "state") });
  try {
    const r = await cli("create", fixture("pvh-minimal.cfg"));
    assert.equal(r.code, 1);
    assert.match(r.err, /vmstackd is not running/);
  } finally {
    for (const [k, v] of [["VMSTACK_NO_AUTOSTART", saved.auto], ["VMSTACK_RUN_DIR", saved.run], ["VMSTACK_STATE_DIR", saved.state]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

test("create reports every config error with file:line:col and exits 1", async () => {
  const r = await cli("create", "-n", fixture("bad/two-errors.cfg"));
  assert.equal(r.code, 1);
  assert.match(r.err, /two-errors\.cfg:3:1: error: expected a setting name/);
  assert.match(r.err, /two-errors\.cfg:5:9: error: expected a value/);
});

test("create: a missing file and a malformed override are clear errors", async () => {
  assert.match((await cli("create", "-n", "/nonexistent/x.cfg")).err, /cannot read domain config \/nonexistent\/x\.cfg: ENOENT/);
  const r = await cli("create", "-n", fixture("pvh-minimal.cfg"), "memory");
  assert.equal(r.code, 2);
  assert.match(r.err, /'memory' is not KEY=VALUE/);
});

test("config convert turns xl.cfg into JSON and back without losing what both express", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-convert-"));
  try {
    const json = join(dir, "guest.json");
    const xl = join(dir, "guest.cfg");
    assert.equal((await cli("config", "convert", "-o", json, fixture("debian-pvh-direct.cfg"))).code, 0);
    const spec = JSON.parse(readFileSync(json, "utf8")) as { name: string; disks: unknown[] };
    assert.equal(spec.name, "debian12");
    assert.equal(spec.disks.length, 2);
    assert.equal((await cli("config", "convert", "--to", "xl", "-o", xl, json)).code, 0);
    const a = await cli("config", "show", fixture("debian-pvh-direct.cfg"));
    const b = await cli("config", "show", xl);
    assert.equal(b.out, a.out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("config convert to xl names the options xl.cfg cannot express", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-convert-"));
  try {
    const json = join(dir, "d.json");
    writeFileSync(json, JSON.stringify({ name: "d", machine: "microvm", boot: { kernel: "/k" }, nics: [{ type: "user", forwards: [{ hostPort: 2222, guestPort: 22 }] }] }));
    const r = await cli("config", "convert", json);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^name = "d"$/m);
    assert.match(r.err, /nics\[0\]\.forwards has no xl\.cfg equivalent/);
    assert.match(r.err, /machine=microvm has no xl\.cfg equivalent/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("config check validates and summarises; an unknown subcommand is a usage error", async () => {
  const ok = await cli("config", "check", fixture("xm-concat.cfg"));
  assert.equal(ok.code, 0);
  assert.match(ok.out, /ok \(xm, domain 'web01'/);
  assert.equal((await cli("config", "frob", "x")).code, 2);
});

test("the default guest is refused below the memory its kernel boots in, before vmstackd is asked; run --mem likewise", async () => {
  const saved = { auto: process.env["VMSTACK_NO_AUTOSTART"], run: process.env["VMSTACK_RUN_DIR"], kernel: process.env["VMSTACK_KERNEL"] };
  const dir = mkdtempSync(join(tmpdir(), "vmstack-create-"));
  // Were vmstackd asked, this would fail with "vmstackd is not running" instead. The floor is for
  // vmstack's own kernel, so no VMSTACK_KERNEL.
  Object.assign(process.env, { VMSTACK_NO_AUTOSTART: "1", VMSTACK_RUN_DIR: join(dir, "run") });
  delete process.env["VMSTACK_KERNEL"];
  try {
    const r = await cli("create", "name=tiny", "memory=64");
    assert.equal(r.code, 1);
    assert.match(r.err, /tiny: memory = 64 MiB is too little for vmstack's default guest .* at least 80/);
    const run = await cli("run", "--mem", "64", "--", "true");
    assert.equal(run.code, 125);
    assert.match(run.err, /--mem expects an integer >= 80, got '64'/);
  } finally {
    for (const [k, v] of [["VMSTACK_NO_AUTOSTART", saved.auto], ["VMSTACK_RUN_DIR", saved.run], ["VMSTACK_KERNEL", saved.kernel]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(dir, { recursive: true, force: true });
  }
});

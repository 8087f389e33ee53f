import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { buildInitrd, LOAD_ORDER_PATH, type InitrdCompression } from "../../src/image/initrd.js";
import { ContentStore } from "../../src/image/cache.js";
import { readCpio, type CpioRecord } from "../../src/image/cpio-reader.js";
import { isVmstackError } from "../../src/lib/errors.js";

const RELEASE = "6.1.0-test";

interface Fixture {
  readonly dir: string;
  readonly kernel: { release: string; modulesDir: string };
  readonly cache: ContentStore;
  readonly tool: string;
}

/** A fake kernel modules tree (plain, gzip- and xz-compressed .ko files) and an empty cache. */
function fixture(t: { after: (fn: () => void) => void }): Fixture {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-initrd-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const modulesDir = join(dir, "lib/modules", RELEASE);
  mkdirSync(join(modulesDir, "kernel/drivers/virtio"), { recursive: true });
  mkdirSync(join(modulesDir, "kernel/fs"), { recursive: true });
  writeFileSync(join(modulesDir, "kernel/drivers/virtio/virtio_ring.ko"), "ring module");
  writeFileSync(join(modulesDir, "kernel/drivers/virtio/virtio.ko.gz"), gzipSync("virtio module"));
  const xz = spawnSync("xz", ["-c"], { input: "console module" });
  writeFileSync(join(modulesDir, "kernel/drivers/virtio/virtio_console.ko.xz"), xz.stdout);
  writeFileSync(join(modulesDir, "kernel/fs/unused.ko"), "not wanted");
  writeFileSync(
    join(modulesDir, "modules.dep"),
    [
      "kernel/drivers/virtio/virtio_ring.ko:",
      "kernel/drivers/virtio/virtio.ko.gz: kernel/drivers/virtio/virtio_ring.ko",
      "kernel/drivers/virtio/virtio_console.ko.xz: kernel/drivers/virtio/virtio.ko.gz kernel/drivers/virtio/virtio_ring.ko",
      "kernel/fs/unused.ko:",
      "",
    ].join("\n"),
  );
  writeFileSync(join(modulesDir, "modules.builtin"), "kernel/fs/ext4/ext4.ko\n");
  const tool = join(dir, "tool");
  writeFileSync(tool, "#!/bin/sh\necho tool\n");
  return { dir, kernel: { release: RELEASE, modulesDir }, cache: new ContentStore(join(dir, "cache")), tool };
}

function byPath(bytes: Buffer): Map<string, CpioRecord> {
  return new Map(readCpio(bytes).map((r) => [r.path, r]));
}

void test("buildInitrd puts the module closure uncompressed under /lib/modules/<release> with a load-order file", async (t) => {
  const f = fixture(t);
  const r = await buildInitrd({
    kernel: f.kernel,
    modules: ["virtio_console", "ext4"],
    files: [
      { path: "/bin/tool", source: f.tool },
      { path: "/etc/hello", mode: 0o600, bytes: "hi\n" },
      { path: "/bin/sh", symlink: "tool" },
    ],
    cache: f.cache,
  });
  assert.equal(r.cached, false);
  assert.equal(r.compression, "none");
  assert.deepEqual(r.modules, ["virtio_ring", "virtio", "virtio_console"]);
  const entries = byPath(readFileSync(r.path));
  const base = `lib/modules/${RELEASE}/kernel/drivers/virtio`;
  assert.equal(entries.get(`${base}/virtio_ring.ko`)?.data.toString(), "ring module");
  assert.equal(entries.get(`${base}/virtio.ko`)?.data.toString(), "virtio module", ".ko.gz is decompressed");
  assert.equal(entries.get(`${base}/virtio_console.ko`)?.data.toString(), "console module", ".ko.xz is decompressed");
  assert.equal(entries.has(`lib/modules/${RELEASE}/kernel/fs/unused.ko`), false, "modules outside the closure stay out");
  assert.equal(
    entries.get(LOAD_ORDER_PATH.slice(1))?.data.toString(),
    `/${base}/virtio_ring.ko\n/${base}/virtio.ko\n/${base}/virtio_console.ko\n`,
  );
  assert.equal(entries.get("bin/tool")?.mode, 0o100755, "files default to executable");
  assert.equal(entries.get("bin/tool")?.data.toString(), "#!/bin/sh\necho tool\n");
  assert.equal(entries.get("etc/hello")?.mode, 0o100600);
  assert.equal(entries.get("bin/sh")?.data.toString(), "tool");
  for (const mountPoint of ["proc", "sys", "dev", "tmp"]) assert.ok(entries.has(mountPoint), `${mountPoint} exists`);
  assert.deepEqual([entries.get("dev/console")?.rdevMajor, entries.get("dev/console")?.rdevMinor], [5, 1]);
});

void test("a second buildInitrd with the same inputs returns the cached file and builds nothing", async (t) => {
  const f = fixture(t);
  const options = { kernel: f.kernel, modules: ["virtio"], files: [{ path: "/bin/tool", source: f.tool }], cache: f.cache };
  const first = await buildInitrd(options);
  const before = readFileSync(first.path);
  const second = await buildInitrd(options);
  assert.equal(second.cached, true);
  assert.equal(second.path, first.path);
  assert.equal(second.key, first.key);
  assert.ok(readFileSync(second.path).equals(before));
});

void test("changing a file's content, a mode or the module list gives a different key", async (t) => {
  const f = fixture(t);
  const files = [{ path: "/bin/tool", source: f.tool }];
  const base = await buildInitrd({ kernel: f.kernel, modules: ["virtio"], files, cache: f.cache });
  const otherMode = await buildInitrd({ kernel: f.kernel, modules: ["virtio"], files: [{ ...files[0]!, mode: 0o700 }], cache: f.cache });
  const otherModules = await buildInitrd({ kernel: f.kernel, modules: ["virtio_ring"], files, cache: f.cache });
  writeFileSync(f.tool, "#!/bin/sh\necho changed\n");
  const otherContent = await buildInitrd({ kernel: f.kernel, modules: ["virtio"], files, cache: f.cache });
  const keys = [base.key, otherMode.key, otherModules.key, otherContent.key];
  assert.equal(new Set(keys).size, 4);
  assert.equal(otherContent.cached, false);
});

void test("the same inputs in another cache give byte-identical initrds", async (t) => {
  const f = fixture(t);
  const options = { kernel: f.kernel, modules: ["virtio_console"], files: [{ path: "/bin/tool", source: f.tool }] };
  const a = await buildInitrd({ ...options, cache: f.cache });
  const b = await buildInitrd({ ...options, files: [...options.files].reverse(), cache: new ContentStore(join(f.dir, "cache2")) });
  assert.equal(b.cached, false);
  assert.ok(readFileSync(a.path).equals(readFileSync(b.path)));
});

void test("gzip and lz4 initrds decompress to the same cpio as the uncompressed one", async (t) => {
  const f = fixture(t);
  const build = (compression: InitrdCompression) =>
    buildInitrd({ kernel: f.kernel, modules: ["virtio_console"], files: [{ path: "/bin/tool", source: f.tool }], compression, cache: f.cache });
  const none = readFileSync((await build("none")).path);
  const gz = await build("gzip");
  assert.match(gz.path, /\.cpio\.gz$/);
  assert.ok(gunzipSync(readFileSync(gz.path)).equals(none));
  const lz = await build("lz4");
  const lz4 = spawnSync("lz4", ["-dc"], { input: readFileSync(lz.path) });
  if (lz4.error !== undefined) {
    t.skip("lz4 is not installed");
    return;
  }
  // The kernel reads only the legacy LZ4 frame (magic 02 21 4c 18).
  assert.deepEqual([...readFileSync(lz.path).subarray(0, 4)], [0x02, 0x21, 0x4c, 0x18]);
  assert.ok(lz4.stdout.equals(none));
});

void test("an unknown module is an error naming it and the kernel release", async (t) => {
  const f = fixture(t);
  await assert.rejects(
    buildInitrd({ kernel: f.kernel, modules: ["vsock"], files: [], cache: f.cache }),
    (e) => isVmstackError(e, "MODULE_UNKNOWN") && /'vsock'/.test(e.message) && e.message.includes(RELEASE),
  );
});

void test("a kernel without a modules directory is an error unless no modules are asked for", async (t) => {
  const f = fixture(t);
  const kernel = { release: RELEASE };
  await assert.rejects(buildInitrd({ kernel, modules: ["virtio"], files: [], cache: f.cache }), (e) => isVmstackError(e, "MODULES_MISSING"));
  const r = await buildInitrd({ kernel, modules: [], files: [{ path: "/init", source: f.tool }], cache: f.cache });
  assert.deepEqual(r.modules, []);
  assert.equal(byPath(readFileSync(r.path)).get("lib/modules/load-order")?.data.length, 0);
});

void test("a missing source file is an error naming it", async (t) => {
  const f = fixture(t);
  await assert.rejects(
    buildInitrd({ kernel: f.kernel, modules: [], files: [{ path: "/init", source: join(f.dir, "nope") }], cache: f.cache }),
    (e) => isVmstackError(e, "INITRD_SOURCE_MISSING") && e.message.includes(join(f.dir, "nope")),
  );
});

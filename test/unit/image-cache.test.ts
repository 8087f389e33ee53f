import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUILD_MAX_UNUSED_MS, ContentStore, cacheRoot, canonicalJson, pruneUnused, recipeKey, sha256, sweepStaleTemps } from "../../src/image/cache.js";

function tempStore(t: { after: (fn: () => void) => void }): ContentStore {
  const dir = mkdtempSync(join(tmpdir(), "vmstack-cache-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return new ContentStore(dir);
}

void test("cacheRoot prefers VMSTACK_CACHE, then XDG_CACHE_HOME/vmstack, then ~/.cache/vmstack", () => {
  assert.equal(cacheRoot({ VMSTACK_CACHE: "/c", XDG_CACHE_HOME: "/x", HOME: "/h" }), "/c");
  assert.equal(cacheRoot({ XDG_CACHE_HOME: "/x", HOME: "/h" }), "/x/vmstack");
  assert.equal(cacheRoot({ HOME: "/h" }), "/h/.cache/vmstack");
});

void test("cacheRoot ignores an empty VMSTACK_CACHE and a relative XDG_CACHE_HOME", () => {
  assert.equal(cacheRoot({ VMSTACK_CACHE: "", XDG_CACHE_HOME: "rel", HOME: "/h" }), "/h/.cache/vmstack");
});

void test("canonicalJson and recipeKey do not depend on key order", () => {
  assert.equal(canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] }), '{"a":[2,{"c":4,"d":3}],"b":1}');
  assert.equal(recipeKey({ x: 1, y: "2" }), recipeKey({ y: "2", x: 1 }));
  assert.notEqual(recipeKey({ x: 1 }), recipeKey({ x: 2 }));
  assert.equal(recipeKey({ x: 1, skipped: undefined }), recipeKey({ x: 1 }));
});

void test("putBytes stores content under its sha256 and get finds it", async (t) => {
  const store = tempStore(t);
  const key = await store.putBytes("hello");
  assert.equal(key, sha256("hello"));
  const path = await store.get(key);
  assert.ok(path !== undefined);
  assert.equal(readFileSync(path, "utf8"), "hello");
  assert.equal(await store.get(sha256("absent")), undefined);
});

void test("putFile gives the same key as putBytes of the same content", async (t) => {
  const store = tempStore(t);
  const src = join(store.root, "src.txt");
  writeFileSync(src, "same bytes");
  assert.equal(await store.putFile(src), await store.putBytes("same bytes"));
});

void test("buildOnce builds the first time and returns the cached output the second time", async (t) => {
  const store = tempStore(t);
  let builds = 0;
  const build = async (tmp: string): Promise<void> => {
    builds++;
    writeFileSync(tmp, "output");
  };
  const first = await store.buildOnce({ input: "a" }, build, { ext: ".txt" });
  const second = await store.buildOnce({ input: "a" }, build, { ext: ".txt" });
  assert.equal(builds, 1);
  assert.equal(first.cached, false);
  assert.equal(second.cached, true);
  assert.equal(second.path, first.path);
  assert.equal(second.key, first.key);
  assert.equal(readFileSync(second.path, "utf8"), "output");
  const third = await store.buildOnce({ input: "b" }, build);
  assert.equal(third.cached, false);
  assert.equal(builds, 2);
});

void test("a failed build leaves neither an output nor a temporary file", async (t) => {
  const store = tempStore(t);
  await assert.rejects(
    store.buildOnce({ input: "boom" }, async (tmp) => {
      writeFileSync(tmp, "half");
      throw new Error("build failed");
    }),
    /build failed/,
  );
  assert.deepEqual(readdirSync(join(store.root, "builds")), []);
});

void test("objectPath rejects something that is not a sha256 key", (t) => {
  const store = tempStore(t);
  assert.throws(() => store.objectPath("../../etc/passwd"), RangeError);
});

void test("sweepStaleTemps removes temporaries of dead processes and keeps those of live ones", async (t) => {
  const store = tempStore(t);
  const dir = join(store.root, "builds");
  mkdirSync(join(dir, ".tmp-999999999-abcdef"), { recursive: true }); // no such pid (above pid_max)
  writeFileSync(join(dir, ".tmp-999999998-0123"), "half");
  writeFileSync(join(dir, `.tmp-${process.pid}-beef`), "mine");
  writeFileSync(join(dir, ".tmp-1-cafe"), "pid 1 is alive");
  writeFileSync(join(dir, "finished.cpio"), "done");
  assert.deepEqual((await sweepStaleTemps(dir)).sort(), [".tmp-999999998-0123", ".tmp-999999999-abcdef"]);
  assert.deepEqual(readdirSync(dir).sort(), [`.tmp-${process.pid}-beef`, ".tmp-1-cafe", "finished.cpio"].sort());
  assert.deepEqual(await sweepStaleTemps(join(dir, "absent")), []);
});

void test("pruneUnused removes outputs unused for longer than the limit and keeps recent ones", async (t) => {
  const store = tempStore(t);
  const dir = join(store.root, "builds");
  mkdirSync(dir, { recursive: true });
  const now = Date.now();
  writeFileSync(join(dir, "old.cpio"), "old");
  utimesSync(join(dir, "old.cpio"), new Date(now - 20 * 86_400_000), new Date(now - 20 * 86_400_000));
  writeFileSync(join(dir, "recent.cpio"), "recent");
  assert.deepEqual(await pruneUnused(dir, BUILD_MAX_UNUSED_MS, now), ["old.cpio"]);
  assert.deepEqual(readdirSync(dir), ["recent.cpio"]);
});

void test("a cache hit refreshes the output's mtime so it is not pruned while in use", async (t) => {
  const store = tempStore(t);
  const first = await store.buildOnce({ input: "x" }, async (tmp) => writeFileSync(tmp, "x"));
  const longAgo = new Date(Date.now() - 20 * 86_400_000);
  utimesSync(first.path, longAgo, longAgo);
  const hit = await store.buildOnce({ input: "x" }, async () => assert.fail("must not rebuild"));
  assert.equal(hit.cached, true);
  assert.ok(Date.now() - statSync(hit.path).mtimeMs < 86_400_000);
});

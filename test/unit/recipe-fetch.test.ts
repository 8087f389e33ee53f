/**
 * fetch against a local HTTP server (Range support is what makes downloads resumable), and the
 * build's offline input checks. No VM here; builds in VMs are in test/vm/build-recipe.test.ts.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { once } from "node:events";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContentStore } from "../../src/image/cache.js";
import { fetchRecipe } from "../../src/image/fetch.js";
import { checkBuildInputs } from "../../src/image/build.js";
import { parseRecipe } from "../../src/image/recipe.js";
import { isVmstackError } from "../../src/lib/errors.js";

const work = mkdtempSync(join(tmpdir(), "vmstack-fetch-test-"));
after(() => rmSync(work, { recursive: true, force: true }));

const body = randomBytes(200_000);
const bodySha = createHash("sha256").update(body).digest("hex");
const ranges: string[] = [];

async function server(): Promise<{ server: Server; url: string }> {
  const s = createServer((req, res) => {
    const range = req.headers.range;
    ranges.push(range ?? "");
    const m = /^bytes=(\d+)-$/.exec(range ?? "");
    if (m) {
      const start = Number(m[1]);
      res.writeHead(206, { "content-length": body.length - start, "content-range": `bytes ${start}-${body.length - 1}/${body.length}` });
      res.end(body.subarray(start));
    } else {
      res.writeHead(200, { "content-length": body.length });
      res.end(body);
    }
  });
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const addr = s.address();
  if (addr === null || typeof addr === "string") throw new Error("no port");
  return { server: s, url: `http://127.0.0.1:${addr.port}/blob` };
}

test("a URL input resumes a partial download with a Range request and lands under its sha256", async () => {
  const { server: s, url } = await server();
  try {
    const store = new ContentStore(join(work, "cache1"));
    // A previous fetch stopped after 50 000 bytes.
    mkdirSync(join(store.root, "partial"), { recursive: true });
    writeFileSync(join(store.root, "partial", bodySha), body.subarray(0, 50_000));
    const recipe = parseRecipe({ script: "true", inputs: { blob: { url, sha256: bodySha } } });
    const lines: string[] = [];
    const lock = await fetchRecipe(recipe, { store, recipeDir: work, agentPath: "/nonexistent", onProgress: (l) => lines.push(l) });
    assert.equal(lock.inputs["blob"]?.sha256, bodySha);
    assert.equal(ranges.at(-1), "bytes=50000-");
    assert.ok(lines.some((l) => /resuming at 50000 bytes/.test(l)), lines.join("\n"));
    assert.deepEqual(readFileSync(store.objectPath(bodySha)), body);
  } finally {
    s.close();
  }
});

test("a URL whose bytes do not match the recipe's sha256 is refused with both hashes", async () => {
  const { server: s, url } = await server();
  try {
    const store = new ContentStore(join(work, "cache2"));
    const wrong = "0".repeat(64);
    const recipe = parseRecipe({ script: "true", inputs: { blob: { url, sha256: wrong } } });
    await assert.rejects(
      fetchRecipe(recipe, { store, recipeDir: work, agentPath: "/nonexistent" }),
      (e: unknown) => isVmstackError(e, "HASH_MISMATCH") && e.message.includes(wrong) && e.message.includes(bodySha),
    );
    assert.equal(await store.get(wrong), undefined);
  } finally {
    s.close();
  }
});

test("the build names every missing input at once, and refuses a corrupted cached input with both hashes", async () => {
  const dir = join(work, "recipe");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "a.txt"), "alpha\n");
  writeFileSync(join(dir, "b.txt"), "beta\n");
  const store = new ContentStore(join(work, "cache3"));
  const recipe = parseRecipe({
    script: "true",
    inputs: { "a.txt": { path: "a.txt" }, "b.txt": { path: "b.txt" }, "c.bin": { url: "http://127.0.0.1:9/c", sha256: "c".repeat(64) } },
  });
  await assert.rejects(checkBuildInputs(recipe, undefined, { store, recipeDir: dir }), (e: unknown) => {
    assert.ok(isVmstackError(e, "INPUTS_MISSING"));
    for (const n of ["a.txt", "b.txt", "c.bin"]) assert.match(e.message, new RegExp(n.replace(".", "\\.")));
    return true;
  });
  const partial = parseRecipe({ script: "true", inputs: { "a.txt": { path: "a.txt" }, "b.txt": { path: "b.txt" } } });
  const lock = await fetchRecipe(partial, { store, recipeDir: dir, agentPath: "/nonexistent" });
  await checkBuildInputs(partial, lock, { store, recipeDir: dir });
  const sha = lock.inputs["a.txt"]!.sha256;
  writeFileSync(store.objectPath(sha), "tampered\n");
  const tamperedSha = createHash("sha256").update("tampered\n").digest("hex");
  await assert.rejects(
    checkBuildInputs(partial, lock, { store, recipeDir: dir }),
    (e: unknown) => isVmstackError(e, "HASH_MISMATCH") && e.message.includes(sha) && e.message.includes(tamperedSha) && /corrupt/.test(e.message),
  );
});

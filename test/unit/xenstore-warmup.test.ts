import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createXenstored, listenUnix, RawConnection, warmUp, type SocketServer } from "../../src/xenstore/index.js";
import { journalMaps, loadState } from "../../src/xenstore/persist.js";
import { WARM_UP_PREFIX } from "../../src/xenstore/warmup.js";

function stateDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-warmup-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file below `dir` with its bytes. */
function contents(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of fs.readdirSync(dir, { recursive: true, encoding: "utf8" })) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) out.set(f, fs.readFileSync(p).toString("base64"));
  }
  return out;
}

void test("a persistent daemon's warm-up journals in a scratch directory of its own, removes it, and leaves the real state alone", async (t) => {
  const dir = stateDir(t);
  const d = createXenstored({ stateDir: dir });
  await new RawConnection(d.openConnection({ domid: 0 })).request("WRITE", "/real|1");
  d.close();
  // What a daemon killed during its warm-up leaves behind.
  fs.mkdirSync(path.join(dir, `${WARM_UP_PREFIX}stale`));
  fs.writeFileSync(path.join(dir, `${WARM_UP_PREFIX}stale`, "journal-1"), "left by a kill");
  assert.equal(loadState(dir).report.join("\n").includes("stale"), false, "the loader does not read a warm-up's directory");
  const before = contents(dir);
  before.delete(`${WARM_UP_PREFIX}stale/journal-1`);

  // Looked at while the throwaway instance exists (serve is called once it is made).
  let during: string[] = [];
  const sockDir = stateDir(t);
  await warmUp({
    stateDir: dir,
    batches: 12,
    serve: (d) => ((during = fs.readdirSync(dir).filter((f) => f.startsWith(WARM_UP_PREFIX))), listenUnix(d, path.join(sockDir, "w"))),
  });
  assert.equal(during.length, 1, `the stale directory was removed and the throwaway instance has one of its own: ${during.join(", ")}`);
  assert.notEqual(during[0], `${WARM_UP_PREFIX}stale`);
  assert.deepEqual(contents(dir), before, "the real state's files are byte for byte as they were");
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith(WARM_UP_PREFIX)), [], "both warm-up directories are gone");
  const again = createXenstored({ stateDir: dir });
  assert.equal((await new RawConnection(again.openConnection({ domid: 0 })).request("READ", "/real|")).text, "1");
  assert.equal((await new RawConnection(again.openConnection({ domid: 0 })).request("READ", "/warm|")).error, "ENOENT", "nothing of the warm-up is in the real tree");
  again.close();
});

void test("with serve, the warm-up's requests go through a real Unix socket served as the daemon serves its own, closed and removed afterwards", async (t) => {
  const dir = stateDir(t);
  const sockDir = stateDir(t);
  const at = path.join(sockDir, "xenstored.warm-up");
  let served: SocketServer | undefined;
  await warmUp({
    stateDir: dir,
    batches: 4,
    serve: async (d) => (served = await listenUnix(d, at, { busyPollUs: 50 })),
  });
  assert.ok(served !== undefined);
  assert.ok(served.poll.hits + served.poll.misses > 0, "the requests came through the served socket (its busy-polling ran)");
  assert.equal(fs.existsSync(at), false, "the socket is removed");
  assert.deepEqual(fs.readdirSync(dir), []);
});

void test("a warm-up that fails (its socket cannot be served) rejects and leaves nothing behind", async (t) => {
  const dir = stateDir(t);
  await assert.rejects(
    warmUp({
      stateDir: dir,
      serve: () => Promise.reject(new Error("no socket here")),
    }),
    /no socket here/,
  );
  assert.deepEqual(fs.readdirSync(dir), []);
});

void test("a warm-up whose throwaway instance fails while its client is connected rejects, closes its socket and leaves nothing behind", { timeout: 20_000 }, async (t) => {
  const dir = stateDir(t);
  const sockDir = stateDir(t);
  const at = path.join(sockDir, "w");
  await assert.rejects(
    warmUp({
      stateDir: dir,
      batches: 1_000_000,
      serve: async (d) => {
        // As a journal failure does: the instance closes every connection under the batch.
        setTimeout(() => d.close(), 50);
        return listenUnix(d, at);
      },
    }),
    /connection closed/,
  );
  assert.deepEqual(fs.readdirSync(dir), []);
  assert.equal(fs.existsSync(at), false);
});

void test("an aborted warm-up stops within its batch in flight, resolves, and leaves nothing behind", async (t) => {
  const dir = stateDir(t);
  const before = new AbortController();
  before.abort();
  await warmUp({ stateDir: dir, signal: before.signal, batches: 1_000_000 });
  assert.deepEqual(fs.readdirSync(dir), []);
  const sockDir = stateDir(t);
  const during = new AbortController();
  let served: SocketServer | undefined;
  const running = warmUp({ stateDir: dir, signal: during.signal, batches: 1_000_000, serve: async (d) => (served = await listenUnix(d, path.join(sockDir, "w"))) });
  setTimeout(() => during.abort(), 100);
  const t0 = performance.now();
  await running;
  assert.ok(performance.now() - t0 < 10_000, "the abort ended it (a million batches would take minutes)");
  assert.ok(served !== undefined && served.poll.hits + served.poll.misses > 0, "it was running when aborted");
  assert.deepEqual(fs.readdirSync(dir), []);
  assert.deepEqual(fs.readdirSync(sockDir), []);
});

void test("a journal in small chunks crosses many chunk boundaries and restarts to the same tree", async (t) => {
  const dir = stateDir(t);
  assert.ok(journalMaps(dir), `the journal is mapped in ${dir} (ext4, XFS or tmpfs), so chunk boundaries are crossed`);
  const d = createXenstored({ stateDir: dir, journalChunk: 4096 });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  const value = "v".repeat(100);
  await Promise.all(Array.from({ length: 500 }, (_, i) => c.request("WRITE", `/chunks/k${i}|${value}${i}`)));
  await c.request("RM", "/chunks/k7|");
  // Without close(): what a kill would leave; the records span ~15 chunks of 4 KiB.
  const again = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(again.openConnection({ domid: 0 }));
  assert.equal((await c2.request("DIRECTORY", "/chunks|")).text.split("|").filter(Boolean).length, 499);
  assert.equal((await c2.request("READ", "/chunks/k499|")).text, `${value}499`);
  assert.equal((await c2.request("READ", "/chunks/k7|")).error, "ENOENT");
  again.close();
  d.close();
});

void test("the journal's mapping is an ordinary Buffer: one hidden class with every Buffer made in JavaScript", () => {
  // A Buffer made in C has a map of its own; Buffer methods that met both were deoptimised and
  // polymorphic (native.ts). %HaveSameMap needs V8's natives syntax, so this runs in a child.
  const native = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src/xenstore/native.js");
  const script = `
    const { xsio } = await import(${JSON.stringify(native)});
    const fs = await import("node:fs");
    const file = ${JSON.stringify(path.join(os.tmpdir(), `vmstack-xs-map-${process.pid}`))};
    const fd = fs.openSync(file, "w+");
    xsio.reserve(fd, 0, 4096);
    const map = xsio.mapShared(fd, 0, 4096);
    map.writeUInt32LE(0x31525358, 8);
    const same = %HaveSameMap(map, Buffer.alloc(16));
    const stored = fs.readFileSync(file).readUInt32LE(8) === 0x31525358;
    fs.closeSync(fd); fs.rmSync(file);
    console.log(JSON.stringify({ same, stored }));`;
  const out = execFileSync(process.execPath, ["--allow-natives-syntax", "--input-type=module", "-e", script], { encoding: "utf8" });
  assert.deepEqual(JSON.parse(out), { same: true, stored: true });
});

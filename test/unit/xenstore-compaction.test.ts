import { mock, test } from "node:test";
import { syncBuiltinESMExports } from "node:module";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import fsDefault from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createXenstored, encodeMessage, RawConnection, SYNC_INTERVAL_MS, type Xenstored } from "../../src/xenstore/index.js";
import { recordingTransport } from "../support/recording-transport.js";
import { parseRecords } from "../../src/xenstore/persist.js";
import { RecordWriter } from "../../src/xenstore/persist-records.js";
import { SnapshotWalk, snapshotRecords } from "../../src/xenstore/snapshot.js";
import { retryUntil } from "../../src/lib/retry.js";
import { openUnder } from "../support/open-files.js";

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-compact-"));
}

/** `n` nodes under /fill, 64 in flight. */
async function fill(c: RawConnection, n: number, value = "v".repeat(64)): Promise<void> {
  for (let i = 0; i < n; i += 64) {
    await Promise.all(Array.from({ length: Math.min(64, n - i) }, (_, k) => c.request("WRITE", `/fill/n${i + k}|${value}`)));
  }
}

/** Let a compaction under way finish, close the daemon, remove its directory. */
async function closeSettled(dir: string, d: Xenstored): Promise<void> {
  await settled(dir);
  d.close();
  fs.rmSync(dir, { recursive: true });
}

/** A daemon on a fresh state directory holding `n` nodes; `fatal()`: what its onFatal got. */
async function filled(n: number, durability: "write" | "fsync" = "write"): Promise<{ dir: string; d: Xenstored; c: RawConnection; fatal: () => unknown }> {
  const dir = tmpdir();
  let fatal: unknown;
  const d = createXenstored({ stateDir: dir, durability, onFatal: (e) => (fatal = e) });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  await fill(c, n);
  return { dir, d, c, fatal: () => fatal };
}

function epochFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f !== "lock")
    .sort();
}

/**
 * Wait until a compaction is done: a snapshot in place, no temporary file, and what it replaced
 * removed (one snapshot and its journal left); the files then.
 */
async function settled(dir: string): Promise<string[]> {
  return retryUntil(
    () => {
      const files = epochFiles(dir);
      return files.length === 2 && files.some((f) => f.startsWith("snapshot-")) && !files.some((f) => f.endsWith(".tmp")) ? files : undefined;
    },
    { what: `a compaction in ${dir} to finish`, timeoutMs: 20_000 },
  );
}

void test("compaction rotates to a new epoch and deletes what the snapshot replaces", async () => {
  const dir = tmpdir();
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  const big = "v".repeat(4000);
  // ~9 MB of journal passes the 8 MiB compaction threshold.
  for (let round = 0; round < 36; round++) {
    await Promise.all(Array.from({ length: 64 }, (_, i) => c.request("WRITE", `/big/k${i}|${big}`)));
  }
  const files = await settled(dir);
  assert.deepEqual(
    files.map((f) => f.replace(/\d+$/, "N")),
    ["journal-N", "snapshot-N"],
    files.join(" "),
  );
  assert.equal(files[0]!.split("-")[1], files[1]!.split("-")[1], "the journal of the snapshot's own epoch");
  d.close();
  const d2 = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(d2.openConnection({ domid: 0 }));
  assert.equal((await c2.request("READ", "/big/k63|")).text, big);
  d2.close();
  fs.rmSync(dir, { recursive: true });
});

/**
 * Requests answered while the snapshot was still being written, the sizes its temporary file was
 * seen to have between them, and the snapshot's epoch.
 */
async function writesDuringCompaction(d: Xenstored, c: RawConnection, dir: string): Promise<{ answered: number; sizes: Set<number>; epoch: number }> {
  assert.equal(d.compactInBackground(), "started");
  assert.equal(d.compactInBackground(), "under way");
  const tmp = epochFiles(dir).find((f) => f.endsWith(".tmp"));
  assert.ok(tmp !== undefined, `a snapshot is being written: ${epochFiles(dir).join(" ")}`);
  const epoch = Number(/^snapshot-(\d+)\.tmp$/.exec(tmp)![1]);
  let answered = 0;
  const sizes = new Set<number>();
  for (let i = 0; fs.existsSync(path.join(dir, tmp)); i++) {
    const size = fs.statSync(path.join(dir, tmp), { throwIfNoEntry: false })?.size;
    if (size !== undefined) sizes.add(size);
    assert.ok(i < 100_000, "the snapshot is still being written after 100,000 requests");
    assert.equal((await c.request("WRITE", `/during/n${i}|${i}`)).text, "OK|");
    answered++;
    // An in-process connection answers in microtasks; a socket's requests arrive through the
    // event loop's poll phase, after which the compaction's slices run.
    await new Promise((r) => setImmediate(r));
  }
  return { answered, sizes, epoch };
}

void test("a background compaction writes its snapshot in slices: requests are answered meanwhile, and their changes survive", async () => {
  const { dir, d, c } = await filled(30_000);
  const { answered, sizes, epoch } = await writesDuringCompaction(d, c, dir);
  // 30,000 nodes (3 MB) are 30 slices: the file grows between requests. Written at once, it
  // would have its full size when first seen (requests answered during its fsync, on the
  // thread pool, would all see that one size).
  assert.ok(sizes.size >= 5, `the snapshot file was seen at ${sizes.size} sizes while ${answered} writes were answered: ${[...sizes].join(" ")}`);
  const files = await settled(dir);
  assert.deepEqual(files, [`journal-${epoch}`, `snapshot-${epoch}`], "the older epoch is gone");
  // The snapshot is the tree as it was when the compaction started; the writes since are in the new journal.
  const snap = parseRecords(fs.readFileSync(path.join(dir, `snapshot-${epoch}`)), "snapshot").records;
  assert.equal(snap.filter((r) => r.op === "put" && r.path.startsWith("/fill/")).length, 30_000);
  assert.equal(snap.filter((r) => r.op === "put" && r.path.startsWith("/during/")).length, 0);
  const journal = parseRecords(fs.readFileSync(path.join(dir, `journal-${epoch}`)), "journal").records;
  assert.equal(journal.filter((r) => r.op === "put" && r.path.startsWith("/during/n")).length, answered);
  d.close();
  const again = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(again.openConnection({ domid: 0 }));
  assert.equal((await c2.request("READ", "/fill/n29999|")).text, "v".repeat(64));
  assert.equal((await c2.request("READ", `/during/n${answered - 1}|`)).text, String(answered - 1));
  again.close();
  fs.rmSync(dir, { recursive: true });
});

void test("a daemon killed or closed halfway through a compaction leaves state that loads whole", async () => {
  const { dir, d, c } = await filled(20_000);
  assert.equal(d.compactInBackground(), "started");
  await c.request("WRITE", "/after|1");
  // What a kill -9 leaves now: the old snapshot and journal, the new journal, a partial temporary file.
  const killed = tmpdir();
  fs.cpSync(dir, killed, { recursive: true });
  assert.ok(epochFiles(killed).some((f) => f.endsWith(".tmp")), epochFiles(killed).join(" "));
  fs.rmSync(path.join(killed, "lock"));
  d.close();
  assert.ok(!epochFiles(dir).some((f) => f.endsWith(".tmp")), `close() removes the partial snapshot: ${epochFiles(dir).join(" ")}`);
  for (const state of [killed, dir]) {
    const again = createXenstored({ stateDir: state });
    assert.ok(!again.loadReport.some((l) => l.includes("dropped")), again.loadReport.join("\n"));
    const c2 = new RawConnection(again.openConnection({ domid: 0 }));
    assert.equal((await c2.request("READ", "/fill/n19999|")).text, "v".repeat(64));
    assert.equal((await c2.request("READ", "/after|")).text, "1");
    again.close();
    fs.rmSync(state, { recursive: true });
  }
});

void test("a compaction that cannot put its snapshot in place is fatal: every connection closes, every answered write survives a restart", async () => {
  const { dir, d, c, fatal } = await filled(5000);
  mock.method(fsDefault, "renameSync", () => {
    throw Object.assign(new Error("ENOSPC: no space left on device, rename"), { code: "ENOSPC" });
  });
  syncBuiltinESMExports();
  let answered = -1;
  try {
    assert.equal(d.compactInBackground(), "started");
    for (let i = 0; i < 100_000 && fatal() === undefined; i++) {
      const r = await c.request("WRITE", `/during/n${i}|${i}`).catch(() => undefined);
      if (r !== undefined) answered = i;
      await new Promise((r) => setImmediate(r)); // as in writesDuringCompaction
    }
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  assert.match(String(fatal()), /ENOSPC/);
  await assert.rejects(c.request("READ", "/fill/n0|"), "the connection is closed");
  assert.ok(!epochFiles(dir).some((f) => f.endsWith(".tmp")), epochFiles(dir).join(" "));
  const again = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(again.openConnection({ domid: 0 }));
  assert.ok(answered >= 0, "writes were answered while the snapshot was written");
  assert.equal((await c2.request("READ", `/during/n${answered}|`)).text, String(answered));
  assert.equal((await c2.request("READ", "/fill/n4999|")).text, "v".repeat(64));
  again.close();
  fs.rmSync(dir, { recursive: true });
});

void test("CONTROL compact starts a background compaction, says when one is under way, and needs a state directory", async () => {
  const { dir, d, c } = await filled(10_000);
  assert.equal((await c.request("CONTROL", "compact|")).text, "compaction started\n|");
  assert.equal((await c.request("CONTROL", "compact|")).text, "a compaction is under way\n|");
  const files = await settled(dir);
  assert.equal(files.filter((f) => f.startsWith("snapshot-")).length, 1, files.join(" "));
  assert.match((await c.request("CONTROL", "help|")).text, /\ncompact\n/);
  const guest = new RawConnection(d.openConnection({ domid: 3 }));
  assert.equal((await guest.request("CONTROL", "compact|")).error, "EACCES");
  d.close();
  const mem = createXenstored();
  const m = new RawConnection(mem.openConnection({ domid: 0 }));
  assert.equal((await m.request("CONTROL", "compact|")).error, "EINVAL");
  mem.close();
  fs.rmSync(dir, { recursive: true });
});

void test("a snapshot walked in slices of any size has the same bytes as one written at once", async () => {
  const d = createXenstored();
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  for (let i = 0; i < 300; i++) await c.request("WRITE", `/t/d${i % 7}/e${i % 11}/n${i}|${"x".repeat(i % 50)}`);
  await c.request("SET_PERMS", "/t/d3|n0|r5|");
  const whole: Buffer[] = [];
  const count = snapshotRecords(d.root, (b) => whole.push(Buffer.from(b)));
  for (const slice of [1, 7, 1000]) {
    const w = new RecordWriter(1024);
    const walk = new SnapshotWalk(d.root);
    let steps = 1;
    while (!walk.next(w, slice)) steps++;
    assert.equal(walk.count, count);
    assert.equal(steps, Math.max(1, Math.ceil(count / slice)), `slice ${slice}`);
    assert.deepEqual(w.take(), Buffer.concat(whole), `slice ${slice}`);
  }
  d.close();
});

void test("the periodic fdatasync runs on the thread pool; a journal closed meanwhile keeps its descriptor until it returns", async () => {
  const dir = tmpdir();
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  const held: [number, (e: NodeJS.ErrnoException | null) => void][] = [];
  let blocking = 0;
  const realAsync = fsDefault.fdatasync;
  const realSync = fsDefault.fdatasyncSync;
  mock.method(fsDefault, "fdatasync", (fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => held.push([fd, cb]));
  mock.method(fsDefault, "fdatasyncSync", (fd: number) => {
    blocking++;
    realSync(fd);
  });
  syncBuiltinESMExports();
  try {
    assert.equal((await c.request("WRITE", "/a|1")).text, "OK|");
    await new Promise((r) => setTimeout(r, SYNC_INTERVAL_MS + 200));
    assert.equal(held.length, 1, "one fdatasync, on the thread pool");
    assert.equal(blocking, 0, "none on the event loop");
    const journal = openUnder(dir).find((f) => f.startsWith("journal-"));
    assert.ok(journal !== undefined);
    d.close();
    assert.ok(blocking >= 1, "close() does not return before the journal is synced");
    assert.ok(openUnder(dir).includes(journal), "the descriptor outlives close() while its fdatasync runs");
    const [fd, cb] = held[0]!;
    await new Promise<void>((resolve) =>
      realAsync(fd, (e) => {
        cb(e);
        resolve();
      }),
    );
    assert.deepEqual(openUnder(dir), [], "closed once it returned");
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  fs.rmSync(dir, { recursive: true });
});

void test("durability fsync: a compaction started mid-batch fdatasyncs the old journal before the batch's replies leave", async () => {
  const { dir, d, c } = await filled(2000, "fsync");
  const queued: number[] = [];
  let blocking = 0;
  const realSync = fsDefault.fdatasyncSync;
  mock.method(fsDefault, "fdatasync", (fd: number) => queued.push(fd)); // never returns
  mock.method(fsDefault, "fdatasyncSync", (fd: number) => {
    blocking++;
    realSync(fd);
  });
  syncBuiltinESMExports();
  let replies = 0;
  try {
    const transport = recordingTransport((n) => (replies += n));
    d.attach(transport, 0, "batch");
    // One chunk: a write, the compaction, a write. The first write's record is pending when the
    // compaction rotates the journal.
    const frames = [
      encodeMessage({ type: "WRITE", reqId: 1, txId: 0, payload: "/x\0a" }),
      encodeMessage({ type: "CONTROL", reqId: 2, txId: 0, payload: "compact\0" }),
      encodeMessage({ type: "WRITE", reqId: 3, txId: 0, payload: "/y\0b" }),
    ];
    transport.push(Buffer.concat(frames));
    await retryUntil(() => (replies >= 3 ? true : undefined), { what: "three replies", timeoutMs: 10_000 });
    assert.deepEqual(queued, [], "no acknowledged record waits for an fdatasync on the thread pool");
    assert.ok(blocking >= 2, `${blocking} blocking fdatasyncs (the old journal's, the batch's)`);
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  await closeSettled(dir, d);
});

void test("compact() while a background compaction runs replaces it; the daemon carries on and compacts again later", async () => {
  const { dir, d, c, fatal } = await filled(20_000);
  assert.equal(d.compactInBackground(), "started");
  await new Promise((r) => setImmediate(r));
  d.compact();
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setImmediate(r));
    assert.equal((await c.request("WRITE", `/after/n${i}|${i}`)).text, "OK|");
  }
  assert.equal(fatal(), undefined);
  assert.equal((await settled(dir)).length, 2);
  assert.equal(d.compactInBackground(), "started");
  const files = await settled(dir);
  assert.equal(fatal(), undefined);
  d.close();
  const again = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(again.openConnection({ domid: 0 }));
  assert.equal((await c2.request("READ", "/after/n19|")).text, "19");
  assert.equal((await c2.request("READ", "/fill/n19999|")).text, "v".repeat(64));
  again.close();
  assert.ok(files.every((f) => !f.endsWith(".tmp")), files.join(" "));
  fs.rmSync(dir, { recursive: true });
});

void test("a snapshot whose fsync fails, on a filesystem that then refuses the cleanup too, is fatal and nothing is thrown", async () => {
  const { dir, d, c, fatal } = await filled(3000);
  mock.method(fsDefault, "fsync", (_fd: number, cb: (e: Error | null) => void) => setImmediate(() => cb(Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" }))));
  mock.method(fsDefault, "rmSync", () => {
    throw Object.assign(new Error("EROFS: read-only file system, rm"), { code: "EROFS" });
  });
  syncBuiltinESMExports();
  try {
    assert.equal(d.compactInBackground(), "started");
    await retryUntil(() => fatal(), { what: "the compaction's failure", timeoutMs: 10_000 });
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  assert.match(String(fatal()), /EIO/);
  const again = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(again.openConnection({ domid: 0 }));
  assert.equal((await c2.request("READ", "/fill/n2999|")).text, "v".repeat(64));
  again.close();
  fs.rmSync(dir, { recursive: true });
});

void test("durability fsync: the new journal's name is made durable (directory fsync) before the rotation returns", async () => {
  const { dir, d, c } = await filled(1000, "fsync");
  const dirFds = new Set<number>();
  let dirSyncs = 0;
  const realOpen = fsDefault.openSync;
  const realFsync = fsDefault.fsyncSync;
  mock.method(fsDefault, "openSync", (...a: Parameters<typeof fs.openSync>) => {
    const fd = realOpen(...a);
    if (a[0] === dir) dirFds.add(fd);
    return fd;
  });
  mock.method(fsDefault, "fsyncSync", (fd: number) => {
    if (dirFds.has(fd)) dirSyncs++;
    realFsync(fd);
  });
  syncBuiltinESMExports();
  try {
    assert.equal(d.compactInBackground(), "started");
    assert.equal(dirSyncs, 1);
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
  await closeSettled(dir, d);
});

import { mock, test, type TestContext } from "node:test";
import { syncBuiltinESMExports } from "node:module";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import fsDefault from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { recordingTransport } from "../support/recording-transport.js";
import { mappedDir } from "../support/native-io.js";
import { createXenstored, encodeMessage, nativeIoUnavailable, RawConnection, SYNC_INTERVAL_MS } from "../../src/xenstore/index.js";
import { encodeRecord, Journal, journalMaps, parseRecords, loadState } from "../../src/xenstore/persist.js";
import { xsio } from "../../src/xenstore/native.js";
import type { JournalOp } from "../../src/xenstore/operations.js";
import { parsePerms } from "../../src/xenstore/permissions.js";
import { hashOf } from "../../src/xenstore/name-hash.js";
import { lookup, rankOf, type Kids } from "../../src/xenstore/store.js";

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-persist-"));
}

async function populate(dir: string): Promise<void> {
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  await c.request("WRITE", "/a/b|hello");
  await c.request("WRITE", "/a/c|world");
  await c.request("SET_PERMS", "/a/b|n0|r5|b7|");
  await c.request("WRITE", "/gone/x|1");
  await c.request("RM", "/gone|");
  await c.request("WRITE", Buffer.concat([Buffer.from("/bin\0"), Buffer.from([0, 255, 1])]));
  d.close();
}

void test("a restart restores the exact tree with permissions and binary values", async () => {
  const dir = tmpdir();
  await populate(dir);
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  assert.equal((await c.request("READ", "/a/b|")).text, "hello");
  assert.equal((await c.request("GET_PERMS", "/a/b|")).text, "n0|r5|b7|");
  assert.equal((await c.request("READ", "/gone|")).error, "ENOENT");
  assert.equal((await c.request("DIRECTORY", "/|")).text, "tool|a|bin|", "creation order survives");
  await c.request("WRITE", "/new|1");
  assert.equal((await c.request("DIRECTORY", "/|")).text, "tool|a|bin|new|", "new nodes come after loaded ones");
  assert.deepEqual((await c.request("READ", "/bin|")).payload, Buffer.from([0, 255, 1]));
  assert.ok(d.loadReport[0]?.startsWith("loaded "));
  d.close();
  fs.rmSync(dir, { recursive: true });
});

void test("a reply is sent only after its change is in the journal on disk", async () => {
  const dir = tmpdir();
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  await c.request("WRITE", "/durable|yes");
  // Without close(): what a kill -9 right after the reply would leave.
  const loaded = loadState(dir);
  assert.match(loaded.report[0] ?? "", /[1-9]\d* journal records/);
  const d2 = createXenstored({ stateDir: dir });
  const c2 = new RawConnection(d2.openConnection({ domid: 0 }));
  assert.equal((await c2.request("READ", "/durable|")).text, "yes");
  d2.close();
  d.close();
  fs.rmSync(dir, { recursive: true });
});

void test("a restart builds each directory's treap with the store's own priorities: the same shape an unbroken run has", () => {
  const dir = tmpdir();
  const loaded0 = loadState(dir);
  const j = Journal.startFrom(dir, loaded0.root, loaded0);
  const perms = parsePerms(["n0"])!;
  const n = 3000;
  j.append([{ op: "put", path: "/d", value: "", perms }]);
  for (let i = 0; i < n; i++) j.append([{ op: "put", path: `/d/k${i}`, value: "", perms }]);
  j.close();
  const kids = lookup(loadState(dir).root, "/d")!.kids!;
  let sum = 0;
  const stack: [Kids, number][] = [[kids, 1]];
  while (stack.length > 0) {
    const [k, depth] = stack.pop()!;
    assert.equal(k.hash, hashOf(k.key), k.key);
    for (const c of [k.left, k.right]) {
      if (c === undefined) continue;
      assert.ok(rankOf(c.hash) <= rankOf(k.hash), `heap order at ${k.key}`);
      stack.push([c, depth + 1]);
    }
    sum += depth;
  }
  assert.ok(sum / n < 1.25 * 2 * Math.log(n), `average depth ${(sum / n).toFixed(1)}`);
  fs.rmSync(dir, { recursive: true });
});

void test("DIRECTORY order survives a restart through a snapshot and two journals: creation order, a deleted and recreated child last, missing parents where they were recreated", async () => {
  const dir = tmpdir();
  const perms = parsePerms(["n0"])!;
  const put = (p: string, value = ""): Buffer => encodeRecord({ op: "put", path: p, value, perms });
  const del = (p: string): Buffer => encodeRecord({ op: "del", path: p });
  fs.writeFileSync(path.join(dir, "snapshot-3"), Buffer.concat([put("/b"), put("/b/z", "1"), put("/b/a", "2"), put("/b/m"), put("/c"), encodeRecord({ op: "end", count: 5 })]));
  fs.writeFileSync(path.join(dir, "journal-3"), Buffer.concat([put("/b/n"), del("/b/z"), put("/b/z", "again"), put("/b/a", "over"), put("/x/y/z", "deep"), del("/c"), put("/c/k")]));
  fs.writeFileSync(path.join(dir, "journal-4"), Buffer.concat([del("/b/a"), put("/b/a", "last")]));
  const r = loadState(dir);
  assert.ok(r.report.includes("recreated missing parent /x of /x/y/z") && r.report.includes("recreated missing parent /c of /c/k"), r.report.join("\n"));
  const d = createXenstored({ stateDir: dir });
  try {
    const c = new RawConnection(d.openConnection({ domid: 0 }));
    assert.equal((await c.request("DIRECTORY", "/|")).text, "b|x|c|tool|", "/tool, made at start, after the loaded ones");
    assert.equal((await c.request("DIRECTORY", "/b|")).text, "m|n|z|a|");
    assert.equal((await c.request("READ", "/b/z|")).text, "again");
    assert.equal((await c.request("READ", "/b/a|")).text, "last");
    // New children go after the loaded ones: the generation counter starts above every loaded seq.
    await c.request("WRITE", "/b/new|v");
    assert.equal((await c.request("DIRECTORY", "/b|")).text, "m|n|z|a|new|");
  } finally {
    d.close();
  }
});

void test("a truncated journal tail is dropped and reported, everything before it recovered", async () => {
  const dir = tmpdir();
  await populate(dir);
  const journal = fs.readdirSync(dir).filter((f) => f.startsWith("journal-")).sort().pop()!;
  const d0 = createXenstored({ stateDir: dir });
  const c0 = new RawConnection(d0.openConnection({ domid: 0 }));
  await c0.request("WRITE", "/late|1");
  await c0.request("WRITE", "/later|2");
  d0.close();
  const j2 = fs.readdirSync(dir).filter((f) => f.startsWith("journal-")).sort((a, b) => Number(a.slice(8)) - Number(b.slice(8))).pop()!;
  assert.notEqual(j2, journal);
  const file = path.join(dir, j2);
  const size = fs.statSync(file).size;
  fs.truncateSync(file, size - 3);
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  assert.equal((await c.request("READ", "/late|")).text, "1");
  assert.equal((await c.request("READ", "/later|")).error, "ENOENT");
  assert.equal((await c.request("READ", "/a/c|")).text, "world");
  assert.ok(d.loadReport.some((l) => l.includes(`${j2}: dropped`) && l.includes("truncated")), d.loadReport.join("\n"));
  d.close();
  // The damage was compacted away: the next start reports nothing dropped.
  const again = createXenstored({ stateDir: dir });
  assert.ok(!again.loadReport.some((l) => l.includes("dropped")), again.loadReport.join("\n"));
  again.close();
  fs.rmSync(dir, { recursive: true });
});

void test("a corrupt snapshot record loses only that node; missing parents are recreated and reported", async () => {
  const dir = tmpdir();
  await populate(dir);
  const dd = createXenstored({ stateDir: dir });
  dd.compact();
  dd.close();
  const snap = fs.readdirSync(dir).find((f) => f.startsWith("snapshot-"))!;
  const buf = fs.readFileSync(path.join(dir, snap));
  // The record of /a: its path is followed by the u16 length of its perms text "n0".
  const at = buf.indexOf(Buffer.from([0x2f, 0x61, 0x02, 0x00]));
  assert.ok(at > 0);
  buf[at + 1] = 0x41; // "/A": the checksum no longer matches
  fs.writeFileSync(path.join(dir, snap), buf);
  const d = createXenstored({ stateDir: dir });
  assert.ok(d.loadReport.some((l) => l.includes(`${snap}: dropped`) && l.includes("checksum mismatch")), d.loadReport.join("\n"));
  assert.ok(d.loadReport.some((l) => l.includes("recreated missing parent /a of /a/b")), d.loadReport.join("\n"));
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  assert.equal((await c.request("READ", "/a/c|")).text, "world", "children of the lost node survive");
  assert.equal((await c.request("GET_PERMS", "/a/b|")).text, "n0|r5|b7|");
  d.close();
  fs.rmSync(dir, { recursive: true });
});

void test("garbage files in the state directory never stop the daemon from starting", () => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, "journal-1"), Buffer.from("this is not a journal at all"));
  fs.writeFileSync(path.join(dir, "snapshot-1"), Buffer.alloc(100, 0xab));
  const d = createXenstored({ stateDir: dir });
  assert.ok(d.loadReport.some((l) => l.includes("snapshot-1: dropped 100 bytes at offset 0")), d.loadReport.join("\n"));
  assert.ok(d.loadReport.some((l) => l.includes("journal-1: dropped 28 bytes at offset 0")), d.loadReport.join("\n"));
  d.close();
  fs.rmSync(dir, { recursive: true });
});

/**
 * Count fdatasync calls made through `node:fs` while `fn` runs (persist.ts imports the namespace),
 * blocking or on the thread pool (counted when issued).
 */
async function countingSyncs<T>(fn: (count: () => number) => Promise<T>): Promise<T> {
  let n = 0;
  const real = fsDefault.fdatasyncSync;
  const realAsync = fsDefault.fdatasync;
  mock.method(fsDefault, "fdatasyncSync", (fd: number) => {
    real(fd);
    n++;
  });
  mock.method(fsDefault, "fdatasync", (fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
    n++;
    realAsync(fd, cb);
  });
  syncBuiltinESMExports();
  try {
    return await fn(() => n);
  } finally {
    mock.restoreAll();
    syncBuiltinESMExports();
  }
}

void test("durability fsync: a write's reply comes after the journal's fdatasync", async () => {
  const dir = tmpdir();
  const d = createXenstored({ stateDir: dir, durability: "fsync" });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  await countingSyncs(async (count) => {
    const before = count();
    assert.equal((await c.request("WRITE", "/f|1")).text, "OK|");
    assert.equal(count(), before + 1, "one fdatasync before the reply");
  });
  d.close();
  fs.rmSync(dir, { recursive: true });
});

void test("durability write (the default): the record is in the journal at the reply and fdatasync'd within the interval", async () => {
  const dir = tmpdir();
  const d = createXenstored({ stateDir: dir });
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  await countingSyncs(async (count) => {
    const before = count();
    assert.equal((await c.request("WRITE", "/w|kept")).text, "OK|");
    assert.equal(count(), before, "no fdatasync on the reply path");
    // What a daemon killed right now leaves behind: the state directory as the kernel has it.
    const copy = tmpdir();
    fs.cpSync(dir, copy, { recursive: true });
    const again = createXenstored({ stateDir: copy });
    const c2 = new RawConnection(again.openConnection({ domid: 0 }));
    assert.equal((await c2.request("READ", "/w|")).text, "kept");
    again.close();
    fs.rmSync(copy, { recursive: true });
    await new Promise((r) => setTimeout(r, SYNC_INTERVAL_MS + 200));
    assert.equal(count(), before + 1, "one fdatasync after the interval");
  });
  d.close();
  fs.rmSync(dir, { recursive: true });
});

void test("pipelined requests are answered in slices, each reply only after its journal record is written", async () => {
  const dir = tmpdir();
  const d = createXenstored({ stateDir: dir });
  const journalPuts = (): number => {
    const file = fs.readdirSync(dir).find((f) => f.startsWith("journal-"))!;
    return parseRecords(fs.readFileSync(path.join(dir, file)), file).records.filter((r) => r.op === "put" && r.path.startsWith("/s/n")).length;
  };
  // Each piece the daemon writes: how many replies it carries, and how many of the batch's
  // records were on disk at that moment.
  const pieces: { replies: number; recorded: number }[] = [];
  const transport = recordingTransport((replies) => pieces.push({ replies, recorded: journalPuts() }));
  d.attach(transport, 0, "slices");
  const frames = Array.from({ length: 40 }, (_, i) => encodeMessage({ type: "WRITE", reqId: i + 1, txId: 0, payload: `/s/n${i}\0v` }));
  transport.push(Buffer.concat(frames));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    pieces.map((p) => p.replies),
    [16, 16, 8],
    "40 requests in one chunk: replies leave in slices of 16, so a pipelining client can start on them",
  );
  let answered = 0;
  for (const p of pieces) {
    answered += p.replies;
    assert.ok(p.recorded >= answered, `a piece with replies up to #${answered} left when only ${p.recorded} records were written`);
  }
  d.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * A temp dir, removed after the test, on a filesystem where journals are mapped (ext4, XFS or
 * tmpfs): the system's temp dir, else /dev/shm (tmpfs on any Linux).
 */
void test("the journal is written through a mapping reserved a chunk at a time: a killed daemon's zero-tailed journal loads whole, nothing reported; close trims it", (t) => {
  const dir = mappedDir(t);
  const loaded = loadState(dir);
  const chunk = 64 * 1024;
  const j = Journal.startFrom(dir, loaded.root, loaded, { chunk });
  const file = path.join(dir, `journal-${j.epoch}`);
  const perms = parsePerms(["n0"])!;
  const parent = { op: "put", path: "/m", value: "", perms } as const;
  j.append([parent]);
  let bytes = encodeRecord(parent).length;
  // Records of 200+ bytes, flushed in uneven batches: some batches cross a chunk boundary.
  let flushedAt = bytes;
  let crossings = 0;
  for (let i = 0; i < 700; i++) {
    const op = { op: "put", path: `/m/n${i}`, value: `${i}:` + "v".repeat(200), perms } as const;
    bytes += encodeRecord(op).length;
    j.append([op]);
    if (i % 7 === 0) {
      j.flush(false);
      if (Math.floor(flushedAt / chunk) !== Math.floor((bytes - 1) / chunk) && flushedAt % chunk !== 0) crossings++;
      flushedAt = bytes;
    }
  }
  assert.ok(crossings > 0, "a batch crossed a chunk boundary");
  j.append([{ op: "put", path: "/m/zeros", value: "ends in\0\0\0", perms }]);
  j.flush(false);
  bytes += encodeRecord({ op: "put", path: "/m/zeros", value: "ends in\0\0\0", perms }).length;
  assert.ok(bytes > 2 * chunk, "the records span several chunks");
  const size = fs.statSync(file).size;
  assert.equal(size % chunk, 0, "the file is reserved in whole chunks");
  assert.ok(size > bytes, "and ends in reserved zeros");
  // As a kill -9 now would leave it: every record back, nothing dropped, no damage.
  const now = loadState(dir);
  assert.deepEqual(now.dropped, []);
  assert.equal(now.damaged, false);
  assert.equal(now.nodes, 1 + 1 + 701, "/, /m and its 701 children");
  j.close();
  assert.equal(fs.statSync(file).size, bytes, "close trims the reserve");
  assert.deepEqual(loadState(dir).dropped, []);
});

void test("durability write encodes records straight into the mapped journal: on disk at append with nothing to flush; a record spanning two chunks, and those behind it, wait for flush in order", (t) => {
  const dir = mappedDir(t);
  const loaded = loadState(dir);
  const j = Journal.startFrom(dir, loaded.root, loaded, { chunk: 4096, direct: true });
  const perms = parsePerms(["n0"])!;
  j.append([{ op: "put", path: "/d", value: "", perms }]);
  assert.equal(j.dirty, false, "nothing waits");
  assert.equal(loadState(dir).nodes, 2, "the record is in the file before any flush");
  let waited = 0;
  for (let i = 0; i < 100; i++) {
    // Two records on one path: if the first waits, the second must land after it, not before.
    j.append([
      { op: "put", path: "/d/x", value: "v".repeat(97), perms },
      { op: "put", path: "/d/x", value: String(i), perms },
    ]);
    if (j.dirty) {
      waited++;
      j.flush(false);
      assert.equal(lookup(loadState(dir).root, "/d/x")?.value, String(i), "the pair's second write landed last");
    }
    assert.equal(j.dirty, false);
  }
  assert.ok(waited > 0, "some record spanned two chunks and waited for flush");
  const back = loadState(dir);
  assert.deepEqual(back.dropped, []);
  assert.equal(lookup(back.root, "/d/x")?.value, "99", "the last write wins: order kept");
  j.close();
  assert.equal(lookup(loadState(dir).root, "/d/x")?.value, "99");
});

void test("a change of several records is replayed only once its last record is read: one cut short, or cut by damage, is dropped whole and reported", (t) => {
  const perms = parsePerms(["n0"])!;
  const put = (p: string): JournalOp => ({ op: "put", path: p, value: "", perms });
  const dir = mappedDir(t);
  const loaded = loadState(dir);
  const j = Journal.startFrom(dir, loaded.root, loaded, { chunk: 64 * 1024, direct: true });
  j.append([put("/whole")]);
  j.append([put("/c"), put("/c/d"), put("/c/d/e")]); // a create with implicit parents: one change
  const file = path.join(dir, `journal-${j.epoch}`);
  const full = fs.readFileSync(file);
  const whole = loadState(dir);
  assert.deepEqual(whole.dropped, []);
  assert.equal(lookup(whole.root, "/c/d/e")?.value, "", "a finished change loads");
  // As a kill after the change's second record leaves the file: its third never written.
  const first = encodeRecord(put("/whole")).length + encodeRecord(put("/c")).length;
  const second = first + encodeRecord(put("/c/d")).length;
  const cut = Buffer.from(full);
  cut.fill(0, second);
  fs.writeFileSync(file, cut);
  const back = loadState(dir);
  assert.equal(lookup(back.root, "/whole")?.value, "");
  assert.equal(lookup(back.root, "/c"), undefined, "nothing of the unfinished change");
  assert.deepEqual(back.dropped, [{ file, offset: encodeRecord(put("/whole")).length, length: second - encodeRecord(put("/whole")).length, reason: "an unfinished change (2 of its records): the daemon stopped while recording it" }]);
  // A kill while the third was being encoded (its length there, its CRC and magic not yet): the
  // same, and said the same way, not as damage.
  const torn = Buffer.from(full);
  torn.fill(0, second, second + 4);
  torn.fill(0, second + 8, second + 12);
  fs.writeFileSync(file, torn);
  assert.deepEqual(loadState(dir).dropped.map((x) => x.reason), ["an unfinished change (2 of its records): the daemon stopped while recording it", "a record cut short while being written"]);
  // Damage inside a change: the records before it go with it. The valid record after the damage
  // cannot be told from a change of its own, so it is kept, as any valid record is, and the
  // parents it lost are recreated and reported.
  const damaged = Buffer.from(full);
  damaged[first + 14] = damaged[first + 14]! ^ 0xff; // inside /c/d's body
  fs.writeFileSync(file, damaged);
  const d = loadState(dir);
  assert.deepEqual(d.dropped.map((x) => x.reason), ["an unfinished change (1 of its records): damage follows its records", "checksum mismatch"]);
  assert.equal(lookup(d.root, "/c/d/e")?.value, "");
  assert.ok(d.report.some((l) => l.includes("recreated missing parent /c of /c/d/e")), d.report.join("\n"));
  j.close();
});

void test("journals a killed daemon left with nothing but their reserve are removed at the next start", async (t) => {
  const dir = mappedDir(t);
  await populate(dir);
  // A daemon killed before writing anything leaves its new epoch's journal reserved and empty.
  const loaded = loadState(dir);
  Journal.startFrom(dir, loaded.root, loaded); // never closed, as after kill -9
  const left = `journal-${loaded.epoch + 1}`;
  assert.ok(fs.statSync(path.join(dir, left)).size > 0, "the reserve is there");
  const d = createXenstored({ stateDir: dir });
  const after = fs.readdirSync(dir).filter((f) => f.startsWith("journal-"));
  assert.ok(!after.includes(left), `${left} is gone: ${after.join(" ")}`);
  assert.ok(after.includes(`journal-${loaded.epoch}`), "the journal with records stays");
  const c = new RawConnection(d.openConnection({ domid: 0 }));
  assert.equal((await c.request("READ", "/a/c|")).text, "world");
  d.close();
});

void test("without room or mappings the journal appends with write(2) at the same place: at open, and for a batch whose next chunk cannot be reserved", (t) => {
  const real = xsio!;
  const perms = parsePerms(["n0"])!;
  const put = (i: number): JournalOp => ({ op: "put", path: `/f/n${i}`, value: "x".repeat(300), perms });
  for (const [name, addon] of [
    ["no room at all", { ...real, reserve: () => -28 }],
    ["no mapping", { ...real, mapShared: () => { throw Object.assign(new Error("mmap of the journal failed: Cannot allocate memory"), { code: "ENOMEM" }); } }],
    ["room for one chunk only", { ...real, reserve: (fd: number, off: number, len: number) => (off === 0 ? real.reserve(fd, off, len) : -28) }],
  ] as const) {
    for (const direct of [false, true]) {
      const dir = mappedDir(t); // the stand-in addons are used only where journals are mapped
      const loaded = loadState(dir);
      const j = Journal.startFrom(dir, loaded.root, loaded, { chunk: 4096, addon, direct });
      j.append([{ op: "put", path: "/f", value: "", perms }]);
      for (let i = 0; i < 40; i++) {
        j.append([put(i)]);
        j.flush(false); // 12 KB in all: past the first 4 KB chunk
      }
      const back = loadState(dir);
      assert.deepEqual(back.dropped, [], `${name}, direct ${direct}`);
      assert.equal(back.nodes, 2 + 40, `${name}, direct ${direct}: every record, in place`);
      j.close();
      assert.equal(loadState(dir).nodes, 2 + 40, name);
    }
  }
  // An error without an errno code is a bug, not a missing mapping: it is not papered over.
  const dir = mappedDir(t);
  const loaded = loadState(dir);
  const buggy = { ...real, mapShared: () => { throw new TypeError("a bug"); } };
  assert.throws(() => Journal.startFrom(dir, loaded.root, loaded, { chunk: 4096, addon: buggy }), /a bug/);
});

void test("the addon's reserve and mapShared: a reserved range reads back as zeros, a store into the mapping is in the file at once; bad arguments are TypeErrors", (t) => {
  const x = xsio!;
  const dir = tmpdir();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "f");
  const fd = fs.openSync(file, "w+");
  try {
    assert.equal(x.reserve(fd, 0, 8192), 0);
    assert.equal(fs.fstatSync(fd).size, 8192);
    const map = x.mapShared(fd, 4096, 4096);
    map.write("in the page cache", 10, "latin1");
    assert.equal(fs.readFileSync(file).toString("latin1", 4096 + 10, 4096 + 27), "in the page cache");
    assert.ok(x.reserve(2147483000, 0, 1) < 0, "a closed descriptor is -errno");
    for (const [f, off, len] of [[fd, 0, 0], [fd, 0.5, 10], [-1, 0, 10], [fd, 0, 2 ** 41]]) assert.throws(() => x.reserve(f!, off!, len!), TypeError, `${f},${off},${len}`);
    assert.throws(() => x.mapShared(fd, 0, 2 ** 31), TypeError);
    assert.throws(() => x.mapShared(fd, 100, 4096), /mmap of the journal failed: Invalid argument/, "an offset off a page boundary");
  } finally {
    fs.closeSync(fd);
  }
});

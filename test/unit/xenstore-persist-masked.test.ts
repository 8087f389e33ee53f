import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { crc32 } from "node:zlib";
import { createXenstored, RawConnection } from "../../src/xenstore/index.js";
import { encodeRecord, parseRecords, scanRecords } from "../../src/xenstore/persist.js";
import { encodeRecordAt } from "../../src/xenstore/persist-records.js";
import { plainRecord } from "../support/plain-record.js";
import { rng } from "../support/rng.js";
import { parsePerms } from "../../src/xenstore/permissions.js";

const perms0 = parsePerms(["n0"])!;
const perms5 = parsePerms(["n5"])!;
/** A whole record a guest might store as a value: a put of a dom0 path, CRC and all. */
const forged = encodeRecord({ op: "put", path: "/local/domain/0/forged", value: "written by dom5", perms: perms0 }).toString("latin1");

void test("a value holding a record is stored masked: the record holds the magic only at its start, and loads back byte for byte", () => {
  const all = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join("");
  const values = [forged, "XSR1", `x${forged}y`, "XSR1".repeat(1024), `${all}XSR1${all}`, "XSR", "no magic here"];
  for (const value of values) {
    const rec = encodeRecord({ op: "put", path: "/local/domain/5/v", value, perms: perms5 });
    assert.equal(rec.indexOf("XSR1", 1, "latin1"), -1, `no magic inside the record of a ${value.length}-byte value`);
    const { records, dropped } = parseRecords(rec, "f");
    assert.deepEqual(dropped, []);
    assert.deepEqual(records, [{ op: "put", path: "/local/domain/5/v", value, perms: perms5 }]);
  }
  // Values without the magic keep the plain format (kind 1), byte for byte as before.
  assert.equal(encodeRecord({ op: "put", path: "/p", value: "XSR", perms: perms0 })[12], 1);
  assert.equal(encodeRecord({ op: "put", path: "/p", value: forged, perms: perms0 })[12], 4);
  // A path may hold the magic too ("XSR1" is a valid name): its record is masked as well.
  for (const p of ["/XSR1", "/a/XSR1/b", "/XSR1XSR1"]) {
    for (const op of [{ op: "put", path: p, value: "v", perms: perms0 }, { op: "del", path: p }] as const) {
      const rec = encodeRecord(op);
      assert.equal(rec[12], 4, `${op.op} ${p}: masked`);
      assert.equal(rec.indexOf("XSR1", 1, "latin1"), -1);
      assert.deepEqual(parseRecords(rec, "f").records, [op]);
    }
  }
});

/** A MaskSource handing out `first` in turn, then [1, 2, 3, 4]; `draws` records what it gave. */
function masksFrom(first: Buffer[], draws: Buffer[]): (buf: Buffer, at: number) => void {
  return (buf, at) => {
    const m = first[draws.length] ?? Buffer.from([1, 2, 3, 4]);
    draws.push(m);
    m.copy(buf, at);
  };
}

void test("a mask under which the record would read as the magic, inside or as its CRC, is drawn again", () => {
  const op = { op: "put", path: "/XSR1", value: "v", perms: perms0 } as const;
  // The plain body begins: kind 1, the path's length (5, u16), "/". A first mask of those bytes
  // XOR "XSR1" makes the masked body begin with the magic.
  const inside = Buffer.from([1, 5, 0, 0x2f].map((b, i) => b ^ "XSR1".charCodeAt(i)));
  // Under this one (found by search) the record's CRC comes out as the magic.
  const asCrc = Buffer.alloc(4);
  asCrc.writeUInt32LE(0x23adbb47);
  for (const first of [inside, asCrc]) {
    const draws: Buffer[] = [];
    const rec = encodeRecord(op, masksFrom([first], draws));
    assert.equal(draws.length, 2, "the first mask was refused");
    assert.deepEqual(rec.subarray(13, 17), draws[1], "the second is the record's");
    assert.equal(rec.indexOf("XSR1", 1, "latin1"), -1);
    assert.deepEqual(parseRecords(rec, "f").records, [op]);
  }
  // The CRC mask is what the test says: the masked body it gives has the magic as its CRC.
  const body = Buffer.concat([Buffer.from([4]), asCrc, Buffer.from([1, 5, 0, ...Buffer.from("/XSR1"), 2, 0, ...Buffer.from("n0"), 1, 0, 0, 0, ...Buffer.from("v")].map((b, i) => b ^ asCrc[i & 3]!))]);
  assert.equal(crc32(body), 0x31525358);
});

void test("a masked record whose inner kind does not carry its outer flag is refused", () => {
  const rec = encodeRecord({ op: "del", path: "/XSR1" }, masksFrom([], []));
  assert.equal(parseRecords(rec, "f").records.length, 1);
  // Set the "more follow" flag outside only, and give the record a fitting checksum.
  const bad = Buffer.from(rec);
  bad[12] = bad[12]! | 0x80;
  bad.writeUInt32LE(crc32(bad.subarray(12)), 8);
  assert.deepEqual(parseRecords(bad, "f").dropped.map((d) => d.reason), ["malformed record"]);
});

void test("loading refuses a put or del whose path is not a node path: what a record read from inside another one would have", () => {
  // Anywhere: a path that does not start with "/".
  for (const rec of [plainRecord("\0", "n0", Buffer.from("x")), plainRecord("local/x", "n0", Buffer.from("x")), plainRecord(""), plainRecord("a")]) {
    const { records, dropped } = parseRecords(rec, "f");
    assert.deepEqual(records, []);
    assert.deepEqual(dropped.map((d) => d.reason), ["malformed record"]);
  }
  // After damage, where records may come from inside others: any path that is not a valid one.
  const damaged = Buffer.from(plainRecord("/d", "n0", Buffer.from("x")));
  damaged[9] = damaged[9]! ^ 0xff;
  for (const rec of [plainRecord("//x"), plainRecord("/a/", "n0", Buffer.from("x")), plainRecord("/a b")]) {
    const all = Buffer.concat([damaged, rec]);
    const { records, dropped } = parseRecords(all, "f");
    assert.deepEqual(records, []);
    assert.deepEqual(dropped, [{ file: "f", offset: 0, length: all.length, reason: "checksum mismatch" }], "one range: the damage and the refused record after it");
  }
  const ok = parseRecords(Buffer.concat([damaged, plainRecord("/x", "n0", Buffer.from("x"))]), "f");
  assert.equal(ok.records.length, 1, "the same, with a valid path, loads");
});

void test("masked records keep their place in a change, and random paths and values holding the magic round-trip with no magic inside their records", () => {
  // A change of three records (the first two flagged "more follow"), the middle one masked, then a
  // change cut short: the first change is replayed whole, the second dropped whole.
  const buf = Buffer.alloc(4096);
  let o = 0;
  o = encodeRecordAt(buf, o, { op: "put", path: "/c/a", value: "1", perms: perms0 }, "n0", true);
  o = encodeRecordAt(buf, o, { op: "put", path: "/c/XSR1", value: forged, perms: perms0 }, "n0", true);
  o = encodeRecordAt(buf, o, { op: "del", path: "/c/b" }, "");
  const cut = o;
  o = encodeRecordAt(buf, o, { op: "del", path: "/d/XSR1" }, "", true);
  const seen: string[] = [];
  const dropped = scanRecords(buf.subarray(0, o), "j", (r) => seen.push(r.op === "end" ? "end" : `${r.op} ${r.path}`), { changes: true });
  assert.deepEqual(seen, ["put /c/a", "put /c/XSR1", "del /c/b"]);
  assert.deepEqual(dropped.map((d) => [d.offset, d.length]), [[cut, o - cut]], "the unfinished change, masked as it is");
  // Random ones: paths with the magic as a segment, binary values with it anywhere.
  const next = rng(1);
  const rand = (n: number): number => Math.floor(next() * n);
  for (let k = 0; k < 300; k++) {
    const bytes = Array.from({ length: rand(300) }, () => rand(256));
    const at = rand(bytes.length + 1);
    const value = String.fromCharCode(...bytes.slice(0, at)) + "XSR1".repeat(1 + rand(3)) + String.fromCharCode(...bytes.slice(at));
    const p = rand(2) === 0 ? `/r${k}/XSR1` : `/r${k}`;
    const op = rand(4) === 0 ? ({ op: "del", path: `/r${k}/XSR1x` } as const) : ({ op: "put", path: p, value, perms: perms5 } as const);
    const rec = Buffer.alloc(1024);
    const more = rand(2) === 0;
    const end = encodeRecordAt(rec, 0, op, op.op === "put" ? "n5" : "", more, (b, at) => b.writeUInt32LE(rand(2 ** 32), at));
    assert.equal(rec.subarray(0, end).indexOf("XSR1", 1, "latin1"), -1, `record ${k}: no magic inside`);
    assert.equal(rec[12], more ? 0x84 : 0x04, `record ${k}: masked, the "more follow" flag outside`);
    assert.deepEqual(parseRecords(rec.subarray(0, end), "f").records, [op], `record ${k} round-trips`);
  }
});

/** Flip a byte of the CRC of the record of `nodePath` in `file` (bit rot), found by walking its records. */
function damageRecordOf(file: string, nodePath: string): void {
  const bytes = fs.readFileSync(file);
  for (let at = 0; at + 12 <= bytes.length && bytes.readUInt32LE(at) === 0x31525358; ) {
    const end = at + 12 + bytes.readUInt32LE(at + 4);
    const [r] = parseRecords(bytes.subarray(at, end), file).records;
    if (r !== undefined && r.op === "put" && r.path === nodePath) {
      bytes[at + 9] = bytes[at + 9]! ^ 0xff;
      fs.writeFileSync(file, bytes);
      return;
    }
    at = end;
  }
  assert.fail(`no record of ${nodePath} in ${file}`);
}

void test("damage to the record around a guest's value never replays a record the guest stored in it: journal and snapshot", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-masked-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const state = path.join(dir, "state");
  const d0 = createXenstored({ stateDir: state });
  const dom0 = new RawConnection(d0.openConnection({ domid: 0 }));
  assert.equal((await dom0.request("MKDIR", "/local/domain/5|")).error, undefined);
  assert.equal((await dom0.request("SET_PERMS", "/local/domain/5|n5|")).error, undefined);
  const guest = new RawConnection(d0.openConnection({ domid: 5 }));
  const value = Buffer.from(`x${forged}y`, "latin1");
  assert.equal((await guest.request("WRITE", Buffer.concat([Buffer.from("/local/domain/5/v\0"), value]))).error, undefined);
  assert.equal((await dom0.request("WRITE", "/after|1")).error, undefined);
  d0.close();
  const journalCopy = path.join(dir, "journal-case");
  fs.cpSync(state, journalCopy, { recursive: true });

  // Undamaged, the value comes back byte for byte, from the journal and then from a snapshot.
  for (const step of ["journal", "snapshot"]) {
    const d = createXenstored({ stateDir: state });
    const c = new RawConnection(d.openConnection({ domid: 0 }));
    assert.deepEqual((await c.request("READ", "/local/domain/5/v|")).payload, value, `${step}: the value`);
    if (step === "journal") d.compact();
    d.close();
  }
  const snapshot = fs.readdirSync(state).find((f) => f.startsWith("snapshot-"));
  assert.ok(snapshot !== undefined, "compaction wrote a snapshot");
  const journal = fs.readdirSync(journalCopy).find((f) => f.startsWith("journal-"));
  assert.ok(journal !== undefined);

  // Bit rot in the CRC of the record that holds the value: in the journal, and in the snapshot.
  for (const [where, file] of [
    [journalCopy, journal],
    [state, snapshot],
  ] as const) {
    damageRecordOf(path.join(where, file), "/local/domain/5/v");
    const d = createXenstored({ stateDir: where });
    const c = new RawConnection(d.openConnection({ domid: 0 }));
    assert.equal((await c.request("READ", "/local/domain/0/forged|")).error, "ENOENT", `${file}: the record inside the value was not replayed`);
    assert.equal((await c.request("READ", "/local/domain/5/v|")).error, "ENOENT", `${file}: the damaged record is lost`);
    assert.equal((await c.request("READ", "/after|")).text, "1", `${file}: the records after it are not`);
    assert.ok(d.loadReport.some((l) => l.includes(`${file}: dropped`) && l.includes("checksum mismatch")), d.loadReport.join("\n"));
    d.close();
  }
});

void test("a state directory from before masking whose records hold the magic is rewritten masked at the next start, values intact", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vmstack-xs-masked-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const value = Buffer.from(`x${forged}y`, "latin1");
  // journal-1 as a daemon from before masking wrote it: the value plain, then a plain record of a
  // path holding the magic.
  fs.writeFileSync(path.join(dir, "journal-1"), Buffer.concat([plainRecord("/v", "n0", value), plainRecord("/XSR1", "n0", Buffer.from("1"))]));
  const d = createXenstored({ stateDir: dir });
  assert.ok(d.loadReport.some((l) => l.includes("2 records from before masking")), d.loadReport.join("\n"));
  d.close();
  const snapshot = fs.readdirSync(dir).find((f) => f.startsWith("snapshot-"));
  assert.ok(snapshot !== undefined, "a fresh snapshot was written at start");
  assert.ok(!fs.readdirSync(dir).includes("journal-1"), "and the old journal removed");
  const bytes = fs.readFileSync(path.join(dir, snapshot));
  const starts: number[] = [];
  for (let at = 0; at + 12 <= bytes.length; at += 12 + bytes.readUInt32LE(at + 4)) starts.push(at);
  for (let at = bytes.indexOf("XSR1", 0, "latin1"); at >= 0; at = bytes.indexOf("XSR1", at + 1, "latin1")) assert.ok(starts.includes(at), `the magic at ${at} starts a record`);
  const again = createXenstored({ stateDir: dir });
  assert.ok(!again.loadReport.some((l) => l.includes("before masking")), again.loadReport.join("\n"));
  const c = new RawConnection(again.openConnection({ domid: 0 }));
  assert.deepEqual((await c.request("READ", "/v|")).payload, value);
  assert.equal((await c.request("READ", "/XSR1|")).text, "1");
  again.close();
});

/**
 * The addon's encoder of short plain journal records (native/record.c): the same bytes as the
 * JavaScript encoder (persist-records.ts), the records it leaves to that encoder, and the journal
 * using it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Journal, loadState, parseRecords } from "../../src/xenstore/persist.js";
import { encodeRecordAt, encodeShortWith, recordSize, shortRecordSize } from "../../src/xenstore/persist-records.js";
import { parsePerms, permsText } from "../../src/xenstore/permissions.js";
import type { JournalOp } from "../../src/xenstore/operations.js";
import { lookup } from "../../src/xenstore/store.js";
import { builtAddon, mappedDir } from "../support/native-io.js";
import { rng } from "../support/rng.js";

const NAME = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@";

/** Random short put and del records: paths and permissions as clients make them, values of any bytes. */
function randomOps(n: number): { op: JournalOp; perms: string; more: boolean }[] {
  const r = rng(42);
  const pick = (k: number): number => Math.floor(r() * k);
  const out: { op: JournalOp; perms: string; more: boolean }[] = [];
  for (let i = 0; i < n; i++) {
    let path = "";
    while (path.length === 0 || (path.length < 100 && r() < 0.6)) path += "/" + Array.from({ length: 1 + pick(12) }, () => NAME[pick(NAME.length)]).join("");
    const perms = parsePerms(pick(2) === 0 ? ["n0"] : [`b${pick(30000)}`, `r${pick(5)}`, "w7"])!;
    const lengths = [0, 1, 16, 127, 128];
    const length = i < lengths.length ? lengths[i]! : pick(129);
    const value = String.fromCharCode(...Array.from({ length }, () => pick(256)));
    const op: JournalOp = pick(4) === 0 ? { op: "del", path } : { op: "put", path, value, perms };
    out.push({ op, perms: op.op === "put" ? permsText(op.perms) : "", more: pick(2) === 0 });
  }
  return out;
}

void test("the addon stores a short plain record byte for byte as the JavaScript encoder does, at any offset", () => {
  const encoder = builtAddon().encodeShort;
  const ops = randomOps(3000);
  let checked = 0;
  for (const [i, { op, perms, more }] of ops.entries()) {
    const size = shortRecordSize(op, perms);
    if (size < 0) continue;
    const at = i % 37;
    const native = Buffer.alloc(at + size + 8);
    const js = Buffer.alloc(at + size + 8);
    assert.equal(encodeShortWith(encoder, native, at, op, perms, more), at + size, `record ${i}`);
    assert.equal(encodeRecordAt(js, at, op, perms, more), at + size, `record ${i}`);
    assert.deepEqual(native, js, `record ${i}: ${op.op} ${op.path}`);
    assert.deepEqual(parseRecords(native.subarray(at, at + size), "f").records, [op]);
    checked++;
  }
  assert.ok(checked > 2000, `${checked} records compared`);
  // A char above 0xff (never from a client: values are read one byte per char) keeps its low byte either way.
  const wide: JournalOp = { op: "put", path: "/w", value: "\u0141\u0141", perms: parsePerms(["n0"])! };
  const [a, b] = [Buffer.alloc(27), Buffer.alloc(27)];
  assert.equal(encodeShortWith(encoder, a, 0, wide, "n0", false), encodeRecordAt(b, 0, wide, "n0", false));
  assert.deepEqual(a, b);
});

void test("the addon leaves to the JavaScript encoder a record whose path or value holds the magic, or a field over 128 chars, and stores nothing", () => {
  const { encodeShort } = builtAddon();
  const buf = Buffer.alloc(512);
  for (const [path, perms, value] of [
    ["/aXSR1", "n0", "v"],
    ["/a", "n0", "..XSR1"],
    ["/XSR1", undefined, undefined],
    ["/" + "a".repeat(128), "n0", "v"],
    ["/a", "n0", "v".repeat(129)],
    ["/a", "r1 ".repeat(43), "v"],
  ] as const) {
    assert.equal(encodeShort(buf, 0, 1, path, perms, value), -1, `${path.slice(0, 12)} ${value?.slice(0, 12)}`);
    assert.ok(buf.every((b) => b === 0), "nothing stored");
  }
  // A masked record has 5 bytes more than a plain one: the journal sizes it again.
  const magic: JournalOp = { op: "put", path: "/m", value: "XSR1", perms: parsePerms(["n0"])! };
  assert.equal(recordSize(magic, "n0"), shortRecordSize(magic, "n0") + 5);
});

void test("the addon's encoder refuses bad arguments (TypeError) and a record with no room for it (RangeError)", () => {
  const { encodeShort } = builtAddon();
  const loose = encodeShort as (...a: unknown[]) => number;
  const buf = Buffer.alloc(20);
  assert.throws(() => encodeShort(buf, 0, 1, "/a", "n0", "v"), RangeError, "a put of 26 bytes");
  assert.throws(() => encodeShort(buf, 4, 2, "/a"), RangeError, "a del of 17 bytes at 4");
  assert.throws(() => encodeShort(buf, 21, 2, "/a"), /no room for the record/, "past the end");
  assert.throws(() => loose("x", 0, 2, "/a"), TypeError);
  for (const at of [-1, 1.5, NaN, 2 ** 32 + 1, "0"]) assert.throws(() => loose(buf, at, 2, "/a"), TypeError, `at ${String(at)}`);
  assert.throws(() => encodeShort(buf, 0, 256, "/a"), TypeError);
  assert.throws(() => loose(buf, 0, 2), TypeError, "no path");
  assert.throws(() => encodeShort(buf, 0, 1, "/a"), TypeError, "a put (kind 1) without perms and value");
  assert.throws(() => encodeShort(buf, 0, 2 | 0x80, "/a", "n0", "v"), TypeError, "a del (kind 2) with them");
  assert.throws(() => encodeShort(buf, 0, 3, "/a"), TypeError, "not a put or a del");
  assert.throws(() => loose(buf, 0, 1, "/a", "n0"), TypeError, "five arguments");
  assert.ok(buf.every((b) => b === 0), "nothing stored by a refused call");
  assert.equal(encodeShort(buf, 0, 2, "/a"), 17, "a del of /a: 12 + 3 + 2 bytes");
  assert.equal(encodeShort(buf, 1, 2 | 0x80, "/"), 17, "a del flagged 'more follow', at 1");
});

void test("a mapped journal stores its short records with the addon's encoder, and masks a record that holds the magic; all load back", (t) => {
  const real = builtAddon();
  const calls: string[] = [];
  const addon = { ...real, encodeShort: (...a: Parameters<typeof real.encodeShort>): number => (calls.push(a[3]), real.encodeShort(...a)) };
  const dir = mappedDir(t);
  const loaded = loadState(dir);
  const j = Journal.startFrom(dir, loaded.root, loaded, { addon, direct: true });
  const perms = parsePerms(["n0", "r3"])!;
  j.append([{ op: "put", path: "/s", value: "", perms }, { op: "put", path: "/s/a", value: "one", perms }]);
  j.append([{ op: "put", path: "/s/m", value: "a value with XSR1 in it", perms }]);
  j.append([{ op: "put", path: "/s/long", value: "x".repeat(300), perms }]);
  j.append([{ op: "del", path: "/s/a" }]);
  assert.deepEqual(calls, ["/s", "/s/a", "/s/m", "/s/a"], "the long record goes straight to the JavaScript encoder");
  const back = loadState(dir);
  assert.deepEqual(back.dropped, []);
  assert.equal(back.nodes, 4, "/, /s, /s/m, /s/long");
  j.close();
  const after = loadState(dir);
  assert.equal(after.nodes, 4);
  assert.equal(lookup(after.root, "/s/m")?.value, "a value with XSR1 in it");
  assert.equal(lookup(after.root, "/s/long")?.value, "x".repeat(300));
  assert.equal(lookup(after.root, "/s/a"), undefined);
});

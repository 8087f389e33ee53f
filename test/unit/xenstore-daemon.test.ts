import { test } from "node:test";
import assert from "node:assert/strict";
import { recordingTransport } from "../support/recording-transport.js";
import { createXenstored, RawConnection, encodeMessage } from "../../src/xenstore/index.js";

function setup(): { d: ReturnType<typeof createXenstored>; c: RawConnection; open: (domid: number) => RawConnection } {
  const d = createXenstored();
  const open = (domid: number): RawConnection => new RawConnection(d.openConnection({ domid }));
  return { d, c: open(0), open };
}

void test("write then read returns the value without a trailing NUL", async () => {
  const { d, c } = setup();
  assert.equal((await c.request("WRITE", "/a/b|hello")).text, "OK|");
  const r = await c.request("READ", "/a/b|");
  assert.equal(r.op, "READ");
  assert.equal(r.text, "hello");
  assert.equal((await c.request("READ", "/a|")).text, "", "implicit parent has an empty value");
  d.close();
});

void test("values may hold binary bytes and NULs", async () => {
  const { d, c } = setup();
  const v = Buffer.from([0, 1, 2, 255, 0]);
  await c.request("WRITE", Buffer.concat([Buffer.from("/bin\0"), v]));
  assert.deepEqual((await c.request("READ", "/bin|")).payload, v);
  d.close();
});

void test("a relative path from a socket-like dom0 connection lands under /local/domain/0", async () => {
  const { d, c } = setup();
  await c.request("WRITE", "rel/x|1");
  assert.equal((await c.request("READ", "/local/domain/0/rel/x|")).text, "1");
  d.close();
});

void test("invalid paths and argument shapes are EINVAL, as the C daemon", async () => {
  const { d, c } = setup();
  for (const p of ["/p/|", "//p|", "/p/a b|", "/p/a.b:c|", "|", "/local/domain/|"]) {
    assert.equal((await c.request("READ", p)).error, "EINVAL", p);
  }
  assert.equal((await c.request("READ", "/x|extra|")).error, "EINVAL");
  assert.equal((await c.request("WRITE", "/y")).error, "EINVAL");
  assert.equal((await c.request("READ", "/" + "a".repeat(2047) + "|")).error, "ENOENT");
  assert.equal((await c.request("READ", "/" + "a".repeat(2048) + "|")).error, "EINVAL");
  assert.equal((await c.request("READ", "@introduceDomain|")).error, "EINVAL");
  d.close();
});

void test("unknown message types and client-sent WATCH_EVENT get ENOSYS and echo the ids", async () => {
  const { d, c } = setup();
  for (const t of [99, 20, 15, 16]) {
    const r = await c.request(t, "x|", 0);
    assert.equal(r.error, "ENOSYS", String(t));
  }
  d.close();
});

void test("directory lists children; missing nodes are ENOENT; rm is recursive", async () => {
  const { d, c } = setup();
  await c.request("WRITE", "/d/b|1");
  await c.request("WRITE", "/d/a/x|1");
  assert.equal((await c.request("DIRECTORY", "/d|")).text, "b|a|", "creation order, as the C daemon");
  assert.equal((await c.request("DIRECTORY", "/d/b|")).text, "");
  assert.equal((await c.request("DIRECTORY", "/nope|")).error, "ENOENT");
  assert.equal((await c.request("RM", "/d/zz|")).text, "OK|", "missing node with existing parent");
  assert.equal((await c.request("RM", "/q/zz|")).error, "ENOENT", "missing parent");
  assert.equal((await c.request("RM", "/|")).error, "EINVAL");
  await c.request("RM", "/d|");
  assert.equal((await c.request("READ", "/d/a/x|")).error, "ENOENT");
  d.close();
});

void test("mkdir on an existing node keeps its value", async () => {
  const { d, c } = setup();
  await c.request("WRITE", "/m|v");
  assert.equal((await c.request("MKDIR", "/m|")).text, "OK|");
  assert.equal((await c.request("READ", "/m|")).text, "v");
  d.close();
});

void test("permissions round-trip and new children inherit them", async () => {
  const { d, c } = setup();
  await c.request("WRITE", "/p/a|");
  assert.equal((await c.request("SET_PERMS", "/p/a|n0|r5|b7|")).text, "OK|");
  assert.equal((await c.request("GET_PERMS", "/p/a|")).text, "n0|r5|b7|");
  await c.request("WRITE", "/p/a/child|x");
  assert.equal((await c.request("GET_PERMS", "/p/a/child|")).text, "n0|r5|b7|");
  assert.equal((await c.request("SET_PERMS", "/p/a|")).error, "EINVAL");
  assert.equal((await c.request("SET_PERMS", "/p/a|x0|")).error, "EINVAL");
  assert.equal((await c.request("SET_PERMS", "/p/a|b0|n0|r0|")).text, "OK|");
  assert.equal((await c.request("GET_PERMS", "/p/a|")).text, "b0|n0|r0|", "duplicates kept as sent");
  d.close();
});

void test("a watch gets its initial event, then events for the subtree, relative when registered relative", async () => {
  const { d, c } = setup();
  assert.equal((await c.request("WATCH", "/w|tok|")).text, "OK|");
  await c.waitEvents(1);
  assert.deepEqual(c.events[0], { path: "/w", token: "tok" });
  await c.request("WRITE", "/w/x/y|1");
  await c.waitEvents(2);
  assert.deepEqual(c.events[1], { path: "/w/x/y", token: "tok" }, "only the written path, not implicit parents");
  await c.request("WATCH", "relw|r|");
  await c.request("WRITE", "relw/k|1");
  await c.waitEvents(4);
  assert.deepEqual(c.events[3], { path: "relw/k", token: "r" });
  assert.equal((await c.request("WATCH", "/w|tok|")).error, "EEXIST");
  assert.equal((await c.request("WATCH", "/w|tok|1|")).error, "EINVAL", "no watch depth in this protocol level");
  assert.equal((await c.request("UNWATCH", "/w|nope|")).error, "ENOENT");
  assert.equal((await c.request("UNWATCH", "/w|tok|")).text, "OK|");
  await c.request("WRITE", "/w/x|2");
  await c.request("READ", "/w/x|");
  assert.equal(c.events.length, 4);
  d.close();
});

void test("a change is matched against watched paths by hash first, then by name: a path whose hash collides with a watched one fires nothing; /, ancestors and the node itself fire, once each", async () => {
  const { d, c } = setup();
  // Found by search: the two paths' hashes (name-hash.ts hashOf) are equal.
  const [watched, other] = ["/w/n139599", "/w/n322382"];
  await c.request("WATCH", `${watched}|exact|`);
  await c.waitEvents(1);
  await c.request("WRITE", `${other}|1`);
  await c.request("WRITE", `${other}/below|1`);
  await c.request("READ", `${other}|`);
  assert.equal(c.events.length, 1, "nothing for the colliding path or below it");
  for (const [path, token] of [["/", "root"], ["/w", "parent"]]) await c.request("WATCH", `${path}|${token}|`);
  await c.waitEvents(3);
  await c.request("WRITE", `${watched}|2`);
  await c.waitEvents(6);
  assert.deepEqual(new Set(c.events.slice(3).map((e) => `${e.token} ${e.path}`)), new Set([`exact ${watched}`, `root ${watched}`, `parent ${watched}`]));
  assert.equal((await c.request("UNWATCH", `${watched}|exact|`)).text, "OK|");
  await c.request("WRITE", `${watched}|3`);
  await c.waitEvents(8);
  assert.deepEqual(c.events.slice(6).map((e) => e.token).sort(), ["parent", "root"]);
  await c.request("READ", `${watched}|`);
  assert.equal(c.events.length, 8);
  d.close();
});

void test("own watch events come before the reply that caused them, as cxenstored", async () => {
  const { d, c } = setup();
  await c.request("WATCH", "/o|t|");
  await c.waitEvents(1);
  const before = c.frames.length;
  await c.request("WRITE", "/o|1");
  assert.equal(c.frames[before]?.op, "WATCH_EVENT");
  assert.equal(c.frames[before + 1]?.op, "WRITE");
  d.close();
});

void test("rm of a subtree fires one event above it and exact events for watches inside it", async () => {
  const { d, c } = setup();
  await c.request("WRITE", "/r/a/b|1");
  await c.request("WRITE", "/r/a/c|1");
  await c.request("WATCH", "/r|up|");
  await c.request("WATCH", "/r/a/b|in|");
  await c.request("WATCH", "/r/a/zz|none|");
  await c.waitEvents(3);
  await c.request("RM", "/r/a|");
  await c.request("READ", "/r|");
  const after = c.events.slice(3);
  assert.deepEqual(after.sort((x, y) => x.token.localeCompare(y.token)), [
    { path: "/r/a/b", token: "in" },
    { path: "/r/a", token: "up" },
  ]);
  d.close();
});

void test("rewriting the same value fires again; set_perms fires; rm of a missing node does not", async () => {
  const { d, c } = setup();
  await c.request("WRITE", "/s|1");
  await c.request("WATCH", "/s|t|");
  await c.request("WRITE", "/s|1");
  await c.request("SET_PERMS", "/s|n0|r1|");
  await c.request("RM", "/s/none|");
  await c.request("READ", "/s|");
  assert.equal(c.events.length, 3);
  d.close();
});

void test("transactions are isolated and commit atomically; aborts fire nothing", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  await c.request("WRITE", "/t/v|old");
  await other.request("WATCH", "/t|w|");
  await other.waitEvents(1);
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  assert.ok(id > 0);
  await c.request("WRITE", "/t/v|new", id);
  assert.equal((await c.request("READ", "/t/v|", id)).text, "new");
  assert.equal((await other.request("READ", "/t/v|")).text, "old");
  assert.equal(other.events.length, 1);
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).text, "OK|");
  assert.equal((await other.request("READ", "/t/v|")).text, "new");
  assert.equal(other.events.length, 2);
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).error, "ENOENT", "the id is dead after END");
  const id2 = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await c.request("WRITE", "/t/v|aborted", id2);
  await c.request("TRANSACTION_END", "F|", id2);
  assert.equal((await other.request("READ", "/t/v|")).text, "new");
  assert.equal(other.events.length, 2);
  assert.equal((await c.request("READ", "/t/v|", 12345)).error, "ENOENT");
  assert.equal((await c.request("TRANSACTION_START", "|", id2)).error, "EBUSY");
  d.close();
});

void test("a read-modify-write transaction gets EAGAIN when someone wrote its node meanwhile", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  await c.request("WRITE", "/e/x|1");
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await c.request("READ", "/e/x|", id);
  await c.request("WRITE", "/e/x|2", id);
  await other.request("WRITE", "/e/x|5");
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).error, "EAGAIN");
  assert.equal((await c.request("READ", "/e/x|")).text, "5");
  d.close();
});

void test("a transaction writing an existing node commits despite an unrelated write", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  await c.request("WRITE", "/e/x|1");
  await c.request("WRITE", "/f/x|1");
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await c.request("WRITE", "/e/x|2", id);
  await other.request("WRITE", "/f/x|2");
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).text, "OK|");
  assert.equal((await c.request("READ", "/e/x|")).text, "2");
  assert.equal((await c.request("READ", "/f/x|")).text, "2");
  d.close();
});

void test("a transaction creating a node under a parent that changed gets EAGAIN", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await c.request("WRITE", "/t/x|1", id);
  await other.request("WRITE", "/other|1");
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).error, "EAGAIN");
  d.close();
});

/** Every DIRECTORY_PART page of `dir` from offset 0 through `c` (in transaction `tx`): generations and names. */
async function pageThrough(c: RawConnection, dir: string, tx = 0): Promise<{ gens: Set<string>; names: string[]; pages: number }> {
  const gens = new Set<string>();
  const names: string[] = [];
  for (let off = 0, pages = 1; ; pages++) {
    const r = await c.request("DIRECTORY_PART", `${dir}|${off}|`, tx);
    assert.equal(r.error, undefined, `page at ${off}`);
    assert.ok(r.payload.length <= 4096, `page at ${off}: ${r.payload.length} bytes`);
    const body = r.payload.subarray(r.payload.indexOf(0) + 1);
    gens.add(r.payload.toString("latin1", 0, r.payload.indexOf(0)));
    const chunk = body.toString("latin1").split("\0").filter((s) => s !== "");
    names.push(...chunk);
    off += chunk.reduce((n, s) => n + s.length + 1, 0);
    if (body.length <= 1 || (body[body.length - 1] === 0 && body[body.length - 2] === 0)) return { gens, names, pages };
  }
}

async function fillBig(c: RawConnection, n: number): Promise<void> {
  for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, k) => c.request("WRITE", `/big/child-${i + k}|`)));
}

void test("directory over 4096 bytes is E2BIG and DIRECTORY_PART returns it in chunks", async () => {
  const { d, c } = setup();
  const names = Array.from({ length: 300 }, (_, i) => `name-${String(i).padStart(4, "0")}-with-a-longer-suffix`);
  for (const n of names) await c.request("WRITE", `/big/${n}|`);
  assert.equal((await c.request("DIRECTORY", "/big|")).error, "E2BIG");
  const listed = await pageThrough(c, "/big");
  assert.ok(listed.pages >= 3, `${listed.pages} pages`);
  assert.equal(listed.gens.size, 1, "one generation on every page");
  assert.deepEqual(listed.names, names);
  d.close();
});

void test("DIRECTORY lists names of every length, on both sides of the short-field path, in creation order", async () => {
  const { d, c } = setup();
  const names = ["n".repeat(300), "s", "m".repeat(128), "k".repeat(129)];
  for (const n of names) await c.request("WRITE", `/d/${n}|v`);
  assert.equal((await c.request("DIRECTORY", "/d|")).text, names.map((n) => n + "|").join(""));
  assert.equal((await c.request("DIRECTORY", "/d/s|")).text, "", "no children: an empty reply");
  d.close();
});

void test("a big directory is listed once for DIRECTORY's E2BIG and all the DIRECTORY_PART pages after it (as libxenstore asks); a change lists it again, with a new generation", async () => {
  const { d, c } = setup();
  await fillBig(c, 2000);
  const built = async (): Promise<number> => Number(/directory listings built (\d+)/.exec((await c.request("CONTROL", "memreport|")).text)?.[1]);
  const before = await built();
  assert.equal((await c.request("DIRECTORY", "/big|")).error, "E2BIG");
  assert.equal((await built()) - before, 1, "DIRECTORY listed it");
  const first = await pageThrough(c, "/big");
  assert.ok(first.pages >= 5, `${first.pages} pages`);
  assert.equal((await built()) - before, 1, `one listing for DIRECTORY and ${first.pages} pages`);
  assert.equal(first.gens.size, 1);
  assert.deepEqual(first.names, Array.from({ length: 2000 }, (_, i) => `child-${i}`), "creation order");
  await c.request("WRITE", "/big/a-new-one|");
  const again = await pageThrough(c, "/big");
  assert.equal((await built()) - before, 2, "the changed directory listed again, once");
  assert.notDeepEqual([...again.gens], [...first.gens]);
  assert.deepEqual(again.names, [...first.names, "a-new-one"]);
  d.close();
});

void test("every DIRECTORY_PART page is read through the reader's view: a transaction's own children and its recorded read (EAGAIN), and read permission withdrawn between pages", async () => {
  const { d, c, open } = setup();
  await fillBig(c, 600);
  const other = open(0);
  const tx = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await c.request("WRITE", "/big/in-tx|", tx);
  const outside = await pageThrough(other, "/big");
  const inside = await pageThrough(c, "/big", tx);
  assert.ok(inside.pages >= 2 && outside.pages >= 2);
  assert.deepEqual(inside.names, [...outside.names, "in-tx"]);
  assert.deepEqual((await pageThrough(other, "/big")).names, outside.names, "the committed listing again, without the transaction's child");
  await other.request("WRITE", "/big/meanwhile|");
  assert.equal((await c.request("TRANSACTION_END", "T|", tx)).error, "EAGAIN", "the transaction read /big");
  await c.request("SET_PERMS", "/big|n0|r5|");
  const guest = open(5);
  assert.equal((await guest.request("DIRECTORY_PART", "/big|0|")).error, undefined);
  await c.request("SET_PERMS", "/big|n0|");
  assert.equal((await guest.request("DIRECTORY_PART", "/big|0|")).error, "EACCES");
  d.close();
});

void test("GET_DOMAIN_PATH works for any domid; dom0 special ops reply", async () => {
  const { d, c } = setup();
  assert.equal((await c.request("GET_DOMAIN_PATH", "5|")).text, "/local/domain/5|");
  assert.equal((await c.request("GET_DOMAIN_PATH", "x|")).error, "EINVAL");
  assert.equal((await c.request("IS_DOMAIN_INTRODUCED", "3|")).text, "F|");
  assert.equal((await c.request("INTRODUCE", "3|1234|5|")).text, "OK|");
  assert.equal((await c.request("IS_DOMAIN_INTRODUCED", "3|")).text, "T|");
  assert.equal((await c.request("RESUME", "3|")).text, "OK|");
  assert.equal((await c.request("RESUME", "4|")).error, "ENOENT");
  assert.equal((await c.request("RELEASE", "3|")).text, "OK|");
  assert.equal((await c.request("IS_DOMAIN_INTRODUCED", "3|")).text, "F|");
  assert.equal((await c.request("RELEASE", "3|")).error, "ENOENT");
  d.close();
});

void test("@introduceDomain and @releaseDomain watches fire with the initial event first", async () => {
  const { d, c } = setup();
  await c.request("WATCH", "@introduceDomain|i|");
  await c.request("WATCH", "@releaseDomain|r|");
  await c.request("WATCH", "@releaseDomain/7|r7|");
  await c.waitEvents(3);
  await c.request("INTRODUCE", "7|1|1|");
  await c.request("INTRODUCE", "8|1|1|");
  await c.request("RELEASE", "8|");
  await c.request("RELEASE", "7|");
  await c.waitEvents(8);
  assert.deepEqual(c.events.slice(3).map((e) => e.token), ["i", "i", "r", "r", "r7"]);
  d.close();
});

void test("RESET_WATCHES drops watches and transactions, also inside a transaction", async () => {
  const { d, c } = setup();
  await c.request("WATCH", "/rw|t|");
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  assert.equal((await c.request("RESET_WATCHES", "|", id)).text, "OK|");
  assert.equal((await c.request("RESET_WATCHES", "|")).text, "OK|");
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).error, "ENOENT");
  await c.request("WRITE", "/rw|1");
  await c.request("READ", "/rw|");
  assert.equal(c.events.length, 1);
  d.close();
});

void test("quotas can be read and set by dom0", async () => {
  const { d, c } = setup();
  assert.match((await c.request("GET_QUOTA", "")).text, /nodes .*permissions/);
  assert.equal((await c.request("GET_QUOTA", "nodes|")).text, "1000|");
  assert.equal((await c.request("SET_QUOTA", "nodes|50|")).text, "OK|");
  assert.equal((await c.request("GET_QUOTA", "nodes|")).text, "50|");
  assert.equal((await c.request("GET_QUOTA", "bogus|")).error, "EINVAL");
  assert.match((await c.request("CONTROL", "quota|")).text, /node-size\s+2048/);
  assert.equal((await c.request("CONTROL", "frob|")).error, "EINVAL");
  d.close();
});

void test("a domain's quotas follow later global changes, and its own overrides win", async () => {
  const { d, c, open } = setup();
  const dom = open(5);
  await dom.request("WRITE", "data/x|1");
  assert.equal((await c.request("GET_QUOTA", "5|nodes|")).text, "1000|");
  assert.equal((await c.request("SET_QUOTA", "nodes|50|")).text, "OK|");
  assert.equal((await c.request("GET_QUOTA", "5|nodes|")).text, "50|", "a global change reaches a domain already served");
  assert.equal((await c.request("SET_QUOTA", "5|nodes|7|")).text, "OK|");
  assert.equal((await c.request("GET_QUOTA", "5|nodes|")).text, "7|", "the domain's own override applies at once");
  assert.equal((await c.request("SET_QUOTA", "nodes|60|")).text, "OK|");
  assert.equal((await c.request("SET_QUOTA", "watches|3|")).text, "OK|");
  assert.equal((await c.request("GET_QUOTA", "5|nodes|")).text, "7|", "the domain's own override wins");
  assert.equal((await c.request("GET_QUOTA", "5|watches|")).text, "3|");
  for (let i = 0; i < 3; i++) assert.equal((await dom.request("WATCH", `data/w${i}|t|`)).text, "OK|");
  assert.equal((await dom.request("WATCH", "data/w3|t|")).error, "ENOSPC", "the changed global watch quota is enforced");
  // Released and introduced again, the domain starts from the global quotas.
  assert.equal((await c.request("RELEASE", "5|")).text, "OK|");
  open(5);
  assert.equal((await c.request("GET_QUOTA", "5|nodes|")).text, "60|");
  d.close();
});

void test("pipelined requests are answered in order with their req_ids and tx_ids echoed", async () => {
  const { d, c } = setup();
  const frames = [11, 22, 33].map((reqId) => encodeMessage({ type: "WRITE", reqId, payload: `/pp/${reqId}\0v` }));
  c.sendBytes(Buffer.concat([...frames, encodeMessage({ type: "READ", reqId: 44, txId: 0, payload: "/pp/33\0" })]));
  await c.waitFrames(4);
  assert.deepEqual(c.frames.map((f) => f.reqId), [11, 22, 33, 44]);
  assert.equal(c.frames[3]?.payload.toString(), "v");
  d.close();
});

void test("watches with the same token matching one change give one event; others follow registration order", async () => {
  const { d, c } = setup();
  await c.request("WATCH", "/dd/a|same|");
  await c.request("WATCH", "/dd|same|");
  await c.request("WATCH", "/dd/a/b|first|");
  await c.request("WATCH", "/dd|second|");
  await c.waitEvents(4);
  await c.request("WRITE", "/dd/a/b|1");
  await c.request("READ", "/dd/a/b|");
  assert.deepEqual(c.events.slice(4).map((e) => `${e.token}:${e.path}`), ["same:/dd/a/b", "first:/dd/a/b", "second:/dd/a/b"]);
  d.close();
});

void test("a transaction reads a node as it is at its first access, like the C daemon", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  await c.request("WRITE", "/fa/x|1");
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await other.request("WRITE", "/fa/x|9");
  assert.equal((await c.request("READ", "/fa/x|", id)).text, "9");
  await c.request("WRITE", "/fa/x|10", id);
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).text, "OK|");
  assert.equal((await other.request("READ", "/fa/x|")).text, "10");
  d.close();
});

void test("a transaction whose own writes no longer apply fails its commit with EAGAIN", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  await c.request("WRITE", "/gone/p|1");
  await c.request("SET_PERMS", "/gone|n0|");
  const g = open(3);
  await other.request("SET_PERMS", "/gone|n0|b3|");
  await other.request("SET_PERMS", "/gone/p|n0|b3|");
  const id = Number((await g.request("TRANSACTION_START", "|")).text.replace("|", ""));
  assert.equal((await g.request("WRITE", "/gone/p|2", id)).text, "OK|");
  await other.request("SET_PERMS", "/gone/p|n0|");
  assert.equal((await g.request("READ", "/gone/p|", id)).text, "2", "the transaction keeps its own view");
  assert.equal((await g.request("TRANSACTION_END", "T|", id)).error, "EAGAIN");
  assert.equal((await other.request("READ", "/gone/p|")).text, "1");
  d.close();
});

void test("a node read in a transaction keeps its value for the transaction after an outside write (test-xenstore 'ta err')", async () => {
  const { d, c, open } = setup();
  const other = open(0);
  await c.request("WRITE", "/rr/a|a");
  const id = Number((await c.request("TRANSACTION_START", "|")).text.replace("|", ""));
  assert.equal((await c.request("READ", "/rr/a|", id)).text, "a");
  await other.request("WRITE", "/rr/a|b");
  assert.equal((await c.request("READ", "/rr/a|", id)).text, "a");
  assert.equal((await c.request("TRANSACTION_END", "T|", id)).error, "EAGAIN");
  d.close();
});

void test("the watch events of one tick leave a watcher's connection in one write", async () => {
  const d = createXenstored();
  // The watcher's transport records each piece the daemon writes: how many frames it carries.
  const pieces: number[] = [];
  const watcher = recordingTransport((frames) => pieces.push(frames));
  d.attach(watcher, 0, "watcher");
  watcher.push(encodeMessage({ type: "WATCH", reqId: 1, payload: "/ev\0tok\0" }));
  await new Promise((r) => setImmediate(r));
  assert.equal(pieces.reduce((a, b) => a + b, 0), 2, "the WATCH reply and its initial event");
  pieces.length = 0;
  const writer = new RawConnection(d.openConnection({ domid: 0 }));
  writer.sendBytes(Buffer.concat(Array.from({ length: 10 }, (_, i) => encodeMessage({ type: "WRITE", reqId: i + 1, payload: `/ev/n${i}\0v` }))));
  await writer.waitFrames(10);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(pieces, [10], "ten writes in one chunk: ten events in one write, not ten");
  d.close();
});

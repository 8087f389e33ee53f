/**
 * One test (at least) per lesson of the notes' XSA section, exercised through unprivileged
 * in-process connections (`openConnection({ domid })`), which Xen's daemons cannot offer on a socket.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createXenstored, RawConnection, encodeMessage, type Xenstored, type XenstoredOptions } from "../../src/xenstore/index.js";
import { TokenBucket } from "../../src/xenstore/quota.js";

interface Env {
  d: Xenstored;
  dom0: RawConnection;
  open(domid: number): RawConnection;
  /** A guest with its home /local/domain/<domid> owned by itself, as a toolstack sets it up. */
  guest(domid: number): Promise<RawConnection>;
}

function setup(opts: XenstoredOptions = {}): Env {
  const d = createXenstored(opts);
  const open = (domid: number): RawConnection => new RawConnection(d.openConnection({ domid }));
  const dom0 = open(0);
  return {
    d,
    dom0,
    open,
    async guest(domid) {
      await dom0.request("MKDIR", `/local/domain/${domid}|`);
      await dom0.request("SET_PERMS", `/local/domain/${domid}|n${domid}|`);
      return open(domid);
    },
  };
}

void test("XSA-38: garbage frames from a guest neither crash the daemon nor disturb others", async () => {
  const { d, dom0, open } = setup();
  const g = open(5);
  let seed = 42;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let i = 0; i < 200; i++) {
    const len = rnd() % 64;
    const payload = Buffer.from(Array.from({ length: len }, () => rnd() % 256));
    g.sendBytes(encodeMessage({ type: rnd() % 30, reqId: i, txId: rnd() % 3, payload }));
  }
  await g.request("READ", "/local|").catch(() => undefined);
  assert.equal((await dom0.request("WRITE", "/ok|1")).text, "OK|");
  d.close();
});

void test("XSA-72: a reply never exceeds 4096 bytes (DIRECTORY → E2BIG)", async () => {
  const { d, dom0 } = setup();
  for (let i = 0; i < 200; i++) await dom0.request("WRITE", `/many/child-with-a-long-name-${i}|`);
  const r = await dom0.request("DIRECTORY", "/many|");
  assert.equal(r.error, "E2BIG");
  d.close();
});

void test("XSA-115: watch events go only to watchers that may read the node before or after", async () => {
  const { d, dom0 } = setup();
  const g = await (async () => {
    await dom0.request("MKDIR", "/local/domain/5|");
    await dom0.request("SET_PERMS", "/local/domain/5|n5|");
    return new RawConnection(d.openConnection({ domid: 5 }));
  })();
  await dom0.request("WRITE", "/pub/open|1");
  await dom0.request("SET_PERMS", "/pub|n0|r5|");
  await dom0.request("SET_PERMS", "/pub/open|n0|r5|");
  await dom0.request("WRITE", "/pub/secret|1"); // inherits n0 r5 ...
  await dom0.request("SET_PERMS", "/pub/secret|n0|"); // ... then made private
  assert.equal((await g.request("WATCH", "/pub|w|")).text, "OK|", "adding a watch is not permission-checked");
  await g.waitEvents(1);
  await dom0.request("WRITE", "/pub/secret|2");
  await dom0.request("WRITE", "/pub/open|2");
  await dom0.request("SET_PERMS", "/pub/open|n0|"); // readable before the change: still told
  await dom0.request("WRITE", "/pub/open|3"); // unreadable now: not told
  await g.request("GET_DOMAIN_PATH", "5|");
  assert.deepEqual(g.events.map((e) => e.path), ["/pub", "/pub/open", "/pub/open"]);
  d.close();
});

void test("XSA-115: special watches fire only for privileged or SET_PERMS-granted domains", async () => {
  const { d, dom0, guest } = setup();
  const g = await guest(5);
  const h = await guest(6);
  await g.request("WATCH", "@releaseDomain|r|");
  await h.request("WATCH", "@releaseDomain|r|");
  await g.waitEvents(1);
  await h.waitEvents(1);
  await dom0.request("SET_PERMS", "@releaseDomain|n0|r6|");
  assert.equal((await g.request("SET_PERMS", "@releaseDomain|n5|")).error, "EACCES");
  await dom0.request("INTRODUCE", "9|1|1|");
  await dom0.request("RELEASE", "9|");
  await g.request("GET_DOMAIN_PATH", "5|");
  await h.waitEvents(2);
  assert.equal(g.events.length, 1, "domain 5 was not granted read on @releaseDomain");
  assert.equal(h.events[1]?.path, "@releaseDomain");
  d.close();
});

void test("XSA-115: IS_DOMAIN_INTRODUCED and the other domain-management ops are dom0 only", async () => {
  const { d, guest } = setup();
  const g = await guest(5);
  for (const [op, arg] of [["IS_DOMAIN_INTRODUCED", "0|"], ["INTRODUCE", "7|1|1|"], ["RELEASE", "5|"], ["SET_TARGET", "5|0|"], ["RESUME", "5|"], ["SET_QUOTA", "nodes|9999|"], ["CONTROL", "quota|"]] as const) {
    assert.equal((await g.request(op, arg)).error, "EACCES", op);
  }
  d.close();
});

void test("XSA-115: WATCH ignores the tx_id and RM of a subtree sends no duplicate events", async () => {
  const { d, dom0 } = setup();
  await dom0.request("WRITE", "/x/a/b/c|1");
  assert.equal((await dom0.request("WATCH", "/x|t|", 999)).text, "OK|");
  await dom0.request("WATCH", "/x/a|u|");
  await dom0.waitEvents(2);
  await dom0.request("RM", "/x/a|");
  await dom0.request("READ", "/x|");
  assert.deepEqual(dom0.events.slice(2).map((e) => `${e.token}:${e.path}`).sort(), ["t:/x/a", "u:/x/a"]);
  d.close();
});

void test("XSA-206: an unprivileged domain's writes are rate limited, delayed but never failed", async () => {
  let now = 0;
  const b = new TokenBucket({ perSecond: 10, burst: 2 }, now);
  assert.equal(b.take(now), 0);
  assert.equal(b.take(now), 0);
  assert.ok(b.take(now) > 0, "the bucket is empty");
  now += 100;
  assert.equal(b.take(now), 0, "one token back after 1/rate seconds");
  const { d, guest } = setup({ writeRate: { perSecond: 2000, burst: 5 } });
  const g = await guest(5);
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => g.request("WRITE", `k${i}|v`)));
  assert.ok(replies.every((r) => r.text === "OK|"));
  d.close();
});

void test("XSA-233/425: a connection is torn down exactly once, however it ends", async () => {
  const { d, dom0, guest } = setup();
  const g = await guest(5);
  await g.request("WATCH", "w|t|");
  const before = d.watches.size;
  g.close();
  g.stream.destroy();
  await dom0.request("RELEASE", "5|");
  await new Promise((r) => setImmediate(r));
  assert.equal(d.watches.size, before - 1);
  assert.equal([...d.connections].filter((c) => c.domid === 5).length, 0);
  d.close();
});

void test("XSA-322/417: a released domain loses its ACL entries, so a reused domid inherits nothing", async () => {
  const { d, dom0, guest } = setup();
  await dom0.request("WRITE", "/shared/v|1");
  await dom0.request("SET_PERMS", "/shared/v|n0|r5|");
  const g = await guest(5);
  assert.equal((await g.request("READ", "/shared/v|")).text, "1");
  await dom0.request("RELEASE", "5|");
  assert.equal((await dom0.request("GET_PERMS", "/shared/v|")).text, "n0|");
  const again = await guest(5);
  assert.equal((await again.request("READ", "/shared/v|")).error, "EACCES");
  d.close();
});

void test("XSA-323: the path limit counts the canonical path relative to the home, for every op", async () => {
  const { d, guest } = setup();
  const g = await guest(5);
  assert.equal((await g.request("WRITE", "a".repeat(2048) + "|v")).text, "OK|");
  assert.equal((await g.request("WRITE", "a".repeat(2049) + "|v")).error, "EINVAL");
  assert.equal((await g.request("READ", `/local/domain/5/${"a".repeat(2049)}|`)).error, "EINVAL");
  assert.equal((await g.request("WATCH", `${"a".repeat(2049)}|t|`)).error, "EINVAL");
  d.close();
});

void test("XSA-324: a watch event over 4096 bytes (huge token) is dropped, the connection lives", async () => {
  const { d, dom0 } = setup();
  // The request fits, but the event for a long path below the watch would not (16+2048+2040+2 bytes).
  const token = "t".repeat(2040);
  assert.equal((await dom0.request("WATCH", `/local/domain/0/w|${token}|`)).text, "OK|");
  await dom0.waitEvents(1);
  const path = "/local/domain/0/w/" + "c".repeat(2046);
  assert.equal((await dom0.request("WRITE", `${path}|1`)).text, "OK|");
  assert.equal((await dom0.request("READ", `${path}|`)).text, "1");
  assert.equal(dom0.events.length, 1, "only the initial event");
  d.close();
});

void test("XSA-325: a guest closing its connection keeps its domain until RELEASE fires @releaseDomain", async () => {
  const { d, dom0, guest } = setup();
  const g = await guest(5);
  g.close();
  await new Promise((r) => setImmediate(r));
  assert.equal((await dom0.request("IS_DOMAIN_INTRODUCED", "5|")).text, "T|");
  await dom0.request("WATCH", "@releaseDomain|r|");
  await dom0.request("RELEASE", "5|");
  await dom0.waitEvents(2);
  d.close();
});

void test("XSA-326: node, node-size, watch, transaction and per-transaction quotas give ENOSPC", async () => {
  const { d, guest } = setup({ quotas: { nodes: 5, watches: 2, transactions: 1, "transaction-nodes": 4, "node-size": 100 } });
  const g = await guest(5);
  // The home /local/domain/5 is owned by the guest, so it counts: 4 more nodes fit.
  for (let i = 0; i < 4; i++) assert.equal((await g.request("WRITE", `n${i}|v`)).text, "OK|", `node ${i}`);
  assert.equal((await g.request("WRITE", "n4|v")).error, "ENOSPC");
  assert.equal((await g.request("WRITE", `n0|${"x".repeat(200)}`)).error, "ENOSPC");
  await g.request("WATCH", "a|1|");
  await g.request("WATCH", "a|2|");
  assert.equal((await g.request("WATCH", "a|3|")).error, "ENOSPC");
  const id = Number((await g.request("TRANSACTION_START", "|")).text.replace("|", ""));
  assert.equal((await g.request("TRANSACTION_START", "|")).error, "ENOSPC");
  for (let i = 0; i < 4; i++) await g.request("READ", `n${i}|`, id);
  assert.equal((await g.request("READ", "n4|", id)).error, "ENOSPC");
  d.close();
});

void test("XSA-326: a guest that does not read its replies is not served past its outstanding quota", async () => {
  const { d, dom0, guest } = setup({ quotas: { outstanding: 4 } });
  const g = await guest(5);
  g.stream.pause();
  const frames = Array.from({ length: 50 }, (_, i) => encodeMessage({ type: "WRITE", reqId: i, payload: `k${i}\0v` }));
  g.sendBytes(Buffer.concat(frames));
  await new Promise((r) => setTimeout(r, 20));
  const listed = (await dom0.request("DIRECTORY", "/local/domain/5|")).text.split("|").filter((s) => s !== "");
  assert.ok(listed.length <= 6, `served ${listed.length} requests while the guest read nothing`);
  g.stream.resume();
  await g.waitFrames(50);
  const all = (await dom0.request("DIRECTORY", "/local/domain/5|")).text.split("|").filter((s) => s !== "");
  assert.equal(all.length, 50);
  d.close();
});

void test("XSA-326: watch events for a watcher that does not read are dropped, writers unaffected", async () => {
  const { d, dom0, open } = setup({ eventQueueBytes: 4096 });
  const lazy = open(0);
  await lazy.request("WATCH", "/flood|t|");
  lazy.stream.pause();
  for (let i = 0; i < 500; i++) assert.equal((await dom0.request("WRITE", `/flood/k${i}|v`)).text, "OK|");
  const conn = [...d.connections].find((c) => c.watches.size > 0)!;
  assert.ok(conn.eventsDropped > 0);
  d.close();
});

void test("XSA-330: RESET_WATCHES frees every watch, so the quota cannot be bypassed", async () => {
  const { d, guest } = setup({ quotas: { watches: 3 } });
  const g = await guest(5);
  const base = d.watches.size;
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 3; i++) assert.equal((await g.request("WATCH", `w|${i}|`)).text, "OK|");
    assert.equal((await g.request("WATCH", "w|x|")).error, "ENOSPC");
    assert.equal(d.watches.size, base + 3);
    await g.request("RESET_WATCHES", "|");
    assert.equal(d.watches.size, base);
  }
  d.close();
});

void test("XSA-352: only dom0 changes a node's owner (EPERM), and owners may change the rest", async () => {
  const { d, dom0, guest } = setup();
  const g = await guest(5);
  await g.request("WRITE", "mine|1");
  assert.equal((await g.request("SET_PERMS", "mine|n0|")).error, "EPERM");
  assert.equal((await g.request("SET_PERMS", "mine|n5|r6|")).text, "OK|");
  assert.equal((await g.request("SET_PERMS", "mine|n5|r1|r2|r3|r4|r6|")).error, "ENOSPC", "at most 5 entries");
  assert.equal((await dom0.request("SET_PERMS", "/local/domain/5/mine|n7|")).text, "OK|");
  assert.equal((await g.request("SET_PERMS", "/local|n5|")).error, "EACCES", "not the owner");
  d.close();
});

void test("XSA-353: permissions on / are checked like any other node", async () => {
  const { d, guest } = setup();
  const g = await guest(5);
  assert.equal((await g.request("DIRECTORY", "/|")).error, "EACCES");
  assert.equal((await g.request("WRITE", "/top|x")).error, "EACCES");
  assert.equal((await g.request("WRITE", "/|x")).error, "EACCES");
  assert.equal((await g.request("READ", "/nonexistent|")).error, "EACCES", "existence does not leak");
  d.close();
});

void test("XSA-414/415/421: a create that fails half-way creates nothing, accounting included", async () => {
  const { d, dom0, guest } = setup({ quotas: { nodes: 3 } });
  const g = await guest(5);
  assert.equal((await g.request("WRITE", "a/b/c/d|v")).error, "ENOSPC");
  assert.equal((await dom0.request("DIRECTORY", "/local/domain/5|")).text, "");
  assert.equal(d.nodesOwned(5), 1, "only the home");
  assert.equal((await g.request("WRITE", "a/b|v")).text, "OK|");
  const id = Number((await g.request("TRANSACTION_START", "|")).text.replace("|", ""));
  assert.equal((await g.request("WRITE", "x|v", id)).error, "ENOSPC");
  assert.equal((await g.request("TRANSACTION_END", "T|", id)).text, "OK|");
  assert.equal(d.nodesOwned(5), 3);
  d.close();
});

void test("XSA-416: nothing per request stays attached to a connection once replied", async () => {
  const { d, guest } = setup();
  const g = await guest(5);
  for (let i = 0; i < 50; i++) {
    const id = Number((await g.request("TRANSACTION_START", "|")).text.replace("|", ""));
    await g.request("WRITE", `t${i}|v`, id);
    await g.request("TRANSACTION_END", i % 2 === 0 ? "T|" : "F|", id);
  }
  const conn = [...d.connections].find((c) => c.domid === 5)!;
  assert.equal(conn.transactions.size, 0);
  d.close();
});

void test("XSA-418: a very deep tree is written, listed and removed without recursion trouble", async () => {
  const { d, dom0 } = setup();
  const deep = "/deep" + "/a".repeat(1000);
  assert.equal((await dom0.request("WRITE", `${deep}|v`)).text, "OK|");
  assert.equal((await dom0.request("READ", `${deep}|`)).text, "v");
  assert.equal((await dom0.request("RM", "/deep|")).text, "OK|");
  d.close();
});

void test("XSA-419: nodes a dead domain owned are deleted, not handed to dom0", async () => {
  const { d, dom0, guest } = setup();
  await dom0.request("MKDIR", "/drop|");
  await dom0.request("SET_PERMS", "/drop|n0|b5|");
  const g = await guest(5);
  await g.request("WRITE", "/drop/mine/deeper|1");
  await dom0.request("RELEASE", "5|");
  assert.equal((await dom0.request("DIRECTORY", "/drop|")).text, "");
  assert.equal((await dom0.request("READ", "/local/domain/5|")).error, "ENOENT");
  d.close();
});

void test("XSA-420: a length field that looks negative closes only that connection", async () => {
  const { d, dom0, open } = setup();
  const bad = open(0);
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32LE(2, 0);
  hdr.writeInt32LE(-1, 12);
  bad.sendBytes(hdr);
  await bad.waitClosed();
  assert.equal((await dom0.request("WRITE", "/alive|1")).text, "OK|");
  d.close();
});

void test("XSA-481: invalid paths such as /local/domain/ are EINVAL, never a silent success", async () => {
  const { d, dom0, guest } = setup();
  const g = await guest(5);
  assert.equal((await dom0.request("WRITE", "/local/domain/|x")).error, "EINVAL");
  assert.equal((await g.request("WRITE", "|x")).error, "EINVAL");
  assert.equal((await g.request("RM", "|")).error, "EINVAL");
  d.close();
});

void test("XSA-483: a released domain's quota counters start from zero when the domid is reused", async () => {
  const { d, dom0, guest } = setup({ quotas: { nodes: 3 } });
  const g = await guest(5);
  for (let i = 0; i < 2; i++) await g.request("WRITE", `k${i}|v`);
  assert.equal((await g.request("WRITE", "k2|v")).error, "ENOSPC");
  await dom0.request("RELEASE", "5|");
  const again = await guest(5);
  for (let i = 0; i < 2; i++) assert.equal((await again.request("WRITE", `k${i}|v`)).text, "OK|");
  d.close();
});

void test("XSA-484: RESET_WATCHES inside a transaction, twice, and closing afterwards are safe", async () => {
  const { d, dom0, guest } = setup();
  const g = await guest(5);
  const id = Number((await g.request("TRANSACTION_START", "|")).text.replace("|", ""));
  await g.request("WRITE", "in-tx|v", id);
  assert.equal((await g.request("RESET_WATCHES", "|", id)).text, "OK|");
  assert.equal((await g.request("RESET_WATCHES", "|", id)).text, "OK|");
  assert.equal((await g.request("TRANSACTION_END", "T|", id)).error, "ENOENT");
  g.close();
  assert.equal((await dom0.request("READ", "/local/domain/5/in-tx|")).error, "ENOENT");
  d.close();
});

void test("SET_TARGET gives a device-model domain its target's rights", async () => {
  const { d, dom0, guest } = setup();
  const target = await guest(5);
  await target.request("WRITE", "private|1");
  const dm = await guest(6);
  assert.equal((await dm.request("READ", "/local/domain/5/private|")).error, "EACCES");
  assert.equal((await dom0.request("SET_TARGET", "6|5|")).text, "OK|");
  assert.equal((await dm.request("READ", "/local/domain/5/private|")).text, "1");
  d.close();
});

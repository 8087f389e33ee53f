import { test } from "node:test";
import assert from "node:assert/strict";
import { canonicalize, isAtOrBelow, relativeTo, isValidNodePath, segmentsOf } from "../../src/xenstore/path.js";
import { accessFor, parsePerms, formatPerms, inheritPerms, withoutDomid, PERM_READ, PERM_WRITE, PERM_OWNER, DEFAULT_PERMS } from "../../src/xenstore/permissions.js";
import { hashOf } from "../../src/xenstore/name-hash.js";
import { kidDelete, kidEntries, kidGet, kidSet, lookup, makeNode, orderedKids, rankOf, type Kids, type XsNode } from "../../src/xenstore/store.js";
import { OwnerDelta, TreeView, type OpEnv } from "../../src/xenstore/operations.js";
import { Transaction } from "../../src/xenstore/transaction.js";
import { DEFAULT_QUOTAS } from "../../src/xenstore/quota.js";
import { isVmstackError } from "../../src/lib/errors.js";

const dom0 = { domid: 0, privileged: true };
/** A node's child names in DIRECTORY order. */
const namesOf = (n: XsNode): string[] => orderedKids(n.kids).map((k) => k.key);

function env(): OpEnv {
  let gen = 1;
  return { nextGen: () => gen++, nodesOwned: () => 0 };
}

void test("an absolute path's segments are its names between slashes, none for the root", () => {
  assert.deepEqual(segmentsOf("/"), []);
  assert.deepEqual(segmentsOf("/a"), ["a"]);
  assert.deepEqual(segmentsOf("/local/domain/7/device/vif/0"), ["local", "domain", "7", "device", "vif", "0"]);
  // Not valid node paths, but split as String.prototype.split would.
  assert.deepEqual(segmentsOf("/a//b/"), ["a", "", "b", ""]);
});

void test("canonicalize maps relative paths under the domain's home and rejects bad ones", () => {
  assert.deepEqual(canonicalize("foo/bar", 3, 2048), { abs: "/local/domain/3/foo/bar", relative: true });
  assert.equal(canonicalize("/x", 3, 2048).relative, false);
  assert.equal(canonicalize("@releaseDomain", 0, 2048, true).abs, "@releaseDomain");
  for (const bad of ["", "/a/", "//a", "/a b", "/é", "/a.b"]) {
    assert.throws(() => canonicalize(bad, 0, 2048), (e) => isVmstackError(e, "XS_EINVAL"), bad);
  }
  assert.throws(() => canonicalize("@x", 0, 2048), (e) => isVmstackError(e, "XS_EINVAL"));
  assert.ok(isValidNodePath("/", 2048));
  assert.ok(isValidNodePath(`/local/domain/7/${"a".repeat(2048)}`, 2048), "counted from any domain's home");
  assert.ok(!isValidNodePath(`/local/domain/7/${"a".repeat(2049)}`, 2048));
  assert.ok(isAtOrBelow("/a/b", "/a") && isAtOrBelow("/a", "/a") && !isAtOrBelow("/ab", "/a") && isAtOrBelow("/x", "/"));
  assert.equal(relativeTo("/local/domain/4/k", 4), "k");
});

void test("the first permission entry is the owner and sets everyone else's default", () => {
  const p = parsePerms(["r3", "w5", "n6", "b7"])!;
  assert.equal(accessFor({ domid: 3, privileged: false }, p), PERM_READ | PERM_WRITE | PERM_OWNER);
  assert.equal(accessFor({ domid: 5, privileged: false }, p), PERM_WRITE);
  assert.equal(accessFor({ domid: 6, privileged: false }, p), 0);
  assert.equal(accessFor({ domid: 7, privileged: false }, p), PERM_READ | PERM_WRITE);
  assert.equal(accessFor({ domid: 9, privileged: false }, p), PERM_READ, "the owner's letter is the default");
  assert.equal(accessFor({ domid: 9, privileged: false, target: 3 }, p), PERM_READ | PERM_WRITE | PERM_OWNER, "a target's rights");
  assert.equal(accessFor({ domid: 9, privileged: true }, DEFAULT_PERMS), PERM_READ | PERM_WRITE | PERM_OWNER);
  assert.deepEqual(formatPerms(p), ["r3", "w5", "n6", "b7"]);
  assert.equal(parsePerms([]), undefined);
  assert.equal(parsePerms(["q1"]), undefined);
  assert.equal(parsePerms(["r99999"]), undefined);
  assert.equal(parsePerms(["n0"]), DEFAULT_PERMS, "lists are interned");
});

void test("unprivileged creators own what they create; dom0 keeps the parent's owner", () => {
  const parent = parsePerms(["n0", "b5"])!;
  assert.deepEqual(formatPerms(inheritPerms(parent, { domid: 5, privileged: false })), ["n5", "b5"]);
  assert.equal(inheritPerms(parent, dom0), parent);
  assert.deepEqual(formatPerms(withoutDomid(parsePerms(["n0", "r5", "b7", "w5"])!, 5)!), ["n0", "b7"]);
  assert.equal(withoutDomid(parent, 9), undefined);
});

void test("the children treap stays sorted and shares structure across versions", () => {
  let t: Kids | undefined;
  const names = Array.from({ length: 500 }, (_, i) => `n${(i * 7919) % 500}`);
  const leaf = makeNode("", DEFAULT_PERMS, 0);
  names.forEach((n, i) => (t = kidSet(t, n, leaf, i + 1)));
  const sorted = [...new Set(names)].sort();
  assert.deepEqual([...kidEntries(t)].map(([k]) => k), sorted);
  const before = t;
  const after = kidDelete(t, "n250");
  assert.equal(kidGet(after, "n250"), undefined);
  assert.equal(kidGet(before, "n250"), leaf, "old versions are untouched");
  assert.equal([...kidEntries(after)].length, sorted.length - 1);
});

void test("the children treap is a search tree on (hash, name) and a heap on each hash's rank", () => {
  let t: Kids | undefined;
  const leaf = makeNode("", DEFAULT_PERMS, 0);
  for (let i = 0; i < 2000; i++) t = kidSet(t, `k${(i * 7919) % 2000}`, leaf, i + 1);
  for (let i = 0; i < 2000; i += 3) t = kidDelete(t, `k${i}`);
  let count = 0;
  const stack: Kids[] = [t!];
  while (stack.length > 0) {
    const k = stack.pop()!;
    count++;
    assert.equal(k.hash, hashOf(k.key));
    if (k.left !== undefined) {
      assert.ok(k.left.hash < k.hash || (k.left.hash === k.hash && k.left.key < k.key), `order left of ${k.key}`);
      assert.ok(rankOf(k.left.hash) <= rankOf(k.hash), `heap left of ${k.key}`);
      stack.push(k.left);
    }
    if (k.right !== undefined) {
      assert.ok(k.right.hash > k.hash || (k.right.hash === k.hash && k.right.key > k.key), `order right of ${k.key}`);
      assert.ok(rankOf(k.right.hash) <= rankOf(k.hash), `heap right of ${k.key}`);
      stack.push(k.right);
    }
  }
  assert.equal(count, 2000 - 667);
});

void test("children whose names hash alike are told apart: each is found, replaced and deleted alone", () => {
  // Found by search: two FNV-1a collisions (the finaliser that follows is a bijection).
  const pairs = [["n512789", "n749192"], ["n512788", "n749193"]] as const;
  for (const [a, b] of pairs) assert.equal(hashOf(a), hashOf(b), `${a} and ${b} collide`);
  const [x, y] = [makeNode("x", DEFAULT_PERMS, 0), makeNode("y", DEFAULT_PERMS, 0)];
  let t: Kids | undefined;
  let seq = 0;
  for (const [a, b] of pairs) {
    t = kidSet(t, a, x, ++seq);
    t = kidSet(t, b, y, ++seq);
  }
  for (const [a, b] of pairs) {
    assert.equal(kidGet(t, a), x);
    assert.equal(kidGet(t, b), y);
  }
  const z = makeNode("z", DEFAULT_PERMS, 0);
  const replaced = kidSet(t, "n749192", z, 9);
  assert.equal(kidGet(replaced, "n749192"), z);
  assert.equal(kidGet(replaced, "n512789"), x);
  assert.deepEqual(orderedKids(replaced).map((k) => k.key), ["n512789", "n749192", "n512788", "n749193"], "a replaced child keeps its place in creation order");
  const deleted = kidDelete(t, "n512789");
  assert.equal(kidGet(deleted, "n512789"), undefined);
  assert.equal(kidGet(deleted, "n749192"), y);
  assert.deepEqual(kidEntries(deleted).map(([k]) => k), ["n512788", "n749192", "n749193"]);
});

void test("a write returns a new root and leaves the old one intact (immutable store)", () => {
  const v = new TreeView(makeNode("", DEFAULT_PERMS, 0), dom0, DEFAULT_QUOTAS, env());
  v.write("/a/b", "1");
  const r1 = v.root;
  v.write("/a/c", "2");
  assert.notEqual(v.root, r1);
  assert.equal(lookup(r1, "/a/c"), undefined);
  assert.equal(lookup(v.root, "/a/b"), lookup(r1, "/a/b"), "untouched nodes are shared");
  assert.deepEqual(namesOf(lookup(v.root, "/a")!), ["b", "c"]);
  assert.equal(v.changes.length, 2);
  assert.deepEqual(v.journal.map((j) => `${j.op} ${j.path}`), ["put /a", "put /a/b", "put /a/c"]);
  v.write("/a/a", "3");
  assert.deepEqual(namesOf(lookup(v.root, "/a")!), ["b", "c", "a"], "creation order, as the C daemon");
  // Implicit parents below an existing node: a record each, parents first, empty values.
  v.write("/a/c/d/e", "4");
  assert.deepEqual(v.journal.slice(4).map((j) => `${j.op} ${j.path}=${j.op === "put" ? j.value : ""}`), ["put /a/c/d=", "put /a/c/d/e=4"]);
});

void test("lookup walks a path string: the root, deep nodes, and look-alikes that do not exist", () => {
  const v = new TreeView(makeNode("", DEFAULT_PERMS, 0), dom0, DEFAULT_QUOTAS, env());
  for (const p of ["/a/b/c", "/a/bb", "/a/b/c/d-e_f", "/x", "/local/domain/0/name"]) v.write(p, p);
  assert.equal(lookup(v.root, "/"), v.root);
  for (const p of ["/a/b/c", "/a/bb", "/a/b/c/d-e_f", "/x", "/local/domain/0/name"]) assert.equal(lookup(v.root, p)?.value, p, p);
  for (const p of ["/a", "/a/b", "/local/domain/0"]) assert.equal(lookup(v.root, p)?.value, "", `${p} (an implicit parent)`);
  for (const p of ["/a/b/cc", "/ab", "/a/b/c/d", "/nope/deeper", "/local/domain/1", "/a/b/c/d-e_f/g"]) assert.equal(lookup(v.root, p), undefined, p);
});

void test("creating or deleting a child restamps the parent's generation, a value change does not", () => {
  const e = env();
  const v = new TreeView(makeNode("", DEFAULT_PERMS, 0), dom0, DEFAULT_QUOTAS, e);
  v.write("/p/x", "1");
  const g1 = lookup(v.root, "/p")!.gen;
  v.write("/p/x", "2");
  assert.equal(lookup(v.root, "/p")!.gen, g1);
  v.write("/p/y", "1");
  const g2 = lookup(v.root, "/p")!.gen;
  assert.ok(g2 > g1);
  v.rm("/p/x");
  assert.ok(lookup(v.root, "/p")!.gen > g2);
});

function base(): { root: ReturnType<typeof makeNode>; e: OpEnv } {
  const e = env();
  const v = new TreeView(makeNode("", DEFAULT_PERMS, 0), dom0, DEFAULT_QUOTAS, e);
  v.write("/e/x", "1");
  v.mkdir("/t");
  return { root: v.root, e };
}

function outside(root: ReturnType<typeof makeNode>, e: OpEnv, f: (v: TreeView) => void): ReturnType<typeof makeNode> {
  const v = new TreeView(root, dom0, DEFAULT_QUOTAS, e);
  f(v);
  return v.root;
}

const conflict = (e: unknown): boolean => isVmstackError(e, "XS_EAGAIN");

void test("worked example a: writing an existing node commits despite an unrelated create", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  tx.apply({ kind: "write", path: "/e/x", value: "2" });
  const now = outside(root, e, (v) => v.write("/f/x", "1"));
  const r = tx.commit(now, e);
  assert.equal(lookup(r.root, "/e/x")!.value, "2");
  assert.ok(lookup(r.root, "/f/x") !== undefined, "the replay keeps the other writer's node");
});

void test("worked example b: two transactions creating siblings conflict", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  tx.apply({ kind: "write", path: "/t/x", value: "1" });
  const now = outside(root, e, (v) => v.write("/t/y", "1"));
  assert.throws(() => tx.commit(now, e), conflict);
});

void test("worked example c: creating under a missing parent conflicts with any new top-level node", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  tx.apply({ kind: "write", path: "/n/x", value: "1" });
  const now = outside(root, e, (v) => v.write("/other", "1"));
  assert.throws(() => tx.commit(now, e), conflict);
});

void test("worked example d: read-modify-write loses no update", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  assert.equal(tx.view.read("/e/x"), "1");
  tx.apply({ kind: "write", path: "/e/x", value: "2" });
  const now = outside(root, e, (v) => v.write("/e/x", "5"));
  assert.throws(() => tx.commit(now, e), conflict);
});

void test("worked example e: a stale read of a missing node conflicts once it is created", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  assert.throws(() => tx.view.read("/e/missing"), (err) => isVmstackError(err, "XS_ENOENT"));
  const now = outside(root, e, (v) => v.write("/e/missing", "1"));
  assert.throws(() => tx.commit(now, e), conflict);
});

void test("worked example f: a read-only transaction commits whatever happened elsewhere", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  tx.view.read("/e/x");
  const now = outside(root, e, (v) => v.write("/z/q", "1"));
  assert.equal(tx.commit(now, e).root, now);
});

void test("worked example g: removing a subtree conflicts with a change below it", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  tx.apply({ kind: "rm", path: "/e" });
  const now = outside(root, e, (v) => v.write("/e/x", "2"));
  assert.throws(() => tx.commit(now, e), conflict);
});

void test("an unchanged store commits by identity: the transaction's root becomes the store's", () => {
  const { root, e } = base();
  const tx = new Transaction(1, root, dom0, DEFAULT_QUOTAS, e);
  tx.apply({ kind: "write", path: "/e/y", value: "1" });
  assert.equal(tx.commit(root, e).root, tx.view.root);
});

void test("children's treaps stay as shallow as random ones for names that differ only at the end (priorities are well mixed)", () => {
  for (const name of [(i: number) => `k${i}`, (i: number) => String(i), (i: number) => `device-${i}-backend`]) {
    const v = new TreeView(makeNode("", DEFAULT_PERMS, 0), dom0, DEFAULT_QUOTAS, env());
    const n = 5000;
    for (let i = 0; i < n; i++) v.write(`/d/${name(i)}`, "");
    let sum = 0;
    let max = 0;
    const stack: [Kids, number][] = [[lookup(v.root, "/d")!.kids!, 1]];
    while (stack.length > 0) {
      const [t, d] = stack.pop()!;
      sum += d;
      max = Math.max(max, d);
      if (t.left !== undefined) stack.push([t.left, d + 1]);
      if (t.right !== undefined) stack.push([t.right, d + 1]);
    }
    // A random treap's expected average depth is about 2 ln n (17 here); FNV-1a alone gave 2x that.
    assert.ok(sum / n < 1.25 * 2 * Math.log(n), `${name(0)}..: average depth ${(sum / n).toFixed(1)}`);
    assert.ok(max < 4 * Math.log2(n), `${name(0)}..: depth ${max}`);
  }
});

void test("an owner delta counts nodes per domain, one owner without a map and any number with one", () => {
  const d = new OwnerDelta();
  d.add(0, 3);
  d.add(5, -2);
  d.add(0, -1);
  d.add(5, 1);
  d.add(9, 4);
  assert.deepEqual([d.get(0), d.get(5), d.get(9), d.get(7)], [2, -1, 4, 0]);
  const totals = new Map([[5, 10]]);
  d.addTo(totals);
  assert.deepEqual([...totals].sort((a, b) => a[0] - b[0]), [[0, 2], [5, 9], [9, 4]]);
  // A subtree of several owners removed in one view: each owner's count drops by its own nodes.
  const v = new TreeView(makeNode("", DEFAULT_PERMS, 0), dom0, DEFAULT_QUOTAS, env());
  v.write("/s/a", "");
  v.setPerms("/s/a", parsePerms(["n3"])!);
  v.write("/s/b", "");
  v.setPerms("/s/b", parsePerms(["n4"])!);
  const r = new TreeView(v.root, dom0, DEFAULT_QUOTAS, env());
  r.rm("/s");
  assert.deepEqual([r.ownerDelta.get(0), r.ownerDelta.get(3), r.ownerDelta.get(4)], [-1, -1, -1]);
});

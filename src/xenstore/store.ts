/**
 * The store: an immutable tree (DESIGN.md; oxenstored's store.ml idea). Nodes are never mutated; a
 * change copies the path from the changed node up to the root and returns a new root, sharing
 * everything else. A transaction therefore holds its snapshot by reference, and a commit on an
 * unchanged store is a single identity check (see transaction.ts).
 *
 * Children are a persistent treap: insert, delete and lookup are O(log n) with O(log n) copying, so
 * a directory with 100,000 entries costs no full copy per write. The treap is ordered by a hash of
 * each child's name (name-hash.ts; then by the name, for names whose hashes collide), and its heap
 * priority is a second mix of that hash, so the shape is canonical (but among names that hash
 * alike, whose priorities tie too: there it depends on the order they came in). Ordering by the
 * hash makes a step down the tree an integer comparison: ordered by name, every step was a string
 * comparison (V8's StringLessThan, then StringEqual), about a sixth of the instructions of a
 * one-in-flight WRITE to one of 1,000 siblings. Each child also carries `seq`, the generation at which it was added:
 * DIRECTORY lists children in that order, i.e. creation order, exactly as the C daemon (which
 * appends a new child's name to its parent's list) — so Xen's tools print the same listings
 * against both daemons.
 *
 * Values are kept as latin1 strings (one byte per char, exact round trip for binary values) rather
 * than Buffers: a short string costs a fraction of a Buffer object, which matters at 100k nodes.
 *
 * `gen` is the C daemon's per-node generation: the global counter value of the node's last write
 * (value, perms, or the set of its children). Copying a node only because a descendant changed does
 * not change its gen. Every walk here is iterative (XSA-418: no recursion over the tree's depth).
 */
import { hashOf } from "./name-hash.js";
import type { Perms } from "./permissions.js";

export interface XsNode {
  readonly value: string;
  readonly perms: Perms;
  readonly kids: Kids | undefined;
  readonly gen: number;
}

export interface Kids {
  readonly key: string;
  readonly node: XsNode;
  /** hashOf(key): the treap's order (then the key); rankOf(hash) is its heap priority. */
  readonly hash: number;
  /** When the child was added (orders DIRECTORY). */
  readonly seq: number;
  readonly left: Kids | undefined;
  readonly right: Kids | undefined;
}

export function makeNode(value: string, perms: Perms, gen: number, kids?: Kids): XsNode {
  return { value, perms, kids, gen };
}

/**
 * A child's heap priority, from its hash: a second, different mix, so that priorities do not
 * follow the order (a treap whose priorities follow its keys is a list).
 */
export function rankOf(hash: number): number {
  let h = hash ^ (hash >>> 15);
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  h = Math.imul(h, 0x297a2d39);
  h ^= h >>> 15;
  return h | 0;
}

/** True if (hash, key) comes before `t`'s entry in the treap's order. */
function before(hash: number, key: string, t: Kids): boolean {
  return hash === t.hash ? key < t.key : hash < t.hash;
}

export function kidGet(t: Kids | undefined, key: string): XsNode | undefined {
  const h = hashOf(key);
  while (t !== undefined) {
    if (h === t.hash) {
      if (key === t.key) return t.node;
      t = key < t.key ? t.left : t.right;
    } else t = h < t.hash ? t.left : t.right;
  }
  return undefined;
}

function mk(key: string, node: XsNode, hash: number, seq: number, left: Kids | undefined, right: Kids | undefined): Kids {
  return { key, node, hash, seq, left, right };
}

/** split()'s two results (no pair allocated per level). */
let splitLeft: Kids | undefined;
let splitRight: Kids | undefined;

/** Split into splitLeft (before (hash, key)) and splitRight (the rest). Depth is O(log n) expected, so recursion here is bounded. */
function split(t: Kids | undefined, hash: number, key: string): void {
  if (t === undefined) {
    splitLeft = splitRight = undefined;
  } else if (!before(hash, key, t)) {
    split(t.right, hash, key);
    splitLeft = mk(t.key, t.node, t.hash, t.seq, t.left, splitLeft);
  } else {
    split(t.left, hash, key);
    splitRight = mk(t.key, t.node, t.hash, t.seq, splitRight, t.right);
  }
}

function merge(a: Kids | undefined, b: Kids | undefined): Kids | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  if (rankOf(a.hash) >= rankOf(b.hash)) return mk(a.key, a.node, a.hash, a.seq, a.left, merge(a.right, b));
  return mk(b.key, b.node, b.hash, b.seq, merge(a, b.left), b.right);
}

/** kidReplace's walk down, reused: a WRITE allocates only the new nodes. */
const walked: (Kids | undefined)[] = [];

/** Replace the node of an existing key, iteratively (the hot path of a WRITE); undefined if absent. */
export function kidReplace(t: Kids | undefined, key: string, node: XsNode): Kids | undefined {
  const h = hashOf(key);
  const path = walked;
  let n = 0;
  let cur = t;
  while (cur !== undefined && (h !== cur.hash || key !== cur.key)) {
    path[n++] = cur;
    cur = before(h, key, cur) ? cur.left : cur.right;
  }
  if (cur === undefined) {
    while (n > 0) path[--n] = undefined; // hold on to nothing
    return undefined;
  }
  let out = mk(key, node, h, cur.seq, cur.left, cur.right);
  while (n > 0) {
    const p = path[--n]!;
    path[n] = undefined;
    out = before(h, key, p) ? mk(p.key, p.node, p.hash, p.seq, out, p.right) : mk(p.key, p.node, p.hash, p.seq, p.left, out);
  }
  return out;
}

/** Insert (with creation order `seq`) or replace (keeping the child's seq). */
export function kidSet(t: Kids | undefined, key: string, node: XsNode, seq: number): Kids {
  return kidReplace(t, key, node) ?? kidInsert(t, key, node, seq);
}

/** Insert a key that is not there (with creation order `seq`). */
function kidInsert(t: Kids | undefined, key: string, node: XsNode, seq: number): Kids {
  const h = hashOf(key);
  return insertAt(t, key, node, h, rankOf(h), seq);
}

function insertAt(t: Kids | undefined, key: string, node: XsNode, hash: number, rank: number, seq: number): Kids {
  if (t === undefined) return mk(key, node, hash, seq, undefined, undefined);
  if (rank > rankOf(t.hash)) {
    split(t, hash, key);
    const out = mk(key, node, hash, seq, splitLeft, splitRight);
    splitLeft = splitRight = undefined; // hold on to nothing
    return out;
  }
  return before(hash, key, t)
    ? mk(t.key, t.node, t.hash, t.seq, insertAt(t.left, key, node, hash, rank, seq), t.right)
    : mk(t.key, t.node, t.hash, t.seq, t.left, insertAt(t.right, key, node, hash, rank, seq));
}

export function kidDelete(t: Kids | undefined, key: string): Kids | undefined {
  const h = hashOf(key);
  const del = (t: Kids | undefined): Kids | undefined => {
    if (t === undefined) return undefined;
    if (h === t.hash && t.key === key) return merge(t.left, t.right);
    return before(h, key, t) ? mk(t.key, t.node, t.hash, t.seq, del(t.left), t.right) : mk(t.key, t.node, t.hash, t.seq, t.left, del(t.right));
  };
  return del(t);
}

/**
 * The tree's entries in its order (by hash), iteratively (deep trees must not exhaust the stack), into an
 * array: spreading a generator cost more than orderedKids' sort.
 */
function kidsInOrder(t: Kids | undefined): Kids[] {
  const out: Kids[] = [];
  const stack: Kids[] = [];
  for (let cur = t; cur !== undefined || stack.length > 0; ) {
    while (cur !== undefined) {
      stack.push(cur);
      cur = cur.left;
    }
    const n = stack.pop()!;
    out.push(n);
    cur = n.right;
  }
  return out;
}

/** Children in name order (UTF-16 code units, as `<`). */
export function kidEntries(t: Kids | undefined): [string, XsNode][] {
  return kidsInOrder(t)
    .map((n): [string, XsNode] => [n.key, n.node])
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** Children in creation order (DIRECTORY order). */
export function orderedKids(t: Kids | undefined): Kids[] {
  return kidsInOrder(t).sort((a, b) => a.seq - b.seq);
}

export function hasChildren(node: XsNode): boolean {
  return node.kids !== undefined;
}

/** The node at canonical absolute path `abs` ("/" or "/a/b"), or undefined. Walks the string
 * itself rather than splitting it: this is the hot path of every READ. */
export function lookup(root: XsNode, abs: string): XsNode | undefined {
  let n: XsNode | undefined = root;
  for (let i = 1; i < abs.length && n !== undefined; ) {
    let j = abs.indexOf("/", i);
    if (j < 0) j = abs.length;
    n = kidGet(n.kids, abs.slice(i, j));
    i = j + 1;
  }
  return n;
}

/** The chain of existing nodes along `segs`: chain[0] is the root; chain.length-1 is the depth reached. */
export function ancestry(root: XsNode, segs: readonly string[]): XsNode[] {
  const chain: XsNode[] = [root];
  let n: XsNode = root;
  for (const s of segs) {
    const c = kidGet(n.kids, s);
    if (c === undefined) break;
    chain.push(c);
    n = c;
  }
  return chain;
}

/**
 * Put `leaf` (or delete, if undefined) at path `segs[0..depth)`, where `chain[i]` is the existing
 * node at depth i for every i < depth, and chain[depth] the node `leaf` replaces if there is one
 * (ancestry() gives both). Returns the new root. If the child set of the direct parent changes
 * (insert or delete), the parent is stamped with `gen` as the C daemon rewrites the parent's
 * record then; ancestors further up only get new identities.
 */
export function rebuild(chain: readonly XsNode[], segs: readonly string[], leaf: XsNode | undefined, gen: number, depth = segs.length): XsNode {
  if (depth === 0) {
    if (leaf === undefined) throw new Error("rebuild: cannot delete the root");
    return leaf;
  }
  let child: XsNode | undefined = leaf;
  for (let i = depth - 1; i >= 0; i--) {
    const parent = chain[i]!;
    const key = segs[i]!;
    let kids: Kids | undefined;
    let g = parent.gen;
    if (child === undefined) {
      kids = kidDelete(parent.kids, key);
      g = gen;
    } else if (i + 1 < chain.length) {
      const replaced = kidReplace(parent.kids, key, child);
      if (replaced === undefined) throw new Error(`rebuild: ${key} is not a child of the node at depth ${i}`);
      kids = replaced;
    } else {
      // A new child (the deepest level of a create): the parent's child set changed, so it gets this gen.
      kids = kidInsert(parent.kids, key, child, gen);
      g = gen;
    }
    child = { value: parent.value, perms: parent.perms, kids, gen: g };
  }
  return child!;
}

/** Visit every node of a subtree (pre-order, iteratively). `path` is the subtree root's absolute path. */
export function walk(node: XsNode, path: string, visit: (path: string, node: XsNode) => void): void {
  const stack: [string, XsNode][] = [[path, node]];
  while (stack.length > 0) {
    const [p, n] = stack.pop()!;
    visit(p, n);
    const kids = [...kidEntries(n.kids)];
    for (let i = kids.length - 1; i >= 0; i--) {
      const [k, c] = kids[i]!;
      stack.push([p === "/" ? `/${k}` : `${p}/${k}`, c]);
    }
  }
}

/** Count the nodes of a subtree by owner domid (quota accounting). */
export function countByOwner(node: XsNode, into = new Map<number, number>(), sign = 1): Map<number, number> {
  // One stack of both kinds (nodes, and children's treap entries): no generator per node.
  const stack: (XsNode | Kids)[] = [node];
  while (stack.length > 0) {
    const x = stack.pop()!;
    if ("hash" in x) {
      stack.push(x.node);
      if (x.left !== undefined) stack.push(x.left);
      if (x.right !== undefined) stack.push(x.right);
      continue;
    }
    const owner = x.perms[0]?.domid ?? 0;
    into.set(owner, (into.get(owner) ?? 0) + sign);
    if (x.kids !== undefined) stack.push(x.kids);
  }
  return into;
}

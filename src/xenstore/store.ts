/**
 * The store: an immutable tree (DESIGN.md; oxenstored's store.ml idea). Nodes are never mutated; a
 * change copies the path from the changed node up to the root and returns a new root, sharing
 * everything else. A transaction therefore holds its snapshot by reference, and a commit on an
 * unchanged store is a single identity check (see transaction.ts).
 *
 * Children are a persistent treap keyed by name (priorities are a hash of the name, so the shape is
 * canonical): insert, delete and lookup are O(log n) with O(log n) copying, so a directory with
 * 100,000 entries costs no full copy per write. Each child also carries `seq`, the generation at
 * which it was added: DIRECTORY lists children in that order, i.e. creation order, exactly as the
 * C daemon (which appends a new child's name to its parent's list) — so Xen's tools print the same
 * listings against both daemons.
 *
 * Values are kept as latin1 strings (one byte per char, exact round trip for binary values) rather
 * than Buffers: a short string costs a fraction of a Buffer object, which matters at 100k nodes.
 *
 * `gen` is the C daemon's per-node generation: the global counter value of the node's last write
 * (value, perms, or the set of its children). Copying a node only because a descendant changed does
 * not change its gen. Every walk here is iterative (XSA-418: no recursion over the tree's depth).
 */
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
  readonly prio: number;
  /** When the child was added (orders DIRECTORY). */
  readonly seq: number;
  readonly left: Kids | undefined;
  readonly right: Kids | undefined;
}

export function makeNode(value: string, perms: Perms, gen: number, kids?: Kids): XsNode {
  return { value, perms, kids, gen };
}

/** A child's treap priority: a hash of its name (the same for every tree, so shapes are canonical). */
export function prioOf(key: string): number {
  // FNV-1a: deterministic priorities give every set of names one canonical treap shape.
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // FNV-1a alone leaves names that differ only at the end (k0..k999) with priorities that follow
  // their order: that treap was twice as deep as a random one (for k0..k999 average depth 25, at
  // most 56). MurmurHash3's finaliser mixes every bit into every other: 12.7 and 23.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function kidGet(t: Kids | undefined, key: string): XsNode | undefined {
  while (t !== undefined) {
    if (key === t.key) return t.node;
    t = key < t.key ? t.left : t.right;
  }
  return undefined;
}

function mk(key: string, node: XsNode, prio: number, seq: number, left: Kids | undefined, right: Kids | undefined): Kids {
  return { key, node, prio, seq, left, right };
}

/** split()'s two results (no pair allocated per level). */
let splitLeft: Kids | undefined;
let splitRight: Kids | undefined;

/** Split into splitLeft (< key) and splitRight (>= key). Depth is O(log n) expected, so recursion here is bounded. */
function split(t: Kids | undefined, key: string): void {
  if (t === undefined) {
    splitLeft = splitRight = undefined;
  } else if (t.key < key) {
    split(t.right, key);
    splitLeft = mk(t.key, t.node, t.prio, t.seq, t.left, splitLeft);
  } else {
    split(t.left, key);
    splitRight = mk(t.key, t.node, t.prio, t.seq, splitRight, t.right);
  }
}

function merge(a: Kids | undefined, b: Kids | undefined): Kids | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  if (a.prio >= b.prio) return mk(a.key, a.node, a.prio, a.seq, a.left, merge(a.right, b));
  return mk(b.key, b.node, b.prio, b.seq, merge(a, b.left), b.right);
}

/** kidReplace's walk down, reused: a WRITE allocates only the new nodes. */
const walked: (Kids | undefined)[] = [];

/** Replace the node of an existing key, iteratively (the hot path of a WRITE); undefined if absent. */
export function kidReplace(t: Kids | undefined, key: string, node: XsNode): Kids | undefined {
  const path = walked;
  let n = 0;
  let cur = t;
  while (cur !== undefined && cur.key !== key) {
    path[n++] = cur;
    cur = key < cur.key ? cur.left : cur.right;
  }
  if (cur === undefined) {
    while (n > 0) path[--n] = undefined; // hold on to nothing
    return undefined;
  }
  let out = mk(key, node, cur.prio, cur.seq, cur.left, cur.right);
  while (n > 0) {
    const p = path[--n]!;
    path[n] = undefined;
    out = key < p.key ? mk(p.key, p.node, p.prio, p.seq, out, p.right) : mk(p.key, p.node, p.prio, p.seq, p.left, out);
  }
  return out;
}

/** Insert (with creation order `seq`) or replace (keeping the child's seq). */
export function kidSet(t: Kids | undefined, key: string, node: XsNode, seq: number): Kids {
  return kidReplace(t, key, node) ?? kidInsert(t, key, node, seq);
}

/** Insert a key that is not there (with creation order `seq`). */
function kidInsert(t: Kids | undefined, key: string, node: XsNode, seq: number): Kids {
  return insertAt(t, key, node, prioOf(key), seq);
}

function insertAt(t: Kids | undefined, key: string, node: XsNode, prio: number, seq: number): Kids {
  if (t === undefined) return mk(key, node, prio, seq, undefined, undefined);
  if (prio > t.prio) {
    split(t, key);
    const out = mk(key, node, prio, seq, splitLeft, splitRight);
    splitLeft = splitRight = undefined; // hold on to nothing
    return out;
  }
  return key < t.key
    ? mk(t.key, t.node, t.prio, t.seq, insertAt(t.left, key, node, prio, seq), t.right)
    : mk(t.key, t.node, t.prio, t.seq, t.left, insertAt(t.right, key, node, prio, seq));
}

export function kidDelete(t: Kids | undefined, key: string): Kids | undefined {
  const del = (t: Kids | undefined): Kids | undefined => {
    if (t === undefined) return undefined;
    if (t.key === key) return merge(t.left, t.right);
    return key < t.key ? mk(t.key, t.node, t.prio, t.seq, del(t.left), t.right) : mk(t.key, t.node, t.prio, t.seq, t.left, del(t.right));
  };
  return del(t);
}

/**
 * The tree's entries in name order, iteratively (deep trees must not exhaust the stack), into an
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

/** Children in name order. */
export function kidEntries(t: Kids | undefined): [string, XsNode][] {
  return kidsInOrder(t).map((n) => [n.key, n.node]);
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
    if ("prio" in x) {
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

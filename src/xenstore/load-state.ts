/**
 * Loading a state directory (persist.ts has the files and the journal): the newest snapshot, then
 * every journal from its epoch on, into a mutable tree, then frozen into the store's immutable
 * one. Never throws on damaged files: it recovers what is valid and reports exactly what was
 * dropped or repaired.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DEFAULT_PERMS, type Perms } from "./permissions.js";
import { hashOf } from "./name-hash.js";
import { makeNode, rankOf, type Kids, type XsNode } from "./store.js";
import type { JournalOp } from "./operations.js";
import { scanRecords, type Dropped } from "./persist-records.js";

interface MNode {
  value: string;
  perms: Perms;
  kids: Map<string, MNode> | undefined;
  /** When it was created (LoadTree.seq): orders DIRECTORY. */
  readonly seq: number;
  /** Set while freezing (post-order). */
  expanded?: boolean;
  frozen?: XsNode;
}

export interface LoadResult {
  readonly root: XsNode;
  readonly epoch: number;
  readonly dropped: readonly Dropped[];
  /** Human-readable lines: what was loaded and exactly what was dropped or repaired. */
  readonly report: readonly string[];
  readonly nodes: number;
  /** Nodes per owner domid (quota accounting). */
  readonly owners: Map<number, number>;
  /** Highest child seq used: the daemon's generation counter starts above it. */
  readonly maxSeq: number;
  /**
   * Anything dropped or repaired, or a record from before masking that holds the magic
   * (persist-records.ts): the daemon then compacts at once, so the damage is gone and every record
   * is in today's format.
   */
  readonly damaged: boolean;
  readonly snapshotBytes: number;
  readonly journalBytes: number;
}

/**
 * The tree under construction. Records name full paths; snapshots list nodes in pre-order, so the
 * chain of the last record's ancestors (a stack) almost always holds the next record's parent: a
 * lookup costs a few string compares, with no per-path index to allocate and collect. Records out
 * of that order (journals, damage) walk down from the deepest ancestor on the chain.
 */
class LoadTree {
  readonly root: MNode = { value: "", perms: DEFAULT_PERMS, kids: undefined, seq: 0 };
  /** The chain: paths and their nodes, root first. */
  #paths: string[] = ["/"];
  #nodes: MNode[] = [this.root];
  /** Children are numbered as they are created: DIRECTORY's order (creation order) survives. */
  seq = 0;

  constructor(private readonly repairs: string[]) {}

  apply(rec: JournalOp): void {
    if (rec.op === "del") this.#del(rec.path);
    else this.#put(rec.path, rec.value, rec.perms);
  }

  #child(parent: MNode, name: string, value: string, perms: Perms): MNode {
    const c: MNode = { value, perms, kids: undefined, seq: ++this.seq };
    (parent.kids ??= new Map()).set(name, c);
    return c;
  }

  /** The node at `p` (creating missing ancestors, reported), leaving the chain ending at it. */
  #reach(p: string, forPath: string): MNode {
    const paths = this.#paths;
    const nodes = this.#nodes;
    for (;;) {
      const top = paths[paths.length - 1]!;
      const node = nodes[nodes.length - 1]!;
      if (top === p) return node;
      if (top === "/" || p.startsWith(top + "/")) {
        // Descend one level towards p.
        const rest = top === "/" ? p.slice(1) : p.slice(top.length + 1);
        const slash = rest.indexOf("/");
        const name = slash < 0 ? rest : rest.slice(0, slash);
        const childPath = top === "/" ? `/${name}` : `${top}/${name}`;
        let c = node.kids?.get(name);
        if (c === undefined) {
          if (childPath !== forPath) this.repairs.push(`recreated missing parent ${childPath} of ${forPath}`);
          c = this.#child(node, name, "", node.perms);
        }
        paths.push(childPath);
        nodes.push(c);
        continue;
      }
      paths.pop();
      nodes.pop();
    }
  }

  #put(p: string, value: string, perms: Perms): void {
    // Fast path (pre-order snapshots): the parent is on the chain.
    const cut = p.lastIndexOf("/");
    const parent = cut === 0 ? "/" : p.slice(0, cut);
    const paths = this.#paths;
    const nodes = this.#nodes;
    while (paths.length > 1) {
      const top = paths[paths.length - 1]!;
      if (top === parent || (parent.startsWith(top) && parent.charCodeAt(top.length) === 47)) break;
      paths.pop();
      nodes.pop();
    }
    if (paths[paths.length - 1] === parent && p !== "/") {
      const pn = nodes[nodes.length - 1]!;
      const name = p.slice(cut + 1);
      let c = pn.kids?.get(name);
      if (c === undefined) c = this.#child(pn, name, value, perms);
      else {
        c.value = value;
        c.perms = perms;
      }
      paths.push(p);
      nodes.push(c);
      return;
    }
    const n = this.#reach(p, p);
    n.value = value;
    n.perms = perms;
  }

  #del(p: string): void {
    if (p === "/") return;
    this.#paths = ["/"];
    this.#nodes = [this.root];
    let n: MNode | undefined = this.root;
    const segs = p.slice(1).split("/");
    for (let i = 0; i < segs.length - 1 && n !== undefined; i++) n = n.kids?.get(segs[i]!);
    if (n?.kids === undefined) return;
    n.kids.delete(segs[segs.length - 1]!);
    if (n.kids.size === 0) n.kids = undefined;
  }
}

/** Cartesian-tree build of a treap from `kids`' children, taken in the treap's order: O(n) after the sort. */
function buildKids(kids: Map<string, MNode>): Kids | undefined {
  type K = { key: string; node: XsNode; hash: number; seq: number; left: K | undefined; right: K | undefined };
  const order: K[] = [];
  for (const [key, c] of kids) order.push({ key, node: c.frozen!, hash: hashOf(key), seq: c.seq, left: undefined, right: undefined });
  order.sort((a, b) => (a.hash !== b.hash ? a.hash - b.hash : a.key < b.key ? -1 : 1));
  const stack: K[] = [];
  for (const k of order) {
    const rank = rankOf(k.hash);
    let last: K | undefined;
    while (stack.length > 0 && rankOf(stack[stack.length - 1]!.hash) < rank) last = stack.pop();
    k.left = last;
    if (stack.length > 0) stack[stack.length - 1]!.right = k;
    stack.push(k);
  }
  return stack[0];
}

function freeze(tree: LoadTree): { node: XsNode; count: number; maxSeq: number; owners: Map<number, number> } {
  // Iterative post-order (XSA-418).
  let count = 0;
  const owners = new Map<number, number>();
  const stack: MNode[] = [tree.root];
  while (stack.length > 0) {
    const m = stack[stack.length - 1]!;
    if (m.kids !== undefined && m.expanded !== true) {
      m.expanded = true;
      for (const c of m.kids.values()) stack.push(c);
      continue;
    }
    stack.pop();
    m.frozen = makeNode(m.value, m.perms, 0, m.kids === undefined ? undefined : buildKids(m.kids));
    const owner = m.perms[0]?.domid ?? 0;
    owners.set(owner, (owners.get(owner) ?? 0) + 1);
    count++;
  }
  return { node: tree.root.frozen!, count, maxSeq: tree.seq, owners };
}

/** The epochs of the directory's `prefix`-N files (no temporary files), in order. */
export function listEpochs(dir: string, prefix: string): number[] {
  const out: number[] = [];
  for (const f of fs.readdirSync(dir)) {
    const m = new RegExp(`^${prefix}-(\\d+)$`).exec(f);
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

/** Load the state directory (created if missing). Never throws on damaged files: it reports. */
export function loadState(dir: string): LoadResult {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const report: string[] = [];
  const dropped: Dropped[] = [];
  const repairs: string[] = [];
  const tree = new LoadTree(repairs);
  const snaps = listEpochs(dir, "snapshot");
  const base = snaps.length > 0 ? snaps[snaps.length - 1]! : 0;
  let snapshotBytes = 0;
  let journalBytes = 0;
  let incomplete = false;
  // Plain records holding the record magic, from before masking: the files are rewritten (masked).
  const unmasked = { count: 0 };
  if (snaps.length > 0) {
    const file = path.join(dir, `snapshot-${base}`);
    const data = fs.readFileSync(file);
    snapshotBytes = data.length;
    let puts = 0;
    let end: number | undefined;
    dropped.push(
      ...scanRecords(data, file, (rec) => {
        if (rec.op === "end") end = rec.count;
        else {
          tree.apply(rec);
          puts++;
        }
      }, { unmasked }),
    );
    if (end === undefined) report.push(`${file}: no end marker; the snapshot is incomplete (${puts} nodes read)`);
    else if (end !== puts) report.push(`${file}: ${end - puts} of ${end} nodes lost to damage`);
    incomplete = end !== puts;
  }
  let replayed = 0;
  const journals = listEpochs(dir, "journal").filter((e) => e >= base);
  for (const e of journals) {
    const file = path.join(dir, `journal-${e}`);
    const data = fs.readFileSync(file);
    journalBytes += data.length;
    dropped.push(
      ...scanRecords(
        data,
        file,
        (rec) => {
          if (rec.op === "end") return;
          tree.apply(rec);
          replayed++;
        },
        { zeroTail: true, changes: true, unmasked },
      ),
    );
  }
  for (const d of dropped) report.push(`${d.file}: dropped ${d.length} bytes at offset ${d.offset} (${d.reason})`);
  report.push(...repairs);
  const frozen = freeze(tree);
  const epoch = Math.max(base, journals[journals.length - 1] ?? 0);
  report.unshift(`loaded ${frozen.count} nodes from ${dir} (snapshot ${snaps.length > 0 ? base : "none"}, ${replayed} journal records)`);
  if (unmasked.count > 0) report.push(`${unmasked.count} records from before masking hold the record magic in a path or value: a fresh snapshot stores them masked`);
  const damaged = dropped.length > 0 || repairs.length > 0 || incomplete || unmasked.count > 0;
  return { root: frozen.node, epoch, dropped, report, nodes: frozen.count, owners: frozen.owners, maxSeq: frozen.maxSeq, damaged, snapshotBytes, journalBytes };
}

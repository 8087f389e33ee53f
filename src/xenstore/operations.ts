/**
 * Node operations with xenstore semantics, over an immutable root (store.ts): READ, DIRECTORY,
 * GET_PERMS, WRITE, MKDIR, RM, SET_PERMS. Used the same way outside transactions (on the store's
 * root) and inside them (on the transaction's private root, with an access tracker).
 *
 * A `TreeView` accumulates what its operations did: the watch-relevant changes, the journal
 * records (node-level puts and deletes that replay deterministically) and the change in nodes
 * owned per domain (quota accounting). Nothing is visible until the caller adopts `view.root`.
 * A failing operation throws before touching `view.root`, so it changes nothing (XSA-414/415:
 * a multi-node create or delete is all or nothing, accounting included).
 */
import { xsError } from "./errors.js";
import { segmentsOf, joinPath, parentOf } from "./path.js";
import { canRead, canWrite, isOwner, inheritPerms, type Accessor, type Perms } from "./permissions.js";
import { ancestry, countByOwner, kidSet, lookup, makeNode, rebuild, walk, type XsNode } from "./store.js";
import { overQuota, type Quotas } from "./quota.js";

/** A change that watches see (notes §1.7). `removed` is the deleted subtree of an RM. */
export interface Change {
  readonly path: string;
  readonly before: Perms | undefined;
  readonly after: Perms | undefined;
  readonly removed?: XsNode;
}

export type JournalOp =
  | { readonly op: "put"; readonly path: string; readonly value: string; readonly perms: Perms }
  | { readonly op: "del"; readonly path: string };

/** What a transaction records about each node it touches (transaction.ts has the rule). */
export interface AccessTracker {
  noteRead(path: string, gen: number): void;
}

export interface OpEnv {
  nextGen(): number;
  /** Committed node count of a domain (excluding this view's own delta). */
  nodesOwned(domid: number): number;
}

/** Nodes gained (or lost) per owner domid, as a view reports them. */
export interface OwnerCounts {
  get(domid: number): number;
  /** Add these counts into `totals` (the daemon's per-domain node counts). */
  addTo(totals: Map<number, number>): void;
}

/** Nodes gained (or lost) per owner domid. Most changes involve one owner, held without a Map. */
export class OwnerDelta implements OwnerCounts {
  #domid = -1;
  #count = 0;
  #more: Map<number, number> | undefined;

  add(domid: number, n: number): void {
    if (this.#domid === -1 || this.#domid === domid) {
      this.#domid = domid;
      this.#count += n;
    } else {
      this.#more ??= new Map();
      this.#more.set(domid, (this.#more.get(domid) ?? 0) + n);
    }
  }

  get(domid: number): number {
    return domid === this.#domid ? this.#count : (this.#more?.get(domid) ?? 0);
  }

  addTo(totals: Map<number, number>): void {
    if (this.#domid !== -1) totals.set(this.#domid, (totals.get(this.#domid) ?? 0) + this.#count);
    if (this.#more !== undefined) for (const [d, n] of this.#more) totals.set(d, (totals.get(d) ?? 0) + n);
  }
}

/** A set of changes ready to become current (a TreeView, or a transaction's commit): daemon.adopt(). */
export interface Applied {
  readonly root: XsNode;
  readonly changes: readonly Change[];
  readonly journal: readonly JournalOp[];
  readonly ownerDelta: OwnerCounts;
}

const NO_DELTA = new OwnerDelta();
const NONE: readonly never[] = Object.freeze([]);

/** gen of an absent node in the access tracker ("no generation"). */
export const NO_GEN = -1;

export class TreeView {
  root: XsNode;
  // The lists start as one shared empty array and the delta as none: most views record one change.
  #changes: Change[] | undefined;
  #journal: JournalOp[] | undefined;
  #ownerDelta: OwnerDelta | undefined;

  get changes(): readonly Change[] {
    return this.#changes ?? NONE;
  }

  get journal(): readonly JournalOp[] {
    return this.#journal ?? NONE;
  }

  /** Nodes gained (or lost) per owner domid; most writes change an existing node and touch none. */
  get ownerDelta(): OwnerCounts {
    return this.#ownerDelta ?? NO_DELTA;
  }

  #change(c: Change): void {
    if (this.#changes === undefined) this.#changes = [c];
    else this.#changes.push(c);
  }

  #record(op: JournalOp): void {
    if (this.#journal === undefined) this.#journal = [op];
    else this.#journal.push(op);
  }

  constructor(
    root: XsNode,
    readonly who: Accessor,
    readonly quotas: Quotas,
    private readonly env: OpEnv,
    private tracker?: AccessTracker,
  ) {
    this.root = root;
  }

  /** Start recording accesses (a transaction's view, after replaying its earlier operations). */
  track(tracker: AccessTracker): void {
    this.tracker = tracker;
  }

  #note(path: string, node: XsNode | undefined): void {
    this.tracker?.noteRead(path, node?.gen ?? NO_GEN);
  }

  /** The node, or ENOENT/EACCES like C `get_node()` + `errno_from_parents()`: a missing node under
   * an unreadable ancestor is EACCES, so existence does not leak. */
  #get(path: string, need: "read" | "write" | "owner"): XsNode {
    const node = lookup(this.root, path);
    this.#note(path, node);
    if (node === undefined) {
      const segs = segmentsOf(path);
      const chain = ancestry(this.root, segs);
      // C `errno_from_parents()` reads the missing parents up to the nearest existing node to
      // choose ENOENT or EACCES; a transaction records those reads too.
      let p = parentOf(path);
      for (let d = segs.length - 1; d >= chain.length; d--) {
        this.#note(p, undefined);
        p = parentOf(p);
      }
      const nearest = chain[chain.length - 1]!;
      this.#note(p, nearest);
      if (!canRead(this.who, nearest.perms)) throw xsError("EACCES", `permission denied on ${path}`, { path });
      throw xsError("ENOENT", `no node ${path}`, { path });
    }
    const ok = need === "read" ? canRead(this.who, node.perms) : need === "write" ? canWrite(this.who, node.perms) : isOwner(this.who, node.perms);
    if (!ok) throw xsError("EACCES", `permission denied on ${path}`, { path, need });
    return node;
  }

  read(path: string): string {
    return this.#get(path, "read").value;
  }

  /** The node at `path`, to list its children (DIRECTORY, DIRECTORY_PART), read permission checked. */
  listed(path: string): XsNode {
    return this.#get(path, "read");
  }

  getPerms(path: string): Perms {
    return this.#get(path, "read").perms;
  }

  #addOwned(domid: number, n: number): void {
    (this.#ownerDelta ??= new OwnerDelta()).add(domid, n);
  }

  #checkSize(value: string, perms: Perms, path: string): void {
    if (this.who.privileged) return;
    // C counts the whole record; value plus 8 bytes per permission entry is close enough to bound memory.
    if (overQuota(this.quotas["node-size"], value.length + 8 * perms.length)) {
      throw xsError("ENOSPC", `node ${path} would exceed the node-size quota`, { path, size: value.length });
    }
  }

  /**
   * Create `path` (and missing parents, with empty values) or set its value. `create: "mkdir"`
   * leaves an existing node alone. Returns true if something changed.
   */
  #put(path: string, value: string, mode: "write" | "mkdir"): boolean {
    if (path === "/" && mode === "mkdir") {
      this.#note(path, this.root);
      return false;
    }
    const segs = segmentsOf(path);
    const chain = ancestry(this.root, segs);
    const existing = chain.length === segs.length + 1 ? chain[chain.length - 1]! : undefined;
    this.#note(path, existing);
    if (existing !== undefined) {
      if (!canWrite(this.who, existing.perms)) throw xsError("EACCES", `permission denied on ${path}`, { path });
      if (mode === "mkdir") return false;
      this.#checkSize(value, existing.perms, path);
      const gen = this.env.nextGen();
      const leaf = makeNode(value, existing.perms, gen, existing.kids);
      this.root = rebuild(chain, segs, leaf, gen);
      this.#change({ path, before: existing.perms, after: existing.perms });
      this.#record({ op: "put", path, value, perms: existing.perms });
      return true;
    }
    // Creating: the nearest existing ancestor must be writable; every missing node up to it was
    // read (C construct_node walks up reading parents), which the transaction rule relies on.
    const depth = chain.length - 1;
    const anc = chain[depth]!;
    if (this.tracker !== undefined) {
      // Only a transaction records reads; the parents' paths are not built for anyone else.
      let p = parentOf(path);
      for (let d = segs.length - 1; d > depth; d--) {
        this.#note(p, undefined);
        p = parentOf(p);
      }
      this.#note(p, anc);
    }
    if (!canWrite(this.who, anc.perms)) throw xsError("EACCES", `permission denied creating ${path}`, { path });
    const perms = inheritPerms(anc.perms, this.who);
    const created = segs.length - depth;
    if (!this.who.privileged) {
      this.#checkSize(value, perms, path);
      const owner = perms[0]!.domid;
      const used = this.env.nodesOwned(owner) + this.ownerDelta.get(owner) + created;
      if (overQuota(this.quotas.nodes, used)) throw xsError("ENOSPC", `domain ${owner} would exceed its node quota`, { path });
    }
    const gen = this.env.nextGen();
    let node = makeNode(mode === "write" ? value : "", perms, gen);
    for (let d = segs.length - 1; d > depth; d--) {
      node = makeNode("", perms, gen, kidSet(undefined, segs[d]!, node, gen));
    }
    this.root = rebuild(chain, segs, node, gen, depth + 1);
    // A record per created node, implicit parents first (their paths built only when there are any).
    if (created > 1) {
      let cur = "/" + segs.slice(0, depth).join("/");
      for (let d = depth; d < segs.length - 1; d++) {
        cur = joinPath(cur, segs[d]!);
        this.#record({ op: "put", path: cur, value: "", perms });
      }
    }
    this.#record({ op: "put", path, value: mode === "write" ? value : "", perms });
    this.#addOwned(perms[0]!.domid, created);
    // Only the requested path gets an event, not implicit parents (C commit 3a96013a3e).
    this.#change({ path, before: undefined, after: perms });
    return true;
  }

  write(path: string, value: string): void {
    this.#put(path, value, "write");
  }

  mkdir(path: string): boolean {
    return this.#put(path, "", "mkdir");
  }

  /** RM: the whole subtree. A missing node whose parent exists is fine; a missing parent is ENOENT. */
  rm(path: string): boolean {
    if (path === "/") throw xsError("EINVAL", "cannot remove /", { path });
    const segs = segmentsOf(path);
    const chain = ancestry(this.root, segs);
    const node = chain.length === segs.length + 1 ? chain[chain.length - 1]! : undefined;
    this.#note(path, node);
    const parentPath = parentOf(path);
    if (node === undefined) {
      const parentExists = chain.length === segs.length;
      this.#note(parentPath, parentExists ? chain[chain.length - 1] : undefined);
      const nearest = chain[chain.length - 1]!;
      if (!canRead(this.who, nearest.perms)) throw xsError("EACCES", `permission denied on ${path}`, { path });
      if (parentExists) return false;
      throw xsError("ENOENT", `no node ${path} nor its parent`, { path });
    }
    if (!canWrite(this.who, node.perms)) throw xsError("EACCES", `permission denied on ${path}`, { path });
    this.#note(parentPath, chain[segs.length - 1]);
    // C's recursive delete reads every node it removes: inside a transaction they are all touched
    // (and count towards transaction-nodes), so a concurrent change below makes the commit EAGAIN.
    if (this.tracker !== undefined && node.kids !== undefined) walk(node, path, (p, n) => this.#note(p, n));
    const gen = this.env.nextGen();
    this.root = rebuild(chain, segs, undefined, gen);
    for (const [domid, n] of countByOwner(node)) this.#addOwned(domid, -n);
    this.#record({ op: "del", path });
    this.#change({ path, before: node.perms, after: undefined, removed: node });
    return true;
  }

  /** SET_PERMS: owner (or privileged) only; only dom0 may change the owner (XSA-352 → EPERM). */
  setPerms(path: string, perms: Perms): void {
    const node = this.#get(path, "owner");
    if (!this.who.privileged) {
      if (perms[0]!.domid !== node.perms[0]!.domid) throw xsError("EPERM", `only dom0 may change the owner of ${path}`, { path });
      if (overQuota(this.quotas.permissions, perms.length)) throw xsError("ENOSPC", `too many permission entries for ${path}`, { path });
      this.#checkSize(node.value, perms, path);
    }
    const segs = segmentsOf(path);
    const chain = ancestry(this.root, segs);
    const gen = this.env.nextGen();
    this.root = rebuild(chain, segs, makeNode(node.value, perms, gen, node.kids), gen);
    const oldOwner = node.perms[0]!.domid;
    const newOwner = perms[0]!.domid;
    if (oldOwner !== newOwner) {
      this.#addOwned(oldOwner, -1);
      this.#addOwned(newOwner, 1);
    }
    this.#record({ op: "put", path, value: node.value, perms });
    this.#change({ path, before: node.perms, after: perms });
  }
}

/** True if the node exists (no permission check; for the daemon's own bookkeeping). */
export function exists(root: XsNode, path: string): boolean {
  return lookup(root, path) !== undefined;
}

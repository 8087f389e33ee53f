/**
 * Transactions: isolation, and the conflict rule at commit.
 *
 * THE RULE (the C daemon's generation rule, notes §1.8; Xen HEAD tools/xenstored/transaction.c):
 *
 *   Every committed write stamps the node it changes with a fresh value of a global generation
 *   counter; adding or removing a child rewrites the parent, so the parent is stamped too.
 *   A transaction sees the committed store as it is when the transaction FIRST touches a node, as
 *   in the C daemon (not a snapshot taken at TRANSACTION_START): each request of the transaction
 *   runs on a private tree = the current committed root with the transaction's own operations
 *   replayed on top. The store is immutable, so when nothing was committed since the previous
 *   request the private tree is simply reused (one identity check, no replay). The FIRST time the
 *   transaction touches a node it records the node's generation (or "absent"). Touching means every node an
 *   operation looks up: the target of READ, DIRECTORY, GET_PERMS, WRITE, MKDIR, RM and SET_PERMS;
 *   for a create or a missing target, also every missing parent and the nearest existing ancestor
 *   (C `construct_node` / `errno_from_parents` read them); for RM, also the parent and every node
 *   of the removed subtree (C's recursive delete reads each). Later touches of the same node
 *   record nothing, so its own writes never count against it. Once a touched node has changed in
 *   the store the transaction is doomed (its commit is EAGAIN) and its view stops following the
 *   store, so what it already read stays as read (repeatable reads, as C's per-node copies).
 *
 *   At TRANSACTION_END with T:
 *     1. If the store's root is still the root the private tree was built on, nothing happened
 *        meanwhile: the transaction's root becomes the store's root (one identity check).
 *     2. Otherwise every recorded node must still have the recorded generation (absent must still
 *        be absent). If one differs → EAGAIN and nothing is applied.
 *     3. Otherwise the transaction's operations are replayed, in order, on the current root (with
 *        the same permission and quota checks). If the replay fails → EAGAIN (a retry then sees the
 *        real error inside the transaction). Else the result becomes the store's root.
 *   Watches fire only for a successful commit, with the changes of the applied operations.
 *
 * WORKED EXAMPLES (tree: /e/x exists, /t exists without children, / has children e, t):
 *   0) T1 starts. C2 WRITE /e/x=9. T1 READ /e/x → 9 (its first access is after C2's commit),
 *      T1 WRITE /e/x=10, commit OK: nothing T1 touched changed after T1 touched it.
 *      (Had C2 written after T1's READ, T1's next request would find /e/x restamped: the
 *      transaction is then doomed and its commit is EAGAIN, as step 2 below would decide.)
 *   a) T1 WRITE /e/x=1. Meanwhile C2 WRITE /f/x (creating /f: / gets a new child → / restamped).
 *      T1 recorded only /e/x; /e/x unchanged → commit OK (replayed on the new root). As observed
 *      on both Xen daemons ("writing existing /e/x while someone writes /f/x → OK").
 *   b) T1 WRITE /t/x (new). T1 recorded /t/x (absent) and /t. Meanwhile C2 WRITE /t/y (new):
 *      /t is restamped → T1 EAGAIN. Two transactions creating siblings conflict, as in C.
 *   c) T1 WRITE /n/x where /n is missing: T1 recorded /n/x, /n (absent) and /. C2 WRITE /other
 *      creates a child of / → / restamped → T1 EAGAIN (the notes' observed "/t/x vs /other" case).
 *   d) T1 READ /e/x then WRITE /e/x=v+1 (read-modify-write). C2 WRITE /e/x meanwhile → /e/x
 *      restamped → T1 EAGAIN: no lost update.
 *   e) T1 READ /e/missing (absent). C2 creates /e/missing → T1 EAGAIN (the read is stale).
 *   f) T1 only reads /e/x. C2 writes /z/q. Commit OK: replay has nothing to apply.
 *   g) T1 RM /e (T1 touches /, /e and /e/x). C2 WRITE /e/x=2 meanwhile: /e/x restamped → T1
 *      EAGAIN, as in C: a removal never silently discards a change made below it meanwhile.
 *
 * Limits: a domain may access at most `transaction-nodes` (1024) nodes in one transaction
 * (XSA-326) → ENOSPC; open transactions per domain are counted by the connection (quota
 * `transactions`).
 */
import { XsError, xsError } from "./errors.js";
import type { Accessor, Perms } from "./permissions.js";
import { lookup, type XsNode } from "./store.js";
import { NO_GEN, TreeView, type AccessTracker, type Applied, type OpEnv } from "./operations.js";
import { overQuota, type Quotas } from "./quota.js";
import { assertNever } from "../lib/errors.js";

export type TxOp =
  | { readonly kind: "write"; readonly path: string; readonly value: string }
  | { readonly kind: "mkdir"; readonly path: string }
  | { readonly kind: "rm"; readonly path: string }
  | { readonly kind: "perms"; readonly path: string; readonly perms: Perms };

export class Transaction implements AccessTracker {
  readonly recorded = new Map<string, number>();
  readonly ops: TxOp[] = [];
  view: TreeView;
  /** The committed root `view` was built on. */
  #seen: XsNode;
  /** Its own operations no longer apply to the store: the commit will be EAGAIN. */
  #doomed = false;

  constructor(
    readonly id: number,
    base: XsNode,
    readonly who: Accessor,
    readonly quotas: Quotas,
    env: OpEnv,
  ) {
    this.#seen = base;
    this.view = new TreeView(base, who, quotas, env, this);
  }

  /**
   * Before each request of the transaction: rebuild the private tree on the current committed
   * root if it changed (first-access reads, as the C daemon). If the transaction's own operations
   * no longer apply, keep the old tree and fail the commit with EAGAIN.
   */
  refresh(current: XsNode, env: OpEnv): void {
    if (current === this.#seen || this.#doomed) return;
    // A node touched earlier that changed since can only end in EAGAIN (generations only grow):
    // decide it now, so that the identity fast path at commit stays valid after a refresh. The
    // view then stays as it was: nodes already read keep the values first read (the C daemon
    // copies a node into the transaction at its first access: repeatable reads, which Xen's
    // test-xenstore "ta err" checks). While nothing touched has changed, a refresh changes no
    // touched node either (any change to a node's value, perms or children restamps it), so
    // refreshed views give exactly the C daemon's per-node first-access snapshot.
    if (!this.#unchangedIn(current)) {
      this.#doomed = true;
      return;
    }
    const v = new TreeView(current, this.who, this.quotas, env);
    try {
      for (const op of this.ops) applyOp(v, op);
    } catch (e) {
      if (!(e instanceof XsError)) throw e;
      this.#doomed = true;
      return;
    }
    v.track(this);
    this.view = v;
    this.#seen = current;
  }

  noteRead(path: string, gen: number): void {
    if (this.recorded.has(path)) return;
    if (!this.who.privileged && overQuota(this.quotas["transaction-nodes"], this.recorded.size + 1)) {
      throw xsError("ENOSPC", `transaction ${this.id} touches more than ${this.quotas["transaction-nodes"]} nodes`, { tx: this.id });
    }
    this.recorded.set(path, gen);
  }

  /** True if every node this transaction touched still has the generation it recorded. */
  #unchangedIn(current: XsNode): boolean {
    for (const [path, gen] of this.recorded) {
      if ((lookup(current, path)?.gen ?? NO_GEN) !== gen) return false;
    }
    return true;
  }

  /** Run a modifying op on the private tree and log it for a possible replay. */
  apply(op: TxOp): void {
    applyOp(this.view, op);
    this.ops.push(op);
  }

  /** Decide the commit against the store's current root (see THE RULE above). */
  commit(current: XsNode, env: OpEnv): Applied {
    const v = this.view;
    if (this.#doomed) throw xsError("EAGAIN", `transaction ${this.id} no longer applies to the store`, { tx: this.id });
    if (current === this.#seen) return { root: v.root, changes: v.changes, journal: v.journal, ownerDelta: v.ownerDelta };
    if (!this.#unchangedIn(current)) throw xsError("EAGAIN", `transaction ${this.id} conflicts with a change committed meanwhile`, { tx: this.id });
    const replay = new TreeView(current, this.who, this.quotas, env);
    try {
      for (const op of this.ops) applyOp(replay, op);
    } catch (e) {
      throw xsError("EAGAIN", `transaction ${this.id} no longer applies: ${e instanceof Error ? e.message : String(e)}`, { tx: this.id });
    }
    return { root: replay.root, changes: replay.changes, journal: replay.journal, ownerDelta: replay.ownerDelta };
  }
}

export function applyOp(view: TreeView, op: TxOp): void {
  switch (op.kind) {
    case "write":
      view.write(op.path, op.value);
      return;
    case "mkdir":
      view.mkdir(op.path);
      return;
    case "rm":
      view.rm(op.path);
      return;
    case "perms":
      view.setPerms(op.path, op.perms);
      return;
    default:
      assertNever(op, "transaction op");
  }
}

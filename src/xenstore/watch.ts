/**
 * Watches (xenstore.txt "Watches"; C xenstored_watch.c; notes §1.7).
 *
 * - A watch on W fires for every change at or below W: the event path is the changed node.
 * - RM of a subtree: watches at or above the removed node get ONE event for the removed node;
 *   watches inside the removed subtree get an event for their own path if that node existed
 *   (C delete_node fires "exact" events per deleted node; XSA-115: no duplicates).
 * - Implicit parents created by a WRITE get no event (callers only report the written path).
 * - Events go only to watchers that can read the node before OR after the change (XSA-115, C
 *   `watch_permitted()`); for a removed node inside a subtree, its own permissions decide.
 * - A watch registered with a relative path gets relative event paths.
 * - Special watches (`@introduceDomain`, `@releaseDomain`, `@releaseDomain/<domid>`) fire only for
 *   privileged watchers or domains granted read via SET_PERMS on the special name (XSA-115).
 * - Watches are indexed by path, so a change costs one map lookup per ancestor, not a scan.
 * - One change gives a connection at most one event per (path, token): several watches with the
 *   same token that match the same change produce one event, as the C daemon de-duplicates
 *   identical pending events (XSA-326). A connection's events for one change follow the order in
 *   which it registered the watches.
 */
import { relativeTo } from "./path.js";
import { canRead, type Accessor, type Perms } from "./permissions.js";
import { lookup } from "./store.js";
import type { Change } from "./operations.js";

export interface Watcher {
  readonly accessor: Accessor;
  /** Queue a WATCH_EVENT for this watcher (it drops what it cannot hold). */
  deliverEvent(path: string, token: string): void;
}

export interface Watch {
  readonly owner: Watcher;
  /** Absolute path, or the `@` name. */
  readonly path: string;
  readonly token: string;
  readonly relative: boolean;
}

export class WatchRegistry {
  readonly #byPath = new Map<string, Set<Watch>>();
  readonly #seq = new WeakMap<Watch, number>();
  #count = 0;
  #nextSeq = 0;

  get size(): number {
    return this.#count;
  }

  add(w: Watch): void {
    let set = this.#byPath.get(w.path);
    if (set === undefined) {
      set = new Set();
      this.#byPath.set(w.path, set);
    }
    set.add(w);
    this.#seq.set(w, ++this.#nextSeq);
    this.#count++;
  }

  /** Remove one watch; every index entry goes with it (XSA-330). */
  remove(w: Watch): void {
    const set = this.#byPath.get(w.path);
    if (set === undefined || !set.delete(w)) return;
    this.#count--;
    if (set.size === 0) this.#byPath.delete(w.path);
  }

  /** Fire the watches a committed change triggers. */
  fire(change: Change): void {
    if (this.#count === 0) return;
    const p = change.path;
    const permitted = (who: Accessor): boolean =>
      (change.before !== undefined && canRead(who, change.before)) || (change.after !== undefined && canRead(who, change.after));
    const hits: [Watch, string][] = [];
    // The node itself and every ancestor, "/" included.
    let i = p === "/" ? 0 : p.length;
    for (;;) {
      const anc = i === 0 ? "/" : p.slice(0, i);
      const set = this.#byPath.get(anc);
      if (set !== undefined) for (const w of set) if (permitted(w.owner.accessor)) hits.push([w, p]);
      if (i === 0) break;
      i = p.lastIndexOf("/", i - 1);
    }
    const removed = change.removed;
    if (removed !== undefined && removed.kids !== undefined) {
      const prefix = p === "/" ? "/" : p + "/";
      for (const [wpath, set] of this.#byPath) {
        if (!wpath.startsWith(prefix)) continue;
        const node = lookup(removed, wpath.slice(p.length));
        if (node === undefined) continue;
        for (const w of set) if (canRead(w.owner.accessor, node.perms)) hits.push([w, wpath]);
      }
    }
    if (hits.length === 0) return;
    if (hits.length === 1) {
      const [w, abs] = hits[0]!;
      this.#emit(w, abs);
      return;
    }
    hits.sort((a, b) => (this.#seq.get(a[0]) ?? 0) - (this.#seq.get(b[0]) ?? 0));
    const sent = new Map<Watcher, Set<string>>();
    for (const [w, abs] of hits) {
      const path = w.relative ? relativeTo(abs, w.owner.accessor.domid) : abs;
      let seen = sent.get(w.owner);
      if (seen === undefined) sent.set(w.owner, (seen = new Set()));
      const key = `${path}\0${w.token}`;
      if (seen.has(key)) continue;
      seen.add(key);
      w.owner.deliverEvent(path, w.token);
    }
  }

  #emit(w: Watch, abs: string): void {
    w.owner.deliverEvent(w.relative ? relativeTo(abs, w.owner.accessor.domid) : abs, w.token);
  }

  /**
   * Fire a special watch (`@introduceDomain` or `@releaseDomain`) for `domid`. `perms` are the
   * special node's permissions (SET_PERMS on the `@` name); `@releaseDomain/<domid>` watchers hear
   * only about their domain.
   */
  fireSpecial(name: "@introduceDomain" | "@releaseDomain", domid: number, perms: Perms): void {
    const targets = [name, `${name}/${domid}`];
    for (const t of targets) {
      const set = this.#byPath.get(t);
      if (set === undefined) continue;
      for (const w of set) if (w.owner.accessor.privileged || canRead(w.owner.accessor, perms)) w.owner.deliverEvent(t, w.token);
    }
  }
}

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
 * - Watches are indexed by path, so a change costs one map lookup per ancestor, not a scan; and
 *   only for an ancestor whose hash (name-hash.ts, all of them computed in one pass over the
 *   path) is a watched path's: slicing and looking up every ancestor cost about 1.2k of a
 *   one-in-flight write's 20k instructions with ten watches elsewhere, as a toolstack keeps.
 * - One change gives a connection at most one event per (path, token): several watches with the
 *   same token that match the same change produce one event, as the C daemon de-duplicates
 *   identical pending events (XSA-326). A connection's events for one change follow the order in
 *   which it registered the watches.
 */
import { relativeTo } from "./path.js";
import { canRead, type Accessor, type Perms } from "./permissions.js";
import { FNV_START, fnvStep, hashOf, mixHash } from "./name-hash.js";
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

const ROOT_HASH = hashOf("/");

export class WatchRegistry {
  readonly #byPath = new Map<string, Set<Watch>>();
  /** How many watched paths (keys of #byPath) have each hash. */
  readonly #hashes = new Map<number, number>();
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
      const h = hashOf(w.path);
      this.#hashes.set(h, (this.#hashes.get(h) ?? 0) + 1);
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
    if (set.size > 0) return;
    this.#byPath.delete(w.path);
    const h = hashOf(w.path);
    const n = this.#hashes.get(h)! - 1;
    if (n === 0) this.#hashes.delete(h);
    else this.#hashes.set(h, n);
  }

  /** Fire the watches a committed change triggers. */
  fire(change: Change): void {
    if (this.#count === 0) return;
    const p = change.path;
    let hits: [Watch, string][] | undefined;
    // "/", then each ancestor below it and the node itself: the prefixes of p that end before a
    // "/" or at its end, each looked up only if its hash is watched (nothing allocated otherwise).
    const hashes = this.#hashes;
    if (p !== "/" && hashes.has(ROOT_HASH)) hits = this.#matches("/", change, hits);
    let h = FNV_START;
    for (let i = 0; i <= p.length; i++) {
      const c = i < p.length ? p.charCodeAt(i) : 47; /* / */
      if (c === 47 && i > 0 && hashes.has(mixHash(h))) hits = this.#matches(p.slice(0, i), change, hits);
      h = fnvStep(h, c);
    }
    const removed = change.removed;
    if (removed !== undefined && removed.kids !== undefined) {
      const prefix = p === "/" ? "/" : p + "/";
      for (const [wpath, set] of this.#byPath) {
        if (!wpath.startsWith(prefix)) continue;
        const node = lookup(removed, wpath.slice(p.length));
        if (node === undefined) continue;
        for (const w of set) if (canRead(w.owner.accessor, node.perms)) (hits ??= []).push([w, wpath]);
      }
    }
    if (hits === undefined) return;
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

  /** `hits` with the watches on `anc` that may see `change` added (the event path is the changed node's). */
  #matches(anc: string, change: Change, hits: [Watch, string][] | undefined): [Watch, string][] | undefined {
    const set = this.#byPath.get(anc);
    if (set === undefined) return hits;
    for (const w of set) {
      const who = w.owner.accessor;
      // XSA-115: only a watcher that can read the node before or after the change hears of it.
      if ((change.before !== undefined && canRead(who, change.before)) || (change.after !== undefined && canRead(who, change.after))) (hits ??= []).push([w, change.path]);
    }
    return hits;
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

/**
 * Node permissions (xenstore.txt "permissions"; C xenstored `perm_for_conn()`, xs_lib.c).
 *
 * A node has one or more entries `<c><domid>`, c ∈ n (none), r (read), w (write), b (both).
 * The FIRST entry names the owner, who always has full access; its letter is the access of every
 * domain without an entry of its own. Later entries grant rights to specific domains; the first
 * matching one wins. Privileged connections (dom0) bypass every check. A domain that was made the
 * target's device model (SET_TARGET) has the target's rights as well.
 *
 * Permission lists are interned: thousands of nodes inherit the same list, so they share one
 * frozen array (memory, and identity comparisons in tests).
 */
export type Access = "n" | "r" | "w" | "b";

export interface PermEntry {
  readonly access: Access;
  readonly domid: number;
}

export type Perms = readonly PermEntry[];

export const PERM_READ = 1;
export const PERM_WRITE = 2;
export const PERM_OWNER = 4;

const interned = new Map<string, Perms>();

/** The canonical shared instance of a list (so equal lists are the same object). */
export function internPerms(perms: readonly PermEntry[]): Perms {
  const key = formatPerms(perms).join(" ");
  let p = interned.get(key);
  if (p === undefined) {
    p = Object.freeze(perms.map((e) => Object.freeze({ access: e.access, domid: e.domid })));
    if (interned.size < 100_000) interned.set(key, p); // bound the cache; uninterned lists still work
  }
  return p;
}

/** The default of nodes created by dom0 (and of `/`): owner dom0, nobody else. */
export const DEFAULT_PERMS: Perms = internPerms([{ access: "n", domid: 0 }]);

/** Parse one entry like `r5`; undefined if malformed. Domids are decimal 0..65535. */
export function parsePermEntry(s: string): PermEntry | undefined {
  const c = s[0];
  if (c !== "n" && c !== "r" && c !== "w" && c !== "b") return undefined;
  const rest = s.slice(1);
  if (!/^\d{1,5}$/.test(rest)) return undefined;
  const domid = Number(rest);
  if (domid > 65535) return undefined;
  return { access: c, domid };
}

/** Parse a list; undefined if empty or any entry is malformed (→ EINVAL). Duplicates are kept as sent. */
export function parsePerms(entries: readonly string[]): Perms | undefined {
  if (entries.length === 0) return undefined;
  const out: PermEntry[] = [];
  for (const s of entries) {
    const e = parsePermEntry(s);
    if (e === undefined) return undefined;
    out.push(e);
  }
  return internPerms(out);
}

const textOf = new WeakMap<Perms, string>();
const byText = new Map<string, Perms>();

/** The list as one space-separated string (`n0 r5`), cached per list (journal and snapshots). */
export function permsText(perms: Perms): string {
  let t = textOf.get(perms);
  if (t === undefined) {
    t = formatPerms(perms).join(" ");
    textOf.set(perms, t);
  }
  return t;
}

/** Parse a space-separated list, cached (loading 100k nodes mostly sees a handful of lists). */
export function parsePermsText(text: string): Perms | undefined {
  let p = byText.get(text);
  if (p === undefined) {
    p = parsePerms(text.split(" "));
    if (p !== undefined && byText.size < 10_000) byText.set(text, p);
  }
  return p;
}

/** `n0 r5` style strings, one per entry (GET_PERMS sends each followed by NUL). */
export function formatPerms(perms: Perms): string[] {
  return perms.map((e) => `${e.access}${e.domid}`);
}

function bits(a: Access): number {
  switch (a) {
    case "n":
      return 0;
    case "r":
      return PERM_READ;
    case "w":
      return PERM_WRITE;
    case "b":
      return PERM_READ | PERM_WRITE;
  }
}

export interface Accessor {
  readonly domid: number;
  /** dom0 and socket connections: every check passes. */
  readonly privileged: boolean;
  /** SET_TARGET: this domain acts with the rights of `target` too. */
  readonly target?: number | undefined;
}

/** The access bits `who` has on a node with `perms` (C `perm_for_conn`). */
export function accessFor(who: Accessor, perms: Perms): number {
  const owner = perms[0];
  if (owner === undefined) return who.privileged ? PERM_READ | PERM_WRITE | PERM_OWNER : 0;
  if (who.privileged || owner.domid === who.domid || (who.target !== undefined && owner.domid === who.target)) {
    return PERM_READ | PERM_WRITE | PERM_OWNER;
  }
  for (let i = 1; i < perms.length; i++) {
    const e = perms[i]!;
    if (e.domid === who.domid || (who.target !== undefined && e.domid === who.target)) return bits(e.access);
  }
  return bits(owner.access);
}

export function canRead(who: Accessor, perms: Perms): boolean {
  return (accessFor(who, perms) & PERM_READ) !== 0;
}

export function canWrite(who: Accessor, perms: Perms): boolean {
  return (accessFor(who, perms) & PERM_WRITE) !== 0;
}

export function isOwner(who: Accessor, perms: Perms): boolean {
  return (accessFor(who, perms) & PERM_OWNER) !== 0;
}

/** The permissions of a node created by `who` under a parent with `parent` perms: inherited, and
 * an unprivileged creator becomes the owner (C `construct_node`: "Domains own what they create"). */
export function inheritPerms(parent: Perms, who: Accessor): Perms {
  if (who.privileged || parent[0]?.domid === who.domid) return parent;
  const [first, ...rest] = parent;
  return internPerms([{ access: first?.access ?? "n", domid: who.domid }, ...rest]);
}

/** Drop every entry naming `domid` except the owner's (XSA-322); undefined if nothing changes. */
export function withoutDomid(perms: Perms, domid: number): Perms | undefined {
  let found = false;
  for (let i = 1; i < perms.length; i++) if (perms[i]!.domid === domid) found = true;
  if (!found) return undefined;
  return internPerms(perms.filter((e, i) => i === 0 || e.domid !== domid));
}

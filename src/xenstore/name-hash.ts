/**
 * A 32-bit hash of a node name or path: FNV-1a over its chars, then MurmurHash3's finaliser. The
 * store orders each directory's children by it (store.ts), and the watch index uses it to look up
 * only the ancestors of a changed path that some watch may be on (watch.ts). Deterministic, so
 * the same names give the same treap in every run.
 */

/** FNV-1a's start and step: hashOf(s) is mixHash() of the steps over s, so a caller can hash a path's prefixes in one pass. */
export const FNV_START = 0x811c9dc5 | 0;

export function fnvStep(h: number, c: number): number {
  return Math.imul(h ^ c, 0x01000193);
}

export function mixHash(h: number): number {
  // FNV-1a alone leaves names that differ only at the end (k0..k999) with hashes that follow
  // their order: as treap priorities, that treap was twice as deep as a random one (for k0..k999
  // average depth 25, at most 56). MurmurHash3's finaliser mixes every bit into every other.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  // Signed 32 bits: a small integer in V8, never a heap number.
  return h | 0;
}

export function hashOf(s: string): number {
  let h = FNV_START;
  for (let i = 0; i < s.length; i++) h = fnvStep(h, s.charCodeAt(i));
  return mixHash(h);
}

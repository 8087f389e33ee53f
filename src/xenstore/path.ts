/**
 * xenstore path rules (xenstore.txt "Paths"; C xenstored `is_valid_nodename()` and `canonicalize()`).
 *
 * - Characters `[A-Za-z0-9-/_@]`; absolute paths start with `/`; no trailing `/` except `/`; no `//`.
 * - A relative path (no leading `/`) is relative to the connection's home `/local/domain/<domid>`
 *   (paths.pandoc "Domain Home Path"). Socket connections are dom0, so `foo` is `/local/domain/0/foo`.
 * - Length: at most XENSTORE_ABS_PATH_MAX overall, and the part after `/local/domain/<id>/` (any
 *   domain's home, as the C daemon's sscanf does) at most the `path-max` quota (default 2048).
 *   XSA-323: the limit is applied to the canonical path, consistently for every op.
 * - `@...` names exist only for watches and SET_PERMS (special watches).
 */
import { XENSTORE_ABS_PATH_MAX } from "./protocol.js";
import { xsError } from "./errors.js";

const VALID = /^[A-Za-z0-9\-/_@]*$/;
const HOME_PREFIX = /^\/local\/domain\/(\d{1,5})\//;

export function homeOf(domid: number): string {
  return `/local/domain/${domid}`;
}

/** True if `path` is a syntactically valid absolute node path within `pathMax`. */
export function isValidNodePath(path: string, pathMax: number): boolean {
  const n = path.length;
  if (n === 0 || n > XENSTORE_ABS_PATH_MAX || path.charCodeAt(0) !== 47 /* / */) return false;
  // One pass (hot path: every request): allowed characters, no "//", no trailing "/".
  let prevSlash = true;
  for (let i = 1; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c === 47) {
      if (prevSlash) return false;
      prevSlash = true;
      continue;
    }
    prevSlash = false;
    const ok = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 95 || c === 64;
    if (!ok) return false;
  }
  if (n > 1 && prevSlash) return false;
  if (pathMax <= 0 || n <= pathMax) return true;
  const m = HOME_PREFIX.exec(path);
  return n - (m ? m[0].length : 0) <= pathMax;
}

export function isSpecialPath(path: string): boolean {
  return path.startsWith("@");
}

export interface CanonicalPath {
  /** The absolute path (or the `@` name for special watches). */
  readonly abs: string;
  /** True if the caller gave a relative path (watch events are then reported relative too). */
  readonly relative: boolean;
}

/**
 * Canonicalise a path given by a connection of `domid`. Throws EINVAL (XSA-481: never "no error")
 * for anything invalid. `allowSpecial` admits `@name` paths (WATCH, UNWATCH, SET_PERMS).
 */
export function canonicalize(raw: string, domid: number, pathMax: number, allowSpecial = false): CanonicalPath {
  if (raw.startsWith("@")) {
    if (!allowSpecial || !VALID.test(raw) || raw.includes("//") || raw.endsWith("/") || raw.length > XENSTORE_ABS_PATH_MAX) {
      throw xsError("EINVAL", `invalid special path '${raw}'`, { path: raw });
    }
    return { abs: raw, relative: false };
  }
  const relative = !raw.startsWith("/");
  const abs = relative ? `${homeOf(domid)}/${raw}` : raw;
  if (!isValidNodePath(abs, pathMax)) throw xsError("EINVAL", `invalid path '${raw}'`, { path: raw });
  return { abs, relative };
}

/**
 * Segments of an absolute path: `/` → [], `/a/b` → ["a","b"]. A loop, not `split("/")`: V8 splits
 * in its runtime (a call out of optimised code), about 1.9k instructions of a WRITE's 24k.
 */
export function segmentsOf(abs: string): string[] {
  const out: string[] = [];
  if (abs === "/") return out;
  let start = 1;
  for (let i = 1; i < abs.length; i++) {
    if (abs.charCodeAt(i) !== 47 /* / */) continue;
    out.push(abs.slice(start, i));
    start = i + 1;
  }
  out.push(abs.slice(start));
  return out;
}

export function parentOf(abs: string): string {
  const i = abs.lastIndexOf("/");
  return i <= 0 ? "/" : abs.slice(0, i);
}

export function basename(abs: string): string {
  return abs.slice(abs.lastIndexOf("/") + 1);
}

export function joinPath(parent: string, name: string): string {
  return parent === "/" ? `/${name}` : `${parent}/${name}`;
}

/** True if `path` is `ancestor` or below it. */
export function isAtOrBelow(path: string, ancestor: string): boolean {
  if (ancestor === "/") return path.startsWith("/");
  return path === ancestor || (path.startsWith(ancestor) && path.charCodeAt(ancestor.length) === 47 /* / */);
}

/** The path as a relative-path watcher of `domid` sees it (the home prefix stripped). */
export function relativeTo(abs: string, domid: number): string {
  const home = homeOf(domid) + "/";
  return abs.startsWith(home) ? abs.slice(home.length) : abs;
}

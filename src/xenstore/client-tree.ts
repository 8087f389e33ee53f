/** Walking a xenstore subtree, like `xenstore-ls` (client.ts has the overview). */
import { XsError } from "./errors.js";
import type { PermEntry } from "./permissions.js";
import type { RequestOptions, XenstoreOps } from "./client-node-ops.js";

export interface TreeEntry {
  readonly path: string;
  /** Depth below the starting node (0 = the node itself). */
  readonly depth: number;
  readonly value: Buffer;
  readonly perms?: PermEntry[];
}

/**
 * Every node at and below `path`, parents before children, children in the daemon's order
 * (like `xenstore-ls`). Iterative, with an explicit stack, so deep trees cannot exhaust the
 * call stack (XSA-418's lesson applies to clients too). Nodes removed while walking are skipped.
 */
export async function* walkTree(ops: XenstoreOps, path: string, opts: RequestOptions & { perms?: boolean } = {}): AsyncGenerator<TreeEntry> {
  const stack: { path: string; depth: number }[] = [{ path, depth: 0 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    let value: Buffer;
    let children: string[];
    let perms: PermEntry[] | undefined;
    try {
      [value, children, perms] = await Promise.all([
        ops.readBytes(next.path, opts),
        ops.directory(next.path, opts),
        opts.perms === true ? ops.getPerms(next.path, opts) : Promise.resolve(undefined),
      ]);
    } catch (e) {
      if (e instanceof XsError && e.errno === "ENOENT" && next.depth > 0) continue;
      throw e;
    }
    yield { path: next.path, depth: next.depth, value, ...(perms === undefined ? {} : { perms }) };
    const base = next.path.endsWith("/") ? next.path : next.path + "/";
    for (let i = children.length - 1; i >= 0; i--) stack.push({ path: base + (children[i] ?? ""), depth: next.depth + 1 });
  }
}

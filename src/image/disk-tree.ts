/**
 * A content hash of a directory tree, so that an image made from a directory is cached by what the
 * directory holds (not by its path or mtimes): every entry's relative path, type, permission bits,
 * owner, and its bytes (files) or target (symlinks), in sorted order.
 */
import { createHash } from "node:crypto";
import { lstat, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { sha256File } from "./cache.js";

export async function hashTree(root: string): Promise<string> {
  const hash = createHash("sha256");
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const p = join(root, r);
      const st = await lstat(p);
      const head = `${JSON.stringify(r)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        hash.update(`d ${head}\n`);
        await walk(r);
      } else if (st.isSymbolicLink()) {
        hash.update(`l ${head} ${JSON.stringify(await readlink(p))}\n`);
      } else if (st.isFile()) {
        hash.update(`f ${head} ${st.size} ${await sha256File(p)}\n`);
      } else {
        // Devices, fifos, sockets: mkfs -d copies them as nodes; their identity is their type and numbers.
        hash.update(`n ${head} ${st.mode >>> 12} ${st.rdev}\n`);
      }
    }
  };
  await walk("");
  return hash.digest("hex");
}

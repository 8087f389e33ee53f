import * as fs from "node:fs";
import * as path from "node:path";

/** The names of the files under `dir` this process holds open (from /proc/self/fd). */
export function openUnder(dir: string): string[] {
  return fs.readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`);
      return target.startsWith(dir + "/") ? [path.basename(target)] : [];
    } catch {
      return []; // closed meanwhile (the readdir's own descriptor)
    }
  });
}

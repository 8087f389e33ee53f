/** Copying a cached build output out of the cache: staged next to the target, then renamed. */
import { mkdtemp, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { runCommand } from "../lib/process.js";

export async function copyFromCache(source: string, target: string): Promise<void> {
  const staging = await mkdtemp(join(dirname(target), `.${basename(target)}.vmstack-tmp-`));
  try {
    await runCommand(["cp", "-a", "--reflink=auto", `${source}/.`, staging], "cp");
    const exists = await stat(target).then(
      () => true,
      () => false,
    );
    if (exists) await rm(target, { recursive: true, force: true });
    await rename(staging, target);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

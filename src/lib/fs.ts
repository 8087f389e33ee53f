/** Small file-system helpers shared by the layers. */
import { readdirSync } from "node:fs";
import { readdir } from "node:fs/promises";

const absent = (e: unknown): boolean => (e as NodeJS.ErrnoException).code === "ENOENT";

/** The names in `dir`; a directory that does not exist (yet) is empty. Other errors throw. */
export async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if (absent(e)) return [];
    throw e;
  }
}

/** readdirOrEmpty, synchronously. */
export function readdirOrEmptySync(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (e) {
    if (absent(e)) return [];
    throw e;
  }
}

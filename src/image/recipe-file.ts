/** Reading recipe and lock files: JSON syntax errors and schema errors both name the file. */
import { readFile } from "node:fs/promises";
import { VmstackError, messageOf } from "../lib/errors.js";
import { parseLockFile, parseRecipe, type LockFile, type Recipe } from "./recipe.js";

async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new VmstackError("NO_FILE", `cannot read the ${what} ${path}: ${messageOf(e)}`, { cause: e, facts: { path } });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new VmstackError("BAD_RECIPE", `${path}: not valid JSON: ${messageOf(e)}`, { cause: e, facts: { path } });
  }
}

export async function loadRecipe(path: string): Promise<Recipe> {
  return parseRecipe(await readJson(path, "recipe"), path);
}

/** undefined when there is no lock file yet (the build then names every input as missing). */
export async function loadLockFile(path: string): Promise<LockFile | undefined> {
  try {
    await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return parseLockFile(await readJson(path, "lock file"), path);
}

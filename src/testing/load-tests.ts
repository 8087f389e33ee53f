/**
 * Loading users' test files: `.ts`/`.mts` through the transpiling hooks (ts-hooks.ts), `.js`/`.mjs`
 * as they are. Each file is imported once; the tests it registers are tagged with its path.
 */
import { register } from "node:module";
import { existsSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import { VmstackError, messageOf } from "../lib/errors.js";
import { collectTests, type TestDefinition } from "./test-run.js";

let hooked = false;

export async function loadTestFiles(files: readonly string[]): Promise<TestDefinition[]> {
  if (!hooked) {
    register(new URL("./ts-hooks.js", import.meta.url));
    hooked = true;
  }
  const all: TestDefinition[] = [];
  for (const file of files) {
    const path = resolvePath(file);
    if (!existsSync(path)) throw new VmstackError("TEST_FILE_MISSING", `test file not found: ${file}`, { facts: { file } });
    if (!/\.(m?ts|m?js)$/.test(path)) throw new VmstackError("TEST_FILE_TYPE", `${file}: test files are .ts, .mts, .js or .mjs`, { facts: { file } });
    try {
      all.push(...(await collectTests(file, async () => void (await import(pathToFileURL(path).href)))));
    } catch (e) {
      throw new VmstackError("TEST_FILE_LOAD", `cannot load ${file}: ${messageOf(e)}`, { cause: e, facts: { file } });
    }
  }
  return all;
}

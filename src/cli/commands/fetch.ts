/**
 * `vmstack fetch RECIPE`: download and hash every input of a build recipe into the cache and write
 * RECIPE.lock.json. The only build phase that uses the network.
 */
import { dirname, resolve } from "node:path";
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, usageError } from "../args.js";
import { openCache } from "../../image/index.js";
import { fetchRecipe, lockPathFor, writeLockFile } from "../../image/fetch.js";
import { loadRecipe } from "../../image/recipe-file.js";
import { guestArtifacts } from "../../guest/index.js";

const options = {
  json: { type: "boolean", help: "print the lock file on stdout" },
  quiet: { type: "boolean", short: "q", help: "no progress lines" },
} as const;

export const fetchCommand: Command = {
  name: "fetch",
  summary: "download a build recipe's inputs into the cache (hash-verified, resumable) and write its lock file",
  usage: "[--json] RECIPE.json",
  options,
  details: [
    "Inputs: local paths (hashed as they are now), URLs with a sha256 (resumed where a previous fetch",
    "stopped; a mismatch is refused with both hashes), Debian packages (apt-get download, through apt's",
    "configured sources). A Debian guest image named by the recipe is built now too: it needs the network.",
    "The lock file RECIPE.lock.json records every input's sha256; 'vmstack build' needs it.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("fetch", argv, options);
    const [file, ...rest] = p.positionals;
    if (!file || rest.length > 0) throw usageError("fetch", "give one RECIPE file");
    const path = resolve(file);
    const recipe = await loadRecipe(path);
    const lock = await fetchRecipe(recipe, {
      store: openCache(process.env),
      recipeDir: dirname(path),
      agentPath: guestArtifacts().agent,
      signal: ctx.signal,
      ...(boolOpt(p, "quiet") ? {} : { onProgress: (line: string) => ctx.stderr.write(`vmstack fetch: ${line}\n`) }),
    });
    const lockPath = lockPathFor(path);
    await writeLockFile(lockPath, lock);
    if (boolOpt(p, "json")) ctx.stdout.write(JSON.stringify(lock, null, 2) + "\n");
    else ctx.stderr.write(`vmstack fetch: ${recipe.inputs.size} input(s) in the cache; wrote ${lockPath}\n`);
    return 0;
  },
};

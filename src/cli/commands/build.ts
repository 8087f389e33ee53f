/**
 * `vmstack build RECIPE`: run a recipe's build script in a throwaway VM, offline, from the inputs
 * its lock file names; print the cached output directory. Exit 0 with the path on stdout.
 */
import { dirname, resolve } from "node:path";
import type { Command } from "../command.js";
import { boolOpt, parseCommandArgs, stringOpt, usageError } from "../args.js";
import { openCache } from "../../image/index.js";
import { buildRecipe } from "../../image/build.js";
import { lockPathFor } from "../../image/fetch.js";
import { loadLockFile, loadRecipe } from "../../image/recipe-file.js";
import { throwawayBuildRunner } from "../../vmm/transfer-runner.js";
import { copyFromCache } from "../../image/build-output.js";

const options = {
  json: { type: "boolean", help: "print the result (path, key, cached, outputHash) as JSON" },
  output: { type: "string", short: "o", arg: "DIR", help: "also copy the outputs to DIR (replaced as a whole)" },
  console: { type: "boolean", help: "copy the guest's serial console to stderr" },
} as const;

export const buildCommand: Command = {
  name: "build",
  summary: "run a build recipe in a throwaway VM without network, outputs into the cache by content",
  usage: "[--json] [-o DIR] RECIPE.json",
  options,
  details: [
    "Needs RECIPE.lock.json from 'vmstack fetch'. Never downloads: every missing input is named, a",
    "corrupted cached input is refused with both hashes. The guest has no network card. The script runs",
    "with the inputs under /in and its working directory /out; /out is kept only if it exits 0.",
    "The same recipe and inputs again is a cache hit: nothing boots.",
  ].join("\n"),
  async run(argv, ctx) {
    const p = parseCommandArgs("build", argv, options);
    const [file, ...rest] = p.positionals;
    if (!file || rest.length > 0) throw usageError("build", "give one RECIPE file");
    const path = resolve(file);
    const recipe = await loadRecipe(path);
    const lock = await loadLockFile(lockPathFor(path));
    const r = await buildRecipe(recipe, lock, {
      store: openCache(process.env),
      recipeDir: dirname(path),
      signal: ctx.signal,
      runner: throwawayBuildRunner({
        log: ctx.stderr as NodeJS.WritableStream as import("node:stream").Writable,
        hostEnv: process.env,
        ...(boolOpt(p, "console") ? { onConsole: (c: Buffer) => ctx.stderr.write(c) } : {}),
      }),
    });
    const out = stringOpt(p, "output");
    if (out !== undefined) await copyFromCache(r.path, resolve(out));
    if (ctx.verbose || !boolOpt(p, "json")) ctx.stderr.write(`vmstack build: ${r.cached ? "cache hit" : "built"}; outputs sha256 ${r.outputHash}\n`);
    ctx.stdout.write(boolOpt(p, "json") ? JSON.stringify(r) + "\n" : r.path + "\n");
    return 0;
  },
};

/**
 * Module hooks for `vmstack test` (registered with node:module's register()). Node 20 cannot run
 * TypeScript, so a user's `.ts` test file is transpiled in memory with the project's TypeScript
 * compiler (transpileModule: types are stripped, not checked, which takes milliseconds; run
 * `tsc --noEmit` for type errors). Nothing is written next to the user's files, relative imports
 * keep working, and stack traces name the .ts file. `vmstack/testing` always resolves to this very
 * vmstack, so a test file needs no node_modules of its own and registers into the runner's registry.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cacheRoot } from "../image/index.js";

interface ResolveContext {
  readonly parentURL?: string | undefined;
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string; format?: string | null }>;
type NextLoad = (url: string, context: unknown) => Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array | null }>;

const TESTING_URL = new URL("./index.js", import.meta.url).href;

export async function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string; shortCircuit?: boolean; format?: string | null }> {
  if (specifier === "vmstack/testing") return { url: TESTING_URL, shortCircuit: true };
  // TypeScript convention: `import "./helper.js"` names helper.ts.
  if (/^\.{1,2}\//.test(specifier) && specifier.endsWith(".js") && context.parentURL?.endsWith(".ts")) {
    const asTs = new URL(specifier.replace(/\.js$/, ".ts"), context.parentURL);
    if (!existsSync(fileURLToPath(new URL(specifier, context.parentURL))) && existsSync(fileURLToPath(asTs))) {
      return { url: asTs.href, shortCircuit: true };
    }
  }
  return next(specifier, context);
}

/** The installed compiler's version, without loading the compiler (importing it takes 0.5–1.5 s). */
function typescriptVersion(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve("typescript/package.json");
    return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
  } catch {
    // Not installed: load() says so when a .ts file actually needs it.
    return undefined;
  }
}

export async function load(url: string, context: unknown, next: NextLoad): Promise<{ format: string; source?: string | ArrayBuffer | Uint8Array | null; shortCircuit?: boolean }> {
  if (!url.startsWith("file:") || !/\.m?ts$/.test(url)) return next(url, context);
  const path = fileURLToPath(url);
  const source = await readFile(path, "utf8");
  // Transpiled output is cached by content (and path: the inline source map names it), so a
  // second run does not even load the compiler.
  const key = createHash("sha256").update(`v1\0${typescriptVersion() ?? "none"}\0${path}\0${source}`).digest("hex");
  const cached = join(cacheRoot(process.env), "ts", `${key}.js`);
  if (existsSync(cached)) return { format: "module", source: await readFile(cached, "utf8"), shortCircuit: true };
  const output = await transpile(url, path, source);
  await mkdir(join(cacheRoot(process.env), "ts"), { recursive: true });
  // Atomic: concurrent runs never read a half-written file.
  const tmp = `${cached}.${process.pid}.tmp`;
  await writeFile(tmp, output);
  await rename(tmp, cached);
  return { format: "module", source: output, shortCircuit: true };
}

async function transpile(url: string, path: string, source: string): Promise<string> {
  let ts: typeof import("typescript");
  try {
    ts = (await import("typescript")).default;
  } catch {
    throw new Error(`cannot load ${url}: the TypeScript compiler is not installed (npm install typescript), or compile the test to .js`);
  }
  const out = ts.transpileModule(source, {
    fileName: path,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      inlineSourceMap: true,
      inlineSources: true,
      verbatimModuleSyntax: false,
    },
    reportDiagnostics: true,
  });
  const syntax = out.diagnostics?.filter((d) => d.category === ts.DiagnosticCategory.Error) ?? [];
  if (syntax.length > 0) {
    const first = syntax[0];
    const where = first?.file && first.start !== undefined ? first.file.getLineAndCharacterOfPosition(first.start) : undefined;
    throw new SyntaxError(`${path}${where ? `:${where.line + 1}:${where.character + 1}` : ""}: ${ts.flattenDiagnosticMessageText(first?.messageText ?? "", "\n")}`);
  }
  return out.outputText;
}

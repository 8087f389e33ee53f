/**
 * Reading a domain config file (xl.cfg, xm, or vmstack JSON) plus command-line `key=value`
 * overrides (as `xl create FILE key=value…`) into a validated DomainConfig. The only I/O is
 * reading the file in loadDomainFile; loadDomainText is pure.
 */
import { readFile } from "node:fs/promises";
import { type Problem, DomainConfigError, OriginMap, errorsOf, warningsOf } from "./diagnostics.js";
import { JsonSyntaxError, parseJsonWithPositions } from "./json-positions.js";
import { checkDomainSpec } from "./parse-spec.js";
import type { DomainConfig } from "./spec.js";
import { parseXlConfig } from "./xl-config.js";
import { importXlConfig } from "./xl-import.js";
import { VmstackError } from "../lib/errors.js";

export type ConfigFormat = "xl" | "json";

export interface LoadedDomain {
  readonly config: DomainConfig;
  /** The spec as read (before defaults): what `config convert` writes back out. */
  readonly spec: Record<string, unknown>;
  readonly format: ConfigFormat;
  /** "xm" for Python-style xm configs. */
  readonly dialect: "xl" | "xm" | "json";
  readonly warnings: readonly Problem[];
}

export const OVERRIDES_FILE = "<command line>";

export function detectFormat(file: string, text: string): ConfigFormat {
  if (/\.json$/i.test(file)) return "json";
  return /^\s*\{/.test(text) ? "json" : "xl";
}

/** Parse, validate, and throw one DomainConfigError with every error (and warning) when invalid. */
export function loadDomainText(text: string, file: string, options: { format?: ConfigFormat; overrides?: readonly string[] } = {}): LoadedDomain {
  const format = options.format ?? detectFormat(file, text);
  const overrides = options.overrides ?? [];
  const problems: Problem[] = [];
  let spec: Record<string, unknown>;
  let origins: OriginMap;
  let dialect: LoadedDomain["dialect"] = "json";
  if (format === "xl") {
    const xl = parseXlConfig(text, file);
    problems.push(...xl.problems);
    let settings = xl.settings;
    if (overrides.length > 0) {
      // xl appends command-line settings after the file's, so they win (xl(1), create).
      const over = parseXlConfig(overrides.join("\n"), OVERRIDES_FILE, { base: settings });
      problems.push(...over.problems);
      settings = over.settings;
    }
    dialect = xl.dialect;
    // Syntax errors first: mapping a half-parsed file would only add confusing follow-on errors.
    if (errorsOf(problems).length > 0) throw new DomainConfigError(file, problems);
    const imported = importXlConfig({ ...xl, settings });
    problems.push(...imported.problems);
    spec = imported.spec;
    origins = imported.origins;
  } else {
    origins = new OriginMap(file);
    try {
      const parsed = parseJsonWithPositions(text);
      if (typeof parsed.value !== "object" || parsed.value === null || Array.isArray(parsed.value)) {
        throw new JsonSyntaxError("expected a JSON object with the domain's options", { line: 1, col: 1 });
      }
      spec = parsed.value as Record<string, unknown>;
      for (const [path, pos] of parsed.positions) origins.set(path, { file, line: pos.line, col: pos.col });
    } catch (e) {
      if (!(e instanceof JsonSyntaxError)) throw e;
      throw new DomainConfigError(file, [{ severity: "error", message: e.message, origin: { file, line: e.pos.line, col: e.pos.col } }]);
    }
    for (const o of overrides) {
      const r = applyOverride(spec, o);
      if (r.error) problems.push({ severity: "error", message: r.error, origin: { file: OVERRIDES_FILE } });
      else origins.set(r.path, { file: OVERRIDES_FILE });
    }
  }
  if (errorsOf(problems).length > 0) throw new DomainConfigError(file, problems);
  const checked = checkDomainSpec(spec, { source: file, origins });
  const all = [...problems, ...checked.problems];
  if (errorsOf(all).length > 0 || checked.config === undefined) throw new DomainConfigError(file, all);
  return { config: checked.config, spec, format, dialect, warnings: warningsOf(all) };
}

export async function loadDomainFile(file: string, options: { format?: ConfigFormat; overrides?: readonly string[] } = {}): Promise<LoadedDomain> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new VmstackError("DOMAIN_CONFIG_UNREADABLE", `cannot read domain config ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e, facts: { file } });
  }
  return loadDomainText(text, file, options);
}

/**
 * `path=value` on a JSON spec: `memory=512`, `boot.cmdline="console=ttyS0"`, `disks[0].path=/x`.
 * The value is JSON when it parses as JSON, else a plain string.
 */
export function applyOverride(spec: Record<string, unknown>, arg: string): { path: string; error?: string } {
  const eq = arg.indexOf("=");
  if (eq <= 0) return { path: "", error: `override '${arg}' is not KEY=VALUE` };
  const path = arg.slice(0, eq).trim();
  const raw = arg.slice(eq + 1);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  const parts = path.replace(/\[(\d+)\]/g, ".$1").split(".");
  if (parts.some((p) => p === "")) return { path, error: `override key '${path}' is not an option path like boot.cmdline or disks[0].path` };
  let o: Record<string, unknown> | unknown[] = spec;
  for (let k = 0; k < parts.length; k++) {
    const key = parts[k] as string;
    const last = k === parts.length - 1;
    const index = /^\d+$/.test(key) ? Number(key) : undefined;
    if (Array.isArray(o) !== (index !== undefined)) return { path, error: `override '${path}': '${key}' does not fit the shape of the config` };
    const container = o as Record<string, unknown>;
    if (last) container[key] = value;
    else {
      if (typeof container[key] !== "object" || container[key] === null) container[key] = /^\d+$/.test(parts[k + 1] as string) ? [] : {};
      o = container[key] as Record<string, unknown>;
    }
  }
  return { path: path.replace(/\.(\d+)(?=\.|$)/g, "[$1]") };
}

/** Apply overrides to a JSON spec object (exported for programs that build specs). */
export function applyOverrides(spec: Record<string, unknown>, overrides: readonly string[]): string[] {
  return overrides.map((o) => applyOverride(spec, o).error).filter((e): e is string => e !== undefined);
}

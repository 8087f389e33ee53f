/**
 * Problems found in a domain configuration, and where each came from.
 *
 * Every layer (xl.cfg lexer and parser, disk/vif spec parsers, the schema walker, the cross-field
 * validator) collects problems instead of throwing at the first one, so a user fixes a config in
 * one round trip (issue: "All problems are reported at once, each saying where it came from").
 * Positions are 1-based line and column, as editors and compilers print them.
 */
import { VmstackError } from "../lib/errors.js";

export interface Position {
  readonly line: number;
  readonly col: number;
}

/** A place in a config file, or a key path in a structured (JSON / TypeScript) config. */
export interface Origin {
  readonly file: string;
  readonly line?: number;
  readonly col?: number;
}

export type Severity = "error" | "warning";

export interface Problem {
  readonly severity: Severity;
  readonly message: string;
  /** Option path in the domain spec, e.g. `disks[1].format`, when the problem concerns one. */
  readonly path?: string;
  readonly origin?: Origin;
}

export function formatOrigin(o: Origin): string {
  if (o.line === undefined) return o.file;
  return o.col === undefined ? `${o.file}:${o.line}` : `${o.file}:${o.line}:${o.col}`;
}

/** `file:line:col: error: message (at path)` — one line per problem, compiler style. */
export function formatProblem(p: Problem): string {
  const where = p.origin ? `${formatOrigin(p.origin)}: ` : "";
  const path = p.path !== undefined && p.path !== "" ? ` [${p.path}]` : "";
  return `${where}${p.severity}: ${p.message}${path}`;
}

export function errorsOf(problems: readonly Problem[]): Problem[] {
  return problems.filter((p) => p.severity === "error");
}

export function warningsOf(problems: readonly Problem[]): Problem[] {
  return problems.filter((p) => p.severity === "warning");
}

/**
 * Where option paths came from. A config file reader records the position of each key it maps;
 * lookups fall back to the nearest recorded ancestor (`disks[0].format` → `disks[0]` → `disks`),
 * and finally to the file itself.
 */
export class OriginMap {
  private readonly byPath = new Map<string, Origin>();

  constructor(readonly file: string) {}

  set(path: string, origin: Origin): void {
    this.byPath.set(path, origin);
  }

  /** Record an origin only when none is known yet (the first assignment in a file wins). */
  setDefault(path: string, origin: Origin): void {
    if (!this.byPath.has(path)) this.byPath.set(path, origin);
  }

  get(path: string): Origin {
    let p = path;
    for (;;) {
      const o = this.byPath.get(p);
      if (o) return o;
      const cut = Math.max(p.lastIndexOf("."), p.lastIndexOf("["));
      if (cut <= 0) return { file: this.file };
      p = p.slice(0, cut);
    }
  }
}

/** The error thrown when a domain config has errors; all of them are in the message and facts. */
export class DomainConfigError extends VmstackError {
  readonly problems: readonly Problem[];

  constructor(subject: string, problems: readonly Problem[]) {
    const errors = errorsOf(problems);
    const head = `${subject}: ${errors.length} error${errors.length === 1 ? "" : "s"} in the domain configuration`;
    super("DOMAIN_CONFIG_INVALID", [head, ...problems.map((p) => "  " + formatProblem(p))].join("\n"), {
      facts: { subject, problems },
    });
    this.problems = problems;
  }
}

/** Throw a DomainConfigError when `problems` holds any error; warnings alone pass. */
export function throwIfErrors(subject: string, problems: readonly Problem[]): void {
  if (errorsOf(problems).length > 0) throw new DomainConfigError(subject, problems);
}

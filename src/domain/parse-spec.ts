/**
 * `parseDomainSpec(unknown)`: the entry point from untrusted input (JSON, a TypeScript object, a
 * converted xl.cfg) to a validated DomainConfig (house rule 5). Unknown keys are rejected with a
 * did-you-mean; defaults are filled from the table in spec.ts; derived values are computed here;
 * then validate.ts runs the cross-option assertions and warnings. All problems come back at once.
 */
import { createHash } from "node:crypto";
import { type Origin, type Problem, OriginMap, errorsOf, throwIfErrors, warningsOf } from "./diagnostics.js";
import { type Schema, parseWithSchema } from "./schema.js";
import { type DomainConfig, domainSchema } from "./spec.js";
import { validateDomain } from "./validate.js";

export interface ParseOptions {
  /** Where the spec came from, for messages (a file name, or "<api>"). */
  readonly source?: string;
  /** Positions of option paths in the source file, when it has them. */
  readonly origins?: OriginMap;
}

export interface ParsedDomain {
  readonly config: DomainConfig;
  /** Warnings (things vmstack does differently or ignores); errors were thrown. */
  readonly warnings: readonly Problem[];
}

/** Parse and validate; throws DomainConfigError listing every error (and the warnings) at once. */
export function parseDomainSpec(input: unknown, options: ParseOptions = {}): ParsedDomain {
  const result = checkDomainSpec(input, options);
  throwIfErrors(options.source ?? "domain", result.problems);
  return { config: result.config as DomainConfig, warnings: warningsOf(result.problems) };
}

/** Like parseDomainSpec but never throws: the config is only meaningful when there are no errors. */
export function checkDomainSpec(input: unknown, options: ParseOptions = {}): { config: DomainConfig | undefined; problems: Problem[] } {
  const origins = options.origins ?? new OriginMap(options.source ?? "domain");
  const originOf = (path: string): Origin => origins.get(path);
  const walked = parseWithSchema(domainSchema, input, originOf);
  if (typeof walked.value !== "object" || walked.value === null || Array.isArray(walked.value)) return { config: undefined, problems: walked.problems };
  // The cross-option checks run even when some options are malformed, skipping only the checks
  // that read a malformed subtree, so that one round trip shows every problem.
  const badPaths = walked.problems.map((p) => p.path ?? "");
  const isBad = (path: string): boolean => badPaths.some((b) => b === path || b.startsWith(path + ".") || b.startsWith(path + "[") || path.startsWith(b + ".") || path.startsWith(b + "["));
  const config = deriveDefaults(walked.value as Record<string, unknown>, isBad);
  const validated = validateDomain(config, input as Record<string, unknown>, isBad).map((p) => ({
    ...p,
    ...(p.origin === undefined && p.path !== undefined ? { origin: originOf(p.path) } : {}),
  }));
  const problems = [...walked.problems, ...validated];
  return { config: errorsOf(walked.problems).length > 0 ? undefined : config, problems };
}

/** Fill the `derived` fields of spec.ts (each one's rule is stated in its table entry). */
function deriveDefaults(c: Record<string, unknown>, isBad: (path: string) => boolean): DomainConfig {
  const d = c as Mutable<DomainConfig>;
  d.maxmem ??= d.memory;
  d.maxvcpus ??= d.vcpus;
  // Malformed list items are left as they are (their checks are skipped); the others get derived.
  if (Array.isArray(d.disks))
    d.disks = d.disks.map((disk, i) =>
      isBad(`disks[${i}]`)
        ? disk
        : {
            ...disk,
            id: disk.id ?? `disk${i}`,
            format: disk.format ?? (disk.backing !== undefined || disk.scratch ? "qcow2" : "raw"),
            readOnly: disk.readOnly ?? disk.media === "cdrom",
          },
    );
  const name = isBad("name") ? "" : d.name;
  if (Array.isArray(d.nics)) d.nics = d.nics.map((nic, i) => (isBad(`nics[${i}]`) ? nic : { ...nic, id: nic.id ?? `net${i}`, mac: nic.mac ?? stableMac(name, i) }));
  return inSchemaOrder(domainSchema, d) as DomainConfig;
}

/** Keys in the table's order, so printed configs read like docs/options.md. */
function inSchemaOrder(schema: Schema, value: unknown): unknown {
  if (schema.kind === "list" && Array.isArray(value)) return value.map((v: unknown) => inSchemaOrder(schema.item, v));
  if (typeof value !== "object" || value === null) return value;
  const v = value as Record<string, unknown>;
  const fields = schema.kind === "object" ? schema.fields : schema.kind === "union" ? schema.variants[String(v[schema.tag])]?.fields : undefined;
  if (fields === undefined) return value;
  const out: Record<string, unknown> = schema.kind === "union" ? { [schema.tag]: v[schema.tag] } : {};
  for (const [k, f] of Object.entries(fields)) if (v[k] !== undefined) out[k] = inSchemaOrder(f.schema, v[k]);
  return out;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * A MAC address that stays the same for a domain's NIC across restarts (guests key their network
 * configuration on it). 52:54:00 is QEMU's prefix; the rest comes from a hash of name and index.
 */
export function stableMac(name: string, index: number): string {
  const h = createHash("sha256").update(`${name}/${index}`).digest();
  const bytes = [0x52, 0x54, 0x00, h[0] ?? 0, h[1] ?? 0, h[2] ?? 0];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

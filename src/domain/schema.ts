/**
 * A tiny schema language for vmstack's option tables. One table states each option's type,
 * default and description; from it come the TypeScript types (by inference, so the types cannot
 * drift from the table), the parser of untrusted input (`parseWithSchema`), and docs/options.md.
 *
 * Presence of a field:
 *   required  — must be given;
 *   default   — may be omitted, then takes `default` (objects: `{}`, filled recursively);
 *   derived   — may be omitted, then computed from other options after parsing (the doc says how);
 *   optional  — may be omitted and stays absent.
 */
import type { Problem } from "./diagnostics.js";
import { didYouMean } from "./did-you-mean.js";

export type Schema =
  | { readonly kind: "string"; readonly pattern?: RegExp; readonly hint?: string }
  | { readonly kind: "int"; readonly min?: number; readonly max?: number; readonly unit?: string }
  | { readonly kind: "bool" }
  | { readonly kind: "enum"; readonly values: readonly string[] }
  | { readonly kind: "list"; readonly item: Schema }
  | ObjectSchema
  | UnionSchema;

export interface ObjectSchema {
  readonly kind: "object";
  readonly fields: Readonly<Record<string, Field>>;
}

/** Objects told apart by a string tag field (`type` of a network interface). */
export interface UnionSchema {
  readonly kind: "union";
  readonly tag: string;
  readonly variants: Readonly<Record<string, ObjectSchema>>;
}

export type Presence = "required" | "default" | "derived" | "optional";

export interface Field {
  readonly schema: Schema;
  readonly presence: Presence;
  readonly default?: unknown;
  /** For derived fields: how the value is computed, for the docs. */
  readonly derivedFrom?: string;
  readonly description: string;
}

// ---- builders (generic so that defaults are checked against the field's type) ----

export const str = (o: { pattern?: RegExp; hint?: string } = {}) => ({ kind: "string" as const, ...o });
export const int = (o: { min?: number; max?: number; unit?: string } = {}) => ({ kind: "int" as const, ...o });
export const bool = () => ({ kind: "bool" as const });
export const oneOf = <const V extends readonly string[]>(values: V) => ({ kind: "enum" as const, values });
export const list = <const I extends Schema>(item: I) => ({ kind: "list" as const, item });
export const obj = <const F extends Readonly<Record<string, Field>>>(fields: F) => ({ kind: "object" as const, fields });
export const union = <const T extends string, const V extends Readonly<Record<string, ObjectSchema>>>(tag: T, variants: V) => ({
  kind: "union" as const,
  tag,
  variants,
});

export function required<const S extends Schema>(schema: S, description: string) {
  return { schema, presence: "required" as const, description };
}
export function withDefault<const S extends Schema>(schema: S, value: DefaultOf<S>, description: string) {
  return { schema, presence: "default" as const, default: value, description };
}
export function derived<const S extends Schema>(schema: S, derivedFrom: string, description: string) {
  return { schema, presence: "derived" as const, derivedFrom, description };
}
export function optional<const S extends Schema>(schema: S, description: string) {
  return { schema, presence: "optional" as const, description };
}

/** A default is written like user input and walked like it, so nested defaults fill in too. */
type DefaultOf<S> = Input<S>;

// ---- type inference: Output is the validated config, Input what a user may write ----

type Simplify<T> = { [K in keyof T]: T[K] } & {};

type PresentKeys<F, P> = { [K in keyof F]: F[K] extends { presence: P } ? K : never }[keyof F];

export type Output<S> = S extends { kind: "string" }
  ? string
  : S extends { kind: "int" }
    ? number
    : S extends { kind: "bool" }
      ? boolean
      : S extends { kind: "enum"; values: readonly (infer V)[] }
        ? V
        : S extends { kind: "list"; item: infer I }
          ? readonly Output<I>[]
          : S extends { kind: "object"; fields: infer F }
            ? ObjectOutput<F>
            : S extends { kind: "union"; tag: infer T extends string; variants: infer V }
              ? { [K in keyof V]: Simplify<{ readonly [P in T]: K } & Output<V[K]>> }[keyof V]
              : never;

type ObjectOutput<F> = Simplify<
  { readonly [K in PresentKeys<F, "required" | "default" | "derived">]: F[K] extends { schema: infer S } ? Output<S> : never } & {
    readonly [K in PresentKeys<F, "optional">]?: F[K] extends { schema: infer S } ? Output<S> : never;
  }
>;

export type Input<S> = S extends { kind: "list"; item: infer I }
  ? readonly Input<I>[]
  : S extends { kind: "object"; fields: infer F }
    ? ObjectInput<F>
    : S extends { kind: "union"; tag: infer T extends string; variants: infer V }
      ? { [K in keyof V]: Simplify<{ readonly [P in T]: K } & Input<V[K]>> }[keyof V]
      : Output<S>;

type ObjectInput<F> = Simplify<
  { readonly [K in PresentKeys<F, "required">]: F[K] extends { schema: infer S } ? Input<S> : never } & {
    readonly [K in PresentKeys<F, "default" | "derived" | "optional">]?: F[K] extends { schema: infer S } ? Input<S> : never;
  }
>;

// ---- the walker: untrusted value → defaults filled, every problem collected ----

/** Join an option path: `disks` + 0 → `disks[0]`, `disks[0]` + `path` → `disks[0].path`. */
export function joinPath(base: string, key: string | number): string {
  if (typeof key === "number") return `${base}[${key}]`;
  return base === "" ? key : `${base}.${key}`;
}

export function describeType(s: Schema): string {
  switch (s.kind) {
    case "string":
      return s.hint ?? "string";
    case "int":
      return `integer${s.unit ? ` (${s.unit})` : ""}${rangeText(s.min, s.max)}`;
    case "bool":
      return "boolean";
    case "enum":
      return s.values.map((v) => `"${v}"`).join(" | ");
    case "list":
      return `list of ${describeType(s.item)}`;
    case "object":
      return "object";
    case "union":
      return `object with ${s.tag} ${Object.keys(s.variants).map((v) => `"${v}"`).join(" | ")}`;
  }
}

function rangeText(min: number | undefined, max: number | undefined): string {
  if (min !== undefined && max !== undefined) return ` ${min}…${max}`;
  if (min !== undefined) return ` ≥ ${min}`;
  if (max !== undefined) return ` ≤ ${max}`;
  return "";
}

function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) return "a list";
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  return String(v);
}

export type ProblemSink = (path: string, message: string) => void;

/**
 * Walk `value` against `schema`. Returns the value with defaults filled (derived fields stay
 * absent: the caller computes them). Reports each problem through `report` and keeps going, so
 * every problem is found in one pass.
 */
export function walk(schema: Schema, value: unknown, path: string, report: ProblemSink): unknown {
  switch (schema.kind) {
    case "string":
      if (typeof value !== "string") {
        report(path, `expected ${describeType(schema)}, got ${show(value)}`);
        return value;
      }
      if (schema.pattern && !schema.pattern.test(value)) report(path, `${show(value)} is not a valid ${schema.hint ?? "value"}`);
      return value;
    case "int":
      if (typeof value !== "number" || !Number.isInteger(value)) {
        report(path, `expected ${describeType(schema)}, got ${show(value)}`);
        return value;
      }
      if (schema.min !== undefined && value < schema.min) report(path, `${value} is below the minimum ${schema.min}`);
      if (schema.max !== undefined && value > schema.max) report(path, `${value} is above the maximum ${schema.max}`);
      return value;
    case "bool":
      if (typeof value !== "boolean") report(path, `expected a boolean, got ${show(value)}`);
      return value;
    case "enum":
      if (typeof value !== "string" || !schema.values.includes(value)) {
        const hint = typeof value === "string" ? didYouMean(value, schema.values) : "";
        report(path, `expected one of ${describeType(schema)}, got ${show(value)}${hint}`);
      }
      return value;
    case "list":
      if (!Array.isArray(value)) {
        report(path, `expected ${describeType(schema)}, got ${show(value)}`);
        return value;
      }
      return value.map((item: unknown, i) => walk(schema.item, item, joinPath(path, i), report));
    case "object":
      return walkObject(schema, value, path, report, new Set());
    case "union": {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        report(path, `expected ${describeType(schema)}, got ${show(value)}`);
        return value;
      }
      const tag = (value as Record<string, unknown>)[schema.tag];
      const names = Object.keys(schema.variants);
      const variant = typeof tag === "string" ? schema.variants[tag] : undefined;
      if (!variant) {
        const hint = typeof tag === "string" ? didYouMean(tag, names) : "";
        report(joinPath(path, schema.tag), `expected one of ${names.map((n) => `"${n}"`).join(" | ")}, got ${show(tag)}${hint}`);
        return value;
      }
      return { [schema.tag]: tag, ...(walkObject(variant, value, path, report, new Set([schema.tag])) as object) };
    }
  }
}

function walkObject(schema: ObjectSchema, value: unknown, path: string, report: ProblemSink, extraKeys: ReadonlySet<string>): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    report(path, `expected an object, got ${show(value)}`);
    return value;
  }
  const input = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const known = Object.keys(schema.fields);
  for (const key of Object.keys(input)) {
    if (extraKeys.has(key)) continue;
    if (!(key in schema.fields)) report(joinPath(path, key), `unknown option '${key}'${didYouMean(key, known)}`);
  }
  for (const [key, field] of Object.entries(schema.fields)) {
    const p = joinPath(path, key);
    const v = input[key];
    if (v === undefined) {
      if (field.presence === "required") report(p, `missing required option '${key}' (${describeType(field.schema)})`);
      else if (field.presence === "default") {
        out[key] = walk(field.schema, structuredClone(field.default), p, report);
      }
      continue;
    }
    out[key] = walk(field.schema, v, p, report);
  }
  return out;
}

/** Issue-level helper: run the walker and turn reports into Problems. */
export function parseWithSchema(schema: Schema, value: unknown, origin: (path: string) => Problem["origin"]): { value: unknown; problems: Problem[] } {
  const problems: Problem[] = [];
  const v = walk(schema, value, "", (path, message) => {
    const o = origin(path);
    problems.push({ severity: "error", message, path, ...(o ? { origin: o } : {}) });
  });
  return { value: v, problems };
}
